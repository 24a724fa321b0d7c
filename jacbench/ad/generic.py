"""The Jacobian of any function of one tensor, and the choice between its modes.

Shape rule as for the MLP's routines: f maps x of shape (D,) to (P,), and a batch (B, D) to
(B, P), sample by sample; its Jacobian is (P, D), or (B, P, D). ``jacobian_of`` computes it
with ``torch.func`` (``jacfwd`` or ``jacrev``, vmapped over a batch); ``plan_of`` says which
mode to use.

NOTE: [Choosing the mode of any function]
    Forward mode carries D tangents through f, reverse mode P cotangents back through it,
    as ``torch.func.jacfwd`` and ``jacrev`` do: vmapped passes over one evaluation of f.
    Their FLOPs are counted, not modelled: torch's FLOP formulas
    (``torch.utils.flop_counter``) and the bytes of every tensor made, under a dispatch
    mode, of the vmapped JVP and VJP over one tangent and over two, on one sample with real
    data. The difference is the work per tangent; the rest is done once (the primal, a
    product with a weight's zero tangent). So the Jacobian costs fixed + D·step FLOPs
    forward and fixed + P·step reverse, times the batch.

    FLOPs alone choose badly at the sizes people differentiate most: under torch.func each
    dispatched operation costs microseconds (vmap's batching rules, the dual tensors of
    forward mode), and forward mode dispatches two to three times as many as reverse mode
    (a residual MLP with LayerNorm: 330 against 118). On an AMD EPYC (two cores) its
    Jacobian at D=4, P=256 took 6.8 ms forward with 1.6 MFLOP and 2.1 ms reverse with
    68 MFLOP. So each mode's time is predicted as operations × the seconds of one
    operation + FLOPs ÷ the FLOP rate, both measured once per process, device and dtype
    (``calibration``: a small network's two Jacobians, timed and counted; a 256-square
    product); the plan takes the faster, reverse mode on a tie. The operations are those
    of one vmapped pass: vmap runs the batch and the tangents in each. Where the passes
    make large tensors, writing them costs more than their FLOPs say: hand tracking's
    residuals at D = 26, P = 1500 make 247 MiB in reverse mode (its vmapped VJP carries
    1500 cotangents through every elementwise step) against 7 MiB forward, and took 39.5
    ms against 11.5 ms (AMD EPYC). So the bytes made count too, ÷ the rate at which an
    elementwise operation writes a 32 MiB tensor (``byte_rate``).

    The bytes say what a mode holds at once; past ``MEMORY_BUDGET_BYTES`` reverse mode
    gets a ``chunk_size`` that keeps it within (torch.func's forward mode takes none, so
    forward mode beyond the budget goes to reverse mode). An operation without a
    forward-mode derivative sends the plan to reverse mode and says which. A plan is
    cached per function object, input shape, dtype and device: counting runs f a few
    times, milliseconds for small nets.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import statistics
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from jacbench.measure import tuning
from jacbench.measure.messages import first_line

GENERIC_MODES = ("forward", "reverse")
# Memory a Jacobian's vmapped passes may hold at once before reverse mode is chunked.
MEMORY_BUDGET_BYTES = 1 << 30


@dataclass(frozen=True)
class Calibration:
    """What one operation and one FLOP take under torch.func here (``calibration``): an
    operation of forward mode (a JVP's, on dual tensors) costs more than one of reverse's."""

    forward_op_s: float  # one dispatched operation of a vmapped JVP
    reverse_op_s: float  # one dispatched operation of a vmapped VJP
    flop_rate: float  # FLOP/s of a matrix product of a small network's size
    measured: str = "here"  # "here": in this process; "with the tuning": cached per machine
    byte_rate: float = math.inf  # bytes/s an elementwise operation writes a large tensor at

    def op_seconds(self, mode: str) -> float:
        """Seconds of one operation of ``mode``."""
        return self.forward_op_s if mode == "forward" else self.reverse_op_s


@dataclass(frozen=True)
class GenericPlan:
    """What the counted costs say about one function at one input shape."""

    d_in: int
    d_out: int
    batch: int
    mode: str  # "forward" or "reverse"
    flops: dict[str, int]  # mode → FLOPs of the whole Jacobian (the batch included)
    memory_bytes: dict[str, int]  # mode → bytes its passes hold at once (the batch included)
    operations: dict[str, int]  # mode → operations dispatched (one vmapped pass; chunks: each)
    seconds: dict[
        str, float
    ]  # mode → operations · op_seconds + flops / flop_rate + bytes / byte_rate
    primal_flops: int  # one evaluation of f on one sample
    chunk_size: int | None  # reverse mode's cotangents per pass (None: all at once)
    calibration: Calibration
    reason: str = "fastest predicted"
    tie: bool = False  # the two modes' predicted times are within the model's error


class _Counter(TorchDispatchMode):
    """Adds up the FLOPs (by ``torch.utils.flop_counter``'s formulas), the operations and
    the bytes of every tensor of the operations under it. Its own mode rather than
    ``FlopCounterMode``, whose module hooks break ``torch.func.vjp``'s backward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0
        self.bytes = 0
        self.operations = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.operations += 1
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.flops += formula(*args, **kwargs, out_val=out)
        for tensor in torch.utils._pytree.tree_leaves(out):
            if isinstance(tensor, Tensor):
                self.bytes += tensor.numel() * tensor.element_size()
        return out


def _counted(call: Callable[[], Any]) -> _Counter:
    """The FLOPs, operations and bytes of ``call()``."""
    with _Counter() as counter:
        call()
    return counter


def _check(f: Callable[[Tensor], Tensor], x: Tensor) -> tuple[Tensor, int]:
    """One sample of x, and P; one clear error for a function that does not fit the rule."""
    if not isinstance(x, Tensor) or x.ndim not in (1, 2):
        shape = tuple(getattr(x, "shape", ()))
        raise ValueError(f"x must be a tensor of shape (D,) or (B, D), got {shape}")
    if x.ndim == 2 and x.shape[0] == 0:
        raise ValueError("x is an empty batch, shape (0, D): no sample to count the costs at")
    sample = x if x.ndim == 1 else x[0]
    with torch.no_grad():
        out = f(sample)
    if not isinstance(out, Tensor) or out.ndim != 1:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(
            f"the function must map one sample (D,) to (P,), got {got} for x of shape "
            f"{tuple(sample.shape)}"
        )
    return sample, out.shape[0]


@dataclass(frozen=True)
class _Passes:
    """One mode's vmapped passes at one sample: what is done once and what per tangent."""

    fixed_flops: int
    step_flops: int
    fixed_bytes: int
    step_bytes: int
    operations: int


def _passes(f: Callable[[Tensor], Tensor], sample: Tensor, mode: str, p: int) -> _Passes:
    """``mode``'s vmapped passes counted over one tangent and over two, so that work vmap
    does once (the primal, a product with a weight's zero tangent) is not multiplied by D
    or P."""
    generator = torch.Generator(device=sample.device).manual_seed(0)
    size = sample.shape[0] if mode == "forward" else p

    def over(k: int) -> Callable[[], Any]:
        seeds = torch.randn(k, size, generator=generator, dtype=sample.dtype, device=sample.device)
        if mode == "forward":
            return lambda: torch.func.vmap(lambda t: torch.func.jvp(f, (sample,), (t,))[1])(seeds)
        return lambda: torch.func.vmap(torch.func.vjp(f, sample)[1])(seeds)

    one, two = _counted(over(1)), _counted(over(2))
    step_flops, step_bytes = max(two.flops - one.flops, 0), max(two.bytes - one.bytes, 0)
    return _Passes(
        one.flops - step_flops, step_flops, one.bytes - step_bytes, step_bytes, two.operations
    )


def _plan(f: Callable[[Tensor], Tensor], x: Tensor) -> GenericPlan:
    sample, p = _check(f, x)
    d, batch = sample.shape[0], (x.shape[0] if x.ndim == 2 else 1)
    primal = _counted(lambda: f(sample)).flops
    counts = {"reverse": _passes(f, sample, "reverse", p)}
    try:
        counts["forward"] = _passes(f, sample, "forward", p)
    except (NotImplementedError, RuntimeError) as error:  # an operation without forward AD
        unsupported = first_line(error)
    else:
        unsupported = ""
    tangents = {"forward": d, "reverse": p}
    flops = {m: batch * (c.fixed_flops + tangents[m] * c.step_flops) for m, c in counts.items()}
    memory = {m: batch * (c.fixed_bytes + tangents[m] * c.step_bytes) for m, c in counts.items()}
    operations = {m: c.operations for m, c in counts.items()}
    chunk = None
    if memory["reverse"] > MEMORY_BUDGET_BYTES:
        passes = counts["reverse"]
        fits = (MEMORY_BUDGET_BYTES // batch - passes.fixed_bytes) // max(passes.step_bytes, 1)
        chunk = None if fits >= p else max(1, int(fits))
        if chunk is not None:
            operations["reverse"] *= -(-p // chunk)
    calibrated = calibration(sample.dtype, sample.device)
    seconds = {
        m: operations[m] * calibrated.op_seconds(m)
        + flops[m] / calibrated.flop_rate
        + memory[m] / calibrated.byte_rate
        for m in counts
    }
    mode, reason, tie = _choice(seconds, flops, operations, memory, unsupported)
    return GenericPlan(
        d_in=d,
        d_out=p,
        batch=batch,
        mode=mode,
        flops=flops,
        memory_bytes=memory,
        operations=operations,
        seconds=seconds,
        primal_flops=batch * primal,
        chunk_size=chunk if mode == "reverse" else None,
        calibration=calibrated,
        reason=reason,
        tie=tie,
    )


def decided(plan: GenericPlan) -> GenericPlan:
    """``plan`` with its mode, reason and tie decided here from its own counts: a plan sent
    back by a model's sandbox says what it counted, never what to do with the counts."""
    if "forward" not in plan.seconds or "reverse" not in plan.seconds:
        return dataclasses.replace(plan, mode="reverse", tie=False)
    mode, reason, tie = _choice(plan.seconds, plan.flops, plan.operations, plan.memory_bytes, "")
    keep = plan.mode == mode and plan.tie == tie  # the sandbox's reason where it agrees
    return plan if keep else dataclasses.replace(plan, mode=mode, reason=reason, tie=tie)


def _choice(
    seconds: dict[str, float],
    flops: dict[str, int],
    operations: dict[str, int],
    memory: dict[str, int],
    unsupported: str,
) -> tuple[str, str, bool]:
    """The mode, why in words, and whether it is a tie within the model's error."""
    if unsupported:
        return "reverse", f"forward mode is not supported here: {unsupported}", False
    if memory["forward"] > MEMORY_BUDGET_BYTES:
        return "reverse", "forward mode would pass the memory budget", False
    mode = "forward" if seconds["forward"] < seconds["reverse"] else "reverse"
    other = "reverse" if mode == "forward" else "forward"
    if seconds[other] <= TIE_FACTOR * seconds[mode]:  # within the model's error: a tie
        fewer = min(("reverse", "forward"), key=flops.__getitem__)
        return fewer, f"{TIE}, within {TIE_FACTOR:g}×; {fewer} mode needs fewer FLOPs", True
    if flops[mode] < flops[other] or (flops[mode] == flops[other] and flops[mode] > 0):
        return mode, "fewest FLOPs", False
    if flops[mode] == flops[other]:  # no matrix products at all: the operations decide
        return mode, f"fewer operations, {operations[mode]} against {operations[other]}", False
    reason = (
        f"fewer operations, {operations[mode]} against {operations[other]}: at this size "
        "torch.func's cost per operation outweighs the FLOPs"
    )
    return mode, reason, False


_CALIBRATIONS: dict[tuple[torch.dtype, str], Calibration] = {}
CALIBRATION_ROUNDS = 5
# Two modes whose predicted times are within this factor tie: the counts and the two
# measured constants predict a mode's time to within about this much (``predict`` says so).
TIE_FACTOR = 1.5
TIE = "a tie within the model's error"


def calibration(dtype: torch.dtype, device: torch.device | str) -> Calibration:
    """The seconds of one operation of each mode under torch.func and the FLOP rate of a
    small matrix product (NOTE: [Choosing the mode of any function]). In float32 on the CPU,
    the tuning's, measured once per machine on a quiet one (``calibrated``); else measured
    once per process, dtype and device, the median of ``CALIBRATION_ROUNDS`` rounds."""
    key = (dtype, str(device))
    found = _CALIBRATIONS.get(key)
    if found is not None:
        return found
    cached = tuning.active().calibration
    if torch.device(device).type == "cpu" and dtype == torch.float32 and cached:
        found = Calibration(
            cached["forward_op_s"],
            cached["reverse_op_s"],
            cached["flop_rate"],
            "with the tuning",
            # a tuning cached before the bytes counted: measured here, once per process
            cached.get("byte_rate") or _byte_rate(dtype, torch.device(device)),
        )
    else:
        found = _measured_calibration(dtype, device)
    _CALIBRATIONS[key] = found
    return found


def calibrated() -> dict[str, float]:
    """The calibration in float32 on the CPU, for the tuning to cache (``tuning.measure``)."""
    found = _measured_calibration(torch.float32, "cpu")
    return {
        "forward_op_s": found.forward_op_s,
        "reverse_op_s": found.reverse_op_s,
        "flop_rate": found.flop_rate,
        "byte_rate": found.byte_rate,
    }


def _measured_calibration(dtype: torch.dtype, device: torch.device | str) -> Calibration:
    """A three-layer network's jacfwd and jacrev of 16 units, each timed (the best of a few
    calls) per operation counted; a 256-square product timed the same way: the median of
    ``CALIBRATION_ROUNDS`` rounds of each, so that one slow spell moves none of them."""
    generator = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 16), torch.nn.Tanh(),
        torch.nn.Linear(16, 2),
    ).to(dtype=dtype, device=device).requires_grad_(False)  # fmt: skip
    x = torch.randn(4, generator=generator).to(dtype=dtype, device=device)
    a = torch.randn(256, 256, generator=generator).to(dtype=dtype, device=device)
    calls = {
        "forward": functools.partial(torch.func.jacfwd(net), x),
        "reverse": functools.partial(torch.func.jacrev(net), x),
    }
    operations = {mode: max(_counted(call).operations, 1) for mode, call in calls.items()}
    rounds: dict[str, list[float]] = {"forward": [], "reverse": [], "product": []}
    for _ in range(CALIBRATION_ROUNDS):
        for mode, call in calls.items():
            rounds[mode].append(_best_seconds(call, x.device) / operations[mode])
        rounds["product"].append(_best_seconds(lambda: a @ a, x.device))
    median = {name: statistics.median(values) for name, values in rounds.items()}
    flop_rate = 2 * 256**3 / median["product"]
    byte_rate = _byte_rate(dtype, x.device)
    return Calibration(median["forward"], median["reverse"], flop_rate, "here", byte_rate)


BYTE_PROBE = 32 << 20  # bytes of the tensor ``_byte_rate`` makes


def _byte_rate(dtype: torch.dtype, device: torch.device) -> float:
    """Bytes per second an elementwise operation writes a large tensor at: the median of
    ``CALIBRATION_ROUNDS`` bests. Into a tensor it already has: a fresh one's allocation
    costs what the allocator's settings say (glibc's page faults: 3.6 GB/s on an AMD EPYC,
    against many times that with freed memory kept), and a rate that moved with them would
    move the plan between processes."""
    a = torch.ones(BYTE_PROBE // torch.tensor([], dtype=dtype).element_size(), dtype=dtype)
    a, out = a.to(device), torch.empty_like(a, device=device)
    times = [
        _best_seconds(lambda: torch.mul(a, 2, out=out), device, repeats=3)
        for _ in range(CALIBRATION_ROUNDS)
    ]
    return BYTE_PROBE / statistics.median(times)


def _best_seconds(call: Callable[[], Any], device: torch.device, repeats: int = 7) -> float:
    """The fastest of ``repeats`` calls, after two more (synchronised on a GPU)."""
    best = math.inf
    for i in range(repeats + 2):
        start = time.perf_counter()
        call()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= 2:
            best = min(best, time.perf_counter() - start)
    return best


_PLANS: dict[tuple, GenericPlan] = {}
_LOCK = threading.Lock()


def plan_of(f: Callable[[Tensor], Tensor], x: Tensor) -> GenericPlan:
    """The mode to compute f's Jacobian at x with, from one JVP's and one VJP's counted
    FLOPs and operations (NOTE: [Choosing the mode of any function]); cached per function
    and shape.

    >>> f = torch.nn.Linear(3, 2)
    >>> plan_of(f, torch.ones(3)).mode in ("forward", "reverse")
    True
    """
    if not isinstance(x, Tensor) or not (x.is_floating_point() or x.is_complex()):
        got = f"a {x.dtype} tensor" if isinstance(x, Tensor) else f"a {type(x).__name__}"
        raise ValueError(f"x must be a tensor of floating point numbers, got {got}")
    key = (id(f), tuple(x.shape), x.dtype, x.device)
    with _LOCK:
        found = _PLANS.get(key)
    if found is not None:
        return found
    found = _plan(f, x)
    with _LOCK:
        _PLANS[key] = found
    try:  # forget the plans of a function that is gone (its id may come again)
        weakref.finalize(f, _forget, id(f))
    except TypeError:  # not weakly referable: a bound method, say; kept
        pass
    return found


def _forget(key: int) -> None:
    with _LOCK:
        for stale in [k for k in _PLANS if k[0] == key]:
            del _PLANS[stale]


def jacobian_of(
    f: Callable[[Tensor], Tensor],
    x: Tensor,
    mode: str = "auto",
    *,
    chunk_size: int | None = None,
) -> Tensor:
    """The Jacobian of f at x by ``mode``: "forward" (``torch.func.jacfwd``), "reverse"
    (``jacrev``, ``chunk_size`` cotangents at a time) or "auto" (``plan_of``'s mode and chunk
    size). (P, D) for x of shape (D,), (B, P, D) for a batch.

    >>> f = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    >>> jacobian_of(f, torch.ones(5, 3)).shape
    torch.Size([5, 2, 3])
    """
    if mode == "auto" and isinstance(x, Tensor) and x.ndim == 2 and x.shape[0] == 0:
        mode = "reverse"  # an empty batch: no sample to plan on, and nothing to compute
    if mode == "auto":
        plan = plan_of(f, x)
        mode, chunk_size = plan.mode, plan.chunk_size if chunk_size is None else chunk_size
    elif mode not in GENERIC_MODES:
        raise ValueError(
            f"unknown mode {mode!r} for a function that is not an MLP; expected one of: "
            "forward, reverse, auto"
        )
    elif not isinstance(x, Tensor) or x.ndim not in (1, 2):  # f itself is not called here
        shape = tuple(getattr(x, "shape", ()))
        raise ValueError(f"x must be a tensor of shape (D,) or (B, D), got {shape}")
    return _transformed(mode, chunk_size)(f, x)


def compiled_jacobian(
    f: Callable[[Tensor], Tensor], x: Tensor, mode: str = "auto"
) -> Callable[[Tensor], Tensor]:
    """``jacobian_of(f, ·, mode)`` under ``torch.compile`` for inputs shaped like x (NOTE:
    [Compiling a model's Jacobian]); "auto" takes ``plan_of``'s mode and chunk size. The
    first call compiles (seconds).

    >>> f = torch.nn.Linear(3, 2)
    >>> compiled_jacobian(f, torch.ones(3), "reverse")(torch.ones(3)).shape
    torch.Size([2, 3])
    """
    chunk_size = None
    if mode == "auto":
        plan = plan_of(f, x)
        mode, chunk_size = plan.mode, plan.chunk_size
    elif mode not in GENERIC_MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of: forward, reverse, auto")
    compute = _transformed(mode, chunk_size)
    if not isinstance(f, nn.Module):
        return torch.compile(lambda xs: compute(f, xs), dynamic=False)
    state = {k: v.detach() for k, v in (*f.named_parameters(), *f.named_buffers())}

    def functional(state: dict[str, Tensor], xs: Tensor) -> Tensor:
        return compute(lambda sample: torch.func.functional_call(f, state, (sample,)), xs)

    compiled_functional = torch.compile(functional, dynamic=False)
    return lambda xs: compiled_functional(state, xs)


# NOTE: [Compiling a model's Jacobian]
#     torch.func dispatches every operation of a vmapped JVP or VJP through Python at
#     microseconds each; torch.compile traces the whole transform once and runs it as one
#     graph. On a residual MLP (D = P = 16, batch 8, AMD EPYC) the vmapped jacrev took 1.28
#     ms eagerly and 0.17 ms compiled (6 s to compile). A module's parameters and buffers go
#     in through ``functional_call`` as detached tensors: compiled over the module itself,
#     parameters that do not require grad (how jacbench fixes a model's weights) hit an
#     internal assert in torch 2.13's fake tensors under the transform. The same assert
#     stops forward mode through LayerNorm even so: ``auto-compiled`` then skips the row
#     with torch's error rather than timing something else.
def _transformed(mode: str, chunk_size: int | None) -> Callable[..., Tensor]:
    def compute(f: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        if mode == "forward":
            single = torch.func.jacfwd(f)
        else:
            single = torch.func.jacrev(f, chunk_size=chunk_size)
        return single(x) if x.ndim == 1 else torch.func.vmap(single)(x)

    return compute


def per_sample(single: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """A function of one sample made a function of a batch by a loop: the results stacked."""
    return lambda xs: torch.stack([single(sample) for sample in xs])


class SampleWise(nn.Module):
    """A model made to map one sample (D,) to (P,) and a batch (B, D) to (B, P) sample by
    sample, as jacbench's methods take it (NOTE: [Models of one sample] in
    ``jacbench.runs.models``). ``how``: "batch" for a model that does so itself; "vmap" or
    "loop" for a model written for one sample (batched with ``torch.func.vmap``, or by a
    loop where vmap cannot run its code); "batch of one" for a model that takes batches
    only (BatchNorm1d refuses one sample). ``refused``: why torch.func cannot transform
    its code ("" where it can)."""

    def __init__(self, inner: Callable[[Tensor], Tensor], how: str, refused: str = "") -> None:
        super().__init__()
        self.inner, self.how = inner, how  # a module inner is a submodule: .to() moves it
        self.refused = refused

    def forward(self, x: Tensor) -> Tensor:
        if self.how == "batch":
            return self.inner(x)
        if self.how == "batch of one":
            return self.inner(x[None])[0] if x.ndim == 1 else self.inner(x)
        if x.ndim == 1:
            return self.inner(x)
        if self.how == "vmap":
            return torch.func.vmap(self.inner)(x)
        return per_sample(self.inner)(x)

    @property
    def vmaps(self) -> bool:
        """Whether torch.func's vmap can run the model's code at all."""
        return self.how != "loop" and not self.refused

    def extra_repr(self) -> str:
        return f"sample by sample: {self.how}" + (f"; {self.refused}" if self.refused else "")
