"""The tuning in force in this process: what the routines read on every narrow product.

``active`` is the tuning set by ``use`` (a block) or ``activate`` (``ensure``, for good),
else the one cached for this machine (read once per process), else the defaults.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from jacbench.kernels.products import NARROW_BLOCK, few_columns_shape, narrow_size, size_class
from jacbench.measure.tuning.cache import cached
from jacbench.measure.tuning.record import (
    BATCHED_SIZES,
    BATCHING,
    DEFAULTS,
    FEW_COLUMNS,
    SIZES,
    STACKING,
    Tuning,
    class_name,
)

_active: Tuning | None = None


def active() -> Tuning:
    """The tuning the routines use now: set by ``use`` or ``ensure``, else the one
    cached for this machine (read once per process), else the defaults."""
    global _active
    if _active is None:
        _active = cached() or DEFAULTS
    return _active


@contextmanager
def use(tuning: Tuning) -> Iterator[Tuning]:
    """Run the routines with ``tuning`` inside the block (tests force each kernel with it)."""
    global _active
    saved = _active
    _active = tuning
    try:
        yield tuning
    finally:
        _active = saved


def activate(tuning: Tuning) -> None:
    """Make ``tuning`` the one the routines use from now on (``ensure`` does)."""
    global _active
    _active = tuning


def classes_for(
    widths: tuple[int, ...], batch: int, mode: str, tuned: Tuning | None = None
) -> list[str]:
    """The classes a Jacobian of this shape by ``mode`` looks up on the CPU (``tuned``: the
    choices that decide which; default the active ones)."""
    tuned = tuned or active()
    sizes = [size_class(a * b) for a, b in zip(widths[:-1], widths[1:])]
    if batch == 1 and mode in ("forward", "reverse") and max(sizes) == 0:
        return [f"small {mode}"]  # the whole routine takes one route (NOTE: [Small networks
        # in NumPy]); on a small network every product is a plain BLAS call otherwise
    names: list[str] = []
    d, p = widths[0], widths[-1]
    one_input_forward = batch == 1 and mode == "forward" and d < NARROW_BLOCK
    for layer, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        if size_class(a * b) == 0:  # the plain BLAS call
            continue
        size = SIZES[narrow_size(a * b)]
        hidden = 0 < layer < len(widths) - 2  # has a primal step and a tangent step
        if one_input_forward and hidden:
            names.append(class_name(STACKING, d, size))
            if tuned.stacks_primal(d, narrow_size(a * b)):
                names.append(class_name("forward", d + 1, size))  # the stacked block
                continue
        if batch < NARROW_BLOCK and layer < len(widths) - 2:  # the primal step
            names.append(class_name("forward", batch, size))
        if batch == 1 and mode == "forward" and 1 < d < NARROW_BLOCK:  # tangent rows
            names.append(class_name("forward", d, size))
        if batch == 1 and mode == "reverse" and p < NARROW_BLOCK:  # adjoint rows
            names.append(class_name("reverse", p, size))
    if batch > 1 and mode == "reverse" and p >= NARROW_BLOCK:  # wide adjoint blocks
        for a, b in zip(widths[:-2], widths[1:-1]):  # W_1 … W_L
            names.append(f"{BATCHING} {BATCHED_SIZES[size_class(a * b)]}")
    # The last product, adjoints (B, P, K_1) times W_1 (K_1 × D), unless a bmm takes it.
    shared = p >= NARROW_BLOCK and tuned.shares_weight(size_class(d * widths[1]))
    last = batch > 1 and mode == "reverse" and not shared
    if last and few_columns_shape(d, batch * p * widths[1]):
        names.append(FEW_COLUMNS)
    return list(dict.fromkeys(names))
