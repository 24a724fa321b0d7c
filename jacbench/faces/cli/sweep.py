"""The sweep's options as ``jacbench run`` offers them, and their reading into SweepOptions.

``run`` declares its parameters with the types here; ``sweep.options`` builds the
``SweepOptions`` from the values parsed (a command's ``ctx.params``), for ``run`` and for
``submit``, which reads the run options it passes on to each job with run's own parser.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Annotated, Any

import torch
import typer
from rich.markup import escape

from jacbench.ad.networks import INITS
from jacbench.faces.cli.common import (
    Names,
    NamesOf,
    Numbers,
    OneOf,
    check_device,
    err_console,
    fail,
    model_params,
    names,
    numbers_option,
)
from jacbench.kernels.activations import ACTIVATIONS
from jacbench.runs import grid
from jacbench.runs.grid import DTYPES, PRESETS
from jacbench.runs.methods import METHODS
from jacbench.runs.operators import OPERATORS
from jacbench.runs.options import SweepOptions

DTYPE_NAMES = NamesOf(tuple(DTYPES))
PRESET_NAMES = OneOf(tuple(PRESETS))
OPERATOR_NAMES = OneOf(tuple(OPERATORS))
INIT_NAMES = OneOf(INITS)
ACTIVATION_NAMES = OneOf(tuple(ACTIVATIONS))


def _preset_help() -> str:
    listed = "; ".join(f"{name}: {preset.description}" for name, preset in PRESETS.items())
    return f"Named grid ({listed}). Grid options replace a grid preset's values."


# The grid
Device = Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")]
Depths = Annotated[Numbers | None, numbers_option("Depths L, e.g. --depths 3 5 10.")]
DIn = Annotated[Numbers | None, numbers_option("Input dimensions D.")]
Width = Annotated[Numbers | None, numbers_option("Hidden widths K.")]
DOut = Annotated[Numbers | None, numbers_option("Output dimensions P.")]
Batch = Annotated[Numbers | None, numbers_option("Batch sizes B (1: unbatched x).")]
DEFAULT_DTYPES = Names(("float32",))
Dtypes = Annotated[
    Names,
    typer.Option(
        parser=DTYPE_NAMES, metavar=DTYPE_NAMES.metavar, help="float32, float64, bfloat16."
    ),
]
# What runs and on what network
Methods = Annotated[
    Names | None,
    typer.Option(
        parser=names,
        metavar=names.metavar,
        help="Methods to time: names (jacbench info lists them) or your own routines as "
        "path/file.py:function or module:function (running that file's code).",
        show_default="the preset's, else all installed",
    ),
]
Model = Annotated[
    Names | None,
    typer.Option(
        parser=names,
        metavar=names.metavar,
        help="Your own network: a factory make(d_in, d_out, **params) as path/file.py:function "
        "or module:function (running that file's code), or a built-in model: residual, "
        "siren, fourier, cnn, attention, mlp. Sweeps --d-in, --d-out, --batch and each "
        "--param.",
        show_default="jacbench's tanh MLP",
    ),
]
Params = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        help="A model's keyword parameter as a grid axis: NAME=V1,V2 (ints, floats, words); "
        "repeat for more, e.g. --param width=64,128 --param depth=3.",
        show_default=False,
    ),
]
Preset = Annotated[str, typer.Option(parser=PRESET_NAMES, metavar="<preset>", help=_preset_help())]
Operator = Annotated[
    str | None,
    typer.Option(
        parser=OPERATOR_NAMES,
        metavar=OPERATOR_NAMES.metavar,
        help="What to compute: jacobian, hessian, laplacian or hvp (jacbench info lists "
        "each operator's methods).",
        show_default="the preset's: jacobian, pinn-laplacian: laplacian",
    ),
]
# How it is timed
MinTime = Annotated[
    float | None,
    typer.Option(help="Least measured seconds per row.", show_default="0.2, quick: 0.1"),
]
MaxCallTime = Annotated[
    float, typer.Option(help="A method slower than this per call (s) is timed once: 'slow'.")
]
CallTimeout = Annotated[
    float,
    typer.Option(
        help="Stop a call of a user routine (run in a worker process) after this many "
        "seconds: its row is 'timeout'."
    ),
]
Rounds = Annotated[
    int,
    typer.Option(
        help="Time a point's methods in this many interleaved rounds (steadier on a shared "
        "machine; a point's rows are then written when the point finishes).",
        min=1,
    ),
]
Processes = Annotated[
    int,
    typer.Option(
        help="Measure the whole sweep in this many fresh processes, one after another, "
        "and pool them: intervals then include the spread between processes (for "
        "numbers you publish).",
        min=1,
    ),
]
Threads = Annotated[
    int | None, typer.Option(help="Intra-op threads.", show_default="torch's", min=1)
]
# The network's weights, and the checks
Seed = Annotated[int, typer.Option(help="Seed for weights and inputs.")]
Init = Annotated[
    str,
    typer.Option(parser=INIT_NAMES, metavar=INIT_NAMES.metavar, help="lecun, xavier or normal."),
]
Activation = Annotated[
    str,
    typer.Option(
        parser=ACTIVATION_NAMES,
        metavar=ACTIVATION_NAMES.metavar,
        help="Activation of every hidden layer.",
    ),
]
NoValidate = Annotated[
    bool, typer.Option("--no-validate", help="Skip the float64 reference check.")
]
Peak = Annotated[
    bool,
    typer.Option(
        "--peak/--no-peak",
        help="Measure peak GEMM FLOP/s and bandwidth first (the efficiency column).",
    ),
]
# The opt-in methods, added to the preset's or --methods
Compile = Annotated[
    bool,
    typer.Option("--compile", help="Also time auto-compiled: auto under torch.compile."),
]
CudaGraphs = Annotated[
    bool,
    typer.Option("--cuda-graphs", help="Also time auto-cudagraph: auto replayed as a CUDA graph."),
]
Fused = Annotated[
    bool,
    typer.Option("--fused", help="Also time fused: forward mode as one Triton kernel (CUDA)."),
]


def options(values: Mapping[str, Any]) -> SweepOptions:
    """The sweep's options from ``jacbench run``'s values by parameter name (its
    ``ctx.params``: each read by its type above already), with the opt-in methods added."""
    chosen = SweepOptions(
        device=check_device(values["device"]),
        depths=values["depths"],
        d_in=values["d_in"],
        width=values["width"],
        d_out=values["d_out"],
        batch=values["batch"],
        dtype=values["dtype"],
        methods=values["methods"],
        model=values["model"],
        params=model_params(values["params"]),
        preset=values["preset"],
        operator=values["operator"],
        min_time=values["min_time"],
        max_call_time=values["max_call_time"],
        call_timeout=values["call_timeout"],
        rounds=values["rounds"],
        processes=values["processes"],
        threads=values["threads"],
        seed=values["seed"],
        init=values["init"],
        activation=values["activation"],
        validate=not values["no_validate"],
        peaks=values["peak"],
    )
    opted = (
        ("auto-compiled", values["compile_"], ""),
        ("auto-cudagraph", values["cuda_graphs"], "--cuda-graphs"),
        ("fused", values["fused_"], "--fused"),
    )
    return _with_opted_methods(chosen, opted)


def _with_opted_methods(
    chosen: SweepOptions, opted: tuple[tuple[str, bool, str], ...]
) -> SweepOptions:
    """The options with the opt-in methods asked for (name, wanted, the flag that needs CUDA)."""
    cuda = torch.device(chosen.device).type == "cuda"
    for _, wanted, flag in opted:
        if wanted and flag and not cuda:
            fail(f"{flag} needs --device cuda")
    extra = [name for name, wanted, _ in opted if wanted]
    if not extra:
        return chosen
    base = chosen.methods
    if base is None:
        base = tuple(_preset(chosen.preset).installed_methods(chosen.operator))
    return dataclasses.replace(chosen, methods=(*base, *extra))


def note_missing_methods(chosen: SweepOptions) -> None:
    """Where the preset's methods run, say which of them are not installed here, and how to
    add them: a preset's peers left out without a word looked like a full comparison."""
    if chosen.methods is not None or chosen.model is not None:
        return
    missing = _preset(chosen.preset).missing_methods()
    for requirement in dict.fromkeys(METHODS[m].requirement for m in missing):
        listed = ", ".join(m for m in missing if METHODS[m].requirement == requirement)
        err_console.print(
            escape(
                f"Note: {listed} of preset {chosen.preset} left out: not installed ({requirement})"
            ),
            highlight=False,
            soft_wrap=True,
        )


def _preset(name: str) -> grid.Preset:
    try:
        return grid.get_preset(name)
    except ValueError as error:
        fail(str(error))
