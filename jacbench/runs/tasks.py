"""Tasks: one method at one point, built, checked against the reference and timed.

``run_point`` runs a point's tasks, in ``config.rounds`` interleaved rounds: in this process,
or, where the point has a user routine, all of them in a worker process
(``jacbench.runs.workers``, NOTE: [Workers]), so that the comparison between a point's
methods is made in one process and nothing the routine does reaches the run.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from jacbench.ad import cost, generic
from jacbench.ad.networks import MLP, UnsupportedNetwork
from jacbench.measure import timing, tuning
from jacbench.measure.peaks import Peaks, bound_seconds
from jacbench.measure.rows import Row, RowKey, Status, format_widths
from jacbench.measure.tuning import Tuning
from jacbench.runs import routines, workers
from jacbench.runs.diagnosis import Snapshot, diagnose
from jacbench.runs.grid import Point
from jacbench.runs.methods import JacobianCall, Method
from jacbench.runs.models import ModelError, copied
from jacbench.runs.operators import OPERATORS, Costs, get_operator
from jacbench.runs.options import (
    DEFAULT_CALL_TIMEOUT,
    DEFAULT_MAX_CALL_TIME,
    DEFAULT_MIN_TIME,
)

# Largest relative error (max |J − J_ref| / max |J_ref|, against float64) a method may show.
# Wrong Jacobians are off by O(1); these bounds only absorb the dtype's rounding over deep chains.
TOLERANCES: dict[str, float] = {"float64": 1e-10, "float32": 1e-4, "bfloat16": 5e-2}

# A task is skipped as `oom` when its estimated memory passes this share of what is free.
MEMORY_HEADROOM = 0.8


@dataclass(frozen=True)
class SweepConfig:
    """What to run: points × methods, and how to build and time them."""

    points: tuple[Point, ...]
    methods: tuple[Method, ...]
    seed: int = 0
    init: str = "lecun"
    activation: str = "tanh"
    min_time: float = DEFAULT_MIN_TIME
    max_call_time: float = DEFAULT_MAX_CALL_TIME
    threads: int | None = None
    validate: bool = True
    skip: frozenset[RowKey] = field(default_factory=frozenset)  # rows already done
    peaks: Mapping[str, Peaks] = field(default_factory=dict)  # dtype name → measured limits
    rounds: int = 1  # > 1: a point's methods are timed in interleaved rounds
    tuning: Tuning | None = None  # the kernel choices in force (``_prepare`` sets them)
    operator: str = "jacobian"  # what every method computes (jacbench.runs.operators)
    call_timeout: float = DEFAULT_CALL_TIMEOUT  # seconds a user routine's call may take

    def tasks(self) -> list[tuple[Point, Method]]:
        """The (point, method) pairs still to run, in order."""
        return [
            (point, method)
            for point in self.points
            for method in self.methods
            if point.key(method.name) not in self.skip
        ]


def build_network(point: Point, *, seed: int, init: str, activation: str) -> MLP | Any:
    """The point's seeded network (the same on every device and dtype for one seed): an MLP
    of its widths, or its model built at (D, P) (``jacbench.runs.models``)."""
    if point.model is not None:
        return point.model.build(
            point.d_in, point.d_out, seed=seed, dtype=point.torch_dtype, device=point.device
        )
    return MLP.from_widths(
        point.widths,
        activation=activation,
        init=init,
        seed=seed,
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


def _is_oom(error: BaseException) -> bool:
    if isinstance(error, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def _free_memory(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


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


def _first_line(error: BaseException) -> str:
    first = (str(error).splitlines() or [""])[0]
    return f"{type(error).__name__}: {first}"[:300]


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


def _start_row(point: Point, method: Method, costs: Costs) -> Row:
    # FLOPs of the mode the method uses, as jacbench's routine for that mode executes them:
    # for peers this is the useful work, so their GFLOP/s compare with jacbench's directly.
    # A user routine's mode is unknown: its FLOPs stay empty.
    mode = method.mode_for(costs.predicted)
    return Row(
        depth=point.depth,
        d_in=point.d_in,
        width=point.width,
        d_out=point.d_out,
        widths=format_widths(point.widths),
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


def _fail(row: Row, point: Point, error: BaseException) -> Row:
    _free_memory(point.device)
    if isinstance(error, UnsupportedNetwork):
        row.status, row.message = Status.SKIPPED, str(error)
    elif _is_oom(error):
        row.status, row.message = Status.OOM, _first_line(error)
    else:  # in the words a worker uses for what its code raised
        row.status, row.message = Status.ERROR, f"raised {workers.describe(error)}"[:300]
    return row


@dataclass(frozen=True)
class Reference:
    """The operator's float64 reference result at a point, or why there is none."""

    value: torch.Tensor | None  # the exact result: a Jacobian, a Hessian, … as the operator says
    missing: str = ""  # why value is None: the message of unchecked rows


