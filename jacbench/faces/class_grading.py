"""Grading a class: every student's routine checked on its own, into one table.

``grade_class(find_submissions(folder, function), function=..., out=...)`` gives every entry
of the folder a row: a ``.py`` file or a folder per student, and anything else (a file that
is not Python, a link to nothing, an empty folder) a row saying why it holds no routine.
Each student is loaded, checked on ``jacbench check``'s cases and, if every case passes,
timed, in a sandbox of their own (NOTE: [Sandboxes] in ``jacbench.runs.sandbox``) closed
before their row is written, so that one student's crash, endless loop, syntax error or
missing function is that student's row and never the class's end. jacbench's peers are
timed beside each student, in turn with them (NOTE: [A leaderboard that means something] in
``class_speed``). The class goes to ``grades.csv``
and ``summary.md``, rewritten after each student (NOTE: [A class's files] in
``class_files``), and, for one submission, to Gradescope's ``results.json``.
"""

from __future__ import annotations

import contextlib
import errno
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jacbench.faces.class_files import (
    COLUMNS,
    OUTPUT,
    ClassFolder,
    ClassFolderError,
    class_summary,
    empty_row,
    grades_frame,
    gradescope_results,
    leaderboard,
    write_gradescope,
)
from jacbench.faces.class_speed import (
    PEERS,
    RANKED_BY,
    RATIO_COLUMNS,
    Grid,
    Load,
    Watch,
    speed_against,
    time_student,
)
from jacbench.faces.grading import QUICK_SHAPES, grade_cases, grading_cases
from jacbench.measure.machine import now_iso
from jacbench.measure.rows import Mistake
from jacbench.runs import sandbox
from jacbench.runs.grid import PRESETS
from jacbench.runs.options import DEFAULT_CALL_TIMEOUT
from jacbench.runs.routines import LIBRARY, TEXTBOOK, Routine, RoutineError, load

__all__ = [
    "COLUMNS",
    "CONVENTIONS",
    "OUTPUT",
    "PEERS",
    "ClassFolderError",
    "ClassGrades",
    "ClassProgress",
    "Submission",
    "class_summary",
    "find_submissions",
    "grade_class",
    "grade_submission",
    "grades_frame",
    "gradescope_results",
    "grading_cases",
    "leaderboard",
    "one_submission",
    "write_gradescope",
]

CONVENTIONS = (TEXTBOOK, LIBRARY)
# What keeps a student who passed every case from a time at a shape without making the
# routine wrong: it ran out of time, or its process died. Any other mistake at a timed
# shape (a wrong result, wrong when timed, an exception) fails the student.
_NOT_WRONG = frozenset({Mistake.TIMEOUT.value, Mistake.CRASH.value})
# Python's own cache of compiled files: never a student's work, made by anyone who imported
# a submission. The one name in a class's folder that gets no row.
IGNORED = frozenset({"__pycache__"})


@dataclass(frozen=True)
class Submission:
    """One entry of the class's folder: a student's name, the routine's spec
    (file.py:function) and the files that are theirs (the file, or their folder), copied
    into their sandbox alone; or no spec and why (``problem``). ``entry``: the folder's
    entry it comes from."""

    student: str
    spec: str | None  # None: no file of theirs defines the function
    problem: str = ""  # why there is no spec
    files: str | None = None
    entry: str = ""

    @property
    def source(self) -> str:
        """grades.csv's ``source``: the spec, else the entry (what a resume matches)."""
        return self.spec or self.entry


# ------------------------------------------------------------------------ submissions
def find_submissions(
    folder: Path, function: str, *, ignore: Sequence[Path] = ()
) -> list[Submission]:
    """One submission per entry of ``folder`` (``__pycache__`` and ``ignore``, the grades'
    own folder where it lies inside, aside), in name order: a ``.py`` file (the student is
    its stem), a folder (the first ``.py`` file, by path, that defines ``function``), or
    anything else, which holds no routine and says why. A link is followed within
    ``folder`` only. Two entries that would share a student name (``x.py`` and ``x/``) keep
    their whole names.

    Raises:
        ValueError: no such folder, or nothing in it.
    """
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder of submissions")
    root = folder.absolute()
    skip = {p.absolute() for p in ignore}
    entries = [e for e in sorted(root.iterdir()) if e.name not in IGNORED and e not in skip]
    if not entries:
        raise ValueError(f"{folder} is empty: there is nothing to grade")
    found = [_entry_submission(entry, function, root) for entry in entries]
    twice = {name for name, n in Counter(s.student for s in found).items() if n > 1}
    return [
        Submission(Path(s.entry).name, s.spec, s.problem, s.files, s.entry)
        if s.student in twice
        else s
        for s in found
    ]


