"""The task pipeline: one method at one point, built, called once, checked, timed.

A task is one (point, method) pair, run in steps on benches (``jacbench.runs.bench``): the
point's own bench, hosted where jacbench's methods run (this process for an MLP, the
model's sandbox for a user's model), which also gives the float64 references; and for a
user's routine a bench of its own in the routine's sandbox (NOTE: [Sandboxes]), where
nothing of jacbench's and no reference runs. An executor hosts each bench and owns its
deadlines (``jacbench.runs.executors``). Results come back as plain data and are judged
here, against references computed apart (``diagnosis.diagnose_plain``); a user's routine is
timed on distinct inputs and its timed results checked too (NOTE: [Every timed call
checked]). ``jacbench run``, ``check``, ``grade``, ``validate`` and the pytest plugin all go
through ``PointTasks``; ``run_point`` adds interleaved rounds.
"""

from __future__ import annotations

import functools
import math
import random
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import cast

import torch

from jacbench.ad import cost
from jacbench.ad.networks import MLP
from jacbench.measure import machine, timing
from jacbench.measure.peaks import Peaks, bound_seconds, model_bound_seconds
from jacbench.measure.rows import Mistake, Row, Status
from jacbench.measure.threads import PoolCheck
from jacbench.measure.tuning import Tuning
from jacbench.runs.bench import (
    BLOCK_BYTES,
    Bench,
    block_draws,
    chained_input,
    free_memory,
    point_costs,
)
from jacbench.runs.diagnosis import Diagnosis, diagnose_plain
from jacbench.runs.executors import Executor, InProcess, InWorker, StepFailed
from jacbench.runs.grid import Point
from jacbench.runs.methods import Method
from jacbench.runs.operators import Costs
from jacbench.runs.plain import DTYPES, PlainResult, digest, plain_of, tensor_of
from jacbench.runs.settings import Settings

# Largest relative error (max |J − J_ref| / max |J_ref|, against float64) a method may show.
# Wrong Jacobians are off by O(1); these bounds only absorb the dtype's rounding over deep chains.
TOLERANCES: dict[str, float] = {"float64": 1e-10, "float32": 1e-4, "bfloat16": 5e-2}

# A task is skipped as `oom` when its estimated memory passes this share of what is free.
MEMORY_HEADROOM = 0.8
# Opening a point builds the model (a user's factory) and counts its costs: each may take a
# call's worth of the timeout.
OPEN_CALLS = 3
# How many of a timed block's calls of a user's routine are checked, picked at random, and
# the fewest blocks a measurement makes (NOTE: [Every timed call checked]).
CHECKED_CALLS = 3
MIN_BLOCKS = 5
# Untimed calls right before each timed block: after the gap between blocks (the parent
# checking picks) the sandbox's thread pool has gone to sleep, and on a VM waking it took
# milliseconds, charged to the block's first call (a model's rows read 10–15% slow; with
# the warm-up call 2–5%: the pipe's round trip and the commitment per call).
WARMUP_CALLS = 1
# A block lasts about min_time / MIN_BLOCKS, within these: long against the pipe's round
# trip (some 0.1 ms), short enough for several in a measurement.
BLOCK_S = (2e-3, 0.05)
# A sandbox answers a request for its picked results within this many seconds (it sends
# what it holds), and a measurement in blocks ends within its deadline and at most
# MEASURE_CAP_S + 20·min_time: a routine that held one request or the measurement as long as
# its first call's time allowed could keep a class waiting for half an hour a student.
PICKS_S = 5.0
MEASURE_CAP_S = 30.0
_PICKS = random.SystemRandom()  # the seeds and picks a routine cannot foresee


@dataclass(frozen=True)
class Instruments:
    """What a sweep measured of the machine before timing: the device's peaks per dtype name
    (the efficiency column), the kernel choices in force, and whether torch's thread pool
    paid (NOTE: [A stalled thread pool])."""

    peaks: Mapping[str, Peaks] = field(default_factory=dict)
    tuning: Tuning | None = None
    pool: PoolCheck | None = None

    def threads(self, asked: int | None) -> int | None:
        """The threads to time with: those ``asked`` for, else fewer where the pool stalled."""
        if asked is None and self.pool is not None and self.pool.stalled:
            return self.pool.used
        return asked