def _reference(point: Point, net: MLP, x: torch.Tensor, validate: bool, operator: str) -> Reference:
    if not validate:
        return Reference(None, "not checked: validation is off")
    try:
        return Reference(point_reference(point, net, x, operator))
    except Exception as error:  # the reference failing must not end the sweep
        _free_memory(point.device)
        what = "ran out of memory" if _is_oom(error) else f"failed ({_first_line(error)})"
        return Reference(None, f"not checked: the float64 reference {what}")


def _check(
    row: Row,
    result: object,
    reference: Reference,
    dtype: str,
    exact: bool = True,
    *,
    net: MLP | None = None,
    x: torch.Tensor | None = None,
) -> None:
    """Set the row's error and status from the method's result (``diagnosis.diagnose``: the
    words check and grade use too). A stochastic estimate (``exact`` false) gets its error
    measured and the status ``unchecked``: its error is what it shows, not a fault."""
    if reference.value is None:
        row.status, row.message = Status.UNCHECKED, reference.missing
        return
    jacobian = row.operator == "jacobian"
    tolerance = TOLERANCES[dtype] if exact else math.inf
    found = diagnose(result, reference.value, tolerance, net=net, x=x, jacobian=jacobian)
    row.max_rel_err = found.max_rel_err
    if not found.right:
        row.status, row.message = Status.WRONG, found.problem
    elif not exact:
        row.status = Status.UNCHECKED
        row.message = "a stochastic estimate, not exact: max_rel_err is its error here"


def prepare_task(
    point: Point,
    method: Method,
    config: SweepConfig,
    net: MLP | Any,
    x,
    reference: Reference,
    costs: Costs,
) -> tuple[Row, JacobianCall | None]:
    """Build, call once and check one method at one point (``costs``: ``point_costs``').

    Returns the row so far and the call still to be timed (None when the row is final:
    out of memory, an error, a wrong result, or ``slow``, timed by its one call). In a
    worker each step first tells the parent how long it may take (``workers.phase``).
    """
    row = _start_row(point, method, costs)
    if not (method.any_network or isinstance(net, MLP)):
        row.status, row.message = Status.SKIPPED, _MLP_ONLY.format(method.name)
        return row, None
    shortfall = _memory_shortfall(point, method, costs)
    if shortfall is not None:
        row.status, row.message = Status.OOM, shortfall
        return row, None
    on_cuda = torch.device(point.device).type == "cuda"
    # A user routine's arguments are watched: one that changes them in place is wrong.
    before = Snapshot(net, x) if method.source else None
    try:
        workers.phase(config.call_timeout)
        call = method.build(net, x)
        row.compile_s = getattr(call, "compile_s", math.nan)
        if on_cuda:
            torch.cuda.reset_peak_memory_stats(point.device)
            baseline = torch.cuda.memory_allocated(point.device)
        workers.phase(config.call_timeout)
        first = timing.time_once(call, point.device)
        if on_cuda:
            row.peak_memory_bytes = torch.cuda.max_memory_allocated(point.device) - baseline
        workers.phase(config.call_timeout)
        mlp = net if isinstance(net, MLP) else None  # the chain's diagnoses know the MLP
        _check(row, call(), reference, point.dtype, method.exact, net=mlp, x=x)
    except (Exception, SystemExit) as error:  # one failing method must not end the sweep
        return _fail(row, point, error), None
    changed = before.changed(net, x, _weights_named(method)) if before is not None else ""
    if changed:
        row.status, row.message = Status.WRONG, changed
    if row.status == Status.WRONG:
        return row, None
    if first > config.max_call_time:
        if row.status == Status.OK:
            row.status = Status.SLOW
        return finish_task(row, point, config, timing.Measurement((first,))), None
    return row, call