def one_submission(path: Path, function: str) -> Submission:
    """A single submission (Gradescope's): a ``.py`` file, or a folder whose files are one
    student's.

    Raises:
        ValueError: neither.
    """
    if path.is_file() and path.suffix == ".py":
        return _entry_submission(path.absolute(), function, path.absolute().parent)
    if path.is_dir():
        return _folder_submission(path.name, path.absolute(), function, path.absolute())
    raise ValueError(f"{path} is neither a .py file nor a folder")


def _missing(student: str, entry: Path, problem: str) -> Submission:
    return Submission(student, None, problem, entry=str(entry))


def _entry_submission(entry: Path, function: str, root: Path) -> Submission:
    name = entry.name
    student = name[: -len(".py")] if name.endswith(".py") and len(name) > 3 else name
    real = entry
    if entry.is_symlink():
        try:
            real = entry.resolve(strict=True)
        except FileNotFoundError:
            return _missing(student, entry, f"{name} is a link to a missing file")
        except (RuntimeError, OSError) as error:  # 3.11: RuntimeError; later: ELOOP
            if isinstance(error, RuntimeError) or error.errno == errno.ELOOP:
                return _missing(student, entry, f"{name} is a link that loops back on itself")
            return _missing(student, entry, f"{name} cannot be followed ({error.strerror})")
        if real == root.resolve() or not real.is_relative_to(root.resolve()):
            return _missing(student, entry, f"{name} is a link out of the class's folder")
    if real.is_dir():
        return _folder_submission(name, real, function, entry)
    if not real.is_file():
        return _missing(name, entry, f"{name} is not a regular file")
    if not (name.endswith(".py") and real.suffix == ".py"):
        return _missing(name, entry, f"{name} is not a Python file")
    unreadable = _unreadable(real)
    if unreadable:
        return _missing(student, entry, f"{name} cannot be read ({unreadable})")
    return Submission(student, f"{real}:{function}", files=str(real), entry=str(entry))


def _unreadable(path: Path) -> str:
    """Why ``path`` cannot be read ("" when it can)."""
    try:
        with path.open("rb") as stream:
            stream.read(1)
    except OSError as error:
        return error.strerror or str(error)
    return ""


def _folder_submission(student: str, folder: Path, function: str, entry: Path) -> Submission:
    """A folder's first ``.py`` file (by path) that defines ``function``, of those its
    sandbox copies (regular files, not links, nothing hidden or cached)."""
    defines = re.compile(rf"^\s*def\s+{re.escape(function)}\s*\(", re.MULTILINE)
    unread = 0
    for path in sorted(folder.rglob("*.py")):
        parts = path.relative_to(folder).parts
        if any(p.startswith(".") or p in IGNORED for p in parts) or path.is_symlink():
            continue
        if not path.is_file():
            continue
        try:
            text = path.read_text(errors="replace")
        except OSError:
            unread += 1
            continue
        if defines.search(text):
            return Submission(student, f"{path}:{function}", files=str(folder), entry=str(entry))
    try:
        empty = not any(folder.iterdir())
    except OSError as error:
        return _missing(student, entry, f"{entry.name}/ cannot be read ({error.strerror})")
    if empty:
        return _missing(student, entry, f"{entry.name}/ is empty")
    unread_note = f" ({unread} could not be read)" if unread else ""
    return _missing(student, entry, f"no .py file in {entry.name}/ defines {function}{unread_note}")


