"""The tuning's measurement: every candidate of every class timed on this CPU, and chosen.

``measure`` times every candidate of each class on representative shapes, in interleaved
rounds, and keeps the built-in default unless the one decision rule (``stats.decide``,
NOTE: [One decision rule]) finds another faster by more than ``MIN_GAIN``: with one sample
a round, faster in every round (``choose``). ``ensure`` is what the timing entry points
call: the tuning cached for this machine, or one measured now and cached, made active.
``jacbench run`` and ``jacbench tune`` measure and cache it; ``JACBENCH_TUNING=defaults``
turns it off (reproducible kernels on every machine).
"""

from __future__ import annotations

import functools
import itertools
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch

from jacbench.kernels import native, small
from jacbench.kernels.products import (
    batched_rows_product,
    can_split,
    narrow_product,
    tanh_by_sigmoid,
)
from jacbench.measure import stats, timing
from jacbench.measure.allocator import keep_freed_memory
from jacbench.measure.machine import BUSY_LOAD, OtherWork
from jacbench.measure.tuning.cache import cached, disabled, machine_key, save
from jacbench.measure.tuning.current import activate, active, use
from jacbench.measure.tuning.record import (
    BATCHED_SIZES,
    BATCHING,
    DEFAULTS,
    FEW_COLUMNS,
    MIN_GAIN,
    NARROW_KERNELS,
    NARROW_ROWS,
    SIZES,
    STACKING,
    TIE_CLASSES,
    TIE_TUNINGS,
    Tuning,
    class_name,
    default_narrow,
    held,
)

# Square weights of each size of ``jacbench.kernels.products`` (which numbers them in this
# order): for a narrow product small (from TUNED_MIN_ELEMENTS; under it a product is always
# the plain BLAS call), medium (from MEDIUM_MIN_ELEMENTS) and large (from SPLIT_MIN_ELEMENTS);
# for a batch's wide blocks tiny (a PINN's 64-wide layers), small and large. Each size is
# timed at a power of two and at a width that is not one, and judged on the geometric mean:
# MKL's kernels for a few rows differ between the two (on a Xeon, 4 rows through a
# 1024-wide weight ran 1.5× the time of 3 rows, through a 1000-wide one 2.1×), so one
# width alone misleads the class.
WIDTHS = {"small": (256, 500), "medium": (512, 700), "large": (1024, 1000)}
BATCHED_WIDTHS = {"tiny": (64, 100), "small": (512, 600), "large": (1024, 1000)}
BATCHED_ROWS = 64  # rows per sample of the timed blocks
BATCHED_ELEMENTS = 1 << 20  # per timed block (4 MB in float32): the batch is this / (64·K)
# Weights per chain: a sweep reads each weight once, from wherever it sits. 8 MB of small
# weights stay in a server's cache as a 512-wide net's do; 64 MB of large ones do not, as a
# 1024-wide deep net's do not. One weight timed alone would sit in cache and mislead. Large
# weights are timed on two chains, judged on the geometric mean as the two widths are: 16 MB
# that stays in a server's last-level cache (the seed net at L = 3) and 64 MB that does not
# (at L = 10). On the longer chain alone, jacbench's own kernel read g·W from memory 4% faster
# than the split on an AMD EPYC, short of MIN_GAIN, while from its L3 it took 28 µs to 49.
CHAIN = {"tiny": (8,), "small": (8,), "medium": (8,), "large": (4, 16)}
SMALL_NETS = ((4, 24, 8, 6), (2, 30, 10, 10))  # (D, K, L, P): the classes and textbook nets
TANH_SHAPE = (4096, 64)  # a PINN batch's activations
# A batch's block (B, m, K) and a weight's few columns n: reverse mode's last product at
# L=6 D=P=3 K=128 B=1024 (the classes preset's).
FEW_COLUMNS_SHAPE = (1024, 3, 128, 3)
ROUNDS = 3
TIE_MIN_TIME = 0.05  # per candidate and round: whole routines, milliseconds a call
# Rounds for a tie: its candidates are within a few percent by construction, less than this
# VM's run-to-run noise (±30% on a 2-core AMD EPYC): a choice must win all of them.
TIE_ROUNDS = 5