_MLP_ONLY = (
    "{} runs on jacbench's MLP only; a model's methods: func-jacfwd, func-jacrev, auto, "
    "autograd-forward, autograd-reverse and routines fn(model, x)"
)


def point_costs(point: Point, operator: str, net: Any = None, x: Any = None) -> Costs:
    """The cost model at a point: the operator's for the MLP; for a model's Jacobian the
    counted costs of ``generic.plan_of`` (given the built model and input), else none."""
    if point.model is None:
        return OPERATORS[operator].costs(point.widths, point.batch, point.torch_dtype)
    if net is None or operator != "jacobian":
        return Costs("", {})
    plan = generic.plan_of(net, x)
    return Costs(plan.mode, plan.flops, memory_bytes=plan.memory_bytes)


def _weights_named(method: Method) -> str:
    # A routine's description says how it is called (Routine.calling).
    textbook = "fn(x, L, param_dict)" in method.description
    return routines.weights_named(routines.TEXTBOOK if textbook else routines.LIBRARY)


def finish_task(row: Row, point: Point, config: SweepConfig, measurement) -> Row:
    """Fill a row's timing columns from its measurement."""
    peaks = config.peaks.get(point.dtype)
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


def _measure(call: JacobianCall, point: Point, config: SweepConfig, min_time: float):
    # A measurement runs its calls for about min_time, after a few warm-up calls: in a
    # worker it may take that, and a call's worth of the timeout, several times over.
    workers.phase(config.call_timeout + 4 * min_time)
    return timing.measure(call, device=point.device, min_time=min_time, threads=config.threads)


class _Tasks:
    """A point's tasks in this process: the network, input and reference built once."""

    def __init__(self, point: Point, config: SweepConfig) -> None:
        self.point, self.config = point, config
        self.calls: dict[str, JacobianCall] = {}
        self.x = build_input(point, seed=config.seed)
        self.failure = ""  # why the point's network could not be built: every row's error
        self.costs = point_costs(point, config.operator)
        try:
            workers.phase(config.call_timeout)
            self.net = build_network(
                point, seed=config.seed, init=config.init, activation=config.activation
            )
        except Exception as error:  # a model's factory, or moving it, may raise anything
            if point.model is None:
                raise
            named = str(error) if isinstance(error, ModelError) else _first_line(error)
            self.net, self.failure = None, f"building the model failed: {named}"
            self.reference = Reference(None, self.failure)
            return
        self.reference = _reference(point, self.net, self.x, config.validate, config.operator)
        if point.model is not None:
            self.costs = _counted_costs(point, config, self.net, self.x)

    def prepare(self, method: Method) -> Row:
        """Build, call and check ``method``; keep its call if it is still to be timed."""
        if self.failure:
            row = _start_row(self.point, method, self.costs)
            row.status, row.message = Status.ERROR, self.failure
            return row
        if method.ref is not None and not workers.in_worker():
            # A routine loaded for a worker, at a point that stays here (a lambda's model
            # or routine is part of it): it is loaded here too.
            method = _method_here(method.ref)
        row, call = prepare_task(
            self.point, method, self.config, self.net, self.x, self.reference, self.costs
        )
        if call is not None:
            self.calls[method.name] = call
        return row

    def waiting(self, method: Method) -> bool:
        """Whether ``method`` has a call still to be timed."""
        return method.name in self.calls

    def measure(self, method: Method, min_time: float) -> timing.Measurement:
        """Time ``method``'s call for ``min_time``."""
        return _measure(self.calls[method.name], self.point, self.config, min_time)

    def close(self) -> None:
        """Let go of the point's tensors."""
        self.calls.clear()
        self.net = self.x = self.reference = None  # type: ignore[assignment]
        _free_memory(self.point.device)