# ------------------------------------------------------------------------ one student
def grade_submission(
    submission: Submission,
    *,
    convention: str | None = None,
    call_timeout: float = DEFAULT_CALL_TIMEOUT,
    grid: Grid | None = None,
    min_time: float = 0.05,
    owner: sandbox.Owner | None = None,
) -> dict[str, Any]:
    """One student's row of grades.csv (``COLUMNS``), and their cases under ``"details"``.
    A routine that passes is timed at ``grid``'s shapes against jacbench's peers timed
    beside it (not timed without a grid). ``owner``: the student's sandbox (by default
    their own, left open: close it with ``sandbox.close``)."""
    row = empty_row(submission.student, submission.source)
    if submission.spec is None:
        return _failed(row, submission.problem, Mistake.MISSING_FUNCTION.value)
    files = Path(submission.files or submission.spec.rpartition(":")[0])
    owner = owner or sandbox.submission_owner(submission.student, files)
    try:
        routine = load(submission.spec, timeout=call_timeout, owner=owner)
    except RoutineError as error:
        problem = str(error).removeprefix(f"{submission.spec}: ")
        return _failed(row, problem, error.mistake.value)
    if convention is not None and routine.convention != convention:
        problem = (
            f"takes ({_arguments(routine.convention)}); this exercise's routine "
            f"takes ({_arguments(convention)})"
        )
        return _failed(row, problem, Mistake.WRONG_ARGUMENTS.value)
    cases = grade_cases(routine, call_timeout)
    row["details"] = cases
    row["cases"] = len(cases)
    row["cases_passed"] = sum(bool(c["passed"]) for c in cases)
    errors = [c["max_rel_err"] for c in cases if not math.isnan(c["max_rel_err"])]
    row["max_rel_err"] = max(errors) if errors else math.nan
    first = next((c for c in cases if not c["passed"]), None)
    if first is not None:
        return _failed(row, f"{first['case']}: {first['problem']}", first["mistake"])
    row["passed"] = True
    if grid is not None:
        _time(row, routine, grid, owner, call_timeout, min_time)
    return row


def _arguments(convention: str) -> str:
    return "x, L, param_dict" if convention == TEXTBOOK else "net, x"


def _failed(row: dict[str, Any], problem: str, mistake: str) -> dict[str, Any]:
    """A student's row that failed: the problem in words, the mistake as its kind."""
    row["problem"] = problem
    row["mistake"] = mistake
    return row


def _time(
    row: dict[str, Any],
    routine: Routine,
    grid: Grid,
    owner: sandbox.Owner,
    call_timeout: float,
    min_time: float,
) -> None:
    """The routine and jacbench's peers timed in turn at the class's shapes, the student's
    sandbox paused while the peers run, and set against each other (NOTE: [A leaderboard
    that means something]); ranked only with a time at every shape."""
    timed = time_student(
        routine.as_method(),
        grid,
        min_time=min_time,
        call_timeout=call_timeout,
        pause=lambda: sandbox.paused(owner),
    )
    speeds = {
        p: speed_against(timed.rows, timed.samples, routine.name, timed.peers, p) for p in PEERS
    }
    for peer, column in RATIO_COLUMNS.items():
        row[column] = speeds[peer].ratio
    ranked = speeds[RANKED_BY]
    row["time_vs_reverse_low"], row["time_vs_reverse_high"] = ranked.low, ranked.high
    if ranked.mistake and ranked.mistake not in _NOT_WRONG:  # right on the cases only
        row["passed"] = False
        row["problem"] = ranked.missing
        row["mistake"] = ranked.mistake
    elif ranked.missing:
        row["problem"] = f"not ranked: {ranked.missing}"
        row["mistake"] = ranked.mistake
    else:
        row["ranked"] = True


# ------------------------------------------------------------------------ the class
class ClassProgress:
    """What a caller of ``grade_class`` is told as the class goes (here: nothing)."""

    def resuming(self, kept: int, to_grade: int) -> None:
        """A resumed class: ``kept`` students' rows kept, ``to_grade`` to go."""

    def grading(self, submission: Submission) -> None:
        """A student is about to be graded."""

    def graded(self, row: Mapping[str, Any]) -> None:
        """A student's row is final (and on disk, with an out folder)."""


@dataclass
class ClassGrades:
    """A graded class: every entry's row in the folder's order (kept rows of students no
    longer there after them), the machine's load, what was written."""

    rows: list[dict[str, Any]]
    load: Load
    written: list[Path] = field(default_factory=list)
    kept: int = 0  # rows kept from an earlier grade (--resume)


