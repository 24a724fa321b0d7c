"""The ``jacbench`` command line: run, predict, validate, report, compare, info.

Each command parses its options, calls one library function and hands the data to
``report.py`` to print. Bad input is one ``Error: …`` line on stderr and exit code 2.
"""

from __future__ import annotations

import math
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, NoReturn

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

import jacbench
from jacbench import cost, grading, harness, report, results, stats, tuning
from jacbench.activations import ACTIVATIONS
from jacbench.grid import DTYPES, PRESETS, Point, Preset, expand_grid, get_preset
from jacbench.methods import METHODS, Method
from jacbench.peaks import measure_peaks
from jacbench.rows import FAILED_STATUSES, ResultsFileError, Row

# Tables are wide; when the output is a file or a pipe there is no terminal width to respect.
console = Console() if sys.stdout.isatty() else Console(width=160)
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
        console.print(f"jacbench {jacbench.__version__}")
        raise typer.Exit()


app = typer.Typer(
    help="Measure, explain and pick between forward-mode and reverse-mode Jacobians.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Measure, explain and pick between forward-mode and reverse-mode Jacobians."""


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
@app.command(cls=ListOptionsCommand)
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
) -> None:
    """Predict FLOPs and memory of each mode for a shape, and the mode to use."""
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


@app.command(cls=ListOptionsCommand)
def tune(
    remeasure: Annotated[
        bool, typer.Option("--remeasure", help="Measure again, replacing the cached choice.")
    ] = False,
    threads: Annotated[
        int | None, typer.Option(help="Intra-op threads to tune for (default: torch's).", min=1)
    ] = None,
) -> None:
    """Measure which kernels are fastest on this CPU (once per machine; run does it too)."""
    if threads is not None:
        torch.set_num_threads(threads)
    if tuning.cached() is None or remeasure:
        with err_console.status("measuring this CPU's kernels (a few seconds)…"):
            tuning.save(tuning.measure())
    console.print(report.tuning_table(tuning.ensure("cpu")))
    console.print(f"Cached in {tuning.cache_path()}", highlight=False)


# --------------------------------------------------------------------------- validate
@app.command(cls=ListOptionsCommand)
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
    tolerance = harness.TOLERANCES[dtype] if tolerance is None else tolerance
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


