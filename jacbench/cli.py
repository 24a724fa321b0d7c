"""The ``jacbench`` command line: run, predict, validate, report, compare, info.

Each command parses and checks its options, calls the library and hands the data to
``report.py``. Bad input is one ``Error: …`` line on stderr and exit code 2.
"""

from __future__ import annotations

import math
import shlex
import sys
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from typer.core import TyperCommand

from jacbench import cost, report, results
from jacbench.activations import ACTIVATIONS
from jacbench.jacobians import jacobian, jacobian_forward, jacobian_mixed, jacobian_reverse
from jacbench.methods import METHODS, default_methods
from jacbench.networks import INITS
from jacbench.peaks import measure_peaks
from jacbench.sweep import DTYPES, TOLERANCES, Point, SweepConfig, expand_grid, run_sweep
from jacbench.sweep import validate_points as validate_grid

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

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        ctx.meta["jacbench.argv"] = list(args)
        return super().parse_args(ctx, join_list_options(args))


app = typer.Typer(
    help="Measure, explain and pick between forward-mode and reverse-mode Jacobians.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def fail(message: str, code: int = 2) -> None:
    """One line on stderr, then exit with ``code``."""
    err_console.print(f"[bold red]Error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def parse_ints(text: str | None, name: str, *, minimum: int = 1) -> list[int] | None:
    if text is None:
        return None
    values = []
    for part in text.replace(",", " ").split():
        try:
            value = int(part)
        except ValueError:
            fail(f"{name} takes whole numbers, got {part!r}")
        if value < minimum:
            fail(f"{name} must be ≥ {minimum}, got {value}")
        values.append(value)
    if not values:
        fail(f"{name} needs at least one value")
    return values


def parse_choices(text: str | None, name: str, choices) -> list[str] | None:
    if text is None:
        return None
    values = [part for part in text.replace(",", " ").split()]
    for value in values:
        if value not in choices:
            fail(f"unknown {name} {value!r}; expected one of: {', '.join(choices)}")
    if not values:
        fail(f"{name} needs at least one value")
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
        float | None, typer.Option(help="Largest relative error allowed [default: by dtype].")
    ] = None,
    init: Annotated[str, typer.Option(help="Weight initialisation.")] = "lecun",
    seed: Annotated[int, typer.Option(help="Seed for weights and inputs.")] = 0,
) -> None:
    """Check every routine against float64 torch.func.jacrev over a grid; exit 1 on failure."""
    if dtype not in DTYPES:
        fail(f"unknown dtype {dtype!r}; expected one of: {', '.join(DTYPES)}")
    if init not in INITS:
        fail(f"unknown init {init!r}; expected one of: {', '.join(INITS)}")
    names = (
        list(ACTIVATIONS)
        if activations == "all"
        else parse_choices(activations, "activation", list(ACTIVATIONS))
    )
    points = expand_grid(
        depths=parse_ints(depths, "--depths"),
        d_ins=parse_ints(d_in, "--d-in"),
        widths=parse_ints(width, "--width"),
        d_outs=parse_ints(d_out, "--d-out"),
        batches=parse_ints(batch, "--batch"),
        dtypes=[dtype],
    )
    routines = {
        "forward": jacobian_forward,
        "reverse": jacobian_reverse,
        "mixed": jacobian_mixed,
        "auto": jacobian,
    }
    for size in parse_ints(chunk_sizes, "--chunk-sizes"):
        routines[f"forward chunk_size={size}"] = lambda n, x, s=size: jacobian_forward(
            n, x, chunk_size=s
        )
        routines[f"reverse chunk_size={size}"] = lambda n, x, s=size: jacobian_reverse(
            n, x, chunk_size=s
        )
    tolerance = TOLERANCES[dtype] if tolerance is None else tolerance
    rows = []
    with err_console.status("validating…"):
        for name in names:
            for row in validate_grid(points, routines, seed=seed, init=init, activation=name):
                rows.append({**row, "activation": name})
    console.print(report.validate_table(rows, tolerance))
    failed = [r for r in rows if not r["max_rel_err"] <= tolerance]
    console.print(
        f"{len(points) * len(names)} networks × {len(routines)} routines: "
        + (f"[bold red]{len(failed)} checks failed[/]" if failed else "all within tolerance")
    )
    if failed:
        raise typer.Exit(1)