def grade_class(
    submissions: Sequence[Submission],
    *,
    function: str,
    out: Path | None = None,
    resume: bool = False,
    convention: str | None = None,
    quick: bool = False,
    call_timeout: float = DEFAULT_CALL_TIMEOUT,
    min_time: float | None = None,
    progress: ClassProgress | None = None,
    command: str | None = None,
) -> ClassGrades:
    """Grade every submission, each student in a sandbox of their own (timed beside
    jacbench's peers), closed before their row is written; with ``out``, grades.csv and
    summary.md rewritten after each (NOTE: [A class's files]), ``resume`` keeping the rows
    of students already there (same name, same source).

    Raises:
        ValueError: an unknown convention; ``ClassFolderError``: ``out`` in use, holding
            grades without ``resume`` or none with it, or graded with other settings.
        KeyboardInterrupt: Ctrl-C or (in the CLI) SIGTERM; what finished stays on disk.
    """
    if convention is not None and convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; expected one of: textbook, library")
    grading = _Grading(
        function,
        convention,
        quick,
        call_timeout,
        min_time or (0.05 if quick else 0.2),
        progress or ClassProgress(),
    )
    if out is None:
        return grading.run(submissions, None)
    record = {"function": function, "convention": convention, "quick": quick}
    record["command"] = command
    with ClassFolder(out, record, resume=resume) as folder:
        try:
            graded = grading.run(submissions, folder)
        except KeyboardInterrupt:
            with contextlib.suppress(OSError):
                folder.note(interrupted=now_iso())
            raise
        folder.note(finished=now_iso())
    return graded


@dataclass
class _Grading:
    """One grade of a class under way: its settings and who to tell."""

    function: str
    convention: str | None
    quick: bool
    call_timeout: float
    min_time: float
    progress: ClassProgress
    spans: list[Mapping[str, Any]] = field(default_factory=list)

    def run(self, submissions: Sequence[Submission], folder: ClassFolder | None) -> ClassGrades:
        """Every row: kept ones where they are, the others as their students finish."""
        kept = folder.kept if folder is not None else {}
        names = {s.student for s in submissions}
        extra = [r for (student, _), r in kept.items() if student not in names]
        done = {
            i: kept[(s.student, s.source)]
            for i, s in enumerate(submissions)
            if (s.student, s.source) in kept
        }
        if kept:
            self.progress.resuming(len(done), len(submissions) - len(done))
        grid = tuple(QUICK_SHAPES if self.quick else PRESETS["textbook"].shapes)
        graded = ClassGrades([], self._load(folder), kept=len(done))
        for index, submission in enumerate(submissions):
            if index in done:
                continue
            self.progress.grading(submission)
            row, output, span = self._graded(submission, grid)
            done[index] = row
            self._watched(folder, span)
            if folder is not None:
                if output is not None:
                    graded.written.append(folder.write_output(submission.student, output))
                rows = [*(done[i] for i in sorted(done)), *extra]
                graded.written = _files(graded.written, folder.write(rows, self.function))
            self.progress.graded(row)
        graded.rows = [*(done[i] for i in sorted(done)), *extra]
        graded.load = self._load(folder)
        if folder is not None and len(graded.rows) == graded.kept + len(extra):
            # nothing graded this time: the files still say this session's load
            graded.written = _files(graded.written, folder.write(graded.rows, self.function))
        return graded

    def _graded(
        self, submission: Submission, grid: Grid
    ) -> tuple[dict[str, Any], str | None, Mapping[str, Any] | None]:
        """The student's row, what their code printed (None: no sandbox was opened) and the
        load while they were graded; their sandbox closed before this returns."""
        watch = Watch(submission.student)
        if submission.spec is None:
            return grade_submission(submission), None, watch.record()
        files = Path(submission.files or submission.spec.rpartition(":")[0])
        owner = sandbox.submission_owner(submission.student, files)
        with sandbox.closing_all():  # and anything else opened for them
            try:
                row = grade_submission(
                    submission,
                    convention=self.convention,
                    call_timeout=self.call_timeout,
                    grid=grid,
                    min_time=self.min_time,
                    owner=owner,
                )
            finally:
                output = sandbox.close(owner)
        return row, output, watch.record()

    def _watched(self, folder: ClassFolder | None, span: Mapping[str, Any] | None) -> None:
        if span is None:
            return
        if folder is not None:
            folder.watched(span)
        else:
            self.spans.append(span)

    def _load(self, folder: ClassFolder | None) -> Load:
        return folder.load if folder is not None else Load(tuple(self.spans))


def _files(written: list[Path], more: list[Path]) -> list[Path]:
    """``written`` with ``more`` added, each path once, in order."""
    return list(dict.fromkeys([*written, *more]))