TieCandidates = Callable[[], Mapping[str, Mapping[str, Callable[[], object]]]]


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
    if not native.fits(block, matrices[0]):
        kernels.pop("native")  # where the kernels do not build
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
    scalings as the routines run them, against the NumPy route and, where the C++ kernels
    build, the chain in one call."""
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
    routes = {"torch": torch_route, "numpy": lambda: numpy_route(arrays, x)}
    chained = native.chain(weights, biases)
    if chained is not None:  # where the kernels build
        run = chained.forward if mode == "forward" else chained.reverse
        routes["native"] = functools.partial(run, x)
    return routes


def _time(fn: Callable[[], object], min_time: float, threads: int | None = None) -> float:
    return timing.measure(fn, min_time=min_time, warmup=1, threads=threads).median


def choose(
    default: str, rounds: Mapping[str, Sequence[float]], spread: float = 1.0
) -> tuple[str, bool]:
    """A class's choice from its candidates' seconds in each interleaved round, and whether
    it is settled.

    The fastest candidate by its median over the rounds replaces ``default`` only where the
    one decision rule finds it faster by more than ``MIN_GAIN`` (``stats.decide``, paired by
    round; NOTE: [One decision rule]): with one sample a round, faster in every round. Where
    the medians name it faster by more than the gain, the rule does not, and the rounds
    disagreed by more than ``SPREAD_LIMIT`` (``spread``: the largest ratio of a candidate's
    slowest round to its fastest), the default stands unsettled (NOTE: [A tuning measured on
    a busy machine])."""
    medians = _medians(rounds)
    best = min(medians, key=medians.__getitem__)
    if best == default:
        return default, True
    decision = stats.decide(
        [[t] for t in rounds[default]], [[t] for t in rounds[best]], paired=True
    )
    if decision.outcome(MIN_GAIN) is stats.Outcome.FASTER:
        return best, True
    by_medians = medians[best] <= medians[default] / (1 + MIN_GAIN)
    return default, not (by_medians and spread > SPREAD_LIMIT)


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
#     default (``Tuning.unsettled`` names it) while the others are kept, unless the one
#     decision rule took a candidate over the default (faster in every round, by more than
#     MIN_GAIN: ``choose``): rounds are interleaved, so a slow spell slows every candidate of
#     its round alike, and the winner of each stands. On a shared 2-core AMD EPYC VM, idle
#     by /proc/stat, one class's winner (weight-first through 1024-wide chains) disagreed
#     with itself by 1.96× in three attempts, and refusing the whole tuning for it, as
#     before, left every class at the defaults measured on another CPU; the split through
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


@dataclass
class _Session:
    """One measurement's settings and findings: each class's candidates' median seconds,
    their round-to-round spreads, and the classes whose rounds kept disagreeing."""

    min_time: float
    generator: torch.Generator
    spreads: dict[str, list[float]] = field(default_factory=dict)
    measured: dict[str, dict[str, float]] = field(default_factory=dict)
    unsettled: list[str] = field(default_factory=list)

    def spreads_of(self, name: str) -> list[float]:
        """Where class ``name``'s candidates' spreads go."""
        return self.spreads.setdefault(name, [])

    def pick(self, name: str, default: str, rounds: Mapping[str, Sequence[float]]) -> str:
        """Class ``name``'s choice by ``choose``, its medians recorded, named if unsettled."""
        self.measured[name] = _medians(rounds)
        choice, settled = choose(default, rounds, max(self.spreads.get(name, ()), default=1.0))
        if not settled:
            self.unsettled.append(name)
        return choice


