"""A graded class's folder (``--out``): grades.csv, summary.md, grading.json, what each
student printed; locked while a grade writes it, read back by a resume.

NOTE: [A class's files]
    Every file is written by jacbench's own process, after the student's sandbox is closed
    (no process of theirs is alive), through a temporary file of its own (``mkstemp``: made
    new, never a link someone left) renamed over the old one: a reader, or a grade stopped
    mid-write, sees the old file or the new. grades.csv and summary.md are rewritten after
    every student, so what is finished is on disk whatever ends the grade. The folder holds
    a lock (``.lock``, as a run folder does) for as long as a grade writes it: a second grade
    into it is refused. grading.json holds what a resume must repeat (the function, the
    convention, ``--quick``), each session's start and end, and the machine's load.
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import filelock
import pandas as pd

from jacbench.faces.class_speed import MIN_GAIN, PEERS, Load, ranks
from jacbench.measure.machine import now_iso
from jacbench.runs import sandbox
from jacbench.runs.results import LOCK_NAME

GRADES, SUMMARY, RECORD, OUTPUT = "grades.csv", "summary.md", "grading.json", "output"
# grades.csv's columns, in order; later ones only ever appended.
COLUMNS = (
    "student",
    "passed",
    "cases_passed",
    "cases",
    "mistake",
    "problem",
    "max_rel_err",
    "time_vs_reverse",
    "time_vs_textbook",
    "source",
    "time_vs_reverse_low",
    "time_vs_reverse_high",
    "ranked",
)
_INTS, _BOOLS = ("cases_passed", "cases"), ("passed", "ranked")
_FLOATS = (
    "max_rel_err",
    "time_vs_reverse",
    "time_vs_textbook",
    "time_vs_reverse_low",
    "time_vs_reverse_high",
)
# What a resumed class must repeat (grading.json), each with the option that sets it.
REPEATED = {"function": "--function", "convention": "--convention", "quick": "--quick"}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


class ClassFolderError(ValueError):
    """The folder cannot take this grade: in use, holds grades (without resume), holds
    none to resume, or another grading's, in one line."""


def empty_row(student: str, source: str) -> dict[str, Any]:
    """A student's row before grading: nothing passed, no speed, not ranked."""
    row: dict[str, Any] = dict.fromkeys(COLUMNS, "")
    row.update(student=student, source=source, passed=False, ranked=False)
    row.update(cases_passed=0, cases=0)
    row.update(dict.fromkeys(_FLOATS, math.nan))
    row["details"] = []
    return row


class ClassFolder:
    """``--out`` while a class is graded: locked, its earlier rows read (``resume``), each
    file written whole and atomically (NOTE: [A class's files])."""

    def __init__(self, out: Path, record: Mapping[str, Any], *, resume: bool = False) -> None:
        self.out = Path(out)
        self.record: dict[str, Any] = dict(record)
        self.resume = resume
        self.kept: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = filelock.FileLock(self.out / LOCK_NAME, is_singleton=False)

    def __enter__(self) -> ClassFolder:
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            self._lock.acquire(timeout=0)
        except filelock.Timeout:
            raise ClassFolderError(
                f"{self.out} is in use by another jacbench grade; wait for it to finish, or "
                "choose another --out"
            ) from None
        except OSError as error:
            raise ClassFolderError(f"cannot write to {self.out}: {error.strerror}") from None
        try:
            self._open()
        except BaseException:
            self._lock.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def _open(self) -> None:
        holds = [n for n in (GRADES, RECORD) if (self.out / n).exists()]
        if holds and not self.resume:
            raise ClassFolderError(
                f"{self.out} holds grades already ({holds[0]}): continue them with --resume, "
                "or choose another --out"
            )
        if self.resume and not holds:
            raise ClassFolderError(f"nothing to resume in {self.out}: it holds no grades")
        earlier = _read_json(self.out / RECORD) if self.resume else {}
        for name, option in REPEATED.items():
            if name in earlier and earlier[name] != self.record.get(name):
                raise ClassFolderError(
                    f"{self.out} was graded {_setting(option, earlier[name])}, not "
                    f"{_setting(option, self.record.get(name))}: resume with the same, or "
                    "choose another --out"
                )
        self.kept = {(r["student"], r["source"]): r for r in read_grades(self.out / GRADES)}
        sessions = [*earlier.get("sessions", []), {"started": now_iso(), "finished": None}]
        self.record.update(sessions=sessions, machine=list(earlier.get("machine", [])))
        self.note()

    @property
    def load(self) -> Load:
        """The machine's load over the class, every session's."""
        return Load(tuple(self.record["machine"]))

    def watched(self, span: Mapping[str, Any]) -> None:
        """Add a watched span's load (``class_speed.Watch.record``) to grading.json."""
        self.record["machine"].append(dict(span))
        self.note()

    def note(self, **session: Any) -> None:
        """Rewrite grading.json, with ``session``'s fields (finished, interrupted) added to
        this session's record."""
        self.record["sessions"][-1].update(session)
        write_atomic(self.out / RECORD, json.dumps(self.record, indent=2, default=str) + "\n")

    def write(self, rows: Sequence[Mapping[str, Any]], function: str) -> list[Path]:
        """grades.csv and summary.md of ``rows``, each replaced whole; the files."""
        grades = grades_frame(rows)
        write_atomic(self.out / GRADES, _csv_text(grades))
        summary = class_summary(grades, function, self.load, sandbox.unsealed_warning())
        write_atomic(self.out / SUMMARY, summary)
        return [self.out / GRADES, self.out / SUMMARY]

    def write_output(self, student: str, text: str) -> Path:
        """What the student's code printed (captured by their sandbox), as
        ``output/<student>.txt``."""
        path = self.out / OUTPUT / f"{student}.txt"
        path.parent.mkdir(exist_ok=True)
        write_atomic(path, text)
        return path


