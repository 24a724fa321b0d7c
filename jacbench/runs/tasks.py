"""The task pipeline: one method at one point, built, called once, checked, timed.

A task is one (point, method) pair. Its steps run on a ``Bench``, the point's network, input
and float64 reference, built once where the methods will run: an executor hosts the bench
in this process or in a worker (``jacbench.runs.executors``) and owns the deadlines; the
steps know neither. ``check_task`` builds a method, calls it once and checks it;
``time_task`` times it; ``run_point`` runs a point's tasks in ``rounds`` interleaved rounds.
``jacbench run``, ``check``, ``grade``, ``validate`` and the pytest plugin all go through
these steps. A point with a user's routine or model runs in the worker (NOTE: [Workers]),
all its methods there, so that their comparison is made in one process and nothing the
user's code does reaches the run.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from jacbench.ad import cost, generic
from jacbench.ad.networks import MLP
from jacbench.measure import allocator, timing, tuning
from jacbench.measure.peaks import Peaks, bound_seconds
from jacbench.measure.rows import Mistake, Row, Status
from jacbench.measure.tuning import Tuning
from jacbench.runs import routines
from jacbench.runs.diagnosis import Diagnosis, Snapshot, diagnose
from jacbench.runs.executors import Executor, InProcess, InWorker, StepFailed, is_oom
from jacbench.runs.grid import Point
from jacbench.runs.methods import JacobianCall, Method
from jacbench.runs.models import ModelError, copied
from jacbench.runs.operators import OPERATORS, Costs, get_operator
from jacbench.runs.settings import Build, Settings

# Largest relative error (max |J − J_ref| / max |J_ref|, against float64) a method may show.
# Wrong Jacobians are off by O(1); these bounds only absorb the dtype's rounding over deep chains.
TOLERANCES: dict[str, float] = {"float64": 1e-10, "float32": 1e-4, "bfloat16": 5e-2}

DEFAULT_BUILD = Build()  # the network and input a run builds by default

# A task is skipped as `oom` when its estimated memory passes this share of what is free.
MEMORY_HEADROOM = 0.8
# Opening a point builds the model (a user's factory), the reference and the counted costs:
# each may take a call's worth of the timeout.
OPEN_CALLS = 3


@dataclass(frozen=True)
class Instruments:
    """What a sweep measured of the machine before timing: the device's peaks per dtype name
    (the efficiency column) and the kernel choices in force."""

    peaks: Mapping[str, Peaks] = field(default_factory=dict)
    tuning: Tuning | None = None


def build_network(point: Point, build: Build = DEFAULT_BUILD) -> MLP | Any:
    """The point's seeded network (the same on every device and dtype for one seed): an MLP
    of its widths, or its model built at (D, P) (``jacbench.runs.models``)."""
    if point.model is not None:
        return point.model.build(
            point.d_in, point.d_out, seed=build.seed, dtype=point.torch_dtype, device=point.device
        )
    return MLP.from_widths(
        point.widths,
        activation=build.activation,
        init=build.init,
        seed=build.seed,
        dtype=point.torch_dtype,
        device=point.device,
    )


def build_input(point: Point, *, seed: int) -> torch.Tensor:
    """A seeded input, drawn on the CPU in float64 like the weights: the same on every device."""
    generator = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(point.batch, point.d_in, generator=generator, dtype=torch.float64)
    x = x if point.batch > 1 else x[0]
    return x.to(device=point.device, dtype=point.torch_dtype)


def point_reference(
    point: Point, net: MLP | Any, x: torch.Tensor, operator: str = "jacobian"
) -> torch.Tensor:
    """The operator's float64 reference at (net, x), on the point's device: for the Jacobian
    ``torch.func.jacrev``, for the second order ``torch.func.hessian`` (jacbench.runs.operators),
    of a float64 copy of the network or model."""
    return get_operator(operator).reference(copied(net, torch.float64), x.to(torch.float64))


def point_costs(point: Point, operator: str, net: Any = None, x: Any = None) -> Costs:
    """The cost model at a point: the operator's for the MLP; for a model's Jacobian the
    counted costs of ``generic.plan_of`` (given the built model and input), else none."""
    if point.model is None:
        return OPERATORS[operator].costs(point.widths, point.batch, point.torch_dtype)
    if net is None or operator != "jacobian":
        return Costs("", {})
    plan = generic.plan_of(net, x)
    return Costs(plan.mode, plan.flops, memory_bytes=plan.memory_bytes)


def _free_memory(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def _first_line(error: BaseException) -> str:
    first = (str(error).splitlines() or [""])[0]
    return f"{type(error).__name__}: {first}"[:300]


# ------------------------------------------------------------------ where the code runs
class Bench:
    """One point's network, input and reference, built once where its methods run, and each
    method's call: the object an executor hosts. Each method works on its own copies where
    it is the user's code (what it does to them stays its own), under the run's state."""

    def __init__(
        self,
        point: Point,
        build: Build,
        validate: bool,
        operator: str,
        tuned: Tuning | None = None,
        threads: int | None = None,
    ) -> None:
        self.point, self.build_settings, self.operator = point, build, operator
        self.tuned, self.threads = tuned, threads
        self.calls: dict[str, JacobianCall] = {}
        self.inputs: dict[str, tuple[Any, torch.Tensor, Snapshot | None, Method]] = {}
        self.x = build_input(point, seed=build.seed)
        self.failure = ""  # why the point's network could not be built: every row's error
        self.costs = point_costs(point, operator)
        self.missing = ""  # why there is no reference
        self.reference: torch.Tensor | None = None
        try:
            self.net = build_network(point, build)
        except Exception as error:  # a model's factory, or moving it, may raise anything
            if point.model is None:
                raise
            named = str(error) if isinstance(error, ModelError) else _first_line(error)
            self.net, self.failure = None, f"building the model failed: {named}"
            return
        self.reference, self.missing = _reference(point, self.net, self.x, validate, operator)
        if point.model is not None:
            self.costs = _counted_costs(point, operator, self.net, self.x)

    def describe(self) -> tuple[str, str, Costs]:
        """Why the network could not be built (""), why there is no reference (""), and the
        point's costs (as plain dicts: they cross a pipe)."""
        costs = self.costs
        plain = Costs(
            costs.predicted,
            dict(costs.flops),
            dict(costs.elementwise_flops),
            dict(costs.memory_bytes),
        )
        return self.failure, self.missing, plain

    def build(self, handle: Method | str | bytes) -> float:
        """Build the method ``handle`` names (a routine's is loaded here); its compile time."""
        method = handle if isinstance(handle, Method) else routines.resolve_here(handle)
        self._run_state()
        user_code = bool(method.source) or self.point.model is not None
        net, x = (_own_copy(self.net), self.x.clone()) if user_code else (self.net, self.x)
        before = Snapshot(net, x) if method.source else None
        with tuning.use(self.tuned or tuning.active()):
            call = method.build(net, x)
        self.calls[method.name] = call
        self.inputs[method.name] = (net, x, before, method)
        return float(getattr(call, "compile_s", math.nan))

    def first_call(self, name: str) -> tuple[float, float]:
        """Seconds of the method's first call, and its peak extra memory on CUDA (nan on the
        CPU)."""
        device = self.point.device
        on_cuda = torch.device(device).type == "cuda"
        if on_cuda:
            torch.cuda.reset_peak_memory_stats(device)
            baseline = torch.cuda.memory_allocated(device)
        with tuning.use(self.tuned or tuning.active()):
            seconds = timing.time_once(self.calls[name], device)
        peak = torch.cuda.max_memory_allocated(device) - baseline if on_cuda else math.nan
        return seconds, float(peak)

    def check(self, name: str, tolerance: float) -> tuple[Diagnosis | None, Diagnosis | None]:
        """Call the method once more and diagnose its result against the reference (None
        without one), and what the call changed in its arguments (None: nothing)."""
        net, x, before, method = self.inputs[name]
        with tuning.use(self.tuned or tuning.active()):
            result = self.calls[name]()
        found = None
        if self.reference is not None:
            mlp = net if isinstance(net, MLP) else None  # the chain's diagnoses know the MLP
            jacobian = self.operator == "jacobian"
            found = diagnose(result, self.reference, tolerance, net=mlp, x=x, jacobian=jacobian)
        weights = routines.weights_named(method.convention or routines.LIBRARY)
        return found, before.changed(net, x, weights) if before is not None else None

    def measure(self, handle: Method | str | bytes, min_time: float) -> timing.Measurement:
        """Time the method for ``min_time`` seconds (built again first in a fresh worker)."""
        method = handle if isinstance(handle, Method) else routines.resolve_here(handle)
        if method.name not in self.calls:  # a fresh worker, after another method's failure
            self.build(handle)
            self.first_call(method.name)
        self._run_state()
        with tuning.use(self.tuned or tuning.active()):
            return timing.measure(
                self.calls[method.name],
                device=self.point.device,
                min_time=min_time,
                threads=self.threads,
            )

    def close(self) -> None:
        """Let go of the point's tensors."""
        self.calls.clear()
        self.inputs.clear()
        self.net = self.x = self.reference = None  # type: ignore[assignment]
        _free_memory(self.point.device)

    def _run_state(self) -> None:
        """torch's global state as the run has it, before each method: a routine that changed
        the threads, the default dtype, grad mode or the RNG does not pass that on."""
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        torch.set_default_dtype(torch.float32)
        torch.set_grad_enabled(True)
        torch.manual_seed(self.build_settings.seed)
        allocator.keep_freed_memory()


