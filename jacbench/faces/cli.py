"""The ``jacbench`` command line: run, predict, validate, report, compare, info.

Each command parses its options, calls one library function and hands the data to
``report.py`` to print. Bad input is one ``Error: …`` line on stderr and exit code 2.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import math
import os
import shlex
import signal
import sys
import time as time_module
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

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

from jacbench.ad import cost, ties
from jacbench.cluster import merging, submission
from jacbench.faces import class_grading, grading, library, report
from jacbench.kernels.activations import ACTIVATIONS
from jacbench.measure import device_lock, stats, tuning
from jacbench.measure.machine import jacbench_version
from jacbench.measure.peaks import measure_peaks
from jacbench.measure.rows import FAILED_STATUSES, ResultsFileError, Row
from jacbench.runs import harness, models, results, shards, tasks
from jacbench.runs.grid import DTYPES, PRESETS, Point, Preset, expand_grid, get_preset
from jacbench.runs.methods import METHODS, Method
from jacbench.runs.operators import OPERATORS
from jacbench.runs.options import DEFAULT_CALL_TIMEOUT, SAME_DEFAULT, Flag, SweepOptions

# Tables are wide: when the output is a file or a pipe, 160 columns unless COLUMNS says otherwise.
console = Console() if sys.stdout.isatty() or "COLUMNS" in os.environ else Console(width=160)
err_console = Console(stderr=True)

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

    Options take one value each; this lets ``--depths 3 5 10`` mean ``--depths 3,5,10``.
    Collection stops at the next token that starts with ``-`` (no list here holds negatives).
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


_CALL_TIMEOUT_OPTION = typer.Option(
    help="Stop a call of the routine (run in a worker process) after this many seconds.",
    min=0.001,
)


class Terminated(KeyboardInterrupt):
    """SIGTERM, what Slurm sends at a time limit, handled as Ctrl-C is: rows kept."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


@contextlib.contextmanager
def _terminated_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises Terminated (a KeyboardInterrupt)."""
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stopped_by(stop: BaseException) -> str:
    return "Terminated (SIGTERM)" if isinstance(stop, Terminated) else "Interrupted"


def _interrupted_code(stop: BaseException) -> int:
    """The shell's exit code for a process ended by the signal: 128 + its number."""
    return 128 + (signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT)


def fail(message: str, code: int = 2) -> NoReturn:
    """One line on stderr, then exit with ``code``."""
    err_console.print(f"[bold red]Error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def parse_ints(text: str, name: str) -> list[int]:
    """Whole numbers ≥ 1 from ``"3,5,10"`` or ``"3 5 10"``."""
    values = []
    for part in text.replace(",", " ").split():
        try:
            value = int(part)
        except ValueError:
            fail(f"{name} takes whole numbers, got {part!r}")
        if value < 1:
            fail(f"{name} must be ≥ 1, got {value}")
        values.append(value)
    if not values:
        fail(f"{name} needs at least one value")
    return values


def parse_optional_ints(text: str | None, name: str) -> list[int] | None:
    """``parse_ints`` for an option that may be absent (None)."""
    return None if text is None else parse_ints(text, name)


def parse_names(text: str, name: str) -> list[str]:
    """Names from ``"a,b"`` or ``"a b"`` (at least one)."""
    values = text.replace(",", " ").split()
    if not values:
        fail(f"{name} needs at least one value")
    return values


def parse_choices(text: str, name: str, choices: Sequence[str]) -> list[str]:
    """Names from ``"a,b"`` or ``"a b"``, each one of ``choices``."""
    values = parse_names(text, name)
    for value in values:
        if value not in choices:
            fail(f"unknown {name} {value!r}; expected one of: {', '.join(choices)}")
    return values


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


def command_line(ctx: typer.Context) -> str:
    """The command as typed, for meta.json: ``jacbench run --depths 3 5 10``."""
    argv = ctx.meta.get("jacbench.argv", [])
    return f"jacbench {ctx.info_name} {shlex.join(argv)}".strip()


# ---------------------------------------------------------------------------- predict
@app.command(
    cls=ListOptionsCommand, short_help="FLOPs, memory and the recommended mode for a shape."
)
def predict(
    depth: Annotated[int, typer.Option(help="Depth L (number of tanh layers).", min=1)] = 5,
    d_in: Annotated[int, typer.Option(help="Input dimension D.", min=1)] = 1000,
    width: Annotated[int, typer.Option(help="Hidden width K.", min=1)] = 1000,
    d_out: Annotated[int, typer.Option(help="Output dimension P.", min=1)] = 1,
    batch: Annotated[int, typer.Option(help="Batch size B.", min=1)] = 1,
    widths: Annotated[
        str | None,
        typer.Option(help="Explicit widths D K_1 … K_L P (overrides the four above)."),
    ] = None,
    dtype: Annotated[str, typer.Option(help="dtype for the memory model.")] = "float32",
    order: Annotated[
        int,
        typer.Option(
            help="1: the Jacobian's modes; 2: also the Hessian's modes and the Laplacian's "
            "methods.",
            min=1,
            max=2,
        ),
    ] = 1,
    model: Annotated[
        str | None,
        typer.Option(
            help="Your own network instead of the tanh MLP: a factory make(d_in, d_out, "
            "**params) as path/file.py:function or module:function, or a built-in family "
            "(residual, siren, fourier, cnn, attention, mlp). Its JVP and VJP are counted.",
            show_default=False,
        ),
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            help="A model's keyword parameter, NAME=VALUE (repeat for more).",
            show_default=False,
        ),
    ] = None,  # fmt: skip
) -> None:
    """Predict FLOPs and memory of each mode for a shape, and the mode to use."""
    if model is not None:
        _predict_model(model, param, d_in, d_out, batch, dtype)
        return
    if param:
        fail("--param is a model's: give it with --model")
    shape = parse_ints(widths, "--widths") if widths else [d_in, *([width] * depth), d_out]
    if len(shape) < 3:
        fail(f"--widths needs at least 3 values (D K_1 P), got {len(shape)}")
    if dtype not in DTYPES:
        fail(f"unknown dtype {dtype!r}; expected one of: {', '.join(DTYPES)}")
    plan = cost.plan(shape, batch, DTYPES[dtype])
    console.print(report.predict_table(plan))
    console.print(report.recommendation(plan))
    classes = tuning.classes_for(plan.widths, batch, plan.mode)
    console.print(report.tuning_line(tuning.active(), classes), highlight=False)
    if order == 2:
        console.print(
            report.second_order_table(cost.plan_second_order(shape, batch, DTYPES[dtype]))
        )


