"""Grading Jacobian routines: ``check`` (yours, on edge cases, then timed) and ``grade`` (a
class's, each student's in isolation)."""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from jacbench.faces import class_grading, grading, report
from jacbench.faces.cli.common import (
    OneOf,
    ProgressBar,
    SandboxUser,
    console,
    err_console,
    fail,
    interrupted_code,
    print_unsealed,
    seal_as,
    stopped_by,
    terminated_as_interrupt,
)
from jacbench.runs import sandbox
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
    sandbox_user: SandboxUser = sandbox.DEFAULT_USER,
) -> None:
    """Grade your Jacobian routine on edge cases against torch.func, then time it against
    jacbench; exit 1 if any case fails."""
    seal_as(sandbox_user)
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
    every = passed == len(graded.cases)
    console.print(
        f"{passed} of {len(graded.cases)} cases pass"
        + ("." if every else ": [bold red]the routine is wrong[/] (see problem).")
    )
    if graded.wrong_when_timed:
        console.print(
            f"[bold red]The routine is wrong when timed:[/] {escape(graded.wrong_when_timed)}",
            highlight=False,
        )
    if graded.timings is not None:
        summary = grading.timing_summary(graded.timings, graded.routine)
        console.print(report.check_timing_table(summary, name))
    for warning in graded.warnings:
        console.print(f"[yellow]Warning:[/] {escape(warning)}", highlight=False)
    print_unsealed()
    for hint in graded.hints:
        console.print(f"• {escape(hint)}", highlight=False)


# ----------------------------------------------------------------------------- grade
Submissions = Annotated[
    Path,
    typer.Argument(
        help="A folder with one .py file or one folder per student (with --gradescope: "
        "one student's submission, a folder or a file). Their files are imported in "
        "sandboxes, so their code runs there.",
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
GradesOut = Annotated[
    Path,
    typer.Option(
        help="Folder for grades.csv, summary.md and what each student printed (output/); "
        "locked while grading."
    ),
]
Resume = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Continue the class graded into --out: students already in grades.csv (same "
        "name, same file) are kept, not graded again.",
    ),
]
Gradescope = Annotated[
    Path | None,
    typer.Option(
        help="Write Gradescope's autograder results.json here, for the one submission "
        "(e.g. /autograder/results/results.json)."
    ),
]


class _ClassLines(class_grading.ClassProgress):
    """One line on stderr as the class goes."""

    def resuming(self, kept: int, to_grade: int) -> None:
        students = "student" if kept == 1 else "students"
        err_console.print(f"Resuming: {kept} {students} kept from grades.csv, {to_grade} to grade.")

    def grading(self, submission: class_grading.Submission) -> None:
        err_console.print(f"grading {submission.student}…", highlight=False)


@commands.command(short_help="Grade a class: every student's routine.")
def grade(
    ctx: typer.Context,
    submissions: Submissions,
    function: Function,
    convention: Convention = None,
    out: GradesOut = Path("grades"),
    resume: Resume = False,
    call_timeout: CallTimeout = DEFAULT_CALL_TIMEOUT,
    quick: Quick = False,
    min_time: MinTime = None,
    gradescope: Gradescope = None,
    sandbox_user: SandboxUser = sandbox.DEFAULT_USER,
) -> None:
    """Grade a class: each student's routine checked and timed in a sandbox of its own,
    into grades.csv and summary.md (rewritten as each student finishes) and (--gradescope)
    Gradescope's results.json. Exit 0 once every student is graded, whatever their grades."""
    started = time.monotonic()
    seal_as(sandbox_user)
    try:
        if gradescope is not None and resume:
            raise ValueError("--gradescope grades its one submission afresh: drop --resume")
        if gradescope is not None:
            found = [class_grading.one_submission(submissions, function)]
        else:
            found = class_grading.find_submissions(submissions, function, ignore=[out])
        with terminated_as_interrupt():
            graded = class_grading.grade_class(
                found,
                function=function,
                out=out,
                resume=resume,
                convention=convention,
                quick=quick,
                call_timeout=call_timeout,
                min_time=min_time,
                progress=_ClassLines(),
                command=_command(ctx),
            )
            if gradescope is not None:
                cases = len(class_grading.grading_cases(False))
                elapsed = time.monotonic() - started
                written = class_grading.write_gradescope(
                    gradescope, graded.rows[0], elapsed, cases, graded.load
                )
                graded.written.append(written)
    except ValueError as error:
        fail(str(error))
    except KeyboardInterrupt as stop:
        then = (
            "grade it again"
            if gradescope is not None
            else f"the students graded so far are kept in {out / 'grades.csv'}; continue with: "
            f"{_command(ctx, resume=True)}"
        )
        err_console.print(f"{stopped_by(stop)}: {then}", highlight=False, soft_wrap=True)
        raise typer.Exit(interrupted_code(stop)) from None
    _print_class(graded, out / class_grading.OUTPUT)


def _print_class(graded: class_grading.ClassGrades, outputs: Path) -> None:
    """The grades, the leaderboard, the machine's load, what was written."""
    grades = class_grading.grades_frame(graded.rows)
    console.print(report.grades_table(grades))
    ranked = grades[grades["ranked"].astype(bool)]
    if not ranked.empty:
        console.print(report.leaderboard_table(class_grading.leaderboard(ranked)))
    warning = graded.load.warning()
    if warning:
        console.print(f"[yellow]Warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    print_unsealed()
    passed = int(grades["passed"].astype(bool).sum())
    files = [p for p in graded.written if p.parent != outputs]
    printed = len(graded.written) - len(files)
    who = f"{printed} student{'' if printed == 1 else 's'}"
    said = f" and what {who} printed ({outputs}/)" if printed else ""
    console.print(
        f"{passed} of {len(grades)} students pass, {len(ranked)} ranked. "
        f"Written: {', '.join(map(str, files))}{said}",
        highlight=False,
    )


def _command(ctx: typer.Context, *, resume: bool = False) -> str:
    """The grade as a command line from its parameters (``--resume`` added: how to continue
    it)."""
    params = ctx.params
    args = ["jacbench", "grade", str(params["submissions"]), "--function", params["function"]]
    if params["convention"] is not None:
        args += ["--convention", params["convention"]]
    args += ["--out", str(params["out"])]
    if params["quick"]:
        args.append("--quick")
    if params["call_timeout"] != DEFAULT_CALL_TIMEOUT:
        args += ["--call-timeout", f"{params['call_timeout']:g}"]
    if params["min_time"] is not None:
        args += ["--min-time", f"{params['min_time']:g}"]
    if resume:
        args.append("--resume")
    return shlex.join(args)
