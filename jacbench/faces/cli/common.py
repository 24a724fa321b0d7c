"""What every command shares: the consoles, one-line errors, interrupts, the devices, the
list options' reading, and the progress bar.

A bad option value is one line: ``Error: --depths must be ≥ 1, got 0``, exit 2. Values
are typed by typer: ints and floats with ``min=``/``max=``, and where typer has no type of
its own (the typer installed vendors click without click's ParamTypes: ``parser=`` is
typer's way to a type of one's own), by the parsers here: ``numbers`` and ``NamesOf`` read
a list, ``OneOf`` one name of a closed set (click.Choice's part).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, NewType, NoReturn

import torch
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from typer.core import TyperCommand

from jacbench.faces import report
from jacbench.measure.rows import FAILED_STATUSES, Row
from jacbench.runs import models, sandbox
from jacbench.runs.grid import Point
from jacbench.runs.methods import Method

# Tables are wide: when the output is a file or a pipe, 160 columns unless COLUMNS says otherwise.
console = Console() if sys.stdout.isatty() or "COLUMNS" in os.environ else Console(width=160)
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """One line on stderr, then exit with ``code``."""
    err_console.print(f"[bold red]Error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


# ----------------------------------------------------------------------- list options
# Options that take a list: `--depths 3 5 10` and `--depths 3,5,10` both work.
LIST_OPTIONS = frozenset(
    {
        "--depths",
        "--d-in",
        "--width",
        "--d-out",
        "--batch",
        "--dtype",
        "--methods",
        "--widths",
        "--activations",
        "--chunk-sizes",
    }
)


def join_list_options(args: list[str]) -> list[str]:
    """Fold the values after a list option into one comma-separated value.

    An option takes one value (click has no option of a variable number of values); this
    lets ``--depths 3 5 10`` mean ``--depths 3,5,10``. Collection stops at the next token
    that starts with ``-`` (no list here holds negatives).
    """
    out: list[str] = []
    i = 0
    while i < len(args):
        token = args[i]
        out.append(token)
        i += 1
        if token in LIST_OPTIONS:
            values = []
            while i < len(args) and not args[i].startswith("-"):
                values.append(args[i])
                i += 1
            if values:
                out.append(",".join(values))
    return out


class ListOptionsCommand(TyperCommand):
    """A command whose list options accept space-separated values."""

    # typer.Context is the Context of the click that typer vendors; mypy sees two classes.
    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:  # type: ignore[override]
        """Record the raw arguments (for meta.json), then parse them with lists folded."""
        ctx.meta["jacbench.argv"] = list(args)
        return super().parse_args(ctx, join_list_options(args))


def command_line(ctx: typer.Context) -> str:
    """The command as typed, for meta.json: ``jacbench run --depths 3 5 10``."""
    argv = ctx.meta.get("jacbench.argv", [])
    return f"jacbench {ctx.info_name} {shlex.join(argv)}".strip()


# ------------------------------------------------------------------- reading values
# A list option's value, read. typer reads a tuple annotation as that many values after the
# flag, so a list of any length gets a type of its own.
Numbers = NewType("Numbers", tuple[int, ...])
Names = NewType("Names", tuple[str, ...])
NUMBERS_METAVAR = "<int,...>"
NAMES_METAVAR = "<name,...>"


class OptionValueError(typer.BadParameter):
    """A bad option value said after the option's name, ``--depths must be ≥ 1, got 0``, as
    the library's errors read (click's own would start ``Invalid value for '--depths':``)."""

    def format_message(self) -> str:
        """The option's name, then the message."""
        if self.param is None or not self.param.opts:
            return self.message
        return f"{self.param.opts[0]} {self.message}"


def _items(text: str) -> list[str]:
    """The items of ``"a,b"`` or ``"a b"``, at least one."""
    values = text.replace(",", " ").split()
    if not values:
        raise OptionValueError("needs at least one value")
    return values


def _one_of(choices: Sequence[str]) -> str:
    """``a, b or c``."""
    return f"{', '.join(choices[:-1])} or {choices[-1]}" if len(choices) > 1 else choices[0]


def numbers(text: str | tuple[int, ...]) -> Numbers:
    """A list of whole numbers ≥ 1 from ``"3,5,10"``: ``(3, 5, 10)`` (typer's parser)."""
    if isinstance(text, tuple):  # a default, read already
        return Numbers(text)
    values = []
    for part in _items(text):
        try:
            value = int(part)
        except ValueError:
            raise OptionValueError(f"takes whole numbers, got {part!r}") from None
        if value < 1:
            raise OptionValueError(f"must be ≥ 1, got {value}")
        values.append(value)
    return Numbers(tuple(values))