def _predict_model(
    spec: str, texts: list[str] | None, d_in: int, d_out: int, batch: int, dtype: str
) -> None:
    """``predict --model``: the model's counted costs per mode (``generic.plan_of``)."""
    if dtype not in DTYPES:
        fail(f"unknown dtype {dtype!r}; expected one of: {', '.join(DTYPES)}")
    params = {}
    for name, values in _params(texts) or ():
        if len(values) != 1:
            fail(f"--param {name} takes one value here, got {len(values)}")
        params[name] = values[0]
    try:
        chosen = models.resolve_model(spec).with_params(params)
        with err_console.status("counting the model's JVP and VJP…"):
            plan = models.model_plan(chosen, d_in, d_out, batch=batch, dtype=DTYPES[dtype])
    except ValueError as error:
        fail(str(error))
    console.print(report.model_predict_table(plan, chosen.label))
    console.print(report.model_recommendation(plan), highlight=False)


@app.command(cls=ListOptionsCommand, short_help="Measure which kernels this CPU runs fastest.")
def tune(
    remeasure: Annotated[
        bool, typer.Option("--remeasure", help="Measure again, replacing the cached choice.")
    ] = False,
    threads: Annotated[
        int | None, typer.Option(help="Intra-op threads to tune for (default: torch's).", min=1)
    ] = None,
) -> None:
    """Measure which kernels are fastest on this CPU (once per machine; run does it too).
    A measurement disturbed by other work is not cached (exit 1)."""
    if threads is not None:
        torch.set_num_threads(threads)
    if tuning.cached() is None or remeasure:
        waiting = "waiting for the CPU: another jacbench run is timing there…"
        with device_lock.hold("cpu", lambda _: err_console.print(waiting)):
            with err_console.status("measuring this CPU's kernels (about thirty seconds)…"):
                measured = tuning.measure(ties=ties.candidates)
        if measured.busy:
            console.print(report.tuning_table(measured))
            console.print(report.ties_table(measured))
            err_console.print(
                f"Not cached: {measured.busy}. The routines keep what they had; run `jacbench "
                "tune --remeasure` when the machine is idle.",
                highlight=False,
            )
            raise typer.Exit(1)
        tuning.save(measured)
    tuned = tuning.ensure("cpu", ties=ties.candidates)
    console.print(report.tuning_table(tuned))
    console.print(report.ties_table(tuned))
    console.print(f"Cached in {tuning.cache_path()}", highlight=False)


