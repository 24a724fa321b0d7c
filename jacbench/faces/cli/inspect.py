"""The commands that look before a run: ``predict`` (the cost model), ``tune`` (this CPU's
kernels), ``info`` (versions, devices, methods, peaks) and ``validate`` (every routine
against float64 torch.func)."""

from __future__ import annotations

import math
from typing import Annotated

import torch
import typer

from jacbench.ad import cost, generic, ties
from jacbench.ad.networks import INITS
from jacbench.faces import report
from jacbench.faces.cli.common import (
    ListOptionsCommand,
    Names,
    NamesOf,
    Numbers,
    OneOf,
    check_device,
    console,
    err_console,
    fail,
    model_params,
    numbers_option,
)
from jacbench.kernels import native
from jacbench.kernels.activations import ACTIVATIONS
from jacbench.measure import allocator, device_lock, tuning
from jacbench.measure.peaks import measure_peaks
from jacbench.runs import harness, models, results, tasks
from jacbench.runs.grid import DTYPES, check_depths, expand_grid
from jacbench.runs.methods import METHODS
from jacbench.runs.operators import OPERATORS

commands = typer.Typer()

DTYPE_NAME = OneOf(tuple(DTYPES))
DTYPE_NAMES = NamesOf(tuple(DTYPES))
FLOAT32 = Names(("float32",))
ACTIVATION_NAMES = NamesOf(("all", *ACTIVATIONS))


# --------------------------------------------------------------------------- predict
Widths = Annotated[
    Numbers | None, numbers_option("Explicit widths D K_1 … K_L P (overrides the four above).")
]
Dtype = Annotated[
    str,
    typer.Option(parser=DTYPE_NAME, metavar=DTYPE_NAME.metavar, help="dtype for the memory model."),
]
Order = Annotated[
    int,
    typer.Option(
        help="1: the Jacobian's modes; 2: also the Hessian's modes and the Laplacian's methods.",
        min=1,
        max=2,
    ),
]
Model = Annotated[
    str | None,
    typer.Option(
        help="Your own network instead of the tanh MLP: a factory make(d_in, d_out, "
        "**params) as path/file.py:function or module:function, or a built-in model "
        "(residual, siren, fourier, cnn, attention, mlp). Its JVP and VJP are counted.",
        show_default=False,
    ),
]
Param = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        help="A model's keyword parameter, NAME=VALUE (repeat for more).",
        show_default=False,
    ),
]


@commands.command(
    cls=ListOptionsCommand, short_help="FLOPs, memory and the recommended mode for a shape."
)
def predict(
    depth: Annotated[int, typer.Option(help="Depth L (number of tanh layers).", min=1)] = 5,
    d_in: Annotated[int, typer.Option(help="Input dimension D.", min=1)] = 1000,
    width: Annotated[int, typer.Option(help="Hidden width K.", min=1)] = 1000,
    d_out: Annotated[int, typer.Option(help="Output dimension P.", min=1)] = 1,
    batch: Annotated[int, typer.Option(help="Batch size B.", min=1)] = 1,
    widths: Widths = None,
    dtype: Dtype = "float32",
    order: Order = 1,
    model: Model = None,
    param: Param = None,
) -> None:
    """Predict FLOPs and memory of each mode for a shape, and the mode to use."""
    if model is not None:
        _predict_model(model, param, d_in, d_out, batch, dtype)
        return
    if param:
        fail("--param is a model's: give it with --model")
    try:
        check_depths([len(widths) - 2 if widths else depth])
    except ValueError as error:
        fail(str(error))
    shape = list(widths) if widths else [d_in, *([width] * depth), d_out]
    if len(shape) < 3:
        fail(f"--widths needs at least 3 values (D K_1 P), got {len(shape)}")
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
    params = {}
    for name, values in model_params(texts) or ():
        if len(values) != 1:
            fail(f"--param {name} takes one value here, got {len(values)}")
        params[name] = values[0]
    try:
        chosen = models.resolve_model(spec).with_params(params)
        with err_console.status("counting the model's JVP and VJP…"):
            plan, takes = models.model_plan(chosen, d_in, d_out, batch=batch, dtype=DTYPES[dtype])
    except ValueError as error:
        fail(str(error))
    console.print(f"{chosen.label} {takes}.", highlight=False)
    console.print(report.model_predict_table(plan, chosen.label))
    console.print(report.model_recommendation(plan), highlight=False)


