"""The ``jacbench`` command line: run, predict, tune, info, validate, check, grade, submit,
merge, report, compare.

Each command parses its options, calls one library function and hands the data to
``report.py`` to print. Bad input is one ``Error: …`` line on stderr and exit code 2. The
commands live in one module per group (``run``, ``inspect``, ``grading``, ``cluster``,
``results``), each a typer app of its own that this package's ``app`` takes in; ``common``
holds what they share, ``sweep`` the sweep's options that ``run`` and ``submit`` read.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated

import typer
from rich.markup import escape

from jacbench.faces.cli import cluster, grading, inspect, results, run
from jacbench.faces.cli.common import console, err_console
from jacbench.measure.machine import jacbench_version

__all__ = ["app", "main"]


def _version(value: bool) -> None:
    if value:
        console.print(f"jacbench {jacbench_version()}")
        raise typer.Exit()


app = typer.Typer(
    help="Measure, explain and pick between forward-mode and reverse-mode Jacobians.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Click's plain help wraps every line at the terminal's width; rich's panels cut the
    # option names and defaults of a long command at 80 columns with "…".
    rich_markup_mode=None,
)


@app.callback()
def root_options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Measure, explain and pick between forward-mode and reverse-mode Jacobians."""


# `jacbench --help` lists the commands in this order.
for group in (inspect, run, grading, cluster, results):
    app.add_typer(group.commands)


def main(args: Sequence[str] | None = None) -> None:
    """The ``jacbench`` command: the typer app, with a usage error (an unknown option, a
    missing value) in one line, ``Error: …`` and exit 2, as every other error is, not in
    typer's boxed panel."""
    try:
        code = app(args=args, prog_name="jacbench", standalone_mode=False)
    except Exception as error:  # click's UsageError (typer's own copy of click, or click)
        if not hasattr(error, "format_message") or not hasattr(error, "exit_code"):
            if type(error).__name__ == "Abort":
                err_console.print("Aborted.")
                sys.exit(1)
            raise
        if type(error).__name__ == "NoArgsIsHelpError":  # bare `jacbench`: its help
            error.show()  # type: ignore[attr-defined]
            sys.exit(error.exit_code)
        ctx = getattr(error, "ctx", None)
        see = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        err_console.print(
            f"[bold red]Error:[/] {escape(error.format_message())}{see}",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(error.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