# --------------------------------------------------------------------------- validate
@app.command(cls=ListOptionsCommand, short_help="Check every routine against float64 torch.func.")
def validate(
    depths: Annotated[str, typer.Option(help="Depths L, e.g. 1 3 6.")] = "1 3 6",
    d_in: Annotated[str, typer.Option(help="Input dimensions D.")] = "1 9 32",
    width: Annotated[str, typer.Option(help="Hidden widths K.")] = "1 17",
    d_out: Annotated[str, typer.Option(help="Output dimensions P.")] = "1 9 32",
    batch: Annotated[str, typer.Option(help="Batch sizes B (1 means an unbatched x).")] = "1 3",
    activations: Annotated[str, typer.Option(help="Activations, or 'all'.")] = "all",
    chunk_sizes: Annotated[
        str, typer.Option(help="chunk_size values for forward/reverse.")
    ] = "1 4",
    dtype: Annotated[str, typer.Option(help="dtype of the routines under test.")] = "float64",
    tolerance: Annotated[
        float | None,
        typer.Option(help="Largest relative error allowed.", show_default="by dtype"),
    ] = None,
    init: Annotated[str, typer.Option(help="Weight initialisation.")] = "lecun",
    seed: Annotated[int, typer.Option(help="Seed for weights and inputs.")] = 0,
) -> None:
    """Check every routine against float64 torch.func.jacrev over a grid; exit 1 on failure."""
    names = (
        list(ACTIVATIONS)
        if activations == "all"
        else parse_choices(activations, "activation", list(ACTIVATIONS))
    )
    try:
        points = expand_grid(
            depths=parse_ints(depths, "--depths"),
            d_in=parse_ints(d_in, "--d-in"),
            width=parse_ints(width, "--width"),
            d_out=parse_ints(d_out, "--d-out"),
            batch=parse_ints(batch, "--batch"),
            dtype=[dtype],
        )
        routines = harness.validation_routines(parse_ints(chunk_sizes, "--chunk-sizes"))
        with err_console.status("validating…"):
            checks = harness.validate_points(
                points, routines, seed=seed, init=init, activations=names
            )
    except ValueError as error:
        fail(str(error))
    tolerance = tasks.TOLERANCES[dtype] if tolerance is None else tolerance
    console.print(report.validate_table(checks, tolerance))
    failed = [c for c in checks if not c["max_rel_err"] <= tolerance]
    console.print(
        f"{len(points) * len(names)} networks × {len(routines)} routines: "
        + (f"[bold red]{len(failed)} checks failed[/]" if failed else "all within tolerance")
    )
    if failed:
        raise typer.Exit(1)


# -------------------------------------------------------------------------------- run
class _ProgressBar:
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


def _preset(name: str) -> Preset:
    try:
        return get_preset(name)
    except ValueError as error:
        fail(str(error))


def _preset_help() -> str:
    names = "; ".join(f"{name}: {preset.description}" for name, preset in PRESETS.items())
    return f"Named grid ({names}). Grid options replace a grid preset's values."


# ------------------------------------------------------------------------------- run
# `jacbench run`'s options are the sweep's (SweepOptions: each field's Flag says how it is
# offered and read) followed by those of the command itself (_run_command below).
_READERS: dict[str, Any] = {
    "ints": lambda text, name: parse_optional_ints(text, name),
    "names": lambda text, name: None if text is None else tuple(parse_names(text, name)),
    "dtypes": lambda text, name: tuple(parse_choices(text, "dtype", list(DTYPES))),
    "device": lambda text, name: check_device(text),
    "params": lambda texts, name: _params(texts),
}


def _params(texts: list[str] | None) -> tuple[tuple[str, tuple[Any, ...]], ...] | None:
    """--param NAME=V1,V2 …, each a grid axis of a model's parameters."""
    if not texts:
        return None
    try:
        parsed = [models.parse_param(text) for text in texts]
    except ValueError as error:
        fail(str(error))
    names = [name for name, _ in parsed]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        fail(f"--param {twice[0]} is given twice; give its values once: {twice[0]}=V1,V2")
    return tuple(parsed)


def _option_parameter(item: dataclasses.Field) -> inspect.Parameter:
    """The typer parameter that offers one SweepOptions field."""
    flag: Flag = item.metadata["flag"]
    name, default = item.name, flag.default
    if default is SAME_DEFAULT:
        default = item.default
    if flag.parse in ("ints", "names"):
        kind: Any = str | None
    elif flag.parse in ("dtypes", "device"):
        kind = str
    elif flag.parse == "params":
        kind = list[str] | None
    else:
        kind = typing.get_type_hints(SweepOptions)[name]
    help_text = _preset_help() if name == "preset" else flag.help
    settings: dict[str, Any] = {"help": help_text}
    if flag.show_default is not True:
        settings["show_default"] = flag.show_default
    if flag.minimum is not None:
        settings["min"] = flag.minimum
    if flag.inverted:
        name, default = f"no_{name}", False
    option = typer.Option(*flag.decls, **settings)
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[kind, option]
    )


def _sweep_options(values: dict[str, Any]) -> SweepOptions:
    """The sweep's options from ``jacbench run``'s, each read as its Flag says."""
    chosen: dict[str, Any] = {}
    for item in dataclasses.fields(SweepOptions):
        flag = item.metadata.get("flag")
        if flag is None:
            continue
        if flag.inverted:
            chosen[item.name] = not values[f"no_{item.name}"]
            continue
        text = values[item.name]
        reader = _READERS.get(flag.parse)
        spelled = "--" + item.name.replace("_", "-")
        chosen[item.name] = text if reader is None else reader(text, spelled)
    return SweepOptions(**chosen)


