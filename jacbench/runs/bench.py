"""A point's bench: its network, its inputs and the methods' calls, where the methods run.

An executor hosts a ``Bench`` (``jacbench.runs.executors``): in this process for
jacbench's own methods at an MLP's point, in a sandbox for a user's routine or model. Its
steps (build, first call, result, measure; the reference on the point's own bench) are
what the task pipeline (``jacbench.runs.tasks``) calls. A step returns plain data only: a
result goes back as bytes with its dtype and shape (``jacbench.runs.plain``), and the parent
judges it. The same seed gives the same network and inputs on every bench of a point.

NOTE: [Every timed call checked]
    A routine may be right on the calls that are checked and wrong, or idle, on the calls
    that are timed: right twice, then ``torch.empty``; or right once per input, remembered
    by the input's identity or values. So a user's routine is timed on a pool of distinct
    inputs (``pool_input``: the point's input first, then others from the same seed), one
    per call for as many calls as the measurement should make (``POOL_BYTES`` at most, then
    again from the start), and the results of calls the parent picks at random are kept and
    sent back; the parent checks each against its own reference for that input. A routine
    whose timed result is wrong is ``wrong``: "a different result when timed".
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch

from jacbench.ad import generic
from jacbench.ad.networks import MLP
from jacbench.measure import allocator, timing, tuning
from jacbench.measure.tuning import Tuning
from jacbench.runs import routines
from jacbench.runs.diagnosis import Diagnosis, Snapshot
from jacbench.runs.executors import is_oom
from jacbench.runs.grid import Point
from jacbench.runs.methods import JacobianCall, Method
from jacbench.runs.models import ModelError, copied
from jacbench.runs.operators import OPERATORS, Costs, get_operator
from jacbench.runs.plain import PlainResult, plain_of
from jacbench.runs.settings import Build

DEFAULT_BUILD = Build()  # the network and input a run builds by default
# The pool of inputs a user's routine is timed on holds at most this many bytes.
POOL_BYTES = 64 << 20
# An input of the pool other than the point's own is drawn from this stream of the seed.
_POOL_STREAM = 1_000_003


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
    return pool_input(point, seed, 0)


def pool_input(point: Point, seed: int, index: int) -> torch.Tensor:
    """Input ``index`` of the point's pool (NOTE: [Every timed call checked]); 0 is the
    point's own input."""
    stream = seed + 1 if index == 0 else (seed + 1) * _POOL_STREAM + index
    generator = torch.Generator().manual_seed(stream)
    x = torch.randn(point.batch, point.d_in, generator=generator, dtype=torch.float64)
    x = x if point.batch > 1 else x[0]
    return x.to(device=point.device, dtype=point.torch_dtype)