# -------------------------------------------------------------------------------- run
PRESETS: dict[str, dict] = {
    "quick": {
        "depths": [3],
        "d_in": [4, 64, 512],
        "width": [256],
        "d_out": [4, 64, 512],
        "batch": [1],
        "min_time": 0.1,
    },
    "seed": {"depths": [3, 5, 10], "d_in": [1000], "width": [1000], "d_out": [1], "batch": [1]},
    # The representative grid of the performance comparison: P=1 deep nets, D=1 wide outputs,
    # square, hourglass, small, batched, large, and the textbook case L=10 D=2 K=30 P=10.
    "peers": {
        "points": [
            ((1000, *[1000] * 10, 1), 1),
            ((1000, *[1000] * 5, 1), 1),
            ((1, *[1000] * 5, 1000), 1),
            ((512, *[512] * 5, 512), 1),
            ((512, 512, 16, 512, 512), 1),
            ((16, 32, 32, 32, 4), 1),
            ((256, *[256] * 5, 1), 64),
            ((64, *[128] * 3, 64), 32),
            ((1024, *[1024] * 3, 1024), 1),
            ((1024, *[1024] * 5, 16), 8),
            ((2, *[30] * 10, 10), 1),
        ],
        "methods": [
            "forward",
            "reverse",
            "mixed",
            "auto",
            "func-jacfwd",
            "func-jacrev",
            "autograd-forward",
            "autograd-reverse",
            "jax-jacfwd",
            "jax-jacrev",
        ],
    },
    "crossover": {
        "depths": [5],
        "d_in": [1, 16, 128, 1024],
        "width": [512],
        "d_out": [1, 16, 128, 1024],
        "batch": [1],
        "methods": ["forward", "reverse", "mixed", "auto", "func-jacfwd", "func-jacrev"],
    },
}