def _per_product(
    widths: tuple[int, int],
    chains: tuple[int, ...],
    classes: Mapping[str, Callable[[list[torch.Tensor]], dict[str, Callable]]],
    session: _Session,
) -> dict[str, dict[str, list[float]]]:
    """Each class's candidates timed on chains of each length in ``chains`` of square weights
    of each of ``widths``: seconds per product in each round, the geometric mean over the
    widths and chains (candidates that ran on every one)."""
    per_width: dict[str, list[dict[str, list[float]]]] = {name: [] for name in classes}
    for width, chain in itertools.product(widths, chains):
        weights = [torch.randn(width, width, generator=session.generator) for _ in range(chain)]
        for name, candidates in classes.items():
            times = _measure_round_robin(
                candidates(weights), session.min_time, spreads=session.spreads_of(name)
            )
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


def _choose_narrow(
    session: _Session, orientation: str, size: str, narrow: Mapping[str, str]
) -> dict[str, str]:
    """The narrow-product classes of one orientation and size (a reverse pass after a
    primal pass by the forward kernels already in ``narrow``)."""
    products = {
        class_name(orientation, rows, size): functools.partial(
            _candidates, orientation, rows, narrow=narrow, size=size
        )
        for rows in NARROW_ROWS
    }
    found = _per_product(WIDTHS[size], CHAIN[size], products, session)
    chosen = {}
    for rows in NARROW_ROWS:
        name = class_name(orientation, rows, size)
        default = default_narrow(orientation, rows, size)
        rounds = found[name]
        chosen[name] = session.pick(name, default if default in rounds else "rows", rounds)
    return chosen


def _choose_primal(session: _Session, size: str, narrow: Mapping[str, str]) -> dict[str, str]:
    """The primal-step classes of one size, on the narrow kernels already chosen."""
    steps = {
        class_name(STACKING, rows, size): functools.partial(
            _primal_candidates, rows, narrow=narrow, size=size
        )
        for rows in NARROW_ROWS
    }
    timed = _per_product(WIDTHS[size], CHAIN[size], steps, session)
    return {name: session.pick(name, "separate", rounds) for name, rounds in timed.items()}


def _choose_batched(session: _Session) -> dict[str, str]:
    """A batch's wide row blocks, folded or as a bmm, per size."""
    batched: dict[str, str] = {}
    for size in BATCHED_SIZES:
        name = f"{BATCHING} {size}"
        classes = {name: _batched_candidates}
        # A batch's blocks: on the longest chain alone (a block of many rows reuses each
        # weight it reads whatever the cache holds).
        found = _per_product(BATCHED_WIDTHS[size], CHAIN[size][-1:], classes, session)
        batched[name] = session.pick(name, "fold", found[name])
    return batched


def _choose_few_columns(session: _Session) -> str:
    """A batch's block times a weight of few columns: the weight as stored, or a copy of its
    transpose read transposed (NOTE: [A weight of few columns] in jacbench.kernels.products)."""
    batch, rows, width, columns = FEW_COLUMNS_SHAPE
    block = torch.randn(batch, rows, width, generator=session.generator)
    weight = torch.randn(width, columns, generator=session.generator)
    candidates = {
        "fold": lambda: batched_rows_product(block, weight, False),
        "transposed": lambda: batched_rows_product(block, weight, False, transposed=True),
    }
    rounds = _measure_round_robin(
        candidates, session.min_time, spreads=session.spreads_of(FEW_COLUMNS)
    )
    return session.pick(FEW_COLUMNS, "fold", rounds)