# ------------------------------------------------------------------------------ tune
@commands.command(cls=ListOptionsCommand, short_help="Measure which kernels this CPU runs fastest.")
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
            with err_console.status("measuring this CPU's kernels (one to two minutes)…"):
                measured = tuning.measure(
                    ties=ties.candidates, calibrate=generic.calibrated, before=tuning.cached()
                )
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
    tuned = tuning.ensure("cpu", ties=ties.candidates, calibrate=generic.calibrated)
    console.print(report.tuning_table(tuned))
    console.print(report.ties_table(tuned))
    if not native.available():
        console.print(f"jacbench's own C++ kernel was not a candidate: {native.why_not()}.")
    console.print(f"Cached in {tuning.cache_path()}", highlight=False)


# ------------------------------------------------------------------------------ info
@commands.command(cls=ListOptionsCommand, short_help="Versions, device, threads and methods.")
def info(
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "cpu",
    peak: Annotated[
        bool, typer.Option("--peak", help="Also measure peak GEMM FLOP/s and read bandwidth.")
    ] = False,
    dtype: Annotated[
        Names,
        typer.Option(
            parser=DTYPE_NAMES, metavar=DTYPE_NAMES.metavar, help="dtypes to measure peaks in."
        ),
    ] = FLOAT32,
) -> None:
    """Print versions, device, threads and available methods; with --peak, the measured limits."""
    device = check_device(device)
    env = {**results.environment(device), "cuda available": torch.cuda.is_available()}
    if device == "cpu":
        with err_console.status("building jacbench's C++ kernels where they are not yet…"):
            env["C++ kernels"] = "built" if native.available() else native.why_not()
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
            allocator.keep_freed_memory()  # as every timing entry point does
            measured = [measure_peaks(device, DTYPES[name]) for name in dtype]
        console.print(report.peaks_table(measured))


# -------------------------------------------------------------------------- validate
# validate's grid by default: every edge the routines have (one unit, widths that are no
# power of two, a batch and one x).
DEPTHS = Numbers((1, 3, 6))
D_INS = Numbers((1, 9, 32))
WIDTHS = Numbers((1, 17))
D_OUTS = Numbers((1, 9, 32))
BATCHES = Numbers((1, 3))
CHUNK_SIZES = Numbers((1, 4))
ALL = Names(("all",))
INIT_NAME = OneOf(INITS)


@commands.command(
    cls=ListOptionsCommand, short_help="Check every routine against float64 torch.func."
)
def validate(
    depths: Annotated[Numbers, numbers_option("Depths L, e.g. 1 3 6.")] = DEPTHS,
    d_in: Annotated[Numbers, numbers_option("Input dimensions D.")] = D_INS,
    width: Annotated[Numbers, numbers_option("Hidden widths K.")] = WIDTHS,
    d_out: Annotated[Numbers, numbers_option("Output dimensions P.")] = D_OUTS,
    batch: Annotated[Numbers, numbers_option("Batch sizes B (1 means an unbatched x).")] = BATCHES,
    activations: Annotated[
        Names,
        typer.Option(
            parser=ACTIVATION_NAMES,
            metavar=ACTIVATION_NAMES.metavar,
            help="Activations, or 'all'.",
        ),
    ] = ALL,
    chunk_sizes: Annotated[
        Numbers, numbers_option("chunk_size values for forward/reverse.")
    ] = CHUNK_SIZES,
    dtype: Annotated[
        str,
        typer.Option(
            parser=DTYPE_NAME, metavar=DTYPE_NAME.metavar, help="dtype of the routines under test."
        ),
    ] = "float64",
    tolerance: Annotated[
        float | None,
        typer.Option(help="Largest relative error allowed.", show_default="by dtype"),
    ] = None,
    init: Annotated[
        str,
        typer.Option(parser=INIT_NAME, metavar=INIT_NAME.metavar, help="Weight initialisation."),
    ] = "lecun",
    seed: Annotated[int, typer.Option(help="Seed for weights and inputs.")] = 0,
) -> None:
    """Check every routine against float64 torch.func.jacrev over a grid; exit 1 on failure."""
    names = list(ACTIVATIONS) if "all" in activations else list(activations)
    if tolerance is not None and not 0 < tolerance < math.inf:
        fail(f"--tolerance must be > 0 and finite, got {tolerance}")
    try:
        points = expand_grid(
            depths=depths, d_in=d_in, width=width, d_out=d_out, batch=batch, dtype=[dtype]
        )
        routines = harness.validation_routines(chunk_sizes)
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