def _setting(option: str, value: object) -> str:
    """``with --function f``, ``with --quick``, ``without --quick``."""
    if isinstance(value, bool) or value is None:
        return f"{'with' if value else 'without'} {option}"
    return f"with {option} {value}"


def write_atomic(path: Path, text: str) -> None:
    """``text`` into ``path`` through a new temporary file beside it, renamed over it."""
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(handle, 0o666 & ~_UMASK)  # as open() would make it, not mkstemp's 0600
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        raise ClassFolderError(f"{path} is damaged: it is not JSON") from None
    if not isinstance(data, dict):
        raise ClassFolderError(f"{path} is damaged: it is not a JSON object")
    return data


def read_grades(path: Path) -> list[dict[str, Any]]:
    """grades.csv's rows, typed (a file from before the later columns: those empty).

    Raises:
        ClassFolderError: the file is not a grades file.
    """
    if not path.exists():
        return []
    try:
        with path.open(newline="", encoding="utf-8") as stream:
            records = list(csv.DictReader(stream))
            header = list(records[0].keys()) if records else []
    except (OSError, UnicodeDecodeError, csv.Error):
        raise ClassFolderError(f"{path} is not a jacbench grades file") from None
    if header and (header != list(COLUMNS[: len(header)]) or "source" not in header):
        raise ClassFolderError(f"{path} is not a jacbench grades file (unexpected columns)")
    return [_typed(record) for record in records]


def _typed(record: Mapping[str, str | None]) -> dict[str, Any]:
    row = empty_row(record["student"] or "", record.get("source") or "")
    for name in COLUMNS:
        text = record.get(name)
        if text is None or name in ("student", "source"):
            continue
        if name in _BOOLS:
            row[name] = text == "True"
        elif name in _INTS:
            row[name] = int(text) if text else 0
        elif name in _FLOATS:
            row[name] = float(text) if text else math.nan
        else:
            row[name] = text
    return row


def grades_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """grades.csv's table."""
    return pd.DataFrame([{k: r[k] for k in COLUMNS} for r in rows], columns=list(COLUMNS))


def _csv_text(grades: pd.DataFrame) -> str:
    return grades.to_csv(index=False, lineterminator="\n")


# --------------------------------------------------------------------------- summary.md
def class_summary(
    grades: pd.DataFrame, function: str, load: Load | None = None, unsealed: str | None = None
) -> str:
    """summary.md: the class at a glance, the machine's load (and ``unsealed``: where the
    students' code ran as root), the mistakes counted, the ranked routines (ties where the
    intervals overlap), the rest, every student."""
    passed = grades[grades["passed"].astype(bool)]
    ranked = grades[grades["ranked"].astype(bool)]
    lines = [
        f"# {function}: grades",
        "",
        f"{len(passed)} of {len(grades)} students pass every case; {len(ranked)} "
        f"{'is' if len(ranked) == 1 else 'are'} ranked by speed.",
        "",
    ]
    warnings = [load.warning() if load is not None else None, unsealed]
    lines += [line for w in warnings if w for line in (f"> **Warning:** {w}", "")]
    mistakes = grades.loc[~grades["passed"].astype(bool), "mistake"].value_counts()
    if not mistakes.empty:
        lines += ["## Mistakes", "", "| mistake | students |", "|---|---:|"]
        lines += [f"| {name} | {count} |" for name, count in mistakes.items()]
        lines.append("")
    if not passed.empty:
        lines += _leaderboard(ranked, passed[~passed["ranked"].astype(bool)])
    lines += [
        "## Every student",
        "",
        "| student | passed | cases | problem |",
        "|---|---|---:|---|",
    ]
    lines += [
        f"| {_cell(r.student)} | {'yes' if r.passed else 'no'} | {r.cases_passed}/{r.cases} | "
        f"{_cell(r.problem)} |"
        for r in grades.itertuples()
    ]
    lines += ["", f"What each student's code printed is in `{OUTPUT}/<student>.txt`."]
    return "\n".join(lines) + "\n"