@app.command(cls=ListOptionsCommand)
def run(
    ctx: typer.Context,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "cpu",
    depths: Annotated[str | None, typer.Option(help="Depths L, e.g. --depths 3 5 10.")] = None,
    d_in: Annotated[str | None, typer.Option(help="Input dimensions D.")] = None,
    width: Annotated[str | None, typer.Option(help="Hidden widths K.")] = None,
    d_out: Annotated[str | None, typer.Option(help="Output dimensions P.")] = None,
    batch: Annotated[str | None, typer.Option(help="Batch sizes B (1: unbatched x).")] = None,
    dtype: Annotated[str | None, typer.Option(help="float32, float64, bfloat16.")] = None,
    methods: Annotated[str | None, typer.Option(help="Methods to time [default: all].")] = None,
    preset: Annotated[
        str,
        typer.Option(
            help="quick (a crossover in under 2 minutes), seed (D=K=1000 P=1 L=3/5/10), "
            "crossover (D×P grid at L=5 K=512) or peers (the performance grid against "
            "torch.func, autograd and JAX). Grid options override a grid preset's values."
        ),
    ] = "quick",
    out: Annotated[
        Path | None, typer.Option(help="Run folder [default: results/<date>-<device>].")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out, skipping done rows.")] = (
        False
    ),
    min_time: Annotated[
        float | None, typer.Option(help="Least measured seconds per row [default: 0.2].")
    ] = None,
    max_call_time: Annotated[
        float, typer.Option(help="A method slower than this per call (s) is timed once: 'slow'.")
    ] = 5.0,
    rounds: Annotated[
        int,
        typer.Option(
            help="Time a point's methods in this many interleaved rounds (steadier on a shared "
            "machine; a point's rows are then written when the point finishes)."
        ),
    ] = 1,
    threads: Annotated[int | None, typer.Option(help="Intra-op threads [default: torch's].")] = (
        None
    ),
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
    if preset not in PRESETS:
        fail(f"unknown preset {preset!r}; expected one of: {', '.join(PRESETS)}")
    base = PRESETS[preset]
    device = check_device(device)
    dtypes = parse_choices(dtype, "dtype", list(DTYPES)) or ["float32"]
    if methods is None and "methods" in base:  # a preset's list: what is installed of it
        method_names = [m for m in base["methods"] if METHODS[m].available()]
    else:
        method_names = parse_choices(methods, "method", list(METHODS)) or list(default_methods())
    if compile_ and "auto-compiled" not in method_names:
        method_names.append("auto-compiled")
    if cuda_graphs:
        if torch.device(device).type != "cuda":
            fail("--cuda-graphs needs --device cuda")
        if "auto-cudagraph" not in method_names:
            method_names.append("auto-cudagraph")
    for name in method_names:
        if not METHODS[name].available():
            fail(f"method {name} is not available here: {METHODS[name].requirement}")
    given = {"depths": depths, "d_in": d_in, "width": width, "d_out": d_out, "batch": batch}
    if "points" in base and any(v is not None for v in given.values()):
        fail(f"--preset {preset} is a fixed list of shapes; grid options do not apply to it")
    grid = {
        key: parse_ints(text, "--" + key.replace("_", "-")) or base.get(key, [])
        for key, text in given.items()
    }
    if init not in INITS:
        fail(f"unknown init {init!r}; expected one of: {', '.join(INITS)}")
    if activation not in ACTIVATIONS:
        fail(f"unknown activation {activation!r}; expected one of: {', '.join(ACTIVATIONS)}")
    min_time = base.get("min_time", 0.2) if min_time is None else min_time
    if not min_time > 0 or not max_call_time > 0:
        fail("--min-time and --max-call-time must be > 0")
    if rounds < 1:
        fail(f"--rounds must be ≥ 1, got {rounds}")
    if threads is not None:
        if threads < 1:
            fail(f"--threads must be ≥ 1, got {threads}")
        torch.set_num_threads(threads)
    points = expand_grid(
        depths=grid["depths"],
        d_ins=grid["d_in"],
        widths=grid["width"],
        d_outs=grid["d_out"],
        batches=grid["batch"],
        dtypes=dtypes,
        device=device,
    ) + [
        Point(widths, batch_size, name, device)
        for widths, batch_size in base.get("points", [])
        for name in dtypes
    ]
    params = {
        "preset": preset,
        **grid,
        "dtype": dtypes,
        "device": device,
        "methods": method_names,
        "seed": seed,
        "init": init,
        "activation": activation,
        "validate": not no_validate,
    }
    run_dir = out or results.default_run_dir(device)
    try:
        writer = results.RunWriter(run_dir, params, resume=resume)
    except results.RunDirError as error:
        fail(str(error))
    peaks = {}
    if peak:
        with err_console.status(f"measuring peak GEMM throughput and read bandwidth on {device}…"):
            peaks = {name: measure_peaks(device, DTYPES[name]) for name in dtypes}
    config = SweepConfig(
        points=tuple(points),
        methods=tuple(method_names),
        seed=seed,
        init=init,
        activation=activation,
        min_time=min_time,
        max_call_time=max_call_time,
        threads=torch.get_num_threads(),
        validate=not no_validate,
        skip=frozenset(writer.done),
        peaks=peaks,
        rounds=rounds,
    )
    writer.write_meta(
        command=command_line(ctx),
        started=results.now_iso(),
        finished=None,
        seed=seed,
        environment=results.environment(device),
        peaks={name: p.as_dict() for name, p in peaks.items()},
    )
    tasks = config.tasks()
    if len(writer.done) and not quiet:
        err_console.print(f"Resuming {run_dir}: {len(writer.done)} rows done, {len(tasks)} to go.")
    failures = _run_with_progress(config, tasks, writer, quiet)
    writer.write_meta(finished=results.now_iso())
    frame = results.read_results(run_dir)
    written = report.write_report(run_dir, frame, writer.meta)
    if not quiet:
        summary = report.summary_frame(frame)
        console.print(report.summary_table(summary, method_names))
        console.print(report.accuracy_sentence(summary).replace("`", ""))
    console.print(f"Results: {run_dir}/ ({', '.join(p.name for p in [writer.csv_path, *written])})")
    if failures:
        for row in failures:
            err_console.print(report.failure_line(row), highlight=False)
        raise typer.Exit(1)


def _run_with_progress(
    config: SweepConfig, tasks: list[tuple[Point, str]], writer: results.RunWriter, quiet: bool
) -> list[dict]:
    """Run the sweep, appending each row; returns invalid and failed rows. Ctrl-C exits 130."""
    failures = []
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err_console,
        disable=quiet,
        transient=False,
    )

    def describe(i: int) -> str:
        if i >= len(tasks):
            return "done"
        point, method = tasks[i]
        return f"{method} at {point.shape_label}"

    try:
        with progress:
            bar = progress.add_task(describe(0), total=len(tasks))
            for i, row in enumerate(run_sweep(config)):
                writer.append(row)
                if row["status"] in ("invalid", "error"):
                    failures.append(row)
                    progress.console.print(report.failure_line(row), highlight=False)
                progress.update(bar, advance=1, description=describe(i + 1))
    except KeyboardInterrupt:
        writer.write_meta(finished=None, interrupted=results.now_iso())
        err_console.print(
            f"Interrupted: {len(writer.done)} rows kept in {writer.csv_path}; "
            f"continue with --out {writer.run_dir} --resume"
        )
        raise typer.Exit(130) from None
    return failures


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
    if (run_dir is None) == (pytest_benchmark is None):
        fail("give a RUN_DIR or --pytest-benchmark FILE.json (one of them)")
    if pytest_benchmark is not None:
        try:
            frame = results.read_pytest_benchmark(pytest_benchmark)
        except (FileNotFoundError, ValueError) as error:
            fail(str(error))
        summary = report.summary_frame(frame)
        console.print(report.summary_table(summary))
        console.print(report.summary_markdown(frame, {"command": str(pytest_benchmark)}))
        return
    try:
        frame = results.read_results(run_dir)
    except (FileNotFoundError, ValueError) as error:
        fail(str(error))
    meta = results.read_meta(run_dir)
    written = report.write_report(run_dir, frame, meta)
    methods = meta.get("params", {}).get("methods")
    console.print(report.summary_table(report.summary_frame(frame), methods))
    console.print(f"Wrote {', '.join(str(p) for p in written)}")