class WrongWhenTimed(Exception):
    """A timed call of a user's routine returned a wrong result (its message says which)."""


def estimated_memory_bytes(point: Point, method: Method, costs: Costs) -> int | None:
    """The cost model's memory estimate for ``method`` at ``point`` (jacbench's or a peer's;
    None for a user routine, whose workings the model does not know, and where the
    operator's model has no memory estimate). A second-order peer gets jacbench's estimate
    for the same composition: a floor (vmap'd peers keep more), enough to skip a
    fwd-over-fwd at D = 1000 before the OOM killer does."""
    if method.source:
        return None
    mode = method.mode_for(costs.predicted)
    if method.family == "jacbench" or method.operator != "jacobian":
        return costs.memory_bytes.get(mode)
    if mode not in cost.MODES or point.model is not None:  # mode or network unknown
        return None
    # autograd.functional's forward mode differentiates the batch's sum (methods.py).
    coupled = method.family == "autograd" and mode == "forward"
    return cost.peer_memory_bytes(
        point.widths, mode, point.batch, point.torch_dtype, batch_coupled=coupled
    )


def _available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _memory_shortfall(point: Point, method: Method, costs: Costs) -> str | None:
    # On the CPU running out of memory is not an exception but the kernel's OOM killer,
    # which would end the whole sweep: a task that would not fit is skipped and reported.
    if torch.device(point.device).type == "cuda":
        return None
    available = _available_memory_bytes()
    needed = estimated_memory_bytes(point, method, costs)
    if available is None or needed is None or needed <= MEMORY_HEADROOM * available:
        return None
    return f"skipped: needs about {needed / 2**30:.1f} GiB, {available / 2**30:.1f} GiB available"


def start_row(point: Point, method: Method, costs: Costs) -> Row:
    """A task's row before it runs: the point, the method and the cost model's columns."""
    # FLOPs of the mode the method uses, as jacbench's routine for that mode executes them:
    # for peers this is the useful work, so their GFLOP/s compare with jacbench's directly.
    # A user routine's mode is unknown: its FLOPs stay empty.
    mode = method.mode_for(costs.predicted)
    return Row(
        depth=point.depth,
        d_in=point.d_in,
        width=point.width,
        d_out=point.d_out,
        widths=point.widths,
        batch=point.batch,
        dtype=point.dtype,
        device=point.device,
        method=method.name,
        family=method.family,
        mode=mode,
        predicted_mode=costs.predicted,
        flops=costs.flops.get(mode),
        elementwise_flops=costs.elementwise_flops.get(mode),
        memory_bytes=costs.memory_bytes.get(mode),
        source=method.source,
        operator=method.operator,
        model=point.label,
    )


def failed(row: Row, failure: StepFailed) -> Row:
    """The row of a task whose step failed: skipped, out of memory, timed out or an error."""
    if failure.unsupported:
        row.status, row.message = Status.SKIPPED, str(failure)
        return row
    if failure.oom:
        row.status, row.message = Status.OOM, str(failure)
        return row
    row.status = Status.TIMEOUT if failure.mistake is Mistake.TIMEOUT else Status.ERROR
    row.message, row.mistake = str(failure), failure.mistake.value
    return row