def _run_command(
    ctx: typer.Context,
    out: Annotated[
        Path | None,
        typer.Option(help="Run folder.", show_default="jacbench-results/<date>-<device>"),
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue the run in --out, skipping rows it holds.")
    ] = False,
    resume_if_present: Annotated[
        bool,
        typer.Option(
            help="Continue the run in --out where it holds one, else start it: for a job that "
            "may run again (a Slurm array task, a requeue). A finished run is left as it is."
        ),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar or table.")] = False,
    compile_: Annotated[
        bool,
        typer.Option("--compile", help="Also time auto-compiled: auto under torch.compile."),
    ] = False,
    cuda_graphs: Annotated[
        bool,
        typer.Option(
            "--cuda-graphs", help="Also time auto-cudagraph: auto replayed as a CUDA graph."
        ),
    ] = False,
    fused_: Annotated[
        bool,
        typer.Option("--fused", help="Also time fused: forward mode as one Triton kernel (CUDA)."),
    ] = False,
    shard: Annotated[
        str | None,
        typer.Option(
            help="Run only shard i of n (i/n, 0 ≤ i < n): points dealt by estimated time, "
            "written to OUT/shards/<i>-of-<n>/; join with `jacbench merge OUT`. 'all': the "
            "whole grid even inside a Slurm job array.",
            show_default="from SLURM_ARRAY_TASK_ID/_COUNT/_MIN, else the whole grid",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Print what would run (per shard: points, tasks, time) and stop."
        ),
    ] = False,
) -> None:
    """The options of ``jacbench run`` itself, beside the sweep's (their declarations)."""


def run(ctx: typer.Context, **values: Any) -> None:
    """Sweep methods over a grid of shapes; write results.csv, meta.json, summary.md and plots."""
    options = _with_opted_methods(_sweep_options(values), values)
    if options.methods is None and options.model is None and not values["quiet"]:
        _note_missing_methods(options.preset)
    part = _shard_option(values["shard"])
    if values["resume"] and values["resume_if_present"]:
        fail("give --resume or --resume-if-present, not both")
    if values["dry_run"]:
        _print_shard_plan(ctx, options, part)
        return
    run_dir = values["out"] or _default_out(options.device, part)
    progress = _ProgressBar(values["quiet"])
    try:
        with progress.progress, _terminated_as_interrupt():
            frame = library.sweep(
                options=options,
                out=run_dir,
                resume=results.IF_PRESENT if values["resume_if_present"] else values["resume"],
                shard=part,
                command=command_line(ctx),
                observer=progress,
            )
    except ValueError as error:  # RunDirError and ResultsFileError are ValueErrors
        fail(str(error))
    except KeyboardInterrupt as stop:
        folder = shards.shard_dir(run_dir, part) if part else run_dir
        again = f" --shard {part}" if part else ""
        if (folder / "results.csv").exists():
            err_console.print(
                f"{_stopped_by(stop)}: {progress.rows} new rows kept in "
                f"{folder / 'results.csv'}; continue with{again} --out {run_dir} --resume"
            )
        else:
            err_console.print(f"{_stopped_by(stop)} before the run wrote anything")
        raise typer.Exit(_interrupted_code(stop)) from None
    _print_run(frame, run_dir, part, values["quiet"])


def _note_missing_methods(preset: str) -> None:
    """Say which of the preset's methods are not installed here, and how to add them: a
    preset's peers left out without a word looked like a full comparison."""
    missing = _preset(preset).missing_methods()
    for requirement in dict.fromkeys(METHODS[m].requirement for m in missing):
        names = ", ".join(m for m in missing if METHODS[m].requirement == requirement)
        err_console.print(
            escape(f"Note: {names} of preset {preset} left out: not installed ({requirement})"),
            highlight=False,
            soft_wrap=True,
        )


def _with_opted_methods(options: SweepOptions, values: dict[str, Any]) -> SweepOptions:
    """The options with the opt-in methods --compile, --cuda-graphs and --fused asked for."""
    cuda = torch.device(options.device).type == "cuda"
    opted = (
        ("auto-compiled", values["compile_"], ""),
        ("auto-cudagraph", values["cuda_graphs"], "--cuda-graphs"),
        ("fused", values["fused_"], "--fused"),
    )
    for _, wanted, flag in opted:
        if wanted and flag and not cuda:
            fail(f"{flag} needs --device cuda")
    extra = [name for name, wanted, _ in opted if wanted]
    if not extra:
        return options
    base = options.methods
    if base is None:
        base = tuple(_preset(options.preset).installed_methods(options.operator))
    return dataclasses.replace(options, methods=(*base, *extra))


def _print_shard_plan(ctx: typer.Context, options: SweepOptions, part: shards.Shard | None):
    try:
        plan = harness.shard_plan(options, part.count if part else 1)
    except ValueError as error:
        fail(str(error))
    by_submit = isinstance(ctx.obj, dict)
    console.print(report.shard_plan_table(plan, None if by_submit else part))
    if by_submit:  # submit checks the options this way, then deals the same plan
        ctx.obj["shard_plan"] = plan


def _print_run(frame, run_dir: Path, part: shards.Shard | None, quiet: bool) -> None:
    """The run's tables, where its files are, and every failed row (then exit 1)."""
    if not quiet and not frame.empty:
        methods_run = list(dict.fromkeys(frame["method"]))
        samples = frame.attrs.get("samples")
        for shown in report.summary_tables(frame, samples, methods_run, accuracy=True):
            console.print(shown)
    folder = shards.shard_dir(run_dir, part) if part else run_dir
    written = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    console.print(f"Results: {folder}/ ({', '.join(written)})")
    if part:
        console.print(
            f"Shard {part} finished ({len(frame)} rows). When every shard has: "
            f"jacbench merge {run_dir}",
            highlight=False,
        )
    failures = harness.failed_rows(frame)
    if not failures.empty:
        for _, row in failures.iterrows():
            err_console.print(report.failure_line(row), highlight=False)
        raise typer.Exit(1)


def _run_signature() -> inspect.Signature:
    command = list(inspect.signature(_run_command, eval_str=True).parameters.values())
    options = [
        _option_parameter(item)
        for item in dataclasses.fields(SweepOptions)
        if "flag" in item.metadata
    ]
    own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in command[1:]]
    return inspect.Signature([command[0], *options, *own], return_annotation=None)