@app.command(cls=ListOptionsCommand)
def run(
    ctx: typer.Context,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "cpu",
    depths: Annotated[str | None, typer.Option(help="Depths L, e.g. --depths 3 5 10.")] = None,
    d_in: Annotated[str | None, typer.Option(help="Input dimensions D.")] = None,
    width: Annotated[str | None, typer.Option(help="Hidden widths K.")] = None,
    d_out: Annotated[str | None, typer.Option(help="Output dimensions P.")] = None,
    batch: Annotated[str | None, typer.Option(help="Batch sizes B (1: unbatched x).")] = None,
    dtype: Annotated[str, typer.Option(help="float32, float64, bfloat16.")] = "float32",
    methods: Annotated[
        str | None,
        typer.Option(
            help="Methods to time: names (jacbench info lists them) or your own routines as "
            "path/file.py:function or module:function (running that file's code).",
            show_default="the preset's, else all installed",
        ),
    ] = None,
    preset: Annotated[str, typer.Option(help=_preset_help())] = "quick",
    out: Annotated[
        Path | None, typer.Option(help="Run folder.", show_default="results/<date>-<device>")
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue the run in --out, skipping rows it holds.")
    ] = False,
    min_time: Annotated[
        float | None,
        typer.Option(help="Least measured seconds per row.", show_default="0.2, quick: 0.1"),
    ] = None,
    max_call_time: Annotated[
        float, typer.Option(help="A method slower than this per call (s) is timed once: 'slow'.")
    ] = harness.DEFAULT_MAX_CALL_TIME,
    rounds: Annotated[
        int,
        typer.Option(
            help="Time a point's methods in this many interleaved rounds (steadier on a shared "
            "machine; a point's rows are then written when the point finishes).",
            min=1,
        ),
    ] = 1,
    processes: Annotated[
        int,
        typer.Option(
            help="Measure the whole sweep in this many fresh processes, one after another, "
            "and pool them: intervals then include the spread between processes (for "
            "numbers you publish).",
            min=1,
        ),
    ] = 1,
    threads: Annotated[
        int | None, typer.Option(help="Intra-op threads.", show_default="torch's", min=1)
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for weights and inputs.")] = 0,
    init: Annotated[str, typer.Option(help="lecun, xavier or normal.")] = "lecun",
    activation: Annotated[str, typer.Option(help="Activation of every hidden layer.")] = "tanh",
    no_validate: Annotated[
        bool, typer.Option("--no-validate", help="Skip the float64 reference check.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar or table.")] = False,
    peak: Annotated[
        bool,
        typer.Option(help="Measure peak GEMM FLOP/s and bandwidth first (the efficiency column)."),
    ] = True,
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
) -> None:
    """Sweep methods over a grid of shapes; write results.csv, meta.json, summary.md and plots."""
    device = check_device(device)
    names = None if methods is None else parse_names(methods, "--methods")
    if cuda_graphs and torch.device(device).type != "cuda":
        fail("--cuda-graphs needs --device cuda")
    opted = (("auto-compiled", compile_), ("auto-cudagraph", cuda_graphs))
    extra = [name for name, wanted in opted if wanted]
    if extra:
        base = names if names is not None else _preset(preset).installed_methods()
        names = [*base, *extra]
    run_dir = out or results.default_run_dir(device)
    progress = _ProgressBar(quiet)
    try:
        with progress.progress:
            frame = harness.sweep(
                names,
                depths=parse_optional_ints(depths, "--depths"),
                d_in=parse_optional_ints(d_in, "--d-in"),
                width=parse_optional_ints(width, "--width"),
                d_out=parse_optional_ints(d_out, "--d-out"),
                batch=parse_optional_ints(batch, "--batch"),
                preset=preset,
                dtype=parse_choices(dtype, "dtype", list(DTYPES)),
                device=device,
                min_time=min_time,
                max_call_time=max_call_time,
                rounds=rounds,
                processes=processes,
                threads=threads,
                seed=seed,
                init=init,
                activation=activation,
                validate=not no_validate,
                peaks=peak,
                out=run_dir,
                resume=resume,
                command=command_line(ctx),
                observer=progress,
            )
    except ValueError as error:  # RunDirError and ResultsFileError are ValueErrors
        fail(str(error))
    except KeyboardInterrupt:
        err_console.print(
            f"Interrupted: {progress.rows} new rows kept in {run_dir / 'results.csv'}; "
            f"continue with --out {run_dir} --resume"
        )
        raise typer.Exit(130) from None
    if not quiet:
        summary = report.summary_frame(frame, frame.attrs.get("samples"))
        console.print(report.summary_table(summary, list(dict.fromkeys(frame["method"]))))
        console.print(report.accuracy_sentence(summary))
    written = sorted(p.name for p in run_dir.iterdir() if not p.name.startswith("."))
    console.print(f"Results: {run_dir}/ ({', '.join(written)})")
    failures = harness.failed_rows(frame)
    if not failures.empty:
        for _, row in failures.iterrows():
            err_console.print(report.failure_line(row), highlight=False)
        raise typer.Exit(1)


# ------------------------------------------------------------------------------ check
@app.command("check")
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
) -> None:
    """Grade your Jacobian routine on edge cases against torch.func, then time it against
    jacbench; exit 1 if any case fails."""
    progress = _ProgressBar(quiet=no_time)
    try:
        with progress.progress:
            graded = grading.check(
                routine, time=not no_time, quick=quick, min_time=min_time, observer=progress
            )
    except ValueError as error:
        fail(str(error))
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
    for hint in graded.hints:
        console.print(f"• {escape(hint)}", highlight=False)
    if not graded.passed:
        raise typer.Exit(1)


# ----------------------------------------------------------------- report, compare, info
@app.command("report")
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
        console.print(report.summary_table(report.summary_frame(run.rows, run.samples)))
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
    console.print(report.summary_table(report.summary_frame(run.rows, run.samples), methods))
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


@app.command()
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


@app.command(cls=ListOptionsCommand)
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
    available = [name for name, m in METHODS.items() if m.available()]
    missing = [f"{name} ({m.requirement})" for name, m in METHODS.items() if not m.available()]
    console.print(report.environment_table(env, available, missing))
    if peak:
        with err_console.status(f"measuring peaks on {device}…"):
            tuning.keep_freed_memory()  # as every timing entry point does
            measured = [measure_peaks(device, DTYPES[name]) for name in dtypes]
        console.print(report.peaks_table(measured))