def _reference(
    point: Point, net: Any, x: torch.Tensor, validate: bool, operator: str
) -> tuple[torch.Tensor | None, str]:
    if not validate:
        return None, "not checked: validation is off"
    try:
        return point_reference(point, net, x, operator), ""
    except Exception as error:  # the reference failing must not end the sweep
        _free_memory(point.device)
        what = "ran out of memory" if is_oom(error) else f"failed ({_first_line(error)})"
        return None, f"not checked: the float64 reference {what}"


def _counted_costs(point: Point, operator: str, net: Any, x: torch.Tensor) -> Costs:
    try:
        return point_costs(point, operator, net, x)
    except Exception:  # a model torch.func cannot transform: its rows will say how
        return Costs("", {})


def _own_copy(net: MLP | Any) -> MLP | Any:
    """A method's own copy of the network; a model that cannot be copied (it holds a lock,
    say) is shared, and what a method does to it is still seen (``Snapshot``)."""
    try:
        return copied(net)
    except Exception:  # deepcopy of the user's module may fail in any way
        return net


# ------------------------------------------------------------------ the parent's side
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


def _diagnosed(row: Row, found: Diagnosis | None, changed: Diagnosis | None, missing: str):
    """Set the row's error and status from its check (``diagnosis.diagnose``: the words check
    and grade use too)."""
    if found is None:
        row.status, row.message = Status.UNCHECKED, missing
    else:
        row.max_rel_err = found.max_rel_err
    for wrong in (changed, found):  # what it changed is named before what it returned
        if wrong is not None and wrong.mistake is not None:
            row.status, row.message, row.mistake = Status.WRONG, wrong.message, wrong.mistake.value
            return


