"""The documentation runs: every Python example in README.md and docs/ executes as written,
every shown output of a deterministic command is what the command prints, and every name the
documentation imports from jacbench exists.

A page's Python blocks run in order in one namespace, as a reader would paste them, in a
folder of their own. A block whose first line is ``# NAME.py`` is a file the page asks the
reader to write: it is written there (and importable), not run. An HTML comment on the line
before a block says more: ``<!-- skip: REASON -->`` (a GPU, a cluster) skips it with that
reason; ``<!-- slow -->`` marks the page's test slow (run by .ci/run, not by plain pytest).
A ``text`` block whose first line is ``$ jacbench …`` is run at 80 columns with the default
kernels, and its output must match the block's lines; every ``jacbench run …`` line of a
``bash`` block must parse (``--dry-run``).
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```(\w*)\s*$")
_NOTE = re.compile(r"^<!--\s*(skip|slow)\s*:?\s*(.*?)\s*-->$")


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    note: str = ""  # "skip" or "slow"
    reason: str = ""

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def file_name(self) -> str | None:
        """The file a ``# NAME.py`` block asks the reader to write."""
        first = self.text.split("\n", 1)[0]
        match = re.fullmatch(r"# ([\w/]+\.py)", first)
        return match.group(1) if match else None


def blocks(page: Path) -> list[Block]:
    found: list[Block] = []
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        start, lang = i, match.group(1)
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        note = _NOTE.match(lines[start - 1].strip()) if start else None
        found.append(
            Block(
                page,
                start + 1,
                lang,
                "\n".join(lines[start + 1 : end]) + "\n",
                note.group(1) if note else "",
                note.group(2) if note else "",
            )
        )
        i = end + 1
    return found


def _page_param(page: Path):
    python = [b for b in blocks(page) if b.lang == "python"]
    marks = [pytest.mark.slow] if any(b.note == "slow" for b in python) else []
    return pytest.param(page, marks=marks, id=str(page.relative_to(ROOT)))


PYTHON_PAGES = [_page_param(p) for p in PAGES if any(b.lang == "python" for b in blocks(p))]


@pytest.mark.parametrize("page", PYTHON_PAGES)
def test_the_pages_python_examples_run_as_written(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    namespace: dict = {"__name__": "__docs__"}
    written: list[str] = []
    skipped: list[str] = []
    for block in (b for b in blocks(page) if b.lang == "python"):
        if block.note == "skip":
            skipped.append(f"{block.where}: {block.reason}")
            continue
        if block.file_name:
            (tmp_path / block.file_name).write_text(block.text)
            written.append(block.file_name.removesuffix(".py").replace("/", "."))
            importlib.invalidate_caches()
            continue
        try:
            exec(compile(block.text, block.where, "exec"), namespace)
        except Exception as error:  # name the example, not this test's line
            raise AssertionError(f"the example at {block.where} fails: {error!r}") from error
    for module in written:  # a later page may write its own file of the same name
        sys.modules.pop(module, None)
    if skipped:
        pytest.skip("; ".join(skipped))


def _shown_commands() -> list:
    params = []
    for page in PAGES:
        for block in blocks(page):
            if block.lang == "text" and block.text.startswith("$ jacbench "):
                params.append(pytest.param(block, id=block.where))
    return params


@pytest.mark.parametrize("block", _shown_commands())
def test_a_shown_commands_output_is_what_it_prints(block):
    _, *shown = block.text.rstrip("\n").split("\n")
    done = _printed(block)
    assert done.returncode == 0, done.stderr
    printed = [line.rstrip() for line in done.stdout.rstrip("\n").split("\n")]
    assert printed == [line.rstrip() for line in shown], f"{block.where} shows another output"


def _documented_runs() -> list:
    """Every ``jacbench run …`` line of the docs' bash blocks (continuations joined)."""
    params = []
    for page in PAGES:
        for block in blocks(page):
            if block.lang != "bash":
                continue
            for line in block.text.replace("\\\n", " ").splitlines():
                found = re.search(r"(?:^|&& )jacbench run( .*)?$", line.split("  #")[0].strip())
                if found:
                    args = shlex.split(found.group(1) or "")
                    params.append(pytest.param(block, args, id=f"{block.where} {' '.join(args)}"))
    return params


@pytest.mark.slow
@pytest.mark.parametrize(("block", "args"), _documented_runs())
def test_every_documented_run_command_parses(block, args, tmp_path):
    """Each ``jacbench run`` line the docs show is accepted as written (``--dry-run``: what it
    would run, nothing timed or written), beside the files its page asks for."""
    import torch

    if "cuda" in args and not torch.cuda.is_available():
        pytest.skip("needs a GPU")
    for other in blocks(block.page):
        if other.file_name:
            (tmp_path / other.file_name).write_text(other.text)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    env = {**os.environ, "JACBENCH_TUNING": "defaults"}
    done = subprocess.run(
        [sys.executable, "-m", "jacbench", "run", *args, "--dry-run"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, f"{block.where}: {done.stderr or done.stdout}"
    assert not (tmp_path / "results").exists()  # a dry run writes nothing


# ``from jacbench import a, b`` (parenthesised or not), ``from jacbench.x import a``, and
# ``jacbench.name`` anywhere in a page: prose and commands included.
_FROM_IMPORT = re.compile(r"from (jacbench(?:\.\w+)*) import (\([\w\s,]+\)|[\w ,]+)")
_ATTRIBUTE = re.compile(r"(?<![\w/.])jacbench((?:\.[A-Za-z_]\w*)+)")


def _documented_names() -> list[tuple[str, str, str]]:
    names = []
    for page in PAGES:
        text = page.read_text()
        where = str(page.relative_to(ROOT))
        for module, imported in _FROM_IMPORT.findall(text):
            for name in re.split(r"[\s,()]+", imported):
                if name:
                    names.append((where, module, name))
        for dotted in _ATTRIBUTE.findall(text):
            parts = dotted.strip(".").split(".")
            names.append((where, "jacbench", ".".join(parts)))
    return sorted(set(names))


def _resolves(module: str, dotted: str) -> bool:
    target = importlib.import_module(module)
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if hasattr(target, part):
            target = getattr(target, part)
            continue
        try:  # a module not imported by its package yet
            target = importlib.import_module(f"{target.__name__}.{part}")
        except (ImportError, AttributeError):
            # ``jacbench.py`` or ``jacbench.cost.py`` in prose name files, not attributes.
            return i == len(parts) - 1 and part in ("py", "md", "json", "csv")
    return True


def test_every_name_the_docs_use_from_jacbench_exists():
    names = _documented_names()
    assert len(names) > 20
    missing = [
        f"{where}: {module}.{name}" for where, module, name in names if not _resolves(module, name)
    ]
    assert missing == []


def _printed(block: Block) -> subprocess.CompletedProcess:
    command = block.text.split("\n", 1)[0]
    args = shlex.split(command.removeprefix("$ jacbench "))
    env = {**os.environ, "COLUMNS": "80", "JACBENCH_TUNING": "defaults"}
    return subprocess.run(
        [sys.executable, "-m", "jacbench", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


if __name__ == "__main__":  # python tests/test_docs_run.py: rewrite every shown output
    for page in PAGES:
        text = page.read_text()
        for block in blocks(page):
            if block.lang == "text" and block.text.startswith("$ jacbench "):
                command = block.text.split("\n", 1)[0]
                lines = [line.rstrip() for line in _printed(block).stdout.splitlines()]
                shown = "\n".join([command, *lines])
                text = text.replace(f"```text\n{block.text}```", f"```text\n{shown}\n```")
        page.write_text(text)