def _choose_small(session: _Session) -> dict[str, str]:
    """One input through a small network, by torch or NumPy, per mode."""
    small_routes: dict[str, str] = {}
    for mode in ("forward", "reverse"):
        name = f"small {mode}"
        # On one thread, as the routines run small networks (NOTE: [One thread for small
        # problems] in jacbench.ad.jacobians); the geometric mean over the two nets.
        runs = [
            _measure_round_robin(
                _small_candidates(mode, net), session.min_time, 1, session.spreads_of(name)
            )
            for net in SMALL_NETS
        ]
        per_round = {  # the geometric mean over the nets of each round
            route: [
                statistics.geometric_mean(times) for times in zip(*(run[route] for run in runs))
            ]
            for route in runs[0]
        }
        small_routes[name] = session.pick(name, "torch", per_round)
    return small_routes


def _choose_tanh(session: _Session) -> str:
    """torch.tanh, 2·σ(2z) − 1 or the C++ kernels' tanh over a PINN batch's activations."""
    z = torch.randn(TANH_SHAPE, generator=session.generator)
    # Every timing includes the same clone, so that the other forms can work in place.
    candidates = {"tanh": lambda: torch.tanh(z.clone()), "sigmoid": _tanh_by_sigmoid_timing(z)}
    if native.tanh_(z.clone()) is not None:  # where the kernels build
        candidates["native"] = lambda: native.tanh_(z.clone())
    tanh_rounds = _measure_round_robin(
        candidates,
        session.min_time,
        spreads=session.spreads_of("tanh"),
    )
    return session.pick("tanh", "tanh", tanh_rounds)


# Each tie class's candidates' medians in earlier tunings of this machine, newest first.
TiesBefore = Mapping[str, Sequence[Mapping[str, float]]]


def _choose_ties(
    session: _Session, kernels: Tuning, ties: TieCandidates, before: TiesBefore
) -> dict[str, str]:
    """Each tie class's routine, timed on the kernels just chosen, held against the earlier
    tunings' medians ``before`` (NOTE: [A tie holds across tunings])."""
    tie_choices = dict(kernels.ties)
    with use(kernels):  # the routines run on the kernels they will run on
        for name, candidates in ties().items():
            warm = {k: _warmed(fn) for k, fn in candidates.items()}
            rounds = _measure_round_robin(
                warm, TIE_MIN_TIME, spreads=session.spreads_of(name), rounds=TIE_ROUNDS
            )
            default = TIE_CLASSES[name][0]
            choice = session.pick(name, default, rounds)
            tie_choices[name] = held(choice, default, before.get(name, ()))
    return tie_choices


# What the tuning measures for the layers above it (jacbench.ad.generic's calibration):
# a function that times and returns named constants.
Calibrate = Callable[[], Mapping[str, float]]


def measure(
    *,
    min_time: float = 0.01,
    ties: TieCandidates | None = None,
    calibrate: Calibrate | None = None,
    before: Tuning | None = None,
) -> Tuning:
    """Time every candidate of every class on this CPU, in float32, and the ties (``ties``:
    what each tie class times; without it the ties keep their defaults), which run on the
    kernels just chosen: 2 min 20 s on a 2-core AMD EPYC VM, where noisy classes were timed
    again. ``before``: the tuning this one replaces, whose tie medians (and those it kept
    from earlier tunings) a tie's choice must hold against where it was measured on this
    machine (NOTE: [A tie holds across tunings]).

    Sets ``keep_freed_memory`` first: the routines run under it wherever jacbench times
    them, and without it the fresh pages of each 1 MB result can cost more than the kernel.
    """
    keep_freed_memory()
    others = OtherWork()
    session = _Session(min_time, torch.Generator().manual_seed(0))
    narrow: dict[str, str] = {}
    primal: dict[str, str] = {}
    for size in SIZES:
        for orientation in ("forward", "reverse"):  # reverse after a primal pass by forward's
            narrow.update(_choose_narrow(session, orientation, size, narrow))
        primal.update(_choose_primal(session, size, narrow))  # with the narrow kernels chosen
    batched = _choose_batched(session)
    few_columns = _choose_few_columns(session)
    small_routes = _choose_small(session)
    tanh = _choose_tanh(session)
    kernels = Tuning(
        narrow=narrow,
        primal=primal,
        batched=batched,
        small=small_routes,
        tanh=tanh,
        few_columns=few_columns,
        machine=machine_key(),
        measured_s=session.measured,
    )
    earlier = _earlier_ties(before)
    tie_choices = (
        dict(kernels.ties) if ties is None else _choose_ties(session, kernels, ties, earlier)
    )
    with use(kernels):
        calibration = dict(calibrate()) if calibrate is not None else {}
    return replace(
        kernels,
        ties=tie_choices,
        calibration=calibration,
        measured_s=session.measured,
        unsettled=tuple(session.unsettled),
        busy=_busy(others.cores()),
        ties_before=earlier,
    )