class PointTasks:
    """A point's tasks on a bench its executor hosts: each method built, called once and
    checked (``prepare``), then timed (``measure``). A step's deadline is the call timeout."""

    def __init__(
        self,
        point: Point,
        settings: Settings,
        instruments: Instruments | None = None,
        executor: Executor | None = None,
    ) -> None:
        self.point, self.settings = point, settings
        self.instruments = instruments if instruments is not None else Instruments()
        self.executor = executor if executor is not None else InProcess()
        self.timeout = settings.timing.call_timeout
        self.timed: set[str] = set()
        self.opening: StepFailed | None = None  # why the bench could not be opened
        self.failure, self.missing = "", ""
        self.costs = point_costs(point, settings.operator)
        try:
            self.executor.open(
                Bench,
                point,
                settings.build,
                settings.validate,
                settings.operator,
                self.instruments.tuning,
                settings.timing.threads,
                deadline=OPEN_CALLS * self.timeout,
            )
            self.failure, self.missing, self.costs = self.executor.call(
                "describe", deadline=self.timeout
            )
        except StepFailed as failure:
            self.opening = failure

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
            _free_memory(self.point.device)
            return failed(row, failure)
        if row.status is Status.WRONG:
            return row
        if first > self.settings.timing.max_call_time:
            if row.status is Status.OK:
                row.status = Status.SLOW
            return finish_task(row, self.point, self.instruments, timing.Measurement((first,)))
        self.timed.add(method.name)
        return row

    def _check(self, row: Row, method: Method) -> float:
        handle = self.executor.portable(method)
        row.compile_s = self.executor.call("build", handle, deadline=self.timeout)
        first, peak = self.executor.call("first_call", method.name, deadline=self.timeout)
        if not math.isnan(peak):
            row.peak_memory_bytes = peak
        tolerance = TOLERANCES[self.point.dtype] if method.exact else math.inf
        found, changed = self.executor.call("check", method.name, tolerance, deadline=self.timeout)
        _diagnosed(row, found, changed, self.missing)
        if row.status is Status.OK and not method.exact:
            row.status = Status.UNCHECKED
            row.message = "a stochastic estimate, not exact: max_rel_err is its error here"
        return first

    def waiting(self, method: Method) -> bool:
        """Whether ``method`` has a call still to be timed."""
        return method.name in self.timed

    def measure(self, method: Method, min_time: float) -> timing.Measurement:
        """Time ``method``'s call for ``min_time`` (a measurement runs a few warm-up calls
        first, then calls for about min_time: several times a call's timeout in all)."""
        handle = self.executor.portable(method)
        return self.executor.call("measure", handle, min_time, deadline=self.timeout + 4 * min_time)

    def close(self) -> None:
        """Let go of the point's bench."""
        self.timed.clear()
        self.executor.close()


