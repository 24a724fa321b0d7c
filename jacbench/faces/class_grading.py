"""Grading a class: every student's routine checked on its own, into one table.

``grade_class(folder, function=...)`` finds the submissions (one ``.py`` file or one folder
per student), loads and grades each as ``jacbench check`` does, in a worker process (NOTE:
[Workers] in ``jacbench.runs.workers``), so that one student's crash, endless loop, syntax
error or missing function is that student's row and never the class's end. A routine that
passes is timed against jacbench's reverse mode and the textbook's routine. The class goes
to ``grades.csv`` (one row per student), ``summary.md`` (how many passed, the mistakes
counted, a speed leaderboard) and, for one submission, Gradescope's ``results.json``.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from jacbench.faces.grading import QUICK_SHAPES, grade_cases, grading_cases
from jacbench.measure.rows import Mistake
from jacbench.runs import sandbox
from jacbench.runs.grid import PRESETS
from jacbench.runs.harness import sweep
from jacbench.runs.options import DEFAULT_CALL_TIMEOUT
from jacbench.runs.routines import LIBRARY, TEXTBOOK, Routine, RoutineError, load

# A passing routine is timed against these, at the textbook's shapes.
PEERS = ("reverse", "naive-reverse")
CONVENTIONS = (TEXTBOOK, LIBRARY)
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
)


@dataclass(frozen=True)
class Submission:
    """One student's work: a name, the routine's spec (file.py:function) and the files that
    are theirs (the file, or their folder), copied into their sandbox alone."""

    student: str
    spec: str | None  # None: no file of theirs defines the function
    problem: str = ""  # why there is no spec
    files: str | None = None


def find_submissions(folder: Path, function: str) -> list[Submission]:
    """One submission per ``.py`` file or folder in ``folder`` (hidden ones aside); in a
    folder, the first ``.py`` file (by name) that defines ``function``.

    Raises:
        ValueError: no such folder, or nothing in it to grade.
    """
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder of submissions")
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith((".", "_")):
            continue
        if entry.is_file() and entry.suffix == ".py":
            found.append(Submission(entry.stem, f"{entry}:{function}", files=str(entry)))
        elif entry.is_dir():
            found.append(_folder_submission(entry, function))
    if not found:
        raise ValueError(f"{folder} holds no .py file or folder to grade")
    return found


def _folder_submission(folder: Path, function: str) -> Submission:
    defines = re.compile(rf"^\s*def\s+{re.escape(function)}\s*\(", re.MULTILINE)
    for path in sorted(folder.rglob("*.py")):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        if defines.search(text):
            return Submission(folder.name, f"{path}:{function}", files=str(folder))
    return Submission(folder.name, None, f"no .py file in {folder.name}/ defines {function}")


def grade_submission(
    submission: Submission,
    *,
    convention: str | None = None,
    quick: bool = False,
    call_timeout: float = DEFAULT_CALL_TIMEOUT,
    min_time: float | None = None,
) -> dict[str, Any]:
    """One student's row of grades.csv (``COLUMNS``), and their cases under ``"details"``."""
    row: dict[str, Any] = dict.fromkeys(COLUMNS, "")
    row.update(student=submission.student, passed=False, cases_passed=0, cases=0)
    row.update(max_rel_err=math.nan, time_vs_reverse=math.nan, time_vs_textbook=math.nan)
    row["source"] = submission.spec or ""
    row["details"] = []
    if submission.spec is None:
        return _failed(row, submission.problem, Mistake.MISSING_FUNCTION.value)
    files = Path(submission.files or submission.spec.rpartition(":")[0])
    owner = sandbox.submission_owner(submission.student, files)
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
    _time(row, routine, quick, call_timeout, min_time)
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
    quick: bool,
    call_timeout: float,
    min_time: float | None,
) -> None:
    """The routine's time over jacbench reverse mode's and the textbook routine's, each the
    geometric mean over the shapes (all measured in one process, point by point)."""
    shapes = QUICK_SHAPES if quick else PRESETS["textbook"].shapes
    timings = sweep(
        [routine.as_method(), *PEERS],
        shapes=shapes,
        min_time=min_time or (0.05 if quick else 0.2),
        call_timeout=call_timeout,
    )
    timed = timings[timings["median_s"].notna()]
    medians = timed.pivot_table(index="widths", columns="method", values="median_s")
    if routine.name not in medians.columns:
        mine = timings[timings["method"] == routine.name]
        row["problem"] = f"timing failed: {mine['message'].iloc[0]}" if len(mine) else ""
        return
    for peer, column in zip(PEERS, ("time_vs_reverse", "time_vs_textbook")):
        if peer in medians.columns:
            ratios = (medians[routine.name] / medians[peer]).dropna()
            row[column] = math.exp(float(pd.Series(ratios).map(math.log).mean()))