def _counted_costs(point: Point, config: SweepConfig, net: Any, x: torch.Tensor) -> Costs:
    # Counting runs the model a few times: past the timeout or failing, there is no plan.
    try:
        workers.phase(config.call_timeout)
        return point_costs(point, config.operator, net, x)
    except Exception:  # a model torch.func cannot transform: its rows will say how
        return Costs("", {})


class _TasksInWorker:
    """A point's tasks in the worker process (NOTE: [Workers]): the same steps, each a
    request with a deadline; a worker that fails ends that task alone."""

    def __init__(self, point: Point, config: SweepConfig) -> None:
        # What the worker needs of the run: the methods travel one by one, by reference.
        self.point, self.config = point, replace(config, methods=(), skip=frozenset())
        self.timed: set[str] = set()

    def prepare(self, method: Method) -> Row:
        try:
            row, waiting = workers.run(
                _prepare_here,
                self.point,
                self.config,
                method.ref or method.name,
                deadline=self.config.call_timeout,
            )
        except workers.WorkerFailed as failure:
            return failed_row(self.point, method, failure)
        if waiting:
            self.timed.add(method.name)
        return row

    def waiting(self, method: Method) -> bool:
        return method.name in self.timed

    def measure(self, method: Method, min_time: float) -> timing.Measurement:
        return workers.run(
            _measure_here,
            self.point,
            self.config,
            method.ref or method.name,
            min_time,
            deadline=self.config.call_timeout,
        )

    def close(self) -> None:
        self.timed.clear()


def failed_row(point: Point, method: Method, failure: workers.WorkerFailed) -> Row:
    """The row of a task whose worker ran past its deadline, died or raised."""
    row = _start_row(point, method, point_costs(point, method.operator))
    return _mark_failed(row, failure)


def _mark_failed(row: Row, failure: workers.WorkerFailed) -> Row:
    row.status = Status.TIMEOUT if failure.timed_out else Status.ERROR
    row.message = str(failure)
    return row


def run_point(point: Point, methods: list[Method], config: SweepConfig) -> Iterator[Row]:
    """Every method at one point, timed in ``config.rounds`` interleaved rounds.

    Each round times every method for min_time / rounds; a method's times from all rounds
    make one measurement. Drift on a shared machine then touches every method alike. With
    one round each row is yielded as soon as it is timed. A point with a user routine runs
    in the worker (NOTE: [Workers]).
    """
    user_code = any(m.ref is not None for m in methods) or (
        point.model is not None and point.model.isolated
    )
    # A routine or a model that cannot go to a worker keeps its whole point here.
    stays = any(m.source and m.ref is None for m in methods) or (
        point.model is not None and point.model.ref is None
    )
    isolated = user_code and not stays
    tasks = _TasksInWorker(point, config) if isolated else _Tasks(point, config)
    try:
        yield from _run_rounds(tasks, point, methods, config)
    finally:
        tasks.close()