_MLP_ONLY = (
    "{} runs on jacbench's MLP only; a model's methods: func-jacfwd, func-jacrev, auto, "
    "autograd-forward, autograd-reverse and routines fn(model, x)"
)


def finish_task(
    row: Row, point: Point, instruments: Instruments, measurement: timing.Measurement
) -> Row:
    """Fill a row's timing columns from its measurement."""
    peaks = instruments.peaks.get(point.dtype)
    if peaks is not None and row.flops is not None and point.model is None:
        row.bound_s = bound_seconds(
            row.flops,
            point.widths,
            point.torch_dtype,
            peaks,
            elementwise=row.elementwise_flops,
            batch=point.batch,
        )
    return row.set_timing(measurement)


def executor_for(point: Point, methods: list[Method]) -> Executor:
    """Where a point's tasks run: in the worker where it has a user's routine or model that
    can go there (NOTE: [Workers]), else here. A routine or model that cannot go (a lambda,
    a function of ``__main__``) keeps its whole point here."""
    user_code = any(m.ref is not None for m in methods) or (
        point.model is not None and point.model.isolated
    )
    stays = any(m.source and m.ref is None for m in methods) or (
        point.model is not None and point.model.ref is None
    )
    return InWorker() if user_code and not stays else InProcess()


def run_point(
    point: Point, methods: list[Method], settings: Settings, instruments: Instruments
) -> Iterator[Row]:
    """Every method at one point, timed in ``settings.timing.rounds`` interleaved rounds.

    Each round times every method for min_time / rounds; a method's times from all rounds
    make one measurement. Drift on a shared machine then touches every method alike. With
    one round each row is yielded as soon as it is timed.
    """
    tasks = PointTasks(point, settings, instruments, executor_for(point, methods))
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
    return finish_task(row, tasks.point, tasks.instruments, measured)


def _run_rounds(tasks: PointTasks, methods: list[Method]) -> Iterator[Row]:
    rows = [tasks.prepare(m) for m in methods]
    times: list[list[float]] = [[] for _ in rows]
    rounds: list[list[int]] = [[] for _ in rows]
    count = tasks.settings.timing.rounds
    share = tasks.settings.timing.min_time / count
    for round_ in range(count):
        for method, row, collected, tags in zip(methods, rows, times, rounds):
            if not tasks.waiting(method) or row.status in FAILED_TIMING:
                continue
            try:
                blocks = tasks.measure(method, share).times
            except StepFailed as failure:
                failed(row, failure)
                continue
            collected.extend(blocks)
            tags.extend([round_] * len(blocks))
    for method, row, collected, tags in zip(methods, rows, times, rounds):
        if tasks.waiting(method) and row.status not in FAILED_TIMING:
            measured = timing.Measurement(tuple(collected), tuple(tags))
            finish_task(row, tasks.point, tasks.instruments, measured)
        yield row


# A row whose timing failed in some round: not timed in the rounds after.
FAILED_TIMING = (Status.OOM, Status.ERROR, Status.TIMEOUT, Status.SKIPPED)