@dataclass(frozen=True)
class NamesOf:
    """A list of names from ``"a,b"``: ``("a", "b")``, each one of ``choices`` where there
    are any (typer's parser)."""

    choices: tuple[str, ...] = ()

    def __call__(self, text: str | tuple[str, ...]) -> Names:
        if isinstance(text, tuple):  # a default, read already
            return Names(text)
        values = tuple(_items(text))
        for value in values:
            if self.choices and value not in self.choices:
                raise OptionValueError(f"takes {_one_of(self.choices)}, got {value!r}")
        return Names(values)

    @property
    def metavar(self) -> str:
        """How help shows the value: the choices, or a name."""
        return f"<{'|'.join(self.choices)},...>" if self.choices else NAMES_METAVAR


@dataclass(frozen=True)
class OneOf:
    """One name of a closed set, ``choices`` (typer's parser; typer has no click.Choice)."""

    choices: tuple[str, ...]

    def __call__(self, text: str) -> str:
        if text not in self.choices:
            raise OptionValueError(f"takes {_one_of(self.choices)}, got {text!r}")
        return text

    @property
    def metavar(self) -> str:
        """How help shows the value: the choices."""
        return f"<{'|'.join(self.choices)}>"


# A list of names with no closed set: methods, models.
names = NamesOf()


def numbers_option(help_text: str) -> Any:
    """A typer option that takes a list of whole numbers ≥ 1 (``numbers``)."""
    return typer.Option(parser=numbers, metavar=NUMBERS_METAVAR, help=help_text)


def model_params(texts: list[str] | None) -> tuple[tuple[str, tuple[Any, ...]], ...] | None:
    """--param NAME=V1,V2 …, each a grid axis of a model's parameters."""
    if not texts:
        return None
    try:
        parsed = [models.parse_param(text) for text in texts]
    except ValueError as error:
        fail(str(error))
    given = [name for name, _ in parsed]
    twice = sorted({n for n in given if given.count(n) > 1})
    if twice:
        fail(f"--param {twice[0]} is given twice; give its values once: {twice[0]}=V1,V2")
    return tuple(parsed)


def check_device(device: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N``, and available here."""
    try:
        parsed = torch.device(device)
    except RuntimeError:
        fail(f"unknown device {device!r}; expected cpu, cuda or cuda:N")
    if parsed.type not in ("cpu", "cuda"):
        fail(f"unknown device {device!r}; expected cpu, cuda or cuda:N")
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            fail(f"--device {device}: CUDA is not available (torch {torch.__version__})")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            fail(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    return device


# ------------------------------------------------------------------------ sandboxes
SandboxUser = Annotated[
    str,
    typer.Option(
        help="The user that other people's code (a routine, a model, a student's files) "
        "runs as when jacbench runs as root; it must be able to read the Python, torch and "
        "jacbench (docs/sandbox.md).",
    ),
]


def seal_as(user: str) -> None:
    """Sandboxes made from now on run as ``user`` under root; a user this machine lacks is
    one line and exit 2."""
    try:
        sandbox.use_user(user)
    except ValueError as error:
        fail(str(error))


def print_unsealed() -> None:
    """A warning, where a sandbox ran as root because its user could not."""
    warning = sandbox.unsealed_warning()
    if warning:
        err_console.print(f"[yellow]Warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)


# ------------------------------------------------------------------------ interrupts
class Terminated(KeyboardInterrupt):
    """SIGTERM, what Slurm sends at a time limit, handled as Ctrl-C is: rows kept."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


@contextlib.contextmanager
def terminated_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises Terminated (a KeyboardInterrupt)."""
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stopped_by(stop: BaseException) -> str:
    """What stopped the command, in words."""
    return "Terminated (SIGTERM)" if isinstance(stop, Terminated) else "Interrupted"


def interrupted_code(stop: BaseException) -> int:
    """The shell's exit code for a process ended by the signal: 128 + its number."""
    return 128 + (signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT)


# ---------------------------------------------------------------------- progress bar
class ProgressBar:
    """A rich progress bar fed by the sweep (harness.SweepObserver); counts what it saw."""

    def __init__(self, quiet: bool) -> None:
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=err_console,
            disable=quiet,
        )
        self.quiet = quiet
        self.bar: TaskID | None = None
        self.rows = 0

    def start(self, tasks: Sequence[tuple[Point, Method]], done: int) -> None:
        if done and not self.quiet:
            self.progress.console.print(f"Resuming: {done} rows done, {len(tasks)} to go.")
        self.bar = self.progress.add_task("timing…", total=len(tasks))

    def waiting(self, message: str) -> None:
        self.progress.console.print(f"{message}…", highlight=False)

    def finished(self, row: Row) -> None:
        self.rows += 1
        if row.status.value in FAILED_STATUSES:
            self.progress.console.print(report.failure_line(row.as_dict()), highlight=False)
        if self.bar is not None:
            label = f"{row.method} at {report.shape_label(row.as_dict())}"
            self.progress.update(self.bar, advance=1, description=label)