def grade_class(
    submissions: Sequence[Submission],
    *,
    convention: str | None = None,
    quick: bool = False,
    call_timeout: float = DEFAULT_CALL_TIMEOUT,
    min_time: float | None = None,
    progress: Callable[[Submission], None] | None = None,
) -> list[dict[str, Any]]:
    """Every submission's row, in order; ``progress`` is told of each before it is graded."""
    if convention is not None and convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; expected one of: textbook, library")
    rows = []
    for submission in submissions:
        if progress is not None:
            progress(submission)
        with sandbox.closing_all():  # the student's sandbox and all it started, gone after
            row = grade_submission(
                submission,
                convention=convention,
                quick=quick,
                call_timeout=call_timeout,
                min_time=min_time,
            )
        rows.append(row)
    return rows


def grades_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """grades.csv's table."""
    return pd.DataFrame([{k: r[k] for k in COLUMNS} for r in rows], columns=list(COLUMNS))


def class_summary(grades: pd.DataFrame, function: str) -> str:
    """summary.md: the class at a glance, the mistakes counted, the fastest correct ones."""
    passed = grades[grades["passed"]]
    lines = [
        f"# {function}: grades",
        "",
        f"{len(passed)} of {len(grades)} students pass every case.",
        "",
    ]
    mistakes = grades.loc[~grades["passed"], "mistake"].value_counts()
    if not mistakes.empty:
        lines += ["## Mistakes", "", "| mistake | students |", "|---|---:|"]
        lines += [f"| {name} | {count} |" for name, count in mistakes.items()]
        lines.append("")
    if not passed.empty:
        board = passed.sort_values("time_vs_reverse", na_position="last")
        lines += [
            "## Speed of the correct routines",
            "",
            "Time over jacbench's reverse mode and over the textbook's routine (geometric mean "
            "over the timed shapes; < 1: faster).",
            "",
            "| student | × jacbench reverse | × textbook |",
            "|---|---:|---:|",
        ]
        lines += [
            f"| {r.student} | {_ratio(r.time_vs_reverse)} | {_ratio(r.time_vs_textbook)} |"
            for r in board.itertuples()
        ]
        lines.append("")
    lines += [
        "## Every student",
        "",
        "| student | passed | cases | problem |",
        "|---|---|---:|---|",
    ]
    lines += [
        f"| {r.student} | {'yes' if r.passed else 'no'} | {r.cases_passed}/{r.cases} | "
        f"{_cell(r.problem)} |"
        for r in grades.itertuples()
    ]
    return "\n".join(lines) + "\n"


def _ratio(value: float) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.2f}"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def gradescope_results(row: dict[str, Any], elapsed_s: float) -> dict[str, Any]:
    """Gradescope's autograder results.json for one submission: a test per case (one point
    each), or one failed test saying why it could not be graded; the speed on the
    leaderboard."""
    if row["details"]:
        tests = [
            {
                "name": f"{case['case']} ({case['widths']}, {case['dtype']})",
                "score": 1.0 if case["passed"] else 0.0,
                "max_score": 1.0,
                "status": "passed" if case["passed"] else "failed",
                "output": case["problem"] or f"max relative error {case['max_rel_err']:.2g}",
                "visibility": "visible",
            }
            for case in row["details"]
        ]
    else:
        tests = [
            {
                "name": "loading the routine",
                "score": 0.0,
                "max_score": float(len(grading_cases(False))),
                "status": "failed",
                "output": row["problem"],
                "visibility": "visible",
            }
        ]
    results: dict[str, Any] = {
        "execution_time": round(elapsed_s, 1),
        "output": "Every case passes." if row["passed"] else f"Not yet: {row['problem']}",
        "stdout_visibility": "hidden",
        "tests": tests,
    }
    if row["passed"] and not math.isnan(row["time_vs_reverse"]):
        results["output"] += f" Time over jacbench's reverse mode: {row['time_vs_reverse']:.2f}×."
        results["leaderboard"] = [
            {
                "name": "× jacbench reverse",
                "value": round(row["time_vs_reverse"], 3),
                "order": "asc",
            }
        ]
    return results


def write_class(out: Path, rows: Sequence[dict[str, Any]], function: str) -> list[Path]:
    """grades.csv and summary.md into ``out``; the files written."""
    out.mkdir(parents=True, exist_ok=True)
    grades = grades_frame(rows)
    grades.to_csv(out / "grades.csv", index=False)
    (out / "summary.md").write_text(class_summary(grades, function))
    return [out / "grades.csv", out / "summary.md"]


def write_gradescope(path: Path, row: dict[str, Any], started: float) -> Path:
    """Gradescope's results.json for one submission."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(gradescope_results(row, time.time() - started), indent=2))
    return path
