"""Kernel choices measured on the machine at hand, cached per CPU, torch version and threads.

Two things in the Jacobian routines can be run more than one way with the same arithmetic,
and which way is faster depends on the CPU's BLAS and vector maths, not on the shape alone
(NOTE: [Measured, not assumed]):

- a narrow product, a block of m < 16 rows times a weight (the primal step of a small batch,
  forward mode's tangents T·Wᵀ, reverse mode's adjoints U·W): ``rows`` (the BLAS call on the
  block as it is), ``weight-first`` (W·Tᵀ, the weight as the left operand, transposed back;
  a matrix-vector product for one row) or ``split`` (the weight cut into row blocks over all
  threads, NOTE: [Narrow products on all cores] in ``jacbench.kernels.products``);
- forward mode's primal step on one input: ``separate`` (W·h, then the tangents T·Wᵀ: two
  reads of W, the second from cache if it fits) or ``stacked`` (h as one more row on top of
  T: one product of 1 + r rows, one read of W; NOTE: [The primal stacked on the tangents]
  in ``jacbench.ad.jacobians``);
- a batch's wide row blocks (16 or more rows per sample: reverse mode's adjoints for P ≥ 16)
  times a weight: ``fold`` (matmul folds the batch into one tall GEMM) or ``bmm`` (one
  product per sample, the weight shared with a zero batch stride);
- tanh over a batch's activations: ``tanh`` (torch.tanh) or ``sigmoid`` (2·σ(2z) − 1, three
  kernels that beat one where torch.tanh is not vectorised).

``measure`` times every candidate of each class on representative shapes, in interleaved
rounds, and keeps the built-in default unless another is at least ``MIN_GAIN`` faster.
``active`` is what the routines read: the cached tuning for this machine when there is
one, else the defaults. ``jacbench run`` and ``jacbench tune`` measure and cache it;
``JACBENCH_TUNING=defaults`` turns it off (reproducible kernels on every machine).
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import statistics
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from jacbench.kernels import small
from jacbench.kernels.products import (
    NARROW_BLOCK,
    batched_rows_product,
    can_split,
    narrow_product,
    narrow_size,
    size_class,
    tanh_by_sigmoid,
)
from jacbench.measure import timing
from jacbench.measure.machine import BUSY_LOAD, OtherWork, cpu_model

# NOTE: [Measured, not assumed]
#     One 600×600 float32 layer times 3 tangents, two cores: on an Intel Xeon (MKL, AVX-512)
#     T·Wᵀ takes 12 µs and W·Tᵀ 40 µs; on an AMD EPYC with the same torch build, 90 µs and
#     60 µs. torch.tanh runs at 0.14 ns per element on the Xeon and 1.7 on the EPYC, where
#     torch.sigmoid runs at 0.24. No fixed rule is right on both, so the routines read a
#     choice per class of product, measured once per machine (minutes) and cached.
#     Every candidate computes the same products (the FLOP model is unchanged) and agrees
#     with the reference to rounding.

NARROW_KERNELS = ("rows", "weight-first", "split")
PRIMAL_KERNELS = ("separate", "stacked")
BATCHED_KERNELS = ("fold", "bmm")
TANH_KERNELS = ("tanh", "sigmoid")
NARROW_ROWS = (1, 3, 8)  # representative rows of the buckets 1, 2–5 and 6–15
# Square weights of each size of ``jacbench.kernels.products`` (which numbers them in this
# order): for a narrow product small (from TUNED_MIN_ELEMENTS; under it a product is always
# the plain BLAS call), medium (from MEDIUM_MIN_ELEMENTS) and large (from SPLIT_MIN_ELEMENTS);
# for a batch's wide blocks tiny (a PINN's 64-wide layers), small and large. Each size is
# timed at a power of two and at a width that is not one, and judged on the geometric mean:
# MKL's kernels for a few rows differ between the two (on a Xeon, 4 rows through a
# 1024-wide weight ran 1.5× the time of 3 rows, through a 1000-wide one 2.1×), so one
# width alone misleads the class.
WIDTHS = {"small": (256, 500), "medium": (512, 700), "large": (1024, 1000)}
SIZES = tuple(WIDTHS)  # the sizes of the narrow products and primal steps (narrow_size)
BATCHED_WIDTHS = {"tiny": (64, 100), "small": (512, 600), "large": (1024, 1000)}
BATCHED_SIZES = tuple(BATCHED_WIDTHS)  # the sizes of a batch's wide blocks (size_class)
BATCHED_ROWS = 64  # rows per sample of the timed blocks
BATCHED_ELEMENTS = 1 << 20  # per timed block (4 MB in float32): the batch is this / (64·K)
# Weights per chain: a sweep reads each weight once, from wherever it sits. 8 MB of small
# weights stay in a server's cache as a 512-wide net's do; 64 MB of large ones do not, as a
# 1024-wide deep net's do not. One weight timed alone would sit in cache and mislead.
CHAIN = {"tiny": 8, "small": 8, "medium": 8, "large": 16}
TANH_SHAPE = (4096, 64)  # a PINN batch's activations
TANH_MIN_ELEMENTS = 1 << 14  # below this, launches dominate: torch.tanh's one kernel wins
MIN_GAIN = 0.05  # an alternative must be this much faster than the default to replace it
ROUNDS = 3
# The cache's format: an entry of another version lacks classes and is measured again.
VERSION = 6


def bucket(rows: int) -> int:
    """The representative row count of the bucket ``rows`` (1 ≤ rows < 16) falls in."""
    return 1 if rows == 1 else 3 if rows <= 5 else 8


def class_name(orientation: str, rows: int, size: str) -> str:
    """A narrow-product class, e.g. ``forward m=3 small``."""
    return f"{orientation} m={bucket(rows)} {size}"


def _default_narrow(orientation: str, rows: int, size: str) -> str:
    # What the routines did before anything was measured: a lone vector through the primal
    # step is a matrix-vector product; large weights are split over the threads.
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
# One input through a small network, whole: by torch or in NumPy (NOTE: [Small networks in
# NumPy] in ``jacbench.kernels.small``), per mode; timed on two small chains.
SMALL_ROUTES = ("torch", "numpy")
SMALL_CLASSES = ("small forward", "small reverse")
SMALL_NETS = ((4, 24, 8, 6), (2, 30, 10, 10))  # (D, K, L, P): the classes and textbook nets
# Choices between whole routines where the cost model's counts tie or mislead (NOTE: [Ties
# measured, not assumed] in ``jacbench.ad.ties``, which supplies what is timed): one input
# with D = P below every layer, forward or reverse mode; a batch with D = P, reverse or
# forward mode; a batch where mixed mode's bracketing saves under cost.MIXED_MIN_SAVING, the
# pure mode or mixed; the exact Laplacian of a network narrower or wider than
# LAPLACIAN_WIDE. The first candidate is the default.
TIE_CLASSES: dict[str, tuple[str, ...]] = {
    "tie one input": ("forward", "reverse"),
    "tie batch modes": ("reverse", "forward"),
    "tie batch": ("pure", "mixed"),
    "laplacian narrow": ("forward-laplacian", "hessian-trace"),
    "laplacian wide": ("forward-laplacian", "hessian-trace"),
}
LAPLACIAN_WIDE = 100  # hidden width from which a Laplacian is in the "laplacian wide" class
TIE_MIN_TIME = 0.05  # per candidate and round: whole routines, milliseconds a call
# Rounds for a tie: its candidates are within a few percent by construction, less than this
# VM's run-to-run noise (±30% on a 2-core AMD EPYC): a choice must win all of them.
TIE_ROUNDS = 5


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
            class_name(o, m, s): _default_narrow(o, m, s) for o, m, s in _CLASS_KEYS
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
    machine: str = ""
    measured_s: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    # Why these measurements are not to be trusted ("": they are): other work on the machine.
    busy: str = field(default="", compare=False)
    # Classes whose rounds kept disagreeing (NOTE: [A tuning measured on a busy machine]):
    # they keep their defaults.
    unsettled: tuple[str, ...] = field(default=(), compare=False)

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
            name: (choice, _measured_text(self.measured_s.get(name)) if self.machine else "")
            for name, choice in self.ties.items()
        }
        object.__setattr__(self, "_tie_rules", rules)

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

    def small_route(self, mode: str) -> str:
        """How one input goes through a small network in ``mode``: "torch" or "numpy"."""
        return self.small[f"small {mode}"]

    def kernel(self, name: str) -> str:
        """The choice of class ``name`` (a narrow product, a primal step, a batched block, a
        small network's route, a tie between routines)."""
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
            "narrow": dict(self.narrow),
            "primal": dict(self.primal),
            "batched": dict(self.batched),
            "small": dict(self.small),
            "ties": dict(self.ties),
            "measured_s": {k: dict(v) for k, v in self.measured_s.items()},
            "unsettled": list(self.unsettled),
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
        return cls(
            narrow=known("narrow", NARROW_KERNELS),
            primal=known("primal", PRIMAL_KERNELS),
            batched=known("batched", BATCHED_KERNELS),
            small=known("small", SMALL_ROUTES),
            ties=ties,
            tanh=tanh if tanh in TANH_KERNELS else "tanh",
            machine=str(data.get("machine", "")),
            measured_s=data.get("measured_s", {}),
            unsettled=tuple(str(name) for name in data.get("unsettled", ())),
        )


def _measured_text(seconds: Mapping[str, float] | None) -> str:
    """``measured on this machine: forward 0.851 ms, reverse 0.755 ms`` ("" for none)."""
    if not seconds:
        return ""
    times = ", ".join(f"{k} {s * 1e3:.3g} ms" for k, s in seconds.items())
    return f"measured on this machine: {times}"


DEFAULTS = Tuning()


def machine_key() -> str:
    """What a tuning is valid for: CPU model, torch version and intra-op threads."""
    return f"{cpu_model()} | torch {torch.__version__} | {torch.get_num_threads()} threads"


def cache_path() -> Path:
    """``$JACBENCH_CACHE_DIR/tuning.json``, else under ``$XDG_CACHE_HOME`` or ``~/.cache``."""
    root = os.environ.get("JACBENCH_CACHE_DIR")
    if root:
        return Path(root) / "tuning.json"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "jacbench" / "tuning.json"


def _disabled() -> bool:
    return os.environ.get("JACBENCH_TUNING", "").lower() in ("defaults", "off", "0")


def _read_cache() -> dict[str, Any]:
    try:
        data = json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def cached() -> Tuning | None:
    """This machine's cached tuning, if one was measured (None when tuning is off)."""
    if _disabled():
        return None
    entry = _read_cache().get(machine_key())
    if not isinstance(entry, dict) or entry.get("version") != VERSION:
        return None  # never measured here, or measured before some classes existed
    return Tuning.from_dict(entry)


def save(tuning: Tuning) -> Path:
    """Add ``tuning`` to the cache under its machine key (other machines' entries kept)."""
    path = cache_path()
    data = _read_cache()
    data[tuning.machine] = tuning.as_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.replace(path)  # atomic: a concurrent reader sees the old file or the new
    return path


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


TieCandidates = Callable[[], Mapping[str, Mapping[str, Callable[[], object]]]]


def ensure(
    device: str = "cpu",
    *,
    progress: Callable[[str], None] | None = None,
    ties: TieCandidates | None = None,
) -> Tuning:
    """The tuning for this machine and thread count: cached, or measured now and cached,
    and made active. Other devices, or tuning turned off, keep what is active. Measured on
    a busy machine it is neither cached nor used: the defaults are, and ``progress`` is told.

    Every timing entry point calls this first, so it also sets ``keep_freed_memory``.
    ``ties`` supplies the routines each tie class times (``jacbench.ad.ties.candidates``);
    without it the ties keep their defaults.
    """
    global _active
    keep_freed_memory()
    if torch.device(device).type != "cpu" or _disabled():
        return active()
    found = cached()
    if found is None and _REFUSED:  # measured busy once in this process: not again
        found = DEFAULTS
    if found is None:
        if progress is not None:
            progress("measuring this CPU's fastest kernels (once per machine)…")
        found = measure(ties=ties)
        if found.busy:
            _REFUSED.append(found.busy)
            if progress is not None:
                progress(
                    f"the kernels' timings were not cached, the defaults are used: {found.busy}"
                )
            found = DEFAULTS
        else:
            save(found)
    _active = found
    return found


# Why a tuning measured in this process was refused (empty: none was).
_REFUSED: list[str] = []


# NOTE: [Freed memory kept for reuse]
#     PyTorch's CPU tensors come from malloc, and glibc serves a block above its mmap
#     threshold with fresh pages from the kernel, returned on free. The threshold moves as
#     such blocks are freed, so whether a process keeps paying for fresh pages is chance: on
#     the PINN shape (D=2, K=64, L=6, B=4096, 1 MB activations) five fresh processes timed
#     1.75, 1.76, 1.78, 4.25 and 4.28 ms per Jacobian, the slow two with 2272 page faults a
#     call. With the thresholds fixed (mmap 64 MiB, trim 128 MiB) six of six took
#     1.72–1.74 ms with none. Every method in the process gains alike (torch.func and
#     autograd allocate the same way), so comparisons stay fair; jacbench's own timing
#     entry points set it, and a library user may call it once at start.
MMAP_THRESHOLD = 64 << 20
TRIM_THRESHOLD = 128 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
_allocator: dict[str, Any] = {"kept_freed_memory": False}


def keep_freed_memory() -> bool:
    """Have glibc keep freed blocks up to 64 MiB for reuse (NOTE: [Freed memory kept for
    reuse]). Process-wide; True where it applied (glibc), False elsewhere."""
    if _allocator["kept_freed_memory"]:
        return True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        applied = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
        )
    except (OSError, AttributeError):
        applied = False
    if applied:
        _allocator.update(
            kept_freed_memory=True, mmap_threshold=MMAP_THRESHOLD, trim_threshold=TRIM_THRESHOLD
        )
    return applied