def parse_threshold(text: str) -> float:
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        fail(f"--threshold takes a share like 10% or 0.1, got {text!r}")
    if not value >= 0 or math.isinf(value):
        fail(f"--threshold must be ≥ 0, got {text!r}")
    return value


@app.command()
def compare(
    run_a: Annotated[Path, typer.Argument(help="The baseline run folder (or results.csv).")],
    run_b: Annotated[Path, typer.Argument(help="The run to compare with it.")],
    threshold: Annotated[
        str, typer.Option(help="Slow-down that counts as a regression, e.g. 10% or 0.1.")
    ] = "10%",
) -> None:
    """Per-row time ratios of RUN_B over RUN_A; exit 1 if any row regressed past --threshold."""
    share = parse_threshold(threshold)
    try:
        before, after = results.read_results(run_a), results.read_results(run_b)
    except (FileNotFoundError, ValueError) as error:
        fail(str(error))
    merged = report.compare_frames(before, after, share)
    if merged.empty:
        fail(f"{run_a} and {run_b} have no timed rows in common")
    console.print(report.compare_table(merged, share, run_a.name or str(run_a), run_b.name))
    regressed = int(merged["regressed"].sum())
    improved = int(merged["improved"].sum())
    console.print(f"{len(merged)} rows compared: {regressed} regressed, {improved} improved.")
    if regressed:
        raise typer.Exit(1)


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
    env = results.environment(device)
    table = Table(title="jacbench environment", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    for key, value in env.items():
        table.add_row(key, "—" if value is None else str(value))
    table.add_row("cuda available", str(torch.cuda.is_available()))
    available = [name for name, m in METHODS.items() if m.available()]
    missing = [f"{name} ({m.requirement})" for name, m in METHODS.items() if not m.available()]
    table.add_row("methods", ", ".join(available))
    if missing:
        table.add_row("not installed", ", ".join(missing))
    console.print(table)
    if peak:
        with err_console.status(f"measuring peaks on {device}…"):
            measured = [measure_peaks(device, DTYPES[name]) for name in dtypes]
        console.print(report.peaks_table(measured))
