"""The tuning's record: the kernel choices per class, what they were measured on, the classes.

Two things in the Jacobian routines can be run more than one way with the same arithmetic,
and which way is faster depends on the CPU's BLAS and vector maths, not on the shape alone
(NOTE: [Measured, not assumed]):

- a narrow product, a block of m < 16 rows times a weight (the primal step of a small batch,
  forward mode's tangents T·Wᵀ, reverse mode's adjoints U·W): ``rows`` (the BLAS call on the
  block as it is), ``weight-first`` (W·Tᵀ, the weight as the left operand, transposed back;
  a matrix-vector product for one row), ``split`` (the weight cut into row blocks over all
  threads, NOTE: [Narrow products on all cores] in ``jacbench.kernels.products``) or
  ``native`` (jacbench's own C++ kernel, NOTE: [jacbench's own matrix-vector kernels] in
  ``jacbench.kernels.native``; a candidate only where it builds);
- forward mode's primal step on one input: ``separate`` (W·h, then the tangents T·Wᵀ: two
  reads of W, the second from cache if it fits) or ``stacked`` (h as one more row on top of
  T: one product of 1 + r rows, one read of W; NOTE: [The primal stacked on the tangents]
  in ``jacbench.ad.jacobians``);
- a batch's wide row blocks (16 or more rows per sample: reverse mode's adjoints for P ≥ 16)
  times a weight: ``fold`` (matmul folds the batch into one tall GEMM) or ``bmm`` (one
  product per sample, the weight shared with a zero batch stride);
- a batch's block times a weight of few columns (2 to 15: reverse mode's last product, W_1,
  for D < 16): ``fold`` (one folded GEMM reading the weight as stored, K × n) or
  ``transposed`` (the same GEMM reading a copy of its transpose, n × K, as the BLAS's
  transposed operand; NOTE: [A weight of few columns] in ``jacbench.kernels.products``);
- tanh over a batch's activations: ``tanh`` (torch.tanh), ``sigmoid`` (2·σ(2z) − 1, three
  kernels that beat one where torch.tanh is not vectorised) or ``native`` (the C++ kernels'
  rational tanh, one vectorised pass, where they build).

``Tuning`` holds a choice for each class, and for each tie class (choices between whole
routines); ``DEFAULTS`` is what the routines did before anything was measured. The cache
(``cache``), the tuning in force (``current``) and the measurement (``measurement``) are
the package's other modules.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# NOTE: [Measured, not assumed]
#     One 600×600 float32 layer times 3 tangents, two cores: on an Intel Xeon (MKL, AVX-512)
#     T·Wᵀ takes 12 µs and W·Tᵀ 40 µs; on an AMD EPYC with the same torch build, 90 µs and
#     60 µs. torch.tanh runs at 0.14 ns per element on the Xeon and 1.7 on the EPYC, where
#     torch.sigmoid runs at 0.24. No fixed rule is right on both, so the routines read a
#     choice per class of product, measured once per machine (minutes) and cached.
#     Every candidate computes the same products (the FLOP model is unchanged) and agrees
#     with the reference to rounding.

NARROW_KERNELS = ("rows", "weight-first", "split", "native")
PRIMAL_KERNELS = ("separate", "stacked")
BATCHED_KERNELS = ("fold", "bmm")
FEW_COLUMNS = "batched few columns"  # its one class
FEW_COLUMNS_KERNELS = ("fold", "transposed")
TANH_KERNELS = ("tanh", "sigmoid", "native")
NARROW_ROWS = (1, 3, 8)  # representative rows of the buckets 1, 2–5 and 6–15
# The sizes of the narrow products and primal steps (``kernels.products.narrow_size``
# numbers them in this order), and of a batch's wide blocks (``size_class``).
SIZES = ("small", "medium", "large")
BATCHED_SIZES = ("tiny", "small", "large")
TANH_MIN_ELEMENTS = 1 << 14  # below this, launches dominate: torch.tanh's one kernel wins
# The cache's format: an entry of another version lacks classes, or timed kernels since
# changed (9: the C++ X·Wᵀ takes 2–8 rows of W a pass; small networks may take the C++
# chain; 10: one vector's products read W as one or two long streams; 11: a batch's block
# times a weight of few columns, one input's tie by width), and is measured again.
VERSION = 11


def bucket(rows: int) -> int:
    """The representative row count of the bucket ``rows`` (1 ≤ rows < 16) falls in."""
    return 1 if rows == 1 else 3 if rows <= 5 else 8


def class_name(orientation: str, rows: int, size: str) -> str:
    """A narrow-product class, e.g. ``forward m=3 small``."""
    return f"{orientation} m={bucket(rows)} {size}"


def default_narrow(orientation: str, rows: int, size: str) -> str:
    """What the routines did before anything was measured: a lone vector through the primal
    step is a matrix-vector product; large weights are split over the threads."""
    if size == "large":
        return "split"
    return "weight-first" if orientation == "forward" and rows == 1 else "rows"


# (orientation, representative rows, size) of every class, and the classes' names.
_CLASS_KEYS = tuple(itertools.product(("forward", "reverse"), NARROW_ROWS, SIZES))
CLASSES = tuple(class_name(o, m, s) for o, m, s in _CLASS_KEYS)
# Forward mode's r tangent rows with the primal step of one input: r is the class's m.
STACKING = "forward+primal"
_PRIMAL_KEYS = tuple(itertools.product(NARROW_ROWS, SIZES))
PRIMAL_CLASSES = tuple(class_name(STACKING, m, s) for m, s in _PRIMAL_KEYS)
BATCHING = "batched rows"
BATCHED_CLASSES = tuple(f"{BATCHING} {s}" for s in BATCHED_SIZES)
# One input through a small network, whole: by torch, in NumPy (NOTE: [Small networks in
# NumPy] in ``jacbench.kernels.small``) or as one call of the C++ chain on one thread (NOTE:
# [The reverse chain in one call] in ``jacbench.kernels.native``), per mode; timed on two
# small chains.
SMALL_ROUTES = ("torch", "numpy", "native")
SMALL_CLASSES = ("small forward", "small reverse")

# Choices between whole routines where the cost model's counts tie or mislead (NOTE: [Ties
# measured, not assumed] in ``jacbench.ad.ties``, which supplies what is timed): one input
# with D = P below every layer, forward or reverse mode, for a network narrower or wider
# than ONE_INPUT_WIDE (NOTE: [One input's tie by width] in ``jacbench.ad.ties``); a batch
# with D = P, reverse or forward mode; a batch where mixed mode's bracketing saves under
# cost.MIXED_MIN_SAVING, the pure mode or mixed; the exact Laplacian of a network narrower or
# wider than LAPLACIAN_WIDE. The first candidate is the default.
TIE_CLASSES: dict[str, tuple[str, ...]] = {
    "tie one input narrow": ("reverse", "forward"),
    "tie one input wide": ("forward", "reverse"),
    "tie batch modes": ("reverse", "forward"),
    "tie batch": ("pure", "mixed"),
    "laplacian narrow": ("forward-laplacian", "hessian-trace"),
    "laplacian wide": ("forward-laplacian", "hessian-trace"),
}
LAPLACIAN_WIDE = 100  # hidden width from which a Laplacian is in the "laplacian wide" class
# An alternative must be faster than the default by this much (by ``stats.decide``'s
# ratio, the geometric mean of the rounds' ratios) to replace it.
MIN_GAIN = 0.05
# A tie class leaves its default only where the routine that beat it in this tuning was also
# faster by MIN_GAIN in each of the (up to TIE_TUNINGS - 1) earlier tunings of this machine
# (NOTE: [A tie holds across tunings]).
TIE_TUNINGS = 3
ONE_INPUT_WIDE = 512  # hidden width from which one input's tie is in "tie one input wide"


@dataclass(frozen=True)
class Tuning:
    """The kernel of each narrow-product class, of forward mode's primal step, of a batch's
    wide row blocks and of tanh, the routine that wins each tie, and what they were measured
    on.

    ``machine`` is empty for the built-in defaults; ``measured_s`` holds each candidate's
    median seconds per class, for ``jacbench tune`` and meta.json.
    """

    narrow: Mapping[str, str] = field(
        default_factory=lambda: {
            class_name(o, m, s): default_narrow(o, m, s) for o, m, s in _CLASS_KEYS
        }
    )
    primal: Mapping[str, str] = field(
        default_factory=lambda: dict.fromkeys(PRIMAL_CLASSES, "separate")
    )
    batched: Mapping[str, str] = field(
        default_factory=lambda: dict.fromkeys(BATCHED_CLASSES, "fold")
    )
    small: Mapping[str, str] = field(default_factory=lambda: dict.fromkeys(SMALL_CLASSES, "torch"))
    ties: Mapping[str, str] = field(
        default_factory=lambda: {name: choices[0] for name, choices in TIE_CLASSES.items()}
    )
    tanh: str = "tanh"
    few_columns: str = "fold"
    machine: str = ""
    measured_s: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    # The generic plan's calibration in float32 on this CPU (jacbench.ad.generic): seconds of
    # one torch.func operation per mode, FLOP/s of a small product; {}: not measured.
    calibration: Mapping[str, float] = field(default_factory=dict)
    # Why these measurements are not to be trusted ("": they are): other work on the machine.
    busy: str = field(default="", compare=False)
    # Classes whose rounds kept disagreeing (NOTE: [A tuning measured on a busy machine]):
    # they keep their defaults.
    unsettled: tuple[str, ...] = field(default=(), compare=False)
    # Each tie class's candidates' medians in the earlier tunings of this machine, newest
    # first, at most TIE_TUNINGS - 1 of them (NOTE: [A tie holds across tunings]).
    ties_before: Mapping[str, tuple[Mapping[str, float], ...]] = field(
        default_factory=dict, compare=False
    )

    def __post_init__(self) -> None:
        # The routines look a kernel up on every narrow product: a flat table, keyed by
        # (forward?, rows, large?), costs one dict probe.
        table = {
            (o == "forward", rows, size): self.narrow[class_name(o, rows, s)]
            for o in ("forward", "reverse")
            for rows in range(1, 16)
            for size, s in enumerate(SIZES)
        }
        stacked = {
            (rows, size): self.primal[class_name(STACKING, rows, s)] == "stacked"
            for rows in range(1, 16)
            for size, s in enumerate(SIZES)
        }
        object.__setattr__(self, "_table", table)
        object.__setattr__(self, "_stacked", stacked)
        shared = tuple(self.batched[f"{BATCHING} {s}"] == "bmm" for s in BATCHED_SIZES)
        object.__setattr__(self, "_shared", shared)
        # cost.plan reads two tie rules on every jacobian(mode="auto") call: made once here.
        rules = {
            name: (
                choice,
                _measured_text(self.measured_s.get(name), choice, self.ties_before.get(name, ()))
                * bool(self.machine),
            )
            for name, choice in self.ties.items()
        }
        object.__setattr__(self, "_tie_rules", rules)
        # The small routes in the order a small call tries them (read on every such call).
        routes = {mode: self._small_order(f"small {mode}") for mode in ("forward", "reverse")}
        object.__setattr__(self, "_small_routes", routes)

    def _small_order(self, name: str) -> tuple[str, ...]:
        # The choice, then the other routes this machine measured, fastest first, up to
        # torch's, which takes every network: a network the choice cannot take (the chain
        # takes float32 tanh ones, NumPy no other activation) goes the next fastest way.
        chosen, seconds = self.small[name], self.measured_s.get(name, {})
        others = sorted(
            (s, route) for route, s in seconds.items() if route != chosen and route in SMALL_ROUTES
        )
        order = (chosen, *(route for _, route in others))
        return order[: order.index("torch") + 1] if "torch" in order else (*order, "torch")

    def narrow_kernel(self, forward: bool, rows: int, size: int) -> str:
        """The kernel for ``rows`` (< 16) rows times a weight, in forward mode's orientation
        (block·Wᵀ) or reverse mode's (block·W); ``size``: the weight's ``narrow_size``."""
        return self._table[(forward, rows, size)]  # type: ignore[attr-defined]

    def stacks_primal(self, rows: int, size: int) -> bool:
        """Whether forward mode multiplies one input's primal step with its ``rows`` (< 16)
        tangent rows as one block; ``size``: the weight's ``narrow_size``."""
        return self._stacked[(rows, size)]  # type: ignore[attr-defined]

    def shares_weight(self, size: int) -> bool:
        """Whether a batch's wide row blocks times a weight run as one bmm with the weight
        shared (else one folded GEMM); ``size``: 0 tiny, 1 small, 2 large weight."""
        return self._shared[size]  # type: ignore[attr-defined]

    def tie_rule(self, name: str) -> tuple[str, str]:
        """Tie class ``name``'s choice, and how it was measured ("" where nothing was: the
        fixed rule stands), for the plan's reason."""
        return self._tie_rules[name]  # type: ignore[attr-defined]

    def small_routes(self, mode: str) -> tuple[str, ...]:
        """The ways one input goes through a small network in ``mode`` ("torch", "numpy",
        "native"), in the order to try them: the tuned choice first, "torch" last."""
        return self._small_routes[mode]  # type: ignore[attr-defined]

    def transposes_few_columns(self) -> bool:
        """Whether a batch's block times a weight of few columns reads a copy of the weight's
        transpose (NOTE: [A weight of few columns] in ``jacbench.kernels.products``)."""
        return self.few_columns == "transposed"

    def kernel(self, name: str) -> str:
        """The choice of class ``name`` (a narrow product, a primal step, a batched block, a
        batch's product with a weight of few columns, a small network's route, a tie between
        routines)."""
        if name == FEW_COLUMNS:
            return self.few_columns
        for table in (self.narrow, self.primal, self.batched, self.small, self.ties):
            if name in table:
                return table[name]
        raise KeyError(name)

    def as_dict(self) -> dict[str, Any]:
        """What meta.json and the cache file store."""
        return {
            "version": VERSION,
            "machine": self.machine,
            "tanh": self.tanh,
            "few_columns": self.few_columns,
            "narrow": dict(self.narrow),
            "primal": dict(self.primal),
            "batched": dict(self.batched),
            "small": dict(self.small),
            "ties": dict(self.ties),
            "measured_s": {k: dict(v) for k, v in self.measured_s.items()},
            "unsettled": list(self.unsettled),
            "calibration": dict(self.calibration),
            "ties_before": {k: [dict(m) for m in v] for k, v in self.ties_before.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Tuning:
        """The inverse of ``as_dict``; unknown or missing classes take the defaults."""
        defaults = cls()

        def known(table: str, choices: tuple[str, ...]) -> dict[str, str]:
            kept = dict(getattr(defaults, table))
            for name, kernel in data.get(table, {}).items():
                if name in kept and kernel in choices:
                    kept[name] = kernel
            return kept

        ties = dict(defaults.ties)
        for name, choice in data.get("ties", {}).items():
            if choice in TIE_CLASSES.get(name, ()):
                ties[name] = choice

        tanh = data.get("tanh", "tanh")
        few_columns = data.get("few_columns", "fold")
        return cls(
            narrow=known("narrow", NARROW_KERNELS),
            primal=known("primal", PRIMAL_KERNELS),
            batched=known("batched", BATCHED_KERNELS),
            small=known("small", SMALL_ROUTES),
            ties=ties,
            tanh=tanh if tanh in TANH_KERNELS else "tanh",
            few_columns=few_columns if few_columns in FEW_COLUMNS_KERNELS else "fold",
            machine=str(data.get("machine", "")),
            measured_s=_seconds_by_class(data.get("measured_s")),
            unsettled=tuple(str(name) for name in data.get("unsettled", ())),
            ties_before=_read_ties_before(data.get("ties_before")),
            calibration={
                str(k): float(v)
                for k, v in (data.get("calibration") or {}).items()
                if isinstance(v, int | float) and v > 0
            },
        )


def _seconds_by_class(data: Any) -> dict[str, dict[str, float]]:
    """A cache's ``measured_s`` as {class: {candidate: seconds}}, whatever else it holds
    dropped (a class that is not a table, a time that is not a positive finite number):
    the file is the user's, and every routine reads the tuning made from it."""
    if not isinstance(data, Mapping):
        return {}
    return {
        str(name): {
            str(k): float(v)
            for k, v in times.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and 0 < v < math.inf
        }
        for name, times in data.items()
        if isinstance(times, Mapping)
    }


def _read_ties_before(data: Any) -> dict[str, tuple[dict[str, float], ...]]:
    """A cache's ``ties_before`` as {class: (medians, …)}, whatever else it holds dropped."""
    if not isinstance(data, Mapping):
        return {}
    found = {}
    for name, tunings in data.items():
        if isinstance(tunings, list):
            kept = tuple(m for m in _seconds_by_class(dict(enumerate(tunings))).values() if m)
            found[str(name)] = kept[: TIE_TUNINGS - 1]
    return found


# NOTE: [A tie holds across tunings]
#     A tie class's two routines can trade places on one machine from one tuning to the
#     next, each time by more than the rounds' noise. On a 2-core AMD EPYC VM, sixteen fresh
#     processes timing the tie classes one after another (five interleaved rounds each):
#     the trace of the structured Hessian over the forward Laplacian at K = 64 took 1.30 to
#     1.54 times as long in thirteen and 0.96 to 1.01 in three; at K = 128 1.15 to 1.27 in
#     ten and 0.90 to 0.94 in four; mixed over pure mode on the batch tie 0.92 to 0.99 in
#     twelve (faster in every round of eleven) and 1.06 to 1.27 in four. Each process's
#     rounds agreed with one another; the machine changed under them for seconds to minutes
#     at a time (the forward Laplacian's time went from 1.45 to 2.5 ms inside one process,
#     with nothing else running in the VM and both cores busy with its threads throughout),
#     so timing the ties in three fresh processes a tuning chose the other routine as often
#     as one process did (4 of 10 tunings each). Where a tuning picked the challenger, the
#     next `jacbench tune --remeasure` often took it back: the plan's verdict moved with the
#     machine's moment. So a tie class keeps its default unless the challenger that won
#     this tuning's rounds (``measurement.choose``) was also faster by MIN_GAIN in each
#     earlier tuning of this machine that timed both (``held``; up to TIE_TUNINGS - 1 of
#     them, kept in the cache with the tuning: ``Tuning.ties_before``). A first tuning
#     decides on its own rounds; from the second on, a choice that flips with the machine's
#     moment stays at the default, and one that held three times stands. The plan's reason
#     says so where that is why (``_measured_text``).
def held(choice: str, default: str, before: Sequence[Mapping[str, float]]) -> str:
    """``choice`` where it is the default or was faster than the default by ``MIN_GAIN`` in
    each earlier tuning ``before`` that timed both (NOTE: [A tie holds across tunings]);
    else the default."""
    if choice == default:
        return choice
    earlier = [m for m in before if choice in m and default in m]
    if all(_faster_by_min_gain(m[choice], m[default]) for m in earlier):
        return choice
    return default


def _faster_by_min_gain(fast: float, slow: float) -> bool:
    return fast * (1 + MIN_GAIN) <= slow


def _measured_text(
    seconds: Mapping[str, float] | None,
    choice: str = "",
    before: tuple[Mapping[str, float], ...] = (),
) -> str:
    """``measured on this machine: forward 0.851 ms, reverse 0.755 ms`` ("" for none), and,
    where the choice is not the fastest of those medians, that it was kept: the other was
    not faster by the one rule (NOTE: [One decision rule]; within noise), or was faster now
    and not in an earlier tuning (NOTE: [A tie holds across tunings])."""
    if not seconds:
        return ""
    times = ", ".join(f"{k} {s * 1e3:.3g} ms" for k, s in seconds.items())
    text = f"measured on this machine: {times}"
    fastest = min(seconds, key=seconds.__getitem__)
    if choice in seconds and seconds[fastest] < seconds[choice]:
        clearly = _faster_by_min_gain(seconds[fastest], seconds[choice])
        if clearly and held(fastest, choice, before) == choice:
            text += (
                f"; {choice} kept: {fastest} was faster in this tuning but not in an earlier "
                "one of this machine, the two trade places here"
            )
        else:
            text += (
                f"; {choice} kept: {fastest} was not faster by the one rule, the difference "
                "within noise"
            )
    return text


DEFAULTS = Tuning()