def _run_rounds(
    tasks: _Tasks | _TasksInWorker, point: Point, methods: list[Method], config: SweepConfig
) -> Iterator[Row]:
    if config.rounds == 1:
        for method in methods:
            row = tasks.prepare(method)
            if tasks.waiting(method):
                row = _timed(tasks, method, row, point, config, config.min_time)
            yield row
        return
    rows = [tasks.prepare(m) for m in methods]
    times: list[list[float]] = [[] for _ in rows]
    rounds: list[list[int]] = [[] for _ in rows]
    share = config.min_time / config.rounds
    for round_ in range(config.rounds):
        for method, row, collected, tags in zip(methods, rows, times, rounds):
            if not tasks.waiting(method) or row.status in FAILED_TIMING:
                continue
            try:
                blocks = tasks.measure(method, share).times
            except workers.WorkerFailed as failure:
                _mark_failed(row, failure)
                continue
            except Exception as error:  # one failing method must not end the sweep
                _fail(row, point, error)
                continue
            collected.extend(blocks)
            tags.extend([round_] * len(blocks))
    for method, row, collected, tags in zip(methods, rows, times, rounds):
        if tasks.waiting(method) and row.status not in FAILED_TIMING:
            finish_task(row, point, config, timing.Measurement(tuple(collected), tuple(tags)))
        yield row


# A row whose timing failed in some round: not timed in the rounds after.
FAILED_TIMING = (Status.OOM, Status.ERROR, Status.TIMEOUT)


def _timed(
    tasks: _Tasks | _TasksInWorker,
    method: Method,
    row: Row,
    point: Point,
    config: SweepConfig,
    min_time: float,
) -> Row:
    try:
        return finish_task(row, point, config, tasks.measure(method, min_time))
    except workers.WorkerFailed as failure:
        return _mark_failed(row, failure)
    except Exception as error:  # one failing method must not end the sweep
        return _fail(row, point, error)


# ------------------------------------------------------------------ in the worker process
# The worker keeps one point's network, input and reference, and each method's call.
_HERE: dict = {"point": None, "calls": {}, "methods": {}}


def _point_here(point: Point, config: SweepConfig) -> _Tasks:
    key = (point, config.seed, config.init, config.activation, config.validate, config.operator)
    if _HERE["point"] is None or _HERE["key"] != key:
        if _HERE["point"] is not None:
            _HERE["point"].close()
        _HERE["point"], _HERE["key"] = _Tasks(point, config), key
    tasks: _Tasks = _HERE["point"]
    tasks.config = config
    return tasks


def _run_state(config: SweepConfig) -> None:
    """torch's global state as the run has it, before each method: a routine that changed
    the threads, the default dtype, grad mode or the RNG does not pass that on."""
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    torch.set_default_dtype(torch.float32)
    torch.set_grad_enabled(True)
    torch.manual_seed(config.seed)
    tuning.keep_freed_memory()


def _method_here(ref: str | bytes) -> Method:
    method = _HERE["methods"].get(ref)
    if method is None:
        method = _HERE["methods"][ref] = routines.resolve_here(ref)
    return method


def _prepare_here(point: Point, config: SweepConfig, ref: str | bytes) -> tuple[Row, bool]:
    tasks = _point_here(point, config)
    _run_state(config)
    method = _method_here(ref)
    # The method's own copies of the network and input: what it does to them stays its own.
    if tasks.failure:
        return tasks.prepare(method), False
    net, x = _own_copy(tasks.net), tasks.x.clone()
    with tuning.use(config.tuning or tuning.active()):
        row, call = prepare_task(point, method, config, net, x, tasks.reference, tasks.costs)
    if call is not None:
        tasks.calls[method.name] = call
    return row, call is not None


def _own_copy(net: MLP | Any) -> MLP | Any:
    """A method's own copy of the network; a model that cannot be copied (it holds a lock,
    say) is shared, and what a method does to it is still seen (``Snapshot``)."""
    try:
        return copied(net)
    except Exception:  # deepcopy of the user's module may fail in any way
        return net


def _measure_here(point: Point, config: SweepConfig, ref: str | bytes, min_time: float):
    tasks = _point_here(point, config)
    method = _method_here(ref)
    if method.name not in tasks.calls:  # a fresh worker, after another method's failure
        _prepare_here(point, config, ref)
    _run_state(config)
    with tuning.use(config.tuning or tuning.active()):
        return _measure(tasks.calls[method.name], point, config, min_time)