run.__signature__ = _run_signature()  # type: ignore[attr-defined]
run.__annotations__ = {p.name: p.annotation for p in _run_signature().parameters.values()}
app.command(
    cls=ListOptionsCommand, short_help="Sweep methods over a grid of shapes and time them."
)(run)


def _shard_option(text: str | None) -> shards.Shard | None:
    """--shard i/n, else the Slurm array task's shard; None for the whole grid."""
    try:
        if text is None:
            return shards.from_environment()
        return None if text.strip() == "all" else shards.parse_shard(text)
    except ValueError as error:
        fail(str(error))


def _default_out(device: str, part: shards.Shard | None) -> Path:
    """jacbench-results/<date>-<device>; for a shard, one folder every shard agrees on."""
    if part is None:
        return results.default_run_dir(device)
    job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if job:  # every task of one array shares the array's job id
        return results.DEFAULT_ROOT / f"slurm-{job}-{device.replace(':', '')}"
    fail("a shard needs --out: every shard of a run writes into the same folder")


# ------------------------------------------------------------------------------ check
@app.command("check", short_help="Grade your Jacobian routine, then time it.")
def check_command(
    routine: Annotated[
        str,
        typer.Argument(
            help="Your routine: path/file.py:function or module:function, taking (net, x) or "
            "(x, L, param_dict). Its file is imported, so its code runs.",
            show_default=False,
        ),
    ],
    quick: Annotated[
        bool, typer.Option("--quick", help="Time at D=K=200 instead of D=K=1000.")
    ] = False,
    no_time: Annotated[bool, typer.Option("--no-time", help="Only grade; do not time.")] = False,
    min_time: Annotated[
        float | None,
        typer.Option(help="Least measured seconds per timed row.", show_default="0.2, quick: 0.05"),
    ] = None,
    call_timeout: Annotated[float, _CALL_TIMEOUT_OPTION] = DEFAULT_CALL_TIMEOUT,
) -> None:
    """Grade your Jacobian routine on edge cases against torch.func, then time it against
    jacbench; exit 1 if any case fails."""
    progress = _ProgressBar(quiet=no_time)
    try:
        with progress.progress, _terminated_as_interrupt():
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
        err_console.print(f"{_stopped_by(stop)}: the check did not finish")
        raise typer.Exit(_interrupted_code(stop)) from None
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
    if not graded.passed:
        raise typer.Exit(1)