def allocator_settings() -> dict[str, Any]:
    """What ``keep_freed_memory`` set in this process, for meta.json."""
    return dict(_allocator)


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
    return list(dict.fromkeys(names))


# ------------------------------------------------------------------ measurement
def _candidates(
    orientation: str,
    rows: int,
    weights: list[torch.Tensor],
    *,
    narrow: Mapping[str, str],
    size: str,
) -> dict[str, Callable]:
    """Each kernel as one pass of a row block through a chain of weights, as a sweep runs.

    A reverse pass follows a primal pass up the chain by the forward kernel chosen in
    ``narrow`` (as reverse mode's sweep follows its primal pass: what the primal pass left
    in each core's cache, and where, favours some kernels), and the adjoints go down.
    """

    block = torch.randn(rows, weights[0].shape[0])  # square weights: either orientation fits
    forward = orientation == "forward"
    matrices = [w.T if forward else w for w in weights[::-1]]  # the right operands, as passed
    h = torch.randn(1, weights[0].shape[0])
    up = [] if forward else [w.T for w in weights]
    primal_kernel = "" if forward else narrow[class_name("forward", 1, size)]

    def chain(kernel: str) -> Callable[[], object]:
        def run() -> object:
            for matrix in up:
                narrow_product(h, matrix, True, primal_kernel)
            for matrix in matrices:
                narrow_product(block, matrix, forward, kernel)
            return None

        return run

    kernels = {kernel: chain(kernel) for kernel in NARROW_KERNELS}
    if not can_split(weights[0]):
        kernels.pop("split")
    return kernels