def _leaderboard(ranked: pd.DataFrame, unranked: pd.DataFrame) -> list[str]:
    lines = [
        "## Speed of the correct routines",
        "",
        f"Time over jacbench's reverse mode and over the textbook's routine (`{PEERS[1]}`), "
        "each the geometric mean over the shapes (< 1: faster), the first with its 95% "
        "interval; the peers were timed beside each student. Students not told apart (their "
        f"intervals overlap, or one is under {MIN_GAIN:.0%} faster) share a rank (=).",
        "",
    ]
    if not ranked.empty:
        placed = leaderboard(ranked)
        lines += [
            "| rank | student | × jacbench reverse | 95% interval | × textbook |",
            "|---:|---|---:|---|---:|",
        ]
        lines += [
            f"| {place} | {_cell(r.student)} | {_ratio(r.time_vs_reverse)} | "
            f"{_ratio(r.time_vs_reverse_low)}–{_ratio(r.time_vs_reverse_high)} | "
            f"{_ratio(r.time_vs_textbook)} |"
            for place, r in placed
        ]
        lines.append("")
    if not unranked.empty:
        lines += ["Not ranked (right at every case, without a time to compare):", ""]
        lines += [
            f"- {_cell(r.student)}: {_cell(str(r.problem).removeprefix('not ranked: '))}"
            for r in unranked.itertuples()
        ]
        lines.append("")
    return lines


def leaderboard(ranked: pd.DataFrame) -> list[tuple[str, Any]]:
    """The ranked students' rows in order, each with its place (``2=`` where shared)."""
    intervals = {
        r.student: (r.time_vs_reverse, r.time_vs_reverse_low, r.time_vs_reverse_high)
        for r in ranked.itertuples()
    }
    found = ranks(intervals)
    shared = pd.Series(found).value_counts()
    ordered = sorted(ranked.itertuples(), key=lambda r: (found[r.student], r.time_vs_reverse))
    return [
        (f"{found[r.student]}{'=' if shared[found[r.student]] > 1 else ''}", r) for r in ordered
    ]


def _ratio(value: float) -> str:
    return "—" if value is None or pd.isna(value) else f"{value:.2f}"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


# ------------------------------------------------------------------------- Gradescope
def gradescope_results(
    row: Mapping[str, Any], elapsed_s: float, cases: int, load: Load | None = None
) -> dict[str, Any]:
    """Gradescope's autograder results.json for one submission: a test per case (one point
    each), or one failed test saying why it could not be graded (worth ``cases``); the
    speed on the leaderboard where the student is ranked; the machine's load."""
    # Right on the cases and wrong when timed is wrong: no case's point stands.
    timed_wrong = not row["passed"] and row["cases_passed"] == row["cases"] and row["cases"] > 0
    if row["details"]:
        tests = [
            {
                "name": f"{case['case']} ({case['widths']}, {case['dtype']})",
                "score": 1.0 if case["passed"] and not timed_wrong else 0.0,
                "max_score": 1.0,
                "status": "passed" if case["passed"] and not timed_wrong else "failed",
                "output": (
                    f"right here, but wrong when timed: {row['problem']}"
                    if timed_wrong and case["passed"]
                    else case["problem"] or f"max relative error {case['max_rel_err']:.2g}"
                ),
                "visibility": "visible",
            }
            for case in row["details"]
        ]
    else:
        tests = [
            {
                "name": "loading the routine",
                "score": 0.0,
                "max_score": float(cases),
                "status": "failed",
                "output": row["problem"],
                "visibility": "visible",
            }
        ]
    output = "Every case passes." if row["passed"] else f"Not yet: {row['problem']}"
    results: dict[str, Any] = {
        "execution_time": round(elapsed_s, 1),
        "output": output,
        "stdout_visibility": "hidden",
        "tests": tests,
    }
    if row["passed"] and row["ranked"]:
        results["output"] += (
            f" Time over jacbench's reverse mode: {row['time_vs_reverse']:.2f}× (95% interval "
            f"{row['time_vs_reverse_low']:.2f}–{row['time_vs_reverse_high']:.2f})."
        )
        results["leaderboard"] = [
            {
                "name": "× jacbench reverse",
                "value": round(row["time_vs_reverse"], 3),
                "order": "asc",
            }
        ]
    elif row["passed"]:
        results["output"] += f" {row['problem']}."
    warning = load.warning() if load is not None else None
    if warning:
        results["output"] += f" {warning}"
    return results


def write_gradescope(
    path: Path, row: Mapping[str, Any], elapsed_s: float, cases: int, load: Load | None
) -> Path:
    """Gradescope's results.json for one submission, replaced whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(gradescope_results(row, elapsed_s, cases, load), indent=2)
    write_atomic(path, text + "\n")
    return path
