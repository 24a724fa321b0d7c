"""A sweep's options: what a caller asks for, before anything is resolved.

``jacbench.sweep``'s keywords and ``jacbench run``'s options (``jacbench.faces.cli.sweep``
declares those with typer's own types) make one ``SweepOptions``; ``runs.settings.resolve``
checks it and resolves it once into the ``Settings`` every layer reads. A new option is a
field here, a line where the command line offers it, and the code that uses it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jacbench.runs.methods import Method

# A method as a sweep takes it: a registered name, a routine spec (file.py:function,
# module:function), a callable routine, or a Method.
MethodLike = str | Callable[..., Any] | Method
# A model as a sweep takes it: a built-in model's name, a factory spec (file.py:function,
# module:function) or a factory function (jacbench.runs.models).
ModelLike = str | Callable[..., Any]

DEFAULT_MIN_TIME = 0.2
DEFAULT_MAX_CALL_TIME = 5.0
DEFAULT_CALL_TIMEOUT = 60.0


@dataclass(frozen=True)
class SweepOptions:
    """What to sweep and how: the grid, the methods and the operator; the network, the
    timing and the device. Keyword names are ``jacbench run``'s options.

    The grid is ``preset``'s (``jacbench.runs.grid.PRESETS``), with any of depths, d_in,
    width, d_out and batch replacing the preset's values, or ``shapes``, explicit
    (widths, batch) pairs, in place of the preset's grid.
    """

    device: str = "cpu"
    depths: tuple[int, ...] | None = None
    d_in: tuple[int, ...] | None = None
    width: tuple[int, ...] | None = None
    d_out: tuple[int, ...] | None = None
    batch: tuple[int, ...] | None = None
    dtype: tuple[str, ...] = ("float32",)
    # Names from jacbench.runs.methods.METHODS, routine specs or callables; None: the
    # preset's, else every installed method of the operator.
    methods: tuple[MethodLike, ...] | None = None
    # Factories (jacbench.runs.models): with them the grid is models × params × d_in ×
    # d_out × batch, and depths and width do not apply.
    model: tuple[ModelLike, ...] | None = None
    params: tuple[tuple[str, tuple[Any, ...]], ...] | None = None
    preset: str = "quick"  # the command line lists them
    # A name in jacbench.runs.operators.OPERATORS; None: the preset's (the Jacobian for
    # most). A registered method of another operator is refused; a routine computes this one.
    operator: str | None = None
    shapes: tuple[tuple[tuple[int, ...], int], ...] | None = None  # the library's alone
    min_time: float | None = None
    max_call_time: float = DEFAULT_MAX_CALL_TIME
    call_timeout: float = DEFAULT_CALL_TIMEOUT
    rounds: int = 1
    # Measure the whole sweep in this many fresh processes, one after another, and pool
    # their samples (jacbench.runs.processes): slower, but the spread between processes then
    # shows in the intervals.
    processes: int = 1
    threads: int | None = None
    seed: int = 0
    init: str = "lecun"
    activation: str = "tanh"
    validate: bool = True
    # Measure the device's peak GEMM FLOP/s and bandwidth first (the efficiency column).
    peaks: bool = False

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