def _primal_candidates(
    rows: int, weights: list[torch.Tensor], narrow: Mapping[str, str], size: str
) -> dict[str, Callable]:
    """One input's primal step and ``rows`` tangent rows through a chain of weights, as two
    products (each by its measured kernel) or as one stacked block (the stacking included)."""

    width = weights[0].shape[0]
    h, block = torch.randn(1, width), torch.randn(rows, width)
    matrices = [w.T for w in weights]  # forward mode's right operands
    kernel = {m: narrow[class_name("forward", m, size)] for m in (1, rows, rows + 1)}

    def separate() -> object:
        for matrix in matrices:
            narrow_product(h, matrix, True, kernel[1])
            narrow_product(block, matrix, True, kernel[rows])
        return None

    def stacked() -> object:
        for matrix in matrices:
            narrow_product(torch.cat((h, block)), matrix, True, kernel[rows + 1])
        return None

    return {"separate": separate, "stacked": stacked}


def _batched_candidates(weights: list[torch.Tensor]) -> dict[str, Callable]:
    """A batch's block of BATCHED_ROWS rows per sample through a chain of weights, folded
    into one GEMM or as one bmm with the weight shared."""

    width = weights[0].shape[0]
    batch = max(1, BATCHED_ELEMENTS // (BATCHED_ROWS * width))
    block = torch.randn(batch, BATCHED_ROWS, width)

    def chain(shared: bool) -> Callable[[], object]:
        def run() -> object:
            for weight in weights:
                batched_rows_product(block, weight, shared)
            return None

        return run

    return {"fold": chain(False), "bmm": chain(True)}


def _small_candidates(mode: str, net: tuple[int, int, int, int]) -> dict[str, Callable]:
    """One input's Jacobian through a small tanh chain in ``mode``: torch's products and
    scalings as the routines run them, against the NumPy route."""
    d, k, depth, p = net
    widths = (d, *([k] * depth), p)
    generator = torch.Generator().manual_seed(1)
    weights = [torch.randn(b, a, generator=generator) / a**0.5 for a, b in zip(widths, widths[1:])]
    biases, names = [None] * len(weights), ["tanh"] * depth
    x = torch.randn(d, generator=generator)
    backward = torch.ops.aten.tanh_backward.default

    def torch_route() -> object:
        h, saved = x.view(1, -1), []
        for w in weights[:-1]:
            h = torch.tanh(torch.mm(h, w.T))
            saved.append(h)
        if mode == "reverse":
            block = weights[-1]
            for w, s in zip(weights[-2::-1], saved[::-1]):
                block = torch.mm(backward(block, s), w)
            return block
        block = weights[0].T
        for w, s in zip(weights[1:], saved):
            block = torch.mm(backward(block, s), w.T)
        return block

    numpy_route = small.reverse if mode == "reverse" else small.forward
    arrays = small.network(weights, biases, names)  # as an MLP keeps its own
    assert arrays is not None  # tanh has its NumPy form
    return {"torch": torch_route, "numpy": lambda: numpy_route(arrays, x)}


def _time(fn: Callable[[], object], min_time: float, threads: int | None = None) -> float:
    return timing.measure(fn, min_time=min_time, warmup=1, threads=threads).median


def _pick(default: str, rounds: Mapping[str, Sequence[float]]) -> str:
    """The fastest candidate by its median over the interleaved rounds, where it is at least
    ``MIN_GAIN`` faster than the default and faster in every round; else the default."""
    return _settle(default, rounds, spread=1.0)[0]


def _fastest(default: str, rounds: Mapping[str, Sequence[float]]) -> str:
    """The fastest candidate by the medians alone, unless the default is within ``MIN_GAIN``."""
    medians = _medians(rounds)
    best = min(medians, key=medians.__getitem__)
    return best if medians[best] < (1 - MIN_GAIN) * medians[default] else default


def _settle(default: str, rounds: Mapping[str, Sequence[float]], spread: float) -> tuple[str, bool]:
    """The class's choice (``_pick``'s), and whether it is settled: not where the rounds
    disagreed by more than ``SPREAD_LIMIT`` and the medians name another candidate that did
    not win every round (NOTE: [A tuning measured on a busy machine])."""
    best = _fastest(default, rounds)
    if best == default or all(b < d for b, d in zip(rounds[best], rounds[default])):
        return best, True
    return default, spread <= SPREAD_LIMIT


def _medians(rounds: Mapping[str, Sequence[float]]) -> dict[str, float]:
    return {name: statistics.median(times) for name, times in rounds.items()}


# NOTE: [A tuning measured on a busy machine]
#     Other work on the machine slows some candidates more than others, and a choice cached
#     then is kept for good: on an AMD EPYC with another job running, a tuning chose bmm over
#     fold and separate over stacked, and timed tanh at 16.6 ms per buffer against 411 µs
#     idle. So the candidates are timed in interleaved rounds; a tuning that ran with other
#     load on the machine (machine.BUSY_LOAD) is not cached: the defaults stand, and
#     `jacbench tune` says why. A class whose rounds disagree by more than SPREAD_LIMIT is
#     timed again, up to RETRIES times, and where they still disagree that class keeps its
#     default (``Tuning.unsettled`` names it) while the others are kept, unless one candidate
#     beat the default in every round: rounds are interleaved, so a slow spell slows every
#     candidate of its round alike, and the winner of each stands. On a shared 2-core AMD
#     EPYC VM, idle by /proc/stat, one class's winner (weight-first through 1024-wide chains)
#     disagreed with itself by 1.96× in three attempts, and refusing the whole tuning for it,
#     as before, left every class at the defaults measured on another CPU; the split through
#     700-wide chains (90 against 153 µs a product) was refused the same way.
SPREAD_LIMIT = 1.5
RETRIES = 2


def _measure_round_robin(
    candidates: Mapping[str, Callable[[], object]],
    min_time: float,
    threads: int | None = None,
    spreads: list[float] | None = None,
    rounds: int = ROUNDS,
) -> dict[str, list[float]]:
    """Each candidate's seconds in each of ``rounds`` interleaved rounds; each candidate's
    ratio of its slowest to its fastest round goes into ``spreads``. Rounds that disagree by
    more than ``SPREAD_LIMIT`` are timed again, up to ``RETRIES`` times (NOTE: [A tuning
    measured on a busy machine]); the last attempt's are kept."""
    for _ in range(1 + RETRIES):
        times: dict[str, list[float]] = {name: [] for name in candidates}
        for _ in range(rounds):  # interleaved, so that drift hits every candidate alike
            for name, fn in candidates.items():
                times[name].append(_time(fn, min_time, threads))
        found = [max(t) / min(t) for t in times.values() if min(t) > 0]
        if max(found, default=1.0) <= SPREAD_LIMIT:
            break
    if spreads is not None:
        spreads.extend(found)
    return times


def _tanh_by_sigmoid_timing(z: torch.Tensor) -> Callable[[], object]:

    def run() -> object:
        return tanh_by_sigmoid(z.clone())

    return run


def _per_product(
    widths: tuple[int, int],
    chain: int,
    classes: Mapping[str, Callable[[list[torch.Tensor]], dict[str, Callable]]],
    min_time: float,
    generator: torch.Generator,
    spreads: dict[str, list[float]],
) -> dict[str, dict[str, list[float]]]:
    """Each class's candidates timed on chains of ``chain`` square weights of each of
    ``widths``: seconds per product in each round, the geometric mean over the widths
    (candidates that ran at every width)."""
    per_width: dict[str, list[dict[str, list[float]]]] = {name: [] for name in classes}
    for width in widths:
        weights = [torch.randn(width, width, generator=generator) for _ in range(chain)]
        for name, candidates in classes.items():
            per_class = spreads.setdefault(name, [])
            times = _measure_round_robin(candidates(weights), min_time, spreads=per_class)
            per_width[name].append({k: [t / chain for t in ts] for k, ts in times.items()})
        del weights
    return {
        name: {
            kernel: [
                statistics.geometric_mean(seconds[kernel][r] for seconds in runs)
                for r in range(len(runs[0][kernel]))
            ]
            for kernel in runs[0]
            if all(kernel in seconds for seconds in runs)
        }
        for name, runs in per_width.items()
    }


def measure(*, min_time: float = 0.01, ties: TieCandidates | None = None) -> Tuning:
    """Time every candidate of every class on this CPU, in float32, and the ties (``ties``:
    what each tie class times; without it the ties keep their defaults), which run on the
    kernels just chosen: 2 min 20 s on a 2-core AMD EPYC VM, where noisy classes were timed
    again.

    Sets ``keep_freed_memory`` first: the routines run under it wherever jacbench times
    them, and without it the fresh pages of each 1 MB result can cost more than the kernel.
    """
    keep_freed_memory()
    others = OtherWork()
    spreads: dict[str, list[float]] = {}  # per class: its candidates' round-to-round spreads
    unsettled: list[str] = []  # classes whose rounds kept disagreeing: their defaults stand

    def pick(name: str, default: str, rounds: Mapping[str, Sequence[float]]) -> str:
        measured[name] = _medians(rounds)
        choice, settled = _settle(default, rounds, max(spreads.get(name, ()), default=1.0))
        if not settled:
            unsettled.append(name)
        return choice

    generator = torch.Generator().manual_seed(0)
    narrow: dict[str, str] = {}
    primal: dict[str, str] = {}
    measured: dict[str, dict[str, float]] = {}
    for size in SIZES:
        for orientation in ("forward", "reverse"):  # reverse after a primal pass by forward's
            products = {
                class_name(orientation, rows, size): functools.partial(
                    _candidates, orientation, rows, narrow=narrow, size=size
                )
                for rows in NARROW_ROWS
            }
            found = _per_product(WIDTHS[size], CHAIN[size], products, min_time, generator, spreads)
            for rows in NARROW_ROWS:
                name = class_name(orientation, rows, size)
                default = _default_narrow(orientation, rows, size)
                rounds = found[name]
                narrow[name] = pick(name, default if default in rounds else "rows", rounds)
        steps = {  # with the narrow kernels just chosen
            class_name(STACKING, rows, size): functools.partial(
                _primal_candidates, rows, narrow=narrow, size=size
            )
            for rows in NARROW_ROWS
        }
        timed = _per_product(WIDTHS[size], CHAIN[size], steps, min_time, generator, spreads)
        for name, rounds in timed.items():
            primal[name] = pick(name, "separate", rounds)
    batched: dict[str, str] = {}
    for size in BATCHED_SIZES:
        name = f"{BATCHING} {size}"
        found = _per_product(
            BATCHED_WIDTHS[size],
            CHAIN[size],
            {name: _batched_candidates},
            min_time,
            generator,
            spreads,
        )
        batched[name] = pick(name, "fold", found[name])
    small_routes: dict[str, str] = {}
    for mode in ("forward", "reverse"):
        name = f"small {mode}"
        # On one thread, as the routines run small networks (NOTE: [One thread for small
        # problems] in jacbench.ad.jacobians); the geometric mean over the two nets.
        runs = [
            _measure_round_robin(
                _small_candidates(mode, net), min_time, 1, spreads.setdefault(name, [])
            )
            for net in SMALL_NETS
        ]
        per_round = {  # the geometric mean over the nets of each round
            route: [
                statistics.geometric_mean(times) for times in zip(*(run[route] for run in runs))
            ]
            for route in runs[0]
        }
        small_routes[name] = pick(name, "torch", per_round)
    z = torch.randn(TANH_SHAPE, generator=generator)
    # Both timings include the same clone, so that the sigmoid form can work in place.
    tanh_rounds = _measure_round_robin(
        {"tanh": lambda: torch.tanh(z.clone()), "sigmoid": _tanh_by_sigmoid_timing(z)},
        min_time,
        spreads=spreads.setdefault("tanh", []),
    )
    tanh = pick("tanh", "tanh", tanh_rounds)
    kernels = Tuning(
        narrow=narrow,
        primal=primal,
        batched=batched,
        small=small_routes,
        tanh=tanh,
        machine=machine_key(),
        measured_s=measured,
    )
    tie_choices = dict(kernels.ties)
    if ties is not None:
        with use(kernels):  # the routines run on the kernels they will run on
            for name, candidates in ties().items():
                warm = {k: _warmed(fn) for k, fn in candidates.items()}
                per_class = spreads.setdefault(name, [])
                rounds = _measure_round_robin(
                    warm, TIE_MIN_TIME, spreads=per_class, rounds=TIE_ROUNDS
                )
                tie_choices[name] = pick(name, TIE_CLASSES[name][0], rounds)
    return replace(
        kernels,
        ties=tie_choices,
        measured_s=measured,
        unsettled=tuple(unsettled),
        busy=_busy(others.cores()),
    )


def _warmed(fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` after a first call (workspace buffers, lazy kernels) outside every round."""
    fn()
    return fn


def _busy(other_cores: float | None) -> str:
    """Why a tuning measured beside this much other work is not to be trusted ("": it is)."""
    if other_cores is not None and other_cores > BUSY_LOAD:
        return f"other processes used {other_cores:.2f} cores' worth while it measured"
    return ""
