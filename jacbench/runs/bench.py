"""A point's bench: its network, its inputs and the methods' calls, where the methods run.

An executor hosts a ``Bench`` (``jacbench.runs.executors``): in this process for
jacbench's own methods at an MLP's point, in a sandbox for a user's routine or model. Its
steps (build, first call, result, measure; the reference on the point's own bench) are
what the task pipeline (``jacbench.runs.tasks``) calls. A step returns plain data only: a
result goes back as bytes with its dtype and shape (``jacbench.runs.plain``), and the parent
judges it. The same seed gives the same network and inputs on every bench of a point.

NOTE: [Every timed call checked]
    A routine may be right on the calls that are checked and wrong, or idle, on the calls
    that are timed: right twice, then ``torch.empty``; right once per input, remembered by
    the input's identity or values; or, at import, it may replace the very code that times
    it and keeps its results (it runs in the same process), and report what it likes. So
    nothing the sandbox says about time or results is taken on trust: jacbench's process
    times a user's routine itself, in blocks (``timed_block``), each one request to the
    sandbox, the clock read on this side of the pipe. A block's inputs are new to the
    routine: random, drawn from a seed the parent draws for that block alone
    (``block_draws``), and each scaled by the digest of the result before it
    (``chained_input``), so that no result can be made before the block is asked for and
    the calls cannot be batched into one: each input exists only once the call before it
    has its result. Before the block's reply the sandbox must commit to every result, a
    digest each (``plain.digest``); the parent then picks calls at random and asks for
    their results, which must match their digests and its own references for those inputs.
    A routine that skipped or faked one call in ten survives a block's three picks with
    probability 0.73 and twenty blocks' with 0.002; whatever made the committed results
    ran inside the timed block. A timed result that is wrong is ``wrong``: "a different
    result when timed".

    A user's model is the same threat one level down: jacbench's own methods call the
    model's code in the model's sandbox, where it could change the clock, or be right for
    its first calls (the reference's, the checked first call) and return zeros from its
    twentieth. So at a model's point jacbench's methods are timed in blocks too, every call
    on the point's own input (the transforms are jacbench's: nothing of the model can keep
    a Jacobian between calls), and the picked results are judged against the point's
    reference, made before any timed call and itself checked against central differences
    (NOTE: [A model's reference checked by differences]).

    What this does not hold against: the reference, its differences and these benches run
    in the model's own process, where its code runs first. A model that rewrites jacbench's
    code there (the bench's timed block, the differences check, the plan) can make its own
    rows say what it likes, as its author could by editing the function itself; that is an
    author fooling their own benchmark, and the rows of every other model and of every
    user's routine stay in processes it cannot reach. A student's routine has no such
    reach: its references are computed in jacbench's process, never beside it.
"""

from __future__ import annotations

import math
import random
from typing import Any

import torch

from jacbench.ad import generic
from jacbench.ad.networks import MLP
from jacbench.measure import allocator, timing, tuning
from jacbench.measure.messages import one_line
from jacbench.measure.tuning import Tuning
from jacbench.runs import routines
from jacbench.runs.diagnosis import Diagnosis, Snapshot
from jacbench.runs.executors import is_oom
from jacbench.runs.grid import Point
from jacbench.runs.methods import JacobianCall, Method
from jacbench.runs.models import ModelError, copied
from jacbench.runs.operators import OPERATORS, Costs, get_operator
from jacbench.runs.plain import PlainResult, digest, plain_of
from jacbench.runs.settings import Build

DEFAULT_BUILD = Build()  # the network and input a run builds by default
# A block of a user's routine keeps every result until the parent has picked: at most this
# many bytes of them.
BLOCK_BYTES = 256 << 20


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


def block_draws(point: Point, seed: int, calls: int) -> torch.Tensor:
    """A timed block's ``calls`` random inputs, drawn from ``seed`` at once (NOTE: [Every
    timed call checked]): the same on both sides of the pipe."""
    generator = torch.Generator().manual_seed(seed)
    shape = (calls, point.batch, point.d_in) if point.batch > 1 else (calls, point.d_in)
    draws = torch.randn(shape, generator=generator, dtype=torch.float64)
    return draws.to(device=point.device, dtype=point.torch_dtype)


