"""Kernel choices measured on the machine at hand, cached per CPU, torch version and threads.

Four modules, each importing only those before it:

- ``record``: the ``Tuning`` (a choice per kernel class and tie class), the classes and
  their names, ``DEFAULTS`` (NOTE: [Measured, not assumed]), ``held`` (a tie's choice kept
  only where the machine's earlier tunings agree: NOTE: [A tie holds across tunings]);
- ``cache``: the per-machine cache file, its key, reading it and ``save`` (locked: NOTE:
  [One writer of the tuning cache]);
- ``current``: the tuning in force in this process (``active``, ``use``) and the classes a
  shape looks up (``classes_for``);
- ``measurement``: ``measure``, which times every candidate and chooses by the one decision
  rule (``choose``), and ``ensure``, the cached tuning or one measured now.

The names below are the package's API: ``from jacbench.measure import tuning`` and
``tuning.<name>``. The modules themselves import each other, never this one.
"""

from jacbench.measure.tuning.cache import cache_path, cached, disabled, machine_key, save
from jacbench.measure.tuning.current import activate, active, classes_for, use
from jacbench.measure.tuning.measurement import (
    BATCHED_ELEMENTS,
    BATCHED_ROWS,
    BATCHED_WIDTHS,
    CHAIN,
    FEW_COLUMNS_SHAPE,
    RETRIES,
    ROUNDS,
    SMALL_NETS,
    SPREAD_LIMIT,
    TANH_SHAPE,
    TIE_MIN_TIME,
    TIE_ROUNDS,
    WIDTHS,
    TieCandidates,
    choose,
    ensure,
    measure,
)
from jacbench.measure.tuning.record import (
    BATCHED_CLASSES,
    BATCHED_KERNELS,
    BATCHED_SIZES,
    BATCHING,
    CLASSES,
    DEFAULTS,
    FEW_COLUMNS,
    FEW_COLUMNS_KERNELS,
    LAPLACIAN_WIDE,
    MIN_GAIN,
    NARROW_KERNELS,
    NARROW_ROWS,
    ONE_INPUT_WIDE,
    PRIMAL_CLASSES,
    PRIMAL_KERNELS,
    SIZES,
    SMALL_CLASSES,
    SMALL_ROUTES,
    STACKING,
    TANH_KERNELS,
    TANH_MIN_ELEMENTS,
    TIE_CLASSES,
    TIE_TUNINGS,
    VERSION,
    Tuning,
    bucket,
    class_name,
    default_narrow,
    held,
)

__all__ = [
    "BATCHED_CLASSES",
    "BATCHED_ELEMENTS",
    "BATCHED_KERNELS",
    "BATCHED_ROWS",
    "BATCHED_SIZES",
    "BATCHED_WIDTHS",
    "BATCHING",
    "CHAIN",
    "CLASSES",
    "DEFAULTS",
    "FEW_COLUMNS",
    "FEW_COLUMNS_KERNELS",
    "FEW_COLUMNS_SHAPE",
    "LAPLACIAN_WIDE",
    "MIN_GAIN",
    "NARROW_KERNELS",
    "NARROW_ROWS",
    "ONE_INPUT_WIDE",
    "PRIMAL_CLASSES",
    "PRIMAL_KERNELS",
    "RETRIES",
    "ROUNDS",
    "SIZES",
    "SMALL_CLASSES",
    "SMALL_NETS",
    "SMALL_ROUTES",
    "SPREAD_LIMIT",
    "STACKING",
    "TANH_KERNELS",
    "TANH_MIN_ELEMENTS",
    "TANH_SHAPE",
    "TIE_CLASSES",
    "TIE_MIN_TIME",
    "TIE_ROUNDS",
    "TIE_TUNINGS",
    "VERSION",
    "WIDTHS",
    "TieCandidates",
    "Tuning",
    "activate",
    "active",
    "bucket",
    "cache_path",
    "cached",
    "choose",
    "class_name",
    "classes_for",
    "default_narrow",
    "held",
    "disabled",
    "ensure",
    "machine_key",
    "measure",
    "save",
    "use",
]
