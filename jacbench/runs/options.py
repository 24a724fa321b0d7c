"""A sweep's options, declared once.

``jacbench.sweep``, ``jacbench run`` (and ``jacbench submit``, which passes them on to it),
shards' dry runs, the processes of a pooled run and the pytest plugin all take their options
from ``SweepOptions``. Each field says what it means and how the command line offers it
(``Flag``): ``jacbench.faces.run_options`` builds ``jacbench run``'s options from the
fields, so a new option is one field here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jacbench.runs.methods import Method

# A method as a sweep takes it: a registered name, a routine spec (file.py:function,
# module:function), a callable routine, or a Method.
MethodLike = str | Callable[..., Any] | Method
# A model as a sweep takes it: a family's name, a factory spec (file.py:function,
# module:function) or a factory function (jacbench.runs.models).
ModelLike = str | Callable[..., Any]

DEFAULT_MIN_TIME = 0.2
DEFAULT_MAX_CALL_TIME = 5.0
DEFAULT_CALL_TIMEOUT = 60.0
# A Flag's default when the command line's default is the library's.
SAME_DEFAULT: Any = object()


@dataclass(frozen=True)
class Flag:
    """How ``jacbench run`` offers an option.

    ``parse`` says how its text is read: ``ints`` (whole numbers ≥ 1, space- or comma-separated),
    ``names`` (a list of words), ``params`` (repeated NAME=V1,V2), ``dtypes`` (a list of dtype
    names), ``device``, or ``value`` (typed by the field, checked by the sweep). ``decls`` are its
    spellings when not the field's own name (``--no-validate``); ``inverted`` for a flag that turns
    the option off; ``default`` where the command line's default is not the library's.
    """

    help: str
    parse: str = "value"
    decls: tuple[str, ...] = ()
    inverted: bool = False
    show_default: str | bool = True
    minimum: int | None = None
    default: Any = SAME_DEFAULT


def _option(default: Any, flag: Flag | None = None) -> Any:
    return field(default=default, metadata={"flag": flag} if flag else {})


@dataclass(frozen=True)
class SweepOptions:
    """What to sweep and how: the grid, the methods and the operator; the network, the
    timing and the device. Keyword names are ``jacbench run``'s options.

    The grid is ``preset``'s (``jacbench.runs.grid.PRESETS``), with any of depths, d_in,
    width, d_out and batch replacing the preset's values, or ``shapes``, explicit
    (widths, batch) pairs, in place of the preset's grid.
    """

    device: str = _option("cpu", Flag("cpu, cuda or cuda:N.", parse="device"))
    depths: tuple[int, ...] | None = _option(
        None, Flag("Depths L, e.g. --depths 3 5 10.", parse="ints")
    )
    d_in: tuple[int, ...] | None = _option(None, Flag("Input dimensions D.", parse="ints"))
    width: tuple[int, ...] | None = _option(None, Flag("Hidden widths K.", parse="ints"))
    d_out: tuple[int, ...] | None = _option(None, Flag("Output dimensions P.", parse="ints"))
    batch: tuple[int, ...] | None = _option(
        None, Flag("Batch sizes B (1: unbatched x).", parse="ints")
    )
    dtype: tuple[str, ...] = _option(
        ("float32",), Flag("float32, float64, bfloat16.", parse="dtypes", default="float32")
    )
    # Names from jacbench.runs.methods.METHODS, routine specs or callables; None: the
    # preset's, else every installed method of the operator.
    methods: tuple[MethodLike, ...] | None = _option(
        None,
        Flag(
            "Methods to time: names (jacbench info lists them) or your own routines as "
            "path/file.py:function or module:function (running that file's code).",
            parse="names",
            show_default="the preset's, else all installed",
        ),
    )
    # Factories (jacbench.runs.models): with them the grid is models × params × d_in ×
    # d_out × batch, and depths and width do not apply.
    model: tuple[ModelLike, ...] | None = _option(
        None,
        Flag(
            "Your own network: a factory make(d_in, d_out, **params) as path/file.py:function "
            "or module:function (running that file's code), or a built-in family: residual, "
            "siren, fourier, cnn, attention, mlp. Sweeps --d-in, --d-out, --batch and each "
            "--param.",
            parse="names",
            show_default="jacbench's tanh MLP",
        ),
    )
    params: tuple[tuple[str, tuple[Any, ...]], ...] | None = _option(
        None,
        Flag(
            "A model's keyword parameter as a grid axis: NAME=V1,V2 (ints, floats, words); "
            "repeat for more, e.g. --param width=64,128 --param depth=3.",
            parse="params",
            decls=("--param",),
            show_default=False,
        ),
    )
    preset: str = _option("quick", Flag("Named grid."))  # the command line lists them
    # A name in jacbench.runs.operators.OPERATORS; None: the preset's (the Jacobian for
    # most). A registered method of another operator is refused; a routine computes this one.
    operator: str | None = _option(
        None,
        Flag(
            "What to compute: jacobian, hessian, laplacian or hvp (jacbench info lists "
            "each operator's methods).",
            show_default="the preset's: jacobian, pinn-laplacian: laplacian",
        ),
    )
    shapes: tuple[tuple[tuple[int, ...], int], ...] | None = None  # the library's alone
    min_time: float | None = _option(
        None, Flag("Least measured seconds per row.", show_default="0.2, quick: 0.1")
    )
    max_call_time: float = _option(
        DEFAULT_MAX_CALL_TIME,
        Flag("A method slower than this per call (s) is timed once: 'slow'."),
    )
    call_timeout: float = _option(
        DEFAULT_CALL_TIMEOUT,
        Flag(
            "Stop a call of a user routine (run in a worker process) after this many "
            "seconds: its row is 'timeout'."
        ),
    )
    rounds: int = _option(
        1,
        Flag(
            "Time a point's methods in this many interleaved rounds (steadier on a shared "
            "machine; a point's rows are then written when the point finishes).",
            minimum=1,
        ),
    )
    # Measure the whole sweep in this many fresh processes, one after another, and pool
    # their samples (jacbench.runs.processes): slower, but the spread between processes then
    # shows in the intervals.
    processes: int = _option(
        1,
        Flag(
            "Measure the whole sweep in this many fresh processes, one after another, "
            "and pool them: intervals then include the spread between processes (for "
            "numbers you publish).",
            minimum=1,
        ),
    )
    threads: int | None = _option(
        None, Flag("Intra-op threads.", show_default="torch's", minimum=1)
    )
    seed: int = _option(0, Flag("Seed for weights and inputs."))
    init: str = _option("lecun", Flag("lecun, xavier or normal."))
    activation: str = _option("tanh", Flag("Activation of every hidden layer."))
    validate: bool = _option(
        True, Flag("Skip the float64 reference check.", decls=("--no-validate",), inverted=True)
    )
    # Measure the device's peak GEMM FLOP/s and bandwidth first (the efficiency column).
    peaks: bool = _option(
        False,
        Flag(
            "Measure peak GEMM FLOP/s and bandwidth first (the efficiency column).",
            decls=("--peak/--no-peak",),
            default=True,
        ),
    )

    @classmethod
    def from_keywords(cls, keywords: Mapping[str, Any]) -> SweepOptions:
        """Options from keyword arguments as ``jacbench.sweep`` takes them: lists become
        tuples, one dtype name a tuple of one.

        Raises:
            ValueError: a keyword that is no option, in one line.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = [k for k in keywords if k not in known]
        if unknown:
            raise ValueError(
                f"unknown option {unknown[0]!r}; the options are: {', '.join(sorted(known))}"
            )
        return cls(**{k: _frozen(k, v) for k, v in keywords.items()})

    @property
    def dtypes(self) -> list[str]:
        """The dtype names, as a list."""
        return list(self.dtype)

    @property
    def grid(self) -> dict[str, Sequence[int] | None]:
        """The grid options that replace a preset's values (None: the preset's)."""
        return {
            "depths": self.depths,
            "d_in": self.d_in,
            "width": self.width,
            "d_out": self.d_out,
            "batch": self.batch,
        }


def _frozen(name: str, value: Any) -> Any:
    """A keyword's value as the frozen options keep it."""
    if value is None:
        return None
    if name == "dtype" and isinstance(value, str):
        return (value,)
    if name == "shapes":
        return tuple((tuple(widths), batch) for widths, batch in value)
    if name == "params":
        if not isinstance(value, Mapping):
            raise ValueError(f"params takes a mapping of names to lists, got {value!r}")
        return tuple(
            (str(k), (v,) if isinstance(v, str) or not isinstance(v, Sequence) else tuple(v))
            for k, v in value.items()
        )
    if name in ("depths", "d_in", "width", "d_out", "batch", "dtype", "methods", "model"):
        if isinstance(value, str) or callable(value):
            return (value,)
        try:
            return tuple(value)
        except TypeError:
            raise ValueError(f"{name} takes a list, got {value!r}") from None
    return value