# ------------------------------------------------------------------------------ grade
@app.command(short_help="Grade a class: every student's routine.")
def grade(
    submissions: Annotated[
        Path,
        typer.Argument(
            help="A folder with one .py file or one folder per student (with --gradescope: "
            "one student's submission, a folder or a file). Their files are imported in "
            "worker processes, so their code runs there.",
            show_default=False,
        ),
    ],
    function: Annotated[
        str, typer.Option(help="The routine's name in each submission, e.g. my_backward_2a.")
    ],
    convention: Annotated[
        str | None,
        typer.Option(
            help="textbook: fn(x, L, param_dict); library: fn(net, x). A routine of the "
            "other convention fails.",
            show_default="either",
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for grades.csv and summary.md.")] = Path(
        "grades"
    ),
    call_timeout: Annotated[float, _CALL_TIMEOUT_OPTION] = DEFAULT_CALL_TIMEOUT,
    quick: Annotated[
        bool, typer.Option("--quick", help="Time at D=K=200 instead of D=K=1000.")
    ] = False,
    min_time: Annotated[
        float | None,
        typer.Option(help="Least measured seconds per timed row.", show_default="0.2, quick: 0.05"),
    ] = None,
    gradescope: Annotated[
        Path | None,
        typer.Option(
            help="Write Gradescope's autograder results.json here, for the one submission "
            "(e.g. /autograder/results/results.json)."
        ),
    ] = None,
) -> None:
    """Grade a class: each student's routine checked and timed in isolation, into
    grades.csv, summary.md and (--gradescope) Gradescope's results.json. Exit 0 once every
    student is graded, whatever their grades."""
    started = time_module.time()
    try:
        if gradescope is not None:
            found = [_one_submission(submissions, function)]
        else:
            found = class_grading.find_submissions(submissions, function)
        if convention is not None and convention not in class_grading.CONVENTIONS:
            fail(f"unknown convention {convention!r}; expected one of: textbook, library")
        with _terminated_as_interrupt():
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
        err_console.print(f"{_stopped_by(stop)}: nothing written")
        raise typer.Exit(_interrupted_code(stop)) from None
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
        return class_grading.Submission(path.stem, f"{path}:{function}")
    if path.is_dir():
        return class_grading._folder_submission(path, function)
    raise ValueError(f"{path} is neither a .py file nor a folder")


# ------------------------------------------------------------------------------ merge
@app.command(short_help="Join a sharded run's shards, or separate runs.")
def merge(
    runs: Annotated[
        list[Path],
        typer.Argument(
            help="A sharded run's folder, or two or more runs to join (folders, sharded or not).",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            help="Where the merged run goes.",
            show_default="a sharded run's own folder; needed for two or more runs",
        ),
    ] = None,
    keep: Annotated[
        str | None,
        typer.Option(
            help="Where two runs hold a row with the same key: keep the 'first' or the 'last' "
            "run's row (else the merge is refused).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Join a sharded run's shards into results.csv, meta.json, summary.md and plots, or join
    separate runs (other devices, say) into --out; exit 1 while shards are missing or
    unfinished."""
    if keep is not None and keep not in merging.KEEP_CHOICES:
        fail(f"--keep takes first or last, got {keep!r}")
    if len(runs) == 1:
        _merge_shards(runs[0], out)
        return
    if out is None:
        fail("joining two or more runs needs --out (the folder the merged run goes to)")
    parts = []
    for path in runs:
        try:
            sharded = shards.is_sharded(path)
            run = merging.merge_shards(path) if sharded else None
            parts.append((str(path), run.run if run else results.read_run(path)))
        except (FileNotFoundError, ValueError) as error:
            fail(str(error))
        if run is not None and not run.complete:
            err_console.print(
                f"[yellow]Warning:[/] {escape(str(path))}: {run.count - len(run.finished)} of "
                f"{run.count} shards missing or unfinished; merging what is there",
                highlight=False,
            )
    try:
        merged = merging.merge_runs(parts, keep)
        merging.write_merged(out, merged)
        report.write_report(out, merged.rows, merged.meta, merged.samples)
    except ValueError as error:
        fail(str(error))
    devices = sorted(set(merged.rows["device"]))
    console.print(
        f"Merged {len(merged.rows)} rows of {len(runs)} runs ({', '.join(devices)}) into {out}/",
        highlight=False,
    )


def _merge_shards(run_dir: Path, out: Path | None) -> None:
    if not shards.is_sharded(run_dir):
        fail(
            f"{run_dir} holds no shards (no shards/<i>-of-<n>/); to join separate runs "
            "give two or more and --out"
        )
    try:
        sharded = merging.merge_shards(run_dir)
        merging.write_merged(out or run_dir, sharded.run)
        report.write_report(out or run_dir, sharded.run.rows, sharded.run.meta, sharded.run.samples)
    except ValueError as error:
        fail(str(error))
    parts = sharded.run.meta["parts"]
    console.print(report.shards_table(parts, sharded.count, sharded.missing))
    console.print(
        f"Merged {len(sharded.run.rows)} rows of {len(parts)} shard folders into "
        f"{out or run_dir}/ ({len(sharded.finished)} of {sharded.count} shards finished)",
        highlight=False,
    )
    if sharded.complete:
        return
    for index in sharded.missing:
        err_console.print(
            f"Shard {index}/{sharded.count} is missing: run the same `jacbench run` with "
            f"--shard {index}/{sharded.count} --out {run_dir}",
            highlight=False,
        )
    jobs = {part.get("shard"): (part.get("environment") or {}).get("slurm_job") for part in parts}
    for index, state in sharded.unfinished.items():
        shard = f"{index}/{sharded.count}"
        job = f" (Slurm job {jobs[shard]})" if jobs.get(shard) else ""
        what = "is still running" if state == "running" else "was interrupted"
        todo = "" if state == "running" else f": run it again with --shard {shard} --resume"
        err_console.print(f"Shard {shard}{job} {what}{todo}", highlight=False)
    raise typer.Exit(1)


# ----------------------------------------------------------------------------- submit
# Run options submit sets for each job itself.
_SUBMIT_OWNS = ("--shard", "--out", "--resume", "--resume-if-present", "--dry-run", "--quiet")


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    short_help="Run a sweep as shard jobs with submitit.",
)
def submit(
    ctx: typer.Context,
    shards_count: Annotated[
        int, typer.Option("--shards", help="How many shards (jobs) to deal the grid into.", min=1)
    ],
    out: Annotated[Path, typer.Option(help="The run folder every shard writes into.")],
    executor: Annotated[
        str, typer.Option(help="slurm (a job array) or local (processes on this machine).")
    ] = "local",
    wait: Annotated[
        bool, typer.Option(help="Wait for the jobs, then merge (--no-wait: submit and return).")
    ] = True,
    time: Annotated[
        int | None,
        typer.Option(
            help="Time limit per job, minutes.", show_default="3× the largest shard's estimate"
        ),
    ] = None,
    partition: Annotated[str | None, typer.Option(help="Slurm partition.")] = None,
    gpus_per_task: Annotated[int | None, typer.Option(help="Slurm GPUs per job.", min=0)] = None,
    cpus_per_task: Annotated[int | None, typer.Option(help="CPUs per job.", min=1)] = None,
    mem_gb: Annotated[float | None, typer.Option(help="Memory per job, GB.")] = None,
    parallel: Annotated[
        int | None, typer.Option(help="At most this many Slurm array tasks at once.", min=1)
    ] = None,
    slurm: Annotated[
        list[str] | None,
        typer.Option(help="Any other sbatch option as KEY=VALUE (repeatable): account=abc."),
    ] = None,
) -> None:
    """Run a sweep as n shard jobs with submitit (Slurm array or local), wait, and merge.
    Every other option is `jacbench run`'s: `jacbench submit --shards 4 --out R --preset peers`."""
    run_args = list(ctx.args)
    owned = [a.split("=")[0] for a in run_args if a.split("=")[0] in _SUBMIT_OWNS]
    if owned:
        fail(f"submit sets {', '.join(owned)} for each job itself; leave it out")
    options = {}
    for item in slurm or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--slurm takes KEY=VALUE, got {item!r}")
        options[key.strip()] = value.strip()
    if time is not None and executor == "slurm" and time < submission.MIN_TIMEOUT_MIN:
        fail(
            f"--time {time}: a Slurm job is told to stop up to a minute before its limit; "
            f"give at least {submission.MIN_TIMEOUT_MIN} minutes"
        )
    plan = _dry_run(run_args, shards_count)
    parameters = submission.executor_parameters(
        timeout_min=time or submission.default_timeout_min(float(plan["estimated_s"].max())),
        partition=partition,
        gpus_per_task=gpus_per_task,
        cpus_per_task=cpus_per_task,
        mem_gb=mem_gb,
        parallel=parallel,
        slurm_options=options,
    )
    try:
        jobs = submission.submit(
            run_args, shards_count, out, executor=executor, parameters=parameters
        )
    except ValueError as error:
        fail(str(error))
    except Exception as error:  # sbatch refused, say: its message in one line
        fail(f"submitting failed: {submission.failure_line(str(error))}")
    console.print(
        f"Submitted {len(jobs)} {executor} jobs: {', '.join(str(j.job_id) for j in jobs)}; "
        f"logs in {out / submission.LOGS_FOLDER}/",
        highlight=False,
    )
    if not wait:
        console.print(f"When they have finished: jacbench merge {out}", highlight=False)
        return
    failed = _wait_for(jobs, executor)
    if not failed:
        _merge_shards(out, None)
        return
    for index, problem in failed:
        job = jobs[index]
        err_console.print(
            f"[bold red]Shard {index}/{shards_count} (job {job.job_id}) failed:[/] "
            f"{escape(problem)} (log: {job.paths.stderr})",
            highlight=False,
        )
    err_console.print(
        f"What finished is in {out}; the same `jacbench submit` again runs only what is "
        f"missing (`jacbench merge {out}` shows it)."
    )
    raise typer.Exit(1)


def _dry_run(run_args: list[str], count: int):
    """Check the run options by `jacbench run --dry-run`, printing the dealing; its plan."""
    command = typer.main.get_command(app)
    plan: dict = {}
    try:
        code = command.main(
            ["run", *run_args, "--shard", f"0/{count}", "--dry-run"],
            standalone_mode=False,
            obj=plan,
        )
    except Exception as error:  # a usage error typer left to us (its click, vendored or not)
        if not hasattr(error, "format_message"):
            raise
        fail(f"run option: {error.format_message()}")
    if "shard_plan" not in plan:  # run printed why and stopped
        raise typer.Exit(code if isinstance(code, int) and code else 2)
    return plan["shard_plan"]


def _wait_for(jobs: list, executor: str) -> list[tuple[int, str]]:
    """Wait for every job with a progress bar (submitit's own polling kept quiet); the
    failed ones' indices with why, in one line each."""
    watcher = submission.JobWatcher(jobs, executor)
    progress = Progress(
        SpinnerColumn(),
        TextColumn("shards"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
    )
    quiet = logging.getLogger("submitit")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "Bypassing sacct error …" at every poll without accounting
    try:
        with progress:
            bar = progress.add_task("", total=len(jobs))
            while True:
                done = len(watcher.ended())
                progress.update(bar, completed=done)
                if done == len(jobs):
                    break
                time_module.sleep(1.0)
        failures = [(i, watcher.failure(i)) for i in range(len(jobs))]
    finally:
        quiet.setLevel(level)
    return [(i, problem) for i, problem in failures if problem is not None]


# ----------------------------------------------------------------- report, compare, info
@app.command("report", short_help="Re-render a run's summary.md and plots.")
def report_command(
    run_dir: Annotated[
        Path | None, typer.Argument(help="A run folder holding results.csv.", show_default=False)
    ] = None,
    pytest_benchmark: Annotated[
        Path | None,
        typer.Option(help="A pytest-benchmark JSON (from `pytest benchmarks/ --benchmark-json`)."),
    ] = None,
) -> None:
    """Re-render a run's summary.md and plots, or summarise a pytest-benchmark JSON."""
    if pytest_benchmark is not None and run_dir is None:
        try:
            run = results.read_run(pytest_benchmark)
        except (FileNotFoundError, ResultsFileError) as error:
            fail(str(error))
        for shown in report.summary_tables(run.rows, run.samples):
            console.print(shown)
        meta = {**run.meta, "command": str(pytest_benchmark)}
        console.print(report.summary_markdown(run.rows, meta, samples=run.samples))
        return
    if run_dir is None or pytest_benchmark is not None:
        fail("give a RUN_DIR or --pytest-benchmark FILE.json (one of them)")
    try:
        run = results.read_run(run_dir)
    except (FileNotFoundError, ResultsFileError) as error:
        fail(str(error))
    folder = run_dir if run_dir.is_dir() else run_dir.parent
    written = report.write_report(folder, run.rows, run.meta, run.samples)
    methods = run.meta.get("params", {}).get("methods")
    for shown in report.summary_tables(run.rows, run.samples, methods):
        console.print(shown)
    console.print(f"Wrote {', '.join(str(p) for p in written)}")


def parse_threshold(text: str) -> float:
    """A share from ``10%`` or ``0.1``."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        fail(f"--threshold takes a share like 10% or 0.1, got {text!r}")
    if not value >= 0 or math.isinf(value):
        fail(f"--threshold must be ≥ 0, got {text!r}")
    return value


@app.command(short_help="Time ratios of two runs, with verdicts.")
def compare(
    run_a: Annotated[
        Path,
        typer.Argument(
            help="The baseline: a run folder, its results.csv, or a pytest-benchmark JSON."
        ),
    ],
    run_b: Annotated[Path, typer.Argument(help="The run to compare with it (the same kinds).")],
    threshold: Annotated[
        str,
        typer.Option(
            help="A row regressed when its whole 95% interval of B/A lies above 1 + this "
            "(e.g. 10% or 0.1)."
        ),
    ] = "10%",
    force: Annotated[
        bool, typer.Option("--force", help="Compare even when device, dtype or torch differ.")
    ] = False,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Print a Markdown table instead of a rich one.")
    ] = False,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the comparison to this JSON file.")
    ] = None,
) -> None:
    """Per-row time ratio RUN_B/RUN_A with a 95% bootstrap interval and a verdict (faster, slower,
    same); exit 1 only when a row regressed significantly past --threshold."""
    share = parse_threshold(threshold)
    runs = []
    for path in (run_a, run_b):
        try:
            runs.append(results.read_run(path))
        except (FileNotFoundError, ResultsFileError) as error:
            fail(str(error))
    refusals, warnings = results.run_differences(*runs)
    if refusals and not force:
        fail(
            f"the runs differ in {'; '.join(refusals)}: their times do not compare "
            "(--force to compare anyway)"
        )
    for warning in [*refusals, *warnings]:
        err_console.print(
            f"[yellow]Warning:[/] the runs differ in {escape(warning)}", highlight=False
        )
    merged = stats.compare_runs(runs[0].rows, runs[0].samples, runs[1].rows, runs[1].samples, share)
    if merged.empty:
        fail(f"{run_a} and {run_b} have no timed rows in common")
    label_a, label_b = _run_label(run_a), _run_label(run_b)
    if label_a == label_b:
        label_a, label_b = "A", "B"
    if markdown:
        print(report.compare_markdown(merged, share, label_a, label_b), end="")
    else:
        console.print(report.compare_table(merged, share, label_a, label_b))
    console.print(report.compare_sentence(merged, share), highlight=False)
    if json_path is not None:
        document = {
            "a": str(run_a),
            "b": str(run_b),
            "threshold": share,
            "level": stats.LEVEL,
            "rows": report.compare_records(merged),
        }
        try:
            results.write_json_atomic(json_path, document)
        except OSError as error:
            fail(f"cannot write {json_path}: {error.strerror}")
    if merged["regressed"].any():
        raise typer.Exit(1)


def _run_label(path: Path) -> str:
    """A run's name for table headers: its folder's name."""
    path = path.resolve()
    return path.parent.name if path.name == "results.csv" else path.name


@app.command(cls=ListOptionsCommand, short_help="Versions, device, threads and methods.")
def info(
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "cpu",
    peak: Annotated[
        bool, typer.Option("--peak", help="Also measure peak GEMM FLOP/s and read bandwidth.")
    ] = False,
    dtype: Annotated[str, typer.Option(help="dtypes to measure peaks in.")] = "float32",
) -> None:
    """Print versions, device, threads and available methods; with --peak, the measured limits."""
    device = check_device(device)
    dtypes = parse_choices(dtype, "dtype", list(DTYPES))
    env = {**results.environment(device), "cuda available": torch.cuda.is_available()}
    available = {
        operator: [name for name, m in METHODS.items() if m.available() and m.operator == operator]
        for operator in OPERATORS
    }
    missing: dict[str, list[str]] = {}  # what to install → the methods it would bring
    for name, m in METHODS.items():
        if not m.available():
            missing.setdefault(m.requirement, []).append(name)
    console.print(report.environment_table(env, available, missing))
    if peak:
        with device_lock.hold(device), err_console.status(f"measuring peaks on {device}…"):
            tuning.keep_freed_memory()  # as every timing entry point does
            measured = [measure_peaks(device, DTYPES[name]) for name in dtypes]
        console.print(report.peaks_table(measured))


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