def chained_input(draw: torch.Tensor, previous: bytes) -> torch.Tensor:
    """A block's next input: its draw scaled by 0.5–1.5 as the digest of the result before
    it says, so that no call's input is known before the call before it has its result."""
    fraction = int.from_bytes(previous[:8].ljust(8, b"\0"), "big") / 2**64
    return draw * (0.5 + fraction)


def point_reference(
    point: Point, net: MLP | Any, x: torch.Tensor, operator: str = "jacobian"
) -> torch.Tensor:
    """The operator's float64 reference at (net, x), on the point's device: for the Jacobian
    ``torch.func.jacrev``, for the second order ``torch.func.hessian`` (jacbench.runs.operators),
    of a float64 copy of the network or model."""
    net64, x64 = copied(net, torch.float64), x.to(torch.float64)
    found = get_operator(operator).reference(net64, x64)
    if operator == "jacobian" and point.model is not None and point.model.user_code:
        _agrees_with_differences(net64, x64, found)
    return found


# NOTE: [A model's reference checked by differences]
#     A user's model is differentiated by the AD it is written for: its reference is
#     float64 jacrev (or torch.autograd's, where torch.func cannot transform it). Code can
#     hide part of its derivative from AD (a value read under torch.no_grad, through NumPy
#     or .detach(), integer outputs; or code that behaves otherwise under a transform), and
#     the reference then agrees with the rows that share the blind spot: an all-zero
#     Jacobian was "ok" with error 0. So the reference is checked against central
#     differences along DIRECTIONS random directions drawn afresh (the model's own float64
#     calls in grad mode, no AD): J·v against (f(x + hv) − f(x − hv)) / 2h. Where they
#     disagree beyond DIFFERENCE_TOLERANCE the reference is refused and the rows are
#     unchecked, saying why. The directions are unforeseeable and the calls run in grad
#     mode, as the methods' do: a model that answered otherwise under torch.no_grad (where
#     the differences ran at first) passed with a Jacobian that was not its own.
DIRECTIONS = 4
DIFFERENCE_STEP = 1e-6
DIFFERENCE_TOLERANCE = 1e-4