def pool_size(point: Point, per_call_s: float, min_time: float) -> int:
    """How many inputs a measurement of calls of ``per_call_s`` seconds draws from: one per
    call it makes in sized blocks (``timing.sized_blocks``: three to size them, then blocks
    until ``min_time``, the last one whole), with room for calls faster than one timed alone;
    ``POOL_BYTES`` at most."""
    calls = 3 + math.ceil(4 * min_time / max(per_call_s, 1e-8)) + 64
    per_input = point.batch * point.d_in * point.torch_dtype.itemsize
    return max(2, min(calls, POOL_BYTES // max(per_input, 1)))


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


def free_memory(device: str) -> None:
    """Give a CUDA device's cached blocks back (nothing on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def first_line(error: BaseException) -> str:
    """An exception's type and first line, at most 300 characters."""
    first = (str(error).splitlines() or [""])[0]
    return f"{type(error).__name__}: {first}"[:300]


class Bench:
    """One point's network and inputs, built once where its methods run, and each method's
    call: the object an executor hosts. A user's code works on its own copies (what it does
    to them stays its own), each method under the run's state."""

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
        self.validate, self.tuned, self.threads = validate, tuned, threads
        self.calls: dict[str, JacobianCall] = {}
        self.inputs: dict[str, tuple[Any, torch.Tensor, Snapshot | None, Method]] = {}
        self.x = pool_input(point, build.seed, 0)
        self.failure = ""  # why the point's network could not be built: every row's error
        self.costs = point_costs(point, operator)
        try:
            self.net = build_network(point, build)
        except Exception as error:  # a model's factory, or moving it, may raise anything
            if point.model is None:
                raise
            named = str(error) if isinstance(error, ModelError) else first_line(error)
            self.net, self.failure = None, f"building the model failed: {named}"
            return
        if point.model is not None:
            self.costs = _counted_costs(point, operator, self.net, self.x)

    def describe(self) -> tuple[str, Costs]:
        """Why the network could not be built (""), and the point's costs (as plain dicts:
        they cross a pipe)."""
        costs = self.costs
        plain = Costs(
            costs.predicted,
            dict(costs.flops),
            dict(costs.elementwise_flops),
            dict(costs.memory_bytes),
        )
        return self.failure, plain

    def reference(self, index: int) -> PlainResult | str:
        """The operator's float64 reference at input ``index`` of the pool, or why there is
        none (the message of unchecked rows)."""
        if not self.validate:
            return "not checked: validation is off"
        try:
            x = pool_input(self.point, self.build_settings.seed, index)
            return plain_of(point_reference(self.point, self.net, x, self.operator))
        except Exception as error:  # the reference failing must not end the sweep
            free_memory(self.point.device)
            what = "ran out of memory" if is_oom(error) else f"failed ({first_line(error)})"
            return f"not checked: the float64 reference {what}"

    def build(self, handle: Method | str | bytes, name: str) -> float:
        """Build the method ``handle`` names (a routine's is loaded here) as ``name`` (the
        parent's name for it); its compile time."""
        method = _method(handle)
        self._run_state()
        user_code = bool(method.source) or self.point.model is not None
        net, x = (_own_copy(self.net), self.x.clone()) if user_code else (self.net, self.x)
        before = Snapshot(net, x) if method.source else None
        with tuning.use(self.tuned or tuning.active()):
            call = method.build(net, x)
        self.calls[name] = call
        self.inputs[name] = (net, x, before, method)
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

    def result(self, name: str) -> tuple[PlainResult, Diagnosis | None]:
        """Call the method once more: its result as plain data, and what the call changed in
        its arguments (None: nothing)."""
        net, x, before, method = self.inputs[name]
        with tuning.use(self.tuned or tuning.active()):
            found = plain_of(self.calls[name]())
        weights = routines.weights_named(method.convention or routines.LIBRARY)
        return found, before.changed(net, x, weights) if before is not None else None

    def measure(
        self,
        handle: Method | str | bytes,
        name: str,
        min_time: float,
        picks: tuple[float, ...] | None = None,
    ) -> tuple[timing.Measurement, dict[int, PlainResult]]:
        """Time the method for ``min_time`` seconds (built again first in a fresh worker).

        With ``picks`` (a user's routine: NOTE: [Every timed call checked]) each call takes
        the next input of a pool as large as the calls the measurement makes, and the results
        on the inputs at those fractions of the pool are kept and returned.
        """
        if name not in self.calls:  # a fresh worker, after another method's failure
            self.build(handle, name)
            self.first_call(name)
        self._run_state()
        with tuning.use(self.tuned or tuning.active()):
            if picks is None:
                measured = timing.measure(
                    self.calls[name], device=self.point.device, min_time=min_time,
                    threads=self.threads,
                )  # fmt: skip
                return measured, {}
            return self._measure_pooled(name, min_time, picks)

    def _measure_pooled(
        self, name: str, min_time: float, picks: tuple[float, ...]
    ) -> tuple[timing.Measurement, dict[int, PlainResult]]:
        """Blocks sized from the call's own time (``timing.sized_blocks``), so that the
        number of calls, and the pool, are known before they are made. A pick is a call
        among those the measurement makes even where calls run 2.5× slower than sized."""
        device, threads = self.point.device, self.threads or torch.get_num_threads()
        own = self.calls[name]
        for _ in range(2):  # warm up on the point's own input
            own()
        per_call = self._per_fresh_call(name, device)
        made = max(1, int(0.4 * min_time / per_call))
        chosen = {min(int(p * made), made - 1) for p in picks}
        call, kept = self._pooled(name, pool_size(self.point, per_call, min_time), chosen)
        times = timing.sized_blocks(call, device=device, min_time=min_time, threads=threads)
        if not kept and call.last is not None:  # fewer calls than sized (a busy machine)
            kept.update([call.last])  # the last one timed stands in for the picks
        return timing.Measurement(times), {i: plain_of(v) for i, v in kept.items()}

    def _per_fresh_call(self, name: str, device: str) -> float:
        """Seconds of a call on an input it has not seen (the least of three): what the
        measurement's calls take, whatever the routine remembers of inputs it has."""
        net, _, _, method = self.inputs[name]
        seed = self.build_settings.seed
        inputs = [pool_input(self.point, seed, -1 - j) for j in range(3)]
        return min(timing.time_once(method.build(net, x), device) for x in inputs)

    def _pooled(self, name: str, pool: int, chosen: set[int]) -> tuple[_PooledCall, dict[int, Any]]:
        """A call that takes the next input of the pool each time, and keeps the results of
        the ``chosen`` calls by their input's index."""
        net, _, _, method = self.inputs[name]
        seed = self.build_settings.seed
        calls = [method.build(net, pool_input(self.point, seed, j)) for j in range(pool)]
        pooled = _PooledCall(calls, chosen)
        return pooled, pooled.kept

    def close(self) -> None:
        """Let go of the point's tensors."""
        self.calls.clear()
        self.inputs.clear()
        self.net = self.x = None  # type: ignore[assignment]
        free_memory(self.point.device)

    def _run_state(self) -> None:
        """torch's global state as the run has it, before each method: a routine that changed
        the threads, the default dtype, grad mode or the RNG does not pass that on."""
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        torch.set_default_dtype(torch.float32)
        torch.set_grad_enabled(True)
        torch.manual_seed(self.build_settings.seed)
        allocator.keep_freed_memory()


def _method(handle: Method | str | bytes) -> Method:
    return handle if isinstance(handle, Method) else routines.resolve_here(handle)


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


class _PooledCall:
    """Each call on the next input of the pool; the results of the ``chosen`` calls kept by
    their input's index, and the last call's (``last``)."""

    def __init__(self, calls: list[JacobianCall], chosen: set[int]) -> None:
        self.calls, self.chosen = calls, chosen
        self.kept: dict[int, Any] = {}
        self.last: tuple[int, Any] | None = None
        self._counter = itertools.count()

    def __call__(self) -> Any:
        made = next(self._counter)
        index = made % len(self.calls)
        result = self.calls[index]()
        if made in self.chosen:
            self.kept[index] = result
        self.last = (index, result)
        return result
