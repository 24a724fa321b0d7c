"""Grading Jacobian routines: ``check`` (yours, on edge cases, then timed) and ``grade`` (a
class's, each student's in isolation)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from jacbench.faces import class_grading, grading, report
from jacbench.faces.cli.common import (
    OneOf,
    ProgressBar,
    console,
    err_console,
    fail,
    interrupted_code,
    stopped_by,
    terminated_as_interrupt,
)
from jacbench.runs.options import DEFAULT_CALL_TIMEOUT

commands = typer.Typer()

CONVENTION_NAMES = OneOf(tuple(class_grading.CONVENTIONS))

CallTimeout = Annotated[
    float,
    typer.Option(
        help="Stop a call of the routine (run in a worker process) after this many seconds.",
        min=0.001,
    ),
]
Quick = Annotated[bool, typer.Option("--quick", help="Time at D=K=200 instead of D=K=1000.")]
MinTime = Annotated[
    float | None,
    typer.Option(help="Least measured seconds per timed row.", show_default="0.2, quick: 0.05"),
]


# ----------------------------------------------------------------------------- check
@commands.command("check", short_help="Grade your Jacobian routine, then time it.")
def check_command(
    routine: Annotated[
        str,
        typer.Argument(
            help="Your routine: path/file.py:function or module:function, taking (net, x) or "
            "(x, L, param_dict). Its file is imported, so its code runs.",
            show_default=False,
        ),
    ],
    quick: Quick = False,
    no_time: Annotated[bool, typer.Option("--no-time", help="Only grade; do not time.")] = False,
    min_time: MinTime = None,
    call_timeout: CallTimeout = DEFAULT_CALL_TIMEOUT,
) -> None:
    """Grade your Jacobian routine on edge cases against torch.func, then time it against
    jacbench; exit 1 if any case fails."""
    progress = ProgressBar(quiet=no_time)
    try:
        with progress.progress, terminated_as_interrupt():
            graded = grading.check(
                routine,
                time=not no_time,
                quick=quick,
                min_time=min_time,
                observer=progress,
                call_timeout=call_timeout,
            )
    except ValueError as error:
        fail(str(error))
    except KeyboardInterrupt as stop:
        err_console.print(f"{stopped_by(stop)}: the check did not finish")
        raise typer.Exit(interrupted_code(stop)) from None
    _print_check(graded)
    if not graded.passed:
        raise typer.Exit(1)


def _print_check(graded: grading.CheckReport) -> None:
    """The cases, the timings, and what to look at."""
    name = graded.routine.name
    where = "" if graded.routine.source == name else f" ({graded.routine.source})"
    console.print(f"{name}{where}, called as {graded.routine.calling}")
    console.print(report.check_table(graded.cases, name))
    passed = int(graded.cases["passed"].sum())
    console.print(
        f"{passed} of {len(graded.cases)} cases pass"
        + ("." if graded.passed else ": [bold red]the routine is wrong[/] (see problem).")
    )
    if graded.timings is not None:
        summary = grading.timing_summary(graded.timings, graded.routine)
        console.print(report.check_timing_table(summary, name))
    for warning in graded.warnings:
        console.print(f"[yellow]Warning:[/] {escape(warning)}", highlight=False)
    for hint in graded.hints:
        console.print(f"• {escape(hint)}", highlight=False)


# ----------------------------------------------------------------------------- grade
Submissions = Annotated[
    Path,
    typer.Argument(
        help="A folder with one .py file or one folder per student (with --gradescope: "
        "one student's submission, a folder or a file). Their files are imported in "
        "worker processes, so their code runs there.",
        show_default=False,
    ),
]
Function = Annotated[
    str, typer.Option(help="The routine's name in each submission, e.g. my_backward_2a.")
]
Convention = Annotated[
    str | None,
    typer.Option(
        parser=CONVENTION_NAMES,
        metavar=CONVENTION_NAMES.metavar,
        help="textbook: fn(x, L, param_dict); library: fn(net, x). A routine of the "
        "other convention fails.",
        show_default="either",
    ),
]
GradesOut = Annotated[Path, typer.Option(help="Folder for grades.csv and summary.md.")]
Gradescope = Annotated[
    Path | None,
    typer.Option(
        help="Write Gradescope's autograder results.json here, for the one submission "
        "(e.g. /autograder/results/results.json)."
    ),
]


@commands.command(short_help="Grade a class: every student's routine.")
def grade(
    submissions: Submissions,
    function: Function,
    convention: Convention = None,
    out: GradesOut = Path("grades"),
    call_timeout: CallTimeout = DEFAULT_CALL_TIMEOUT,
    quick: Quick = False,
    min_time: MinTime = None,
    gradescope: Gradescope = None,
) -> None:
    """Grade a class: each student's routine checked and timed in isolation, into
    grades.csv, summary.md and (--gradescope) Gradescope's results.json. Exit 0 once every
    student is graded, whatever their grades."""
    started = time.time()
    try:
        if gradescope is not None:
            found = [_one_submission(submissions, function)]
        else:
            found = class_grading.find_submissions(submissions, function)
        with terminated_as_interrupt():
            rows = class_grading.grade_class(
                found,
                convention=convention,
                quick=quick,
                call_timeout=call_timeout,
                min_time=min_time,
                progress=lambda s: err_console.print(f"grading {s.student}…", highlight=False),
            )
    except ValueError as error:
        fail(str(error))
    except KeyboardInterrupt as stop:
        err_console.print(f"{stopped_by(stop)}: nothing written")
        raise typer.Exit(interrupted_code(stop)) from None
    written = class_grading.write_class(out, rows, function)
    if gradescope is not None:
        written.append(class_grading.write_gradescope(gradescope, rows[0], started))
    grades = class_grading.grades_frame(rows)
    console.print(report.grades_table(grades))
    passed = int(grades["passed"].sum())
    console.print(
        f"{passed} of {len(grades)} students pass. Written: {', '.join(map(str, written))}",
        highlight=False,
    )


def _one_submission(path: Path, function: str) -> class_grading.Submission:
    """A single submission: a .py file, or a folder whose files are one student's."""
    if path.is_file() and path.suffix == ".py":
        return class_grading.Submission(path.stem, f"{path}:{function}", files=str(path))
    if path.is_dir():
        return class_grading._folder_submission(path, function)
    raise ValueError(f"{path} is neither a .py file nor a folder")