def _earlier_ties(before: Tuning | None) -> dict[str, tuple[Mapping[str, float], ...]]:
    """The tie medians of ``before`` and of the earlier tunings it kept, newest first (at
    most TIE_TUNINGS - 1 per class): none where ``before`` was not measured on this
    machine."""
    if before is None or before.machine != machine_key():
        return {}
    found = {}
    for name in TIE_CLASSES:
        earlier = (before.measured_s.get(name), *before.ties_before.get(name, ()))
        found[name] = tuple(m for m in earlier if m)[: TIE_TUNINGS - 1]
    return found


def _warmed(fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` after a first call (workspace buffers, lazy kernels) outside every round."""
    fn()
    return fn


def _busy(other_cores: float | None) -> str:
    """Why a tuning measured beside this much other work is not to be trusted ("": it is)."""
    if other_cores is not None and other_cores > BUSY_LOAD:
        return f"other processes used {other_cores:.2f} cores' worth while it measured"
    return ""


def ensure(
    device: str = "cpu",
    *,
    progress: Callable[[str], None] | None = None,
    ties: TieCandidates | None = None,
    calibrate: Calibrate | None = None,
) -> Tuning:
    """The tuning for this machine and thread count: cached, or measured now and cached,
    and made active. Other devices, or tuning turned off, keep what is active. Measured on
    a busy machine it is neither cached nor used: the defaults are, and ``progress`` is told.

    Every timing entry point calls this first, so it also sets ``keep_freed_memory``.
    ``ties`` supplies the routines each tie class times (``jacbench.ad.ties.candidates``);
    without it the ties keep their defaults. ``calibrate`` measures the generic plan's
    constants (``jacbench.ad.generic.calibrated``), cached with the rest.
    """
    keep_freed_memory()
    if torch.device(device).type != "cpu" or disabled():
        return active()
    found = cached()
    if found is None and _REFUSED:  # measured busy once in this process: not again
        found = DEFAULTS
    if found is None:
        if progress is not None:
            progress("measuring this CPU's fastest kernels (once per machine)…")
        found = measure(ties=ties, calibrate=calibrate)
        if found.busy:
            _REFUSED.append(found.busy)
            if progress is not None:
                progress(
                    f"the kernels' timings were not cached, the defaults are used: {found.busy}"
                )
            found = DEFAULTS
        else:
            save(found)
    elif calibrate is not None and not CALIBRATION_KEYS <= set(found.calibration):
        found = _calibrated(found, calibrate)
    activate(found)
    return found


# What a cached tuning's calibration holds; one cached before a constant was added to it
# is calibrated again (once), not measured per process ever after.
CALIBRATION_KEYS = frozenset({"forward_op_s", "reverse_op_s", "flop_rate", "byte_rate"})


def _calibrated(found: Tuning, calibrate: Calibrate) -> Tuning:
    """``found`` with its calibration measured now, cached unless the machine was busy."""
    others = OtherWork()
    with use(found):
        calibration = dict(calibrate())
    busy = _busy(others.cores())
    calibrated = replace(found, calibration=calibration)
    if not busy:
        save(calibrated)
    return calibrated


# Why a tuning measured in this process was refused (empty: none was).
_REFUSED: list[str] = []