class PointTasks:
    """A point's tasks: its own bench (jacbench's methods, the references) and a bench per
    user's routine, each built, called once and checked (``prepare``), then timed
    (``measure``). A step's deadline follows from the call timeout."""

    def __init__(
        self,
        point: Point,
        settings: Settings,
        instruments: Instruments | None = None,
        home: Executor | None = None,
    ) -> None:
        self.point, self.settings = point, settings
        self.instruments = instruments if instruments is not None else Instruments()
        self.home = home if home is not None else home_executor(point)
        self.timeout = settings.timing.call_timeout
        self.first: dict[str, float] = {}  # seconds of each method's first call: timed
        self.other_cores: dict[str, float] = {}  # other work while each method was timed
        self.opening: StepFailed | None = None  # why the point's bench could not be opened
        self.failure = ""
        self.costs = point_costs(point, settings.operator)
        self._benches: dict[str, Executor] = {}
        self._reference: torch.Tensor | str | None = None
        self._primal_s: float | None = None
        try:
            self._open(self.home, validate=settings.validate)
            self.failure, self.costs = self.home.call("describe", deadline=self.timeout)
        except StepFailed as failure:
            self.opening = failure

    def _open(self, executor: Executor, *, validate: bool) -> None:
        executor.open(
            Bench,
            self.point,
            self.settings.build,
            validate,
            self.settings.operator,
            self.instruments.tuning,
            self.instruments.threads(self.settings.timing.threads),
            deadline=OPEN_CALLS * self.timeout,
        )

    def bench_of(self, method: Method) -> Executor:
        """The executor whose bench runs ``method``: the point's own for jacbench's methods,
        one of its own for a user's routine (opened on first use)."""
        if not method.source:
            return self.home
        found = self._benches.get(method.name)
        if found is None:
            # A model that cannot leave this process (a lambda's) keeps its routines here.
            stays = self.point.model is not None and self.point.model.ref is None
            owner = None if stays else method.owner
            found = InWorker(owner) if owner is not None else InProcess()
            self._benches[method.name] = found
            self._open(found, validate=False)
        return found

    def reference(self) -> torch.Tensor | str:
        """The float64 reference at the point's own input (from the point's own bench), or
        why there is none."""
        if self._reference is None:
            found = self.home.call("reference", deadline=self.timeout)
            self._reference = found if isinstance(found, str) else tensor_of(found)
        return self._reference

    def primal_seconds(self) -> float:
        """The function's own median seconds at the point's input, timed once per point in
        its bench (NaN where it could not be): what ``evals`` divides by."""
        if self._primal_s is None:
            share = min(max(self.settings.timing.min_time / 5, 0.01), 0.1)
            try:
                found = self.home.call("primal_seconds", share, deadline=self.timeout + 4 * share)
            except StepFailed:
                found = math.nan
            ok = isinstance(found, float) and 0 < found < math.inf
            self._primal_s = found if ok else math.nan
        return self._primal_s

    def prepare(self, method: Method) -> Row:
        """Build, call once and check ``method``; the row so far (final unless the method
        is still to be timed: ``waiting``)."""
        row = start_row(self.point, method, self.costs)
        if self.opening is not None:
            return failed(row, self.opening)
        if self.failure:
            row.status, row.message = Status.ERROR, self.failure
            return row
        if not (method.any_network or self.point.model is None):
            row.status, row.message = Status.SKIPPED, _MLP_ONLY.format(method.name)
            return row
        shortfall = _memory_shortfall(self.point, method, self.costs)
        if shortfall is not None:
            row.status, row.message = Status.OOM, shortfall
            return row
        try:
            first = self._check(row, method)
        except StepFailed as failure:
            free_memory(self.point.device)
            return failed(row, failure)
        if row.status is Status.WRONG:
            return row
        row.primal_s = self.primal_seconds()
        if first > self.settings.timing.max_call_time:
            if row.status is Status.OK:
                row.status = Status.SLOW
            return finish_task(row, self.point, self.instruments, timing.Measurement((first,)))
        self.first[method.name] = first
        return row

    def _check(self, row: Row, method: Method) -> float:
        bench = self.bench_of(method)
        handle = bench.portable(method)
        row.compile_s = bench.call("build", handle, method.name, deadline=self.timeout)
        start = time.perf_counter()
        first, peak = bench.call("first_call", method.name, deadline=self.timeout)
        wall = time.perf_counter() - start
        user_code = bool(method.source) or self.point.model is not None
        if user_code or not (isinstance(first, float) and 0 < first < math.inf):
            first = wall  # a user's code says nothing trusted of its own time
        if isinstance(peak, float) and math.isfinite(peak) and not method.source:
            row.peak_memory_bytes = peak
        result, changed = bench.call("result", method.name, deadline=self.timeout)
        reference = self.reference()
        if isinstance(reference, str):
            row.status, row.message = Status.UNCHECKED, reference
        else:
            found = self.judge(method, result, reference, own_input=True)
            row.max_rel_err = found.max_rel_err
            _wrong(row, changed if changed is not None else found)
        if row.status is Status.OK and not method.exact:
            row.status = Status.UNCHECKED
            row.message = "a stochastic estimate, not exact: max_rel_err is its error here"
        return first

    def judge(
        self, method: Method, result: PlainResult, reference: torch.Tensor, *, own_input: bool
    ) -> Diagnosis:
        """``method``'s result against its reference (at the point's ``own_input``, or a
        timed block's). A user's routine must return the network's dtype on its device; the
        chain's diagnoses know the MLP and its input where this process holds them."""
        tolerance = TOLERANCES[self.point.dtype] if method.exact else math.inf
        hosted = getattr(self.home, "hosted", None)  # this process's bench, where it is here
        net = getattr(hosted, "net", None)
        net = net if isinstance(net, MLP) else None
        x = getattr(hosted, "x", None) if net is not None and own_input else None
        return diagnose_plain(
            result,
            reference,
            tolerance,
            dtype=self.point.dtype,
            device=self.point.device,
            strict=bool(method.source),
            net=net if x is not None else None,
            x=x,
            jacobian=self.settings.operator == "jacobian",
        )

    def waiting(self, method: Method) -> bool:
        """Whether ``method`` has a call still to be timed."""
        return method.name in self.first

    def measure(self, method: Method, min_time: float) -> timing.Measurement:
        """Time ``method``'s call for ``min_time``. A user's routine, and any method at a
        user's model, is timed by this process in blocks of calls (a routine's on inputs new
        to it), and calls picked at random are checked (NOTE: [Every timed call checked]).

        Raises:
            StepFailed: the measurement failed or ran past its deadline.
            WrongWhenTimed: a checked result was wrong, or not the one committed to.
        """
        bench, first = self.bench_of(method), self.first[method.name]
        user_code = bool(method.source) or self.point.model is not None
        checking = user_code and self.settings.validate and method.exact
        others = machine.OtherWork()
        if checking:
            measured = self._measure_in_blocks(bench, method, first, min_time)
        else:
            measured = bench.call(
                "measure",
                bench.portable(method),
                method.name,
                min_time,
                deadline=measure_deadline(first, min_time, self.timeout),
            )
        busy = others.cores()
        if busy is not None:  # the most other work seen while this method was timed
            self.other_cores[method.name] = max(busy, self.other_cores.get(method.name, 0.0))
        if not isinstance(measured, timing.Measurement):
            raise StepFailed("sent back a measurement jacbench does not read", Mistake.CRASH)
        return measured

    def _measure_in_blocks(
        self, bench: Executor, method: Method, first: float, min_time: float
    ) -> timing.Measurement:
        """Blocks of calls, each timed by this process's clock around one request, each
        checked at ``CHECKED_CALLS`` calls picked after its results were committed to; all
        within the measurement's deadline."""
        portable, per_call = bench.portable(method), first
        # jacbench's method at a model's point: every call on the point's own input.
        own_input = not method.source
        target = min(max(min_time / MIN_BLOCKS, BLOCK_S[0]), BLOCK_S[1])
        allowed = measure_deadline(first, min_time, self.timeout)
        until = time.monotonic() + min(allowed, MEASURE_CAP_S + 20 * min_time)
        most = 1 << 14  # calls a block may make, until a result's size is known
        times: list[float] = []
        spent = 0.0
        while len(times) < MIN_BLOCKS or spent < min_time:
            calls = max(1, min(int(target / per_call), most))
            seed = None if own_input else _PICKS.getrandbits(62)
            warm = min(self._left(until), self.timeout * (WARMUP_CALLS + 1))
            bench.call("warm_up", portable, method.name, WARMUP_CALLS, deadline=warm)
            start = time.perf_counter()
            digests = bench.call("timed_block", portable, method.name, seed, calls,
                                 deadline=min(self._left(until), self.timeout))  # fmt: skip
            wall = time.perf_counter() - start
            if not (
                isinstance(digests, tuple)
                and len(digests) == calls
                and all(isinstance(d, bytes) for d in digests)
            ):
                raise StepFailed("sent back a timed block jacbench does not read", Mistake.CRASH)
            picks = _PICKS.sample(range(calls), min(CHECKED_CALLS, calls))
            found = bench.call("block_results", picks, deadline=min(self._left(until), PICKS_S))
            sizes = [self._checked(method, found, digests, seed, calls, i, until) for i in picks]
            most = max(1, BLOCK_BYTES // max(max(sizes), 1))
            overhead = _block_overhead(self.point, found[picks[0]], drawn=not own_input)
            # jacbench's own share taken out, never more than half: a block that took no
            # longer than its commitments did no work worth a zero (nor a division by one)
            times.append(max(wall / calls - overhead, wall / calls / 2))
            spent += wall
            per_call = max(min(times), 1e-7)
        return timing.Measurement(tuple(times))

    def _left(self, until: float) -> float:
        """Seconds to the measurement's deadline (``until``, monotonic).

        Raises:
            StepFailed: none are left (a timeout).
        """
        left = until - time.monotonic()
        if left <= 0:
            raise StepFailed("did not finish its timed calls in time", Mistake.TIMEOUT)
        return left

    def _checked(
        self,
        method: Method,
        found: object,
        digests: tuple[bytes, ...],
        seed: int | None,
        calls: int,
        index: int,
        until: float,
    ) -> int:
        """The picked result ``index`` of a block checked: the one committed to, right
        against this side's reference for its input (with no ``seed``, the point's own
        reference); its size in bytes.

        Raises:
            WrongWhenTimed: it is neither.
        """
        result = found.get(index) if isinstance(found, dict) else None
        if not isinstance(result, PlainResult) or digest(result) != digests[index]:
            raise WrongWhenTimed(
                "sent back a timed result other than the one it committed to when timed"
            )
        previous = digests[index - 1] if index > 0 else b""
        if seed is None:
            reference = self.reference()
        else:
            found = self.home.call(
                "block_reference", seed, calls, index, previous, deadline=self._left(until)
            )
            reference = found if isinstance(found, str) else tensor_of(cast(PlainResult, found))
        if isinstance(reference, str):
            return len(result.data)
        judged = self.judge(method, result, reference, own_input=seed is None)
        if judged.mistake is not None:
            what = (
                "returned a different result"
                if seed is not None
                else (
                    "the model's Jacobian was different"  # jacbench's method, the model's code
                )
            )
            raise WrongWhenTimed(
                f"{what} when timed (call {index + 1} of a block of {calls}: {judged.message})"
            )
        return len(result.data)

    def close(self) -> None:
        """Let go of the point's benches."""
        self.first.clear()
        for bench in self._benches.values():
            bench.close()
        self._benches.clear()
        self.home.close()


def _block_overhead(point: Point, result: PlainResult, *, drawn: bool) -> float:
    """Seconds a timed block spends per call on jacbench's side of the bargain: drawing the
    input and scaling it (where ``drawn``), committing to the result (made plain data, then
    its digest); measured here, where nothing a user wrote runs, and taken out of each
    timed call."""
    if not result.array:
        return 0.0
    return _overhead(point, result.dtype, tuple(result.shape), drawn)


@functools.lru_cache(maxsize=64)
def _overhead(point: Point, dtype: str, shape: tuple[int, ...], drawn: bool) -> float:
    made = torch.zeros(shape, dtype=DTYPES.get(dtype, torch.float32))
    calls = 64

    def block() -> None:
        previous = b""
        draws = block_draws(point, 1, calls) if drawn else None
        for i in range(calls):
            if draws is not None:
                chained_input(draws[i], previous)
            previous = digest(plain_of(made))

    return min(timing.time_once(block, point.device) for _ in range(5)) / calls


def measure_deadline(first_s: float, min_time: float, call_timeout: float) -> float:
    """A measurement's deadline, from its number of calls: the calls it should make (the
    warm-up, blocks for ``min_time``, those added for a verdict) at twice the first call's
    time, drawing a user's routine's inputs, and one call's timeout."""
    calls = 5 + 3 * math.ceil(min_time / max(first_s, 1e-7)) + 64
    return 4 * min_time + 2 * calls * first_s + 1e-4 * calls + call_timeout


def _wrong(row: Row, found: Diagnosis) -> None:
    if found.mistake is not None:
        row.status, row.message, row.mistake = Status.WRONG, found.message, found.mistake.value


_MLP_ONLY = (
    "{} runs on jacbench's MLP only; a model's methods: func-jacfwd, func-jacrev, auto, "
    "auto-compiled, autograd-forward, autograd-reverse and routines fn(model, x)"
)


def home_executor(point: Point) -> Executor:
    """Where a point's own bench runs: this process for jacbench's MLP, the model's sandbox
    for a user's model that can go there (a lambda stays here)."""
    owner = point.model.owner if point.model is not None else None
    return InWorker(owner) if owner is not None else InProcess()


def finish_task(
    row: Row, point: Point, instruments: Instruments, measurement: timing.Measurement
) -> Row:
    """Fill a row's timing columns from its measurement."""
    peaks = instruments.peaks.get(point.dtype)
    if peaks is not None and row.flops and point.model is not None:
        row.bound_s = model_bound_seconds(row.flops, peaks)
    elif peaks is not None and row.flops is not None and point.model is None:
        bound = bound_seconds(
            row.flops,
            point.widths,
            point.torch_dtype,
            peaks,
            elementwise=row.elementwise_flops,
            batch=point.batch,
        )
        row.bound_s = math.nan if bound.seconds is None else bound.seconds
        row.bound_note = bound.note
    return row.set_timing(measurement)


def run_point(
    point: Point, methods: list[Method], settings: Settings, instruments: Instruments | None
) -> Iterator[Row]:
    """Every method at one point, timed in ``settings.timing.rounds`` interleaved rounds.

    Each round times every method for min_time / rounds; a method's times from all rounds
    make one measurement. Drift on a shared machine then touches every method alike. With
    one round each row is yielded as soon as it is timed.
    """
    tasks = PointTasks(point, settings, instruments)
    try:
        if settings.timing.rounds == 1:
            for method in methods:
                row = tasks.prepare(method)
                if tasks.waiting(method):
                    row = time_task(tasks, method, row, settings.timing.min_time)
                yield row
            return
        yield from _run_rounds(tasks, methods)
    finally:
        tasks.close()


def time_task(tasks: PointTasks, method: Method, row: Row, min_time: float) -> Row:
    """Time a prepared task into its row."""
    try:
        measured = tasks.measure(method, min_time)
    except StepFailed as failure:
        return failed(row, failure)
    except WrongWhenTimed as wrong:
        return _wrong_when_timed(row, wrong)
    row.other_cores = tasks.other_cores.get(method.name, math.nan)
    return finish_task(row, tasks.point, tasks.instruments, measured)


def _wrong_when_timed(row: Row, wrong: WrongWhenTimed) -> Row:
    row.status, row.message = Status.WRONG, str(wrong)
    row.mistake = Mistake.WRONG_WHEN_TIMED.value
    return row


# NOTE: [Each round in its own order]
#     On two cores a method's block can be slowed by the one before it: another library's
#     threads still spinning (JAX's, OpenBLAS's), a pool put to sleep, caches filled with
#     other data (on an AMD EPYC, auto at L=4 K=700 took 247 µs alone and 359 µs right
#     after one JAX call). In one fixed order every round a method follows the same
#     neighbour, and whatever it leaves behind is a bias no pairing by round cancels. So
#     the first round runs in the listed order and each later one in a shuffled order,
#     drawn from the round's number (the same run is timed in the same orders).
def round_order(count: int, round_: int) -> list[int]:
    """The order the methods (``count`` of them) are timed in, in round ``round_``."""
    order = list(range(count))
    if round_:
        random.Random(round_).shuffle(order)
    return order


def _run_rounds(tasks: PointTasks, methods: list[Method]) -> Iterator[Row]:
    rows = [tasks.prepare(m) for m in methods]
    times: list[list[float]] = [[] for _ in rows]
    rounds: list[list[int]] = [[] for _ in rows]
    count = tasks.settings.timing.rounds
    share = tasks.settings.timing.min_time / count
    for round_ in range(count):
        for i in round_order(len(methods), round_):
            method, row, collected, tags = methods[i], rows[i], times[i], rounds[i]
            if not tasks.waiting(method) or row.status in FAILED_TIMING:
                continue
            try:
                blocks = tasks.measure(method, share).times
            except StepFailed as failure:
                failed(row, failure)
                continue
            except WrongWhenTimed as wrong:
                _wrong_when_timed(row, wrong)
                continue
            collected.extend(blocks)
            tags.extend([round_] * len(blocks))
    for method, row, collected, tags in zip(methods, rows, times, rounds):
        if tasks.waiting(method) and row.status not in FAILED_TIMING:
            measured = timing.Measurement(tuple(collected), tuple(tags))
            row.other_cores = tasks.other_cores.get(method.name, math.nan)
            finish_task(row, tasks.point, tasks.instruments, measured)
        yield row


# A row whose timing failed in some round: not timed in the rounds after.
FAILED_TIMING = (Status.OOM, Status.ERROR, Status.TIMEOUT, Status.SKIPPED, Status.WRONG)