def _agrees_with_differences(net: Any, x: torch.Tensor, jacobian: torch.Tensor) -> None:
    """Raises ValueError where ``jacobian`` (float64, at x of shape (D,) or (B, D)) is not
    the derivative central differences of ``net`` measure (NOTE: [A model's reference
    checked by differences])."""
    # Directions the model cannot foresee, and grad mode as jacbench's methods run it: a
    # model that answers otherwise under torch.no_grad, or at known points, is not let off.
    generator = torch.Generator().manual_seed(random.SystemRandom().getrandbits(62))
    for _ in range(DIRECTIONS):
        v = torch.randn(x.shape[-1], generator=generator, dtype=torch.float64).to(x.device)
        v = v / v.norm()
        with torch.enable_grad():
            ahead, behind = net(x + DIFFERENCE_STEP * v), net(x - DIFFERENCE_STEP * v)
        ahead = ahead.detach() if isinstance(ahead, torch.Tensor) else ahead
        behind = behind.detach() if isinstance(behind, torch.Tensor) else behind
        if not (isinstance(ahead, torch.Tensor) and ahead.is_floating_point()):
            raise ValueError("the model's output is not a floating-point tensor")
        measured = (ahead - behind).to(torch.float64) / (2 * DIFFERENCE_STEP)
        derived = jacobian @ v
        scale = max(float(measured.abs().max()), float(derived.abs().max()), 1e-12)
        off = float((measured - derived).abs().max()) / scale
        if not off <= DIFFERENCE_TOLERANCE:
            raise ValueError(
                f"AD's Jacobian disagrees with central differences (relative {off:.2g} along a "
                "random direction): the code hides part of its derivative from AD "
                "(torch.no_grad, .detach(), NumPy, integers, or behaviour under a transform)"
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


def free_memory(device: str) -> None:
    """Give a CUDA device's cached blocks back (nothing on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


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
        self.x = build_input(point, seed=build.seed)
        self._block: list[PlainResult] = []  # the last timed block's results
        self.failure = ""  # why the point's network could not be built: every row's error
        self.costs = point_costs(point, operator)
        try:
            self.net = build_network(point, build)
        except Exception as error:  # a model's factory, or moving it, may raise anything
            if point.model is None:
                raise
            named = str(error) if isinstance(error, ModelError) else one_line(error)
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

    def primal_seconds(self, min_time: float) -> float:
        """The median seconds of the function itself at the point's own input (the MLP's
        or the model's forward pass, gradients off), for the ``evals`` column; NaN where
        it cannot be timed."""
        if self.failure:
            return math.nan
        self._run_state()
        net, x = self.net, self.x

        def forward() -> object:
            with torch.no_grad():
                return net(x)

        try:
            with tuning.use(self.tuned or tuning.active()):
                return timing.measure(
                    forward, device=self.point.device, min_time=min_time, threads=self.threads
                ).median
        except Exception:  # a model that fails here fails its rows' own steps too
            return math.nan

    def reference(self) -> PlainResult | str:
        """The operator's float64 reference at the point's own input, or why there is none
        (the message of unchecked rows)."""
        return self._reference_at(self.x)

    def _reference_at(self, x: torch.Tensor) -> PlainResult | str:
        if not self.validate:
            return "not checked: validation is off"
        try:
            return plain_of(point_reference(self.point, self.net, x, self.operator))
        except Exception as error:  # the reference failing must not end the sweep
            free_memory(self.point.device)
            what = "ran out of memory" if is_oom(error) else f"failed ({one_line(error)})"
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
        self, handle: Method | str | bytes, name: str, min_time: float
    ) -> timing.Measurement:
        """Time the method for ``min_time`` seconds (built again first in a fresh worker):
        jacbench's own, timed here; a user's routine is timed by the parent in blocks
        instead (``timed_block``)."""
        self._ensure(handle, name)
        self._run_state()
        with tuning.use(self.tuned or tuning.active()):
            return timing.measure(
                self.calls[name], device=self.point.device, min_time=min_time,
                threads=self.threads,
            )  # fmt: skip

    def warm_up(self, handle: Method | str | bytes, name: str, calls: int) -> None:
        """``calls`` untimed calls of the method at the point's input right before a timed
        block (``tasks.WARMUP_CALLS``), as ``timing.measure`` warms up jacbench's methods:
        the block's first call then finds the thread pool awake and the caches its own."""
        self._ensure(handle, name)
        self._run_state()
        with tuning.use(self.tuned or tuning.active()):
            for _ in range(calls):
                self.calls[name]()

    def timed_block(
        self, handle: Method | str | bytes, name: str, seed: int | None, calls: int
    ) -> tuple[bytes, ...]:
        """``calls`` calls of the method, one after another, each on the block's next input
        (``block_draws`` from ``seed``, each scaled by the previous result's digest:
        ``chained_input``; with no seed, the method's own call at the point's input), and a
        digest of each result; the results kept for ``block_results``. The parent's clock
        times the whole request (NOTE: [Every timed call checked])."""
        self._ensure(handle, name)
        self._run_state()
        net, _, _, method = self.inputs[name]
        self._block, digests, previous = [], [], b""
        with tuning.use(self.tuned or tuning.active()):
            if seed is None:  # jacbench's method on a user's model: the point's own input
                for _ in range(calls):
                    self._block.append(plain_of(self.calls[name]()))
                    digests.append(digest(self._block[-1]))
                return tuple(digests)
            for draw in block_draws(self.point, seed, calls):
                result = plain_of(method.build(net, chained_input(draw, previous))())
                previous = digest(result)
                self._block.append(result)
                digests.append(previous)
        return tuple(digests)

    def block_results(self, indices: list[int]) -> dict[int, PlainResult]:
        """The last block's results at ``indices`` (those it made)."""
        return {i: self._block[i] for i in indices if 0 <= i < len(self._block)}

    def block_reference(
        self, seed: int, calls: int, index: int, previous: bytes
    ) -> PlainResult | str:
        """The operator's float64 reference at input ``index`` of the block ``seed`` draws,
        the result before it committed to as ``previous``, or why there is none."""
        x = chained_input(block_draws(self.point, seed, calls)[index], previous)
        return self._reference_at(x)

    def _ensure(self, handle: Method | str | bytes, name: str) -> None:
        if name not in self.calls:  # a fresh worker, after another method's failure
            self.build(handle, name)
            self.first_call(name)

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
