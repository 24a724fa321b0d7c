"""The registry of benchmarkable methods: name → builder.

A method computes one operator (``jacbench.runs.operators``: the Jacobian, the Hessian, the
Laplacian or Hessian-vector products). A builder takes (net, x) and returns a zero-argument
callable computing the operator in the shape rule of ``jacbench.ad.jacobians`` and
``jacbench.ad.hessians``; everything that can be made ahead (transformed functions, closures)
is made by the builder, so a timer around the callable measures the operator alone. The
CLI, the sweep and the pytest-benchmark suites all read this one table.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from jacbench.ad import fused, hessians
from jacbench.ad.cost import HUTCHINSON_SAMPLES
from jacbench.ad.generic import SampleWise, compiled_jacobian, per_sample
from jacbench.ad.jacobians import (
    auto_routine,
    capture_jacobian,
    jacobian,
    jacobian_forward,
    jacobian_mixed,
    jacobian_reverse,
)
from jacbench.ad.networks import MLP, UnsupportedNetwork
from jacbench.measure.machine import install_hint
from jacbench.measure.messages import one_line
from jacbench.measure.timing import synchronize
from jacbench.runs.operators import direction
from jacbench.runs.sandbox import Owner

JacobianCall = Callable[[], Tensor]


def _always() -> bool:
    return True


@dataclass(frozen=True)
class Method:
    """One way to compute an operator, as named in the CLI, the CSV and the docs."""

    name: str
    family: str
    mode: str  # the mode it uses, one the operator's cost model knows, or auto ("": unknown)
    description: str
    build: Callable[[MLP, Tensor], JacobianCall]
    available: Callable[[], bool] = _always
    requirement: str = ""  # what to install when it is not available
    opt_in: bool = False  # only run when asked for (compiled variants: slow to build)
    source: str = ""  # a user routine's file:function; empty for the registered methods
    operator: str = "jacobian"  # what it computes: a name in jacbench.runs.operators.OPERATORS
    exact: bool = True  # False: a stochastic estimate, timed and its error shown, not checked
    needs_cuda: bool = False  # runs on a CUDA device only, whatever the machine has
    # Takes any model (jacbench.runs.models), not only jacbench's MLP: torch.func,
    # autograd, the auto mode and library-style user routines.
    any_network: bool = False
    # How a worker process finds a user routine (NOTE: [Workers]): its spec, or the pickled
    # function; None for a method that runs in the sweep's own process.
    ref: str | bytes | None = None
    # A user routine's calling convention (jacbench.runs.routines): "library" fn(net, x) or
    # "textbook" fn(x, L, param_dict); empty for the registered methods.
    convention: str = ""
    # Whose sandbox a user routine runs in (NOTE: [Sandboxes]); None for the registered
    # methods and for a routine that cannot be sent there (it runs in this process).
    owner: Owner | None = None

    def mode_for(self, predicted: str) -> str:
        """The AD mode this method runs where ``cost.plan`` predicts ``predicted``."""
        return predicted if self.mode == "auto" else self.mode


def _build_jacbench(routine: Callable[..., Tensor], net: MLP, x: Tensor) -> JacobianCall:
    return functools.partial(routine, net, x)


def _build_auto(net: MLP, x: Tensor) -> JacobianCall:
    if isinstance(net, SampleWise) and net.refused:
        # Code torch.func cannot transform: autograd's loop of VJPs, which runs the user's
        # code once and then P backward passes; the loop of JVPs runs it D times, each on
        # dual numbers (D = 3, P = 12, through NumPy: VJPs 0.71 ms, JVPs 0.90 ms a sample).
        return _autograd_per_sample("reverse-mode", net, x)
    if x.ndim == 2 and _loops(net):
        return functools.partial(per_sample(lambda xs: jacobian(net, xs, "auto")), x)
    return functools.partial(jacobian, net, x, "auto")


def _build_func(transform: Callable, net: MLP, x: Tensor) -> JacobianCall:
    _transformable(net)
    single = transform(net.__call__)
    if x.ndim == 1:
        return functools.partial(single, x)
    return functools.partial(per_sample(single) if _loops(net) else torch.func.vmap(single), x)


def _loops(net: Any) -> bool:
    """Whether ``net`` is a model whose code vmap cannot run (NOTE: [Models of one
    sample]): a per-sample method then loops over the batch instead of vmapping."""
    return isinstance(net, SampleWise) and not net.vmaps


def _transformable(net: Any) -> None:
    """Raises UnsupportedNetwork (the row is skipped, with the reason) for a model whose
    code torch.func cannot transform."""
    if isinstance(net, SampleWise) and net.refused:
        raise UnsupportedNetwork(net.refused)


def _build_autograd(strategy: str, net: MLP, x: Tensor) -> JacobianCall:
    # Samples are independent, so the Jacobian of Σ_b f(x_b) with respect to the whole batch
    # holds every per-sample Jacobian: (P, B, D), permuted to (B, P, D). In forward mode this
    # carries B·D tangents through the whole batch, as autograd.functional does for a user.
    # A single input goes through as a batch of one: forward-mode vmap rejects F.linear on 1-D.
    if isinstance(net, SampleWise):
        return _autograd_per_sample(strategy, net, x)
    xb = x if x.ndim == 2 else x.unsqueeze(0)

    def summed(inputs: Tensor) -> Tensor:
        return net(inputs).sum(0)

    def call() -> Tensor:
        jac = torch.autograd.functional.jacobian(summed, xb, vectorize=True, strategy=strategy)
        jac = jac.permute(1, 0, 2)
        return jac if x.ndim == 2 else jac[0]

    return call


def _autograd_per_sample(strategy: str, net: SampleWise, x: Tensor) -> JacobianCall:
    """autograd.functional.jacobian of a model of one sample, called at each sample as its
    author would call it. Where vmap cannot run its code: reverse mode's VJPs one output at
    a time (vectorize=False: autograd's own loop), forward mode's JVPs one input at a time
    (``jvp_loop``: autograd.functional has no such loop)."""
    if net.vmaps:
        one = functools.partial(_autograd_jacobian, net, strategy=strategy)
    elif strategy == "forward-mode":
        one = functools.partial(jvp_loop, net)
    else:
        one = functools.partial(_autograd_jacobian, net, strategy=strategy, vectorize=False)
    return functools.partial(one if x.ndim == 1 else per_sample(one), x)


def _autograd_jacobian(
    net: SampleWise, sample: Tensor, *, strategy: str, vectorize: bool = True
) -> Tensor:
    return torch.autograd.functional.jacobian(net, sample, vectorize=vectorize, strategy=strategy)


def jvp_loop(f: Callable[[Tensor], Tensor], sample: Tensor) -> Tensor:
    """The Jacobian of ``f`` at one sample (D,) by D forward-mode passes of autograd's dual
    numbers (``torch.autograd.forward_ad``), one input direction each: forward mode for code
    that vmap cannot run."""
    columns = []
    with torch.autograd.forward_ad.dual_level():
        for tangent in torch.eye(sample.shape[0], dtype=sample.dtype, device=sample.device):
            dual = torch.autograd.forward_ad.make_dual(sample, tangent)
            found = torch.autograd.forward_ad.unpack_dual(f(dual)).tangent
            columns.append(torch.zeros_like(f(sample)) if found is None else found)
    return torch.stack(columns, dim=-1)


def _naive_slopes(net: MLP, x: Tensor) -> list[Tensor]:
    """The textbook's Σ_k = diag(σ'(z_k)), materialised, for one input x of shape (D,)."""
    sigmas, h = [], x
    for w, b, act in zip(net.weights, net.biases, net.activations):
        z = w @ h if b is None else w @ h + b
        h = act.fn(z)
        sigmas.append(torch.diag(act.derivative(z, h)))
    return sigmas


def _naive_forward_one(net: MLP, x: Tensor) -> Tensor:
    sigmas = _naive_slopes(net, x)
    tangent = sigmas[0] @ net.weights[0]
    for w, sigma in zip(net.weights[1:-1], sigmas[1:]):
        tangent = sigma @ (w @ tangent)
    return net.weights[-1] @ tangent


def _naive_reverse_one(net: MLP, x: Tensor) -> Tensor:
    sigmas = _naive_slopes(net, x)
    adjoint = net.weights[-1] @ sigmas[-1]
    for w, sigma in zip(net.weights[-2:0:-1], sigmas[-2::-1]):
        adjoint = (adjoint @ w) @ sigma
    return adjoint @ net.weights[0]


def _build_naive(one: Callable[[MLP, Tensor], Tensor], net: MLP, x: Tensor) -> JacobianCall:
    if x.ndim == 1:
        return functools.partial(one, net, x)
    return lambda: torch.stack([one(net, sample) for sample in x])


def _build_compiled(net: MLP, x: Tensor) -> JacobianCall:
    # NOTE: [Compiled before timed]: every build starts from empty caches (torch.compile keeps
    # 8 graphs per function, and every point's routine is the same function: past eight
    # points it stopped compiling, or compiled again inside the timed calls: AMD EPYC rows of
    # 21 and 160 ms against 0.1 ms); two calls compile and settle the guards, and a timed
    # call that would compile again raises instead, so its row is an error, not a median.
    torch._dynamo.reset()
    if isinstance(net, MLP):
        compiled = torch.compile(auto_routine(net, x), dynamic=False)
    elif isinstance(net, SampleWise) and not net.vmaps:
        raise UnsupportedNetwork(
            "torch.compile takes the Jacobian through vmap, which cannot run this model's code"
        )
    else:  # a model: its plan's mode, compiled (NOTE: [Compiling a model's Jacobian])
        compiled = compiled_jacobian(net, x)
    start = time.perf_counter()
    try:
        compiled(x)
        compiled(x)
    except Exception as error:  # torch.compile may fail to trace a model in any way
        if isinstance(net, MLP):
            raise
        raise UnsupportedNetwork(
            f"torch.compile cannot compile this model's Jacobian ({one_line(error, 240)})"
        ) from None
    synchronize(x.device)
    compile_s = time.perf_counter() - start
    stance = getattr(torch.compiler, "set_stance", None)

    def call() -> Tensor:
        if stance is None:  # torch before 2.6: no stance to fail on
            return compiled(x)
        with stance("fail_on_recompile"):
            return compiled(x)

    return CompiledCall(call, compile_s)


def _build_cuda_graph(net: MLP, x: Tensor) -> JacobianCall:
    # The graph replayed alone, without jacobian(mode="auto")'s copies in and out: what a
    # caller who reuses capture_jacobian's input and output tensors gets.
    captured = capture_jacobian(net, x, "auto")
    return CompiledCall(captured.replay, captured.capture_s)


def _build_fused(net: MLP, x: Tensor) -> JacobianCall:
    # The first call compiles the kernel for this shape (seconds, up to minutes for the
    # widest tiles): made here, so that a timer sees the kernel alone.
    call = functools.partial(fused.fused_jacobian(net), x)
    start = time.perf_counter()
    call()
    synchronize(x.device)
    return CompiledCall(call, time.perf_counter() - start)


def _jax_available() -> bool:
    return importlib.util.find_spec("jax") is not None


class CompiledCall:
    """A zero-argument call to a compiled function; ``compile_s`` is what the first call took."""

    def __init__(self, fn: Callable[[], Any], compile_s: float) -> None:
        self.fn = fn
        self.compile_s = compile_s

    def __call__(self) -> Any:  # a Tensor, or a JAX array for the JAX peers
        return self.fn()


def _build_jax(transform: str | Callable[[Any], Any], net: MLP, x: Tensor) -> JacobianCall:
    """``jax.jit(transform(f))`` of the network as a JAX function (vmapped over a batch);
    ``transform`` a name in ``jax`` (``jacfwd``, ``hessian``, …) or a function of f. For a
    user's model, f is the model's own JAX twin (NOTE: [A model's JAX twin])."""
    jax, jnp, device = _jax_for(x.dtype, x.device)  # the point's, for a model as for the MLP
    dtype = str(x.dtype).removeprefix("torch.")

    def to_jax(t: Tensor | None):
        if t is None:
            return None
        array = t.detach().to("cpu", torch.float64).numpy()
        return jax.device_put(jnp.asarray(array, dtype=getattr(jnp, dtype)), device)

    if isinstance(net, MLP):
        f = _mlp_in_jax(net, to_jax)
    else:
        f = jax_twin(net)
        _twin_agrees(net, f, x, to_jax)
    jac = transform(f) if callable(transform) else getattr(jax, transform)(f)
    compiled = jax.jit(jac if x.ndim == 1 else jax.vmap(jac))
    xj = to_jax(x)
    start = time.perf_counter()
    compiled(xj).block_until_ready()
    return CompiledCall(lambda: compiled(xj).block_until_ready(), time.perf_counter() - start)


def _jax_for(dtype: torch.dtype, device: torch.device) -> tuple[Any, Any, Any]:
    """jax, jax.numpy and the JAX device of torch's ``device``, with float64 on where
    ``dtype`` needs it."""
    # JAX would otherwise take 75% of the GPU's memory at its first use, leaving torch's
    # methods at the same point too little (a user's own setting stands).
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax
    import jax.numpy as jnp

    if dtype == torch.float64:
        jax.config.update("jax_enable_x64", True)
    platform = "gpu" if torch.device(device).type == "cuda" else "cpu"
    return jax, jnp, jax.devices(platform)[0]


def _mlp_in_jax(net: MLP, to_jax: Callable[[Tensor | None], Any]) -> Callable[[Any], Any]:
    """jacbench's MLP as a JAX function of one sample, with the network's own weights."""
    import jax
    import jax.numpy as jnp

    activations = {
        "tanh": jnp.tanh,
        "sigmoid": jax.nn.sigmoid,
        "relu": jax.nn.relu,
        "softplus": jax.nn.softplus,
        "identity": lambda z: z,
    }
    weights = [to_jax(w) for w in net.weights]
    biases = [to_jax(b) for b in net.biases]
    sigmas = [activations[a.name] for a in net.activations]

    # Full-precision products, as torch computes them: on recent GPUs JAX's default runs
    # float32 products in TF32 (inputs rounded to 10 mantissa bits), which torch keeps off.
    def matmul(w, h):
        return jnp.matmul(w, h, precision=jax.lax.Precision.HIGHEST)

    def f(inputs):
        h = inputs
        for w, b, sigma in zip(weights, biases, sigmas):
            h = sigma(matmul(w, h) if b is None else matmul(w, h) + b)
        out = matmul(weights[-1], h)
        return out if biases[-1] is None else out + biases[-1]

    return f


# NOTE: [A model's JAX twin]
#     JAX cannot run a torch module, and no converter can be counted on: torchax (the
#     registry's 0.0.13) fails at import with torch 2.13 (``aten.prod`` has no overload
#     ``dim_Dimname``), and a converter's output would be its code, not JAX's. So a model
#     that wants JAX beside it says how it is written in JAX: a ``to_jax()`` method (or
#     attribute of a plain function) returning a JAX function of one sample, (D,) → (P,),
#     made from the model's own weights as they are when jacbench calls it (moved to the
#     point's dtype). jax-jacfwd and jax-jacrev then time ``jax.jit(jax.vmap(jax.jacfwd(f)))``
#     and its reverse twin, checked against the torch model's float64 reference like every
#     row; before that the twin's values at inputs drawn afresh are checked against the
#     model's own (``_twin_agrees``), so a twin that computes another function, or one made
#     to agree at the point's input alone, fails its rows saying so. A model without one has
#     its JAX rows skipped, saying so. The twin is called where the model is built (its
#     sandbox): it is the user's code.
NO_TWIN = (
    "the model has no JAX twin: give it a to_jax() method returning its function of one "
    "sample written in JAX (docs/models.md, JAX on the same model)"
)


# A twin's values at inputs drawn afresh may differ from the model's by this much (relative).
TWIN_TOLERANCES = {torch.float64: 1e-9, torch.float32: 1e-4, torch.bfloat16: 5e-2}
TWIN_DRAWS = 3


def _twin_agrees(net: Any, f: Callable[[Any], Any], x: Tensor, to_jax: Callable) -> None:
    """Raises ValueError where the JAX twin ``f`` is not the model ``net``'s function: its
    values at TWIN_DRAWS inputs drawn afresh, like the point's, against the model's own. Its
    Jacobian is checked at the point's input like every row's; a twin made to agree there
    alone (fitted to the point's input) is caught here."""
    import numpy as np

    generator = torch.Generator().manual_seed(random.SystemRandom().getrandbits(62))
    sample = x if x.ndim == 1 else x[0]
    scale = float(sample.detach().abs().max()) or 1.0
    for _ in range(TWIN_DRAWS):
        drawn = torch.randn(sample.shape, generator=generator, dtype=torch.float64) * scale / 2
        drawn = drawn.to(dtype=x.dtype, device=x.device)
        with torch.no_grad():
            expected = net(drawn).detach().to("cpu", torch.float64)
        found = torch.from_numpy(np.asarray(f(to_jax(drawn)), dtype=np.float64))
        if found.shape != expected.shape:
            raise ValueError(
                f"the model's JAX twin returns shape {tuple(found.shape)} where the model "
                f"returns {tuple(expected.shape)}"
            )
        off = float((found - expected).abs().max()) / max(float(expected.abs().max()), 1e-30)
        if not off <= TWIN_TOLERANCES.get(x.dtype, 1e-4):
            raise ValueError(
                f"the model's JAX twin computes another function: at an input drawn afresh "
                f"its values differ from the model's by {off:.2g} (relative)"
            )


def jax_twin(net: Any) -> Callable[[Any], Any]:
    """The JAX function of one sample a user's model gives of itself (NOTE: [A model's JAX
    twin]).

    Raises:
        UnsupportedNetwork: it gives none, or what it gives is not a function.
    """
    model = net.inner if isinstance(net, SampleWise) else net
    make = getattr(model, "to_jax", None)
    if not callable(make):
        raise UnsupportedNetwork(NO_TWIN)
    f = make()
    if not callable(f):
        what = type(f).__name__
        raise UnsupportedNetwork(f"the model's to_jax() returned {what}, not a function")
    return f


# ------------------------------------------------------------------- second order
def _build_hessian(mode: str, net: MLP, x: Tensor) -> JacobianCall:
    return functools.partial(hessians.hessian, net, x, mode)


def _build_laplacian(method: str, net: MLP, x: Tensor) -> JacobianCall:
    return functools.partial(hessians.laplacian, net, x, method)  # Hutchinson: default samples


def _build_hvp(net: MLP, x: Tensor) -> JacobianCall:
    return functools.partial(hessians.hvp, net, x, direction(x))


def _trace(hessian: Callable) -> Callable:
    """x ↦ trace of ``hessian(x)`` over its last two axes (per output): a Laplacian."""
    return lambda xs: hessian(xs).diagonal(dim1=-2, dim2=-1).sum(-1)


# The Hessian as a composition of two Jacobian transforms: mode → (outer, inner), named as
# torch.func and jax both name them. jacfwd(jacrev(f)) is torch.func.hessian and jax.hessian.
_COMPOSITIONS = {
    "fwd-over-rev": ("jacfwd", "jacrev"),
    "rev-over-rev": ("jacrev", "jacrev"),
    "fwd-over-fwd": ("jacfwd", "jacfwd"),
    "rev-over-fwd": ("jacrev", "jacfwd"),
}


def _composed(library: Any, mode: str) -> Callable[[Any], Any]:
    """f ↦ outer(inner(f)) with the transforms of ``library`` (torch.func or jax)."""
    outer, inner = (getattr(library, name) for name in _COMPOSITIONS[mode])
    return lambda f: outer(inner(f))


def _build_func_hessian(mode: str, net: MLP, x: Tensor) -> JacobianCall:
    return _build_func(_composed(torch.func, mode), net, x)


def _build_func_laplacian(net: MLP, x: Tensor) -> JacobianCall:
    return _build_func(lambda f: _trace(torch.func.hessian(f)), net, x)


def _build_func_hvp(net: MLP, x: Tensor) -> JacobianCall:
    # Forward over reverse: the directional derivative of the gradient (the Jacobian's rows).
    def single(xs: Tensor, v: Tensor) -> Tensor:
        return torch.func.jvp(torch.func.jacrev(net.__call__), (xs,), (v,))[1]

    hvp = single if x.ndim == 1 else torch.func.vmap(single)
    return functools.partial(hvp, x, direction(x))


def _jax_composition(mode: str) -> Callable[[Any], Any]:
    def transform(f):
        import jax

        return _composed(jax, mode)(f)

    return transform


def _jax_hessian_trace(f):
    import jax
    import jax.numpy as jnp

    return lambda xs: jnp.trace(jax.hessian(f)(xs), axis1=-2, axis2=-1)


def _build_jax_hvp(net: MLP, x: Tensor) -> JacobianCall:
    # _build_jax maps over x alone: x and its direction v travel as one input [x, v].
    d = net.d_in

    def transform(f):
        import jax

        return lambda xv: jax.jvp(jax.jacrev(f), (xv[..., :d],), (xv[..., d:],))[1]

    return _build_jax(transform, net, torch.cat([x, direction(x)], dim=-1))


def _folx_laplacian(f):
    import folx

    return lambda xs: folx.forward_laplacian(f)(xs).laplacian


def _folx_available() -> bool:
    return _jax_available() and importlib.util.find_spec("folx") is not None


_JAX_EXTRA = install_hint("jax")

# jacbench's Hessian modes: mode → what it does.
_HESSIAN_MODES = {
    "fwd-over-rev": "forward over reverse: D tangents carried through the adjoint sweep",
    "rev-over-rev": "reverse over reverse: adjoints, then the seeds' sweep up and down",
    "rev-over-fwd": "reverse over forward: tangents up, adjoints and seeds down together",
    "fwd-over-fwd": "forward over forward: every unit's gradient and D×D Hessian carried up",
    "structured": "Σ_k T_kᵀ·diag(a_k ⊙ σ''(z_k))·T_k, one D×D term per layer",
    "auto": "the mode cost.plan_second_order predicts fastest",
}


def _hessian_methods() -> list[Method]:
    """hessian-<mode> for every mode of ``_HESSIAN_MODES``."""
    return [
        Method(
            f"hessian-{mode}",
            "jacbench",
            mode,
            f"hessian(mode={mode!r}): {text}"
            if mode != "auto"
            else f'hessian(mode="auto"): {text}',
            functools.partial(_build_hessian, mode),
            operator="hessian",
        )
        for mode, text in _HESSIAN_MODES.items()
    ]


def _composition_peers() -> list[Method]:
    """torch.func's and JAX's Hessians, one per composition of ``_COMPOSITIONS``."""
    func, jax = [], []
    for mode, (outer, inner) in _COMPOSITIONS.items():
        name = "hessian" if mode == "fwd-over-rev" else f"{outer}-{inner}"
        func.append(
            Method(
                f"func-{name}",
                "torch.func",
                mode,
                f"torch.func.{outer}(torch.func.{inner}(f))"
                + (" = torch.func.hessian" if name == "hessian" else "")
                + " (vmap over the batch)",
                functools.partial(_build_func_hessian, mode),
                operator="hessian",
                any_network=True,
            )
        )
        jax.append(
            Method(
                f"jax-{name}",
                "jax",
                mode,
                f"jax.jit(jax.{outer}(jax.{inner}(f)))"
                + (" = jax.hessian" if name == "hessian" else "")
                + " (vmap over the batch); compile time reported apart",
                functools.partial(_build_jax, _jax_composition(mode)),
                _jax_available,
                _JAX_EXTRA,
                operator="hessian",
            )
        )
    return [*func, *jax]


# The Laplacian's and the Hessian-vector product's methods, jacbench's and the peers'.
_LAPLACIAN_AND_HVP = (
    Method(
        "forward-laplacian",
        "jacbench",
        "forward-laplacian",
        "laplacian(): value, D tangent rows and the Laplacian carried layer by layer",
        functools.partial(_build_laplacian, "forward-laplacian"),
        operator="laplacian",
    ),
    Method(
        "hessian-trace",
        "jacbench",
        "hessian-trace",
        'laplacian(method="hessian-trace"): the trace of hessian(mode="auto")',
        functools.partial(_build_laplacian, "hessian-trace"),
        operator="laplacian",
    ),
    Method(
        "hutchinson",
        "jacbench",
        "hutchinson",
        f'laplacian(method="hutchinson", samples={HUTCHINSON_SAMPLES}): an unbiased '
        "estimate from random ±1 directions; not exact, its error is shown",
        functools.partial(_build_laplacian, "hutchinson"),
        operator="laplacian",
        exact=False,
    ),
    Method(
        "func-hessian-trace",
        "torch.func",
        "hessian-trace",
        "the trace of torch.func.hessian (vmap over the batch)",
        _build_func_laplacian,
        operator="laplacian",
        any_network=True,
    ),
    Method(
        "jax-hessian-trace",
        "jax",
        "hessian-trace",
        "jax.jit of the trace of jax.hessian (vmap over the batch); compile time apart",
        functools.partial(_build_jax, _jax_hessian_trace),
        _jax_available,
        _JAX_EXTRA,
        operator="laplacian",
    ),
    Method(
        "folx-laplacian",
        "folx",
        "forward-laplacian",
        "jax.jit of folx.forward_laplacian (vmap over the batch); compile time apart",
        functools.partial(_build_jax, _folx_laplacian),
        _folx_available,
        install_hint("folx"),
        operator="laplacian",
    ),
    Method(
        "hvp",
        "jacbench",
        "fwd-over-rev",
        "hvp(): forward over reverse with one direction per sample",
        _build_hvp,
        operator="hvp",
    ),
    Method(
        "func-hvp",
        "torch.func",
        "fwd-over-rev",
        "torch.func.jvp of torch.func.jacrev (vmap over the batch)",
        _build_func_hvp,
        operator="hvp",
        any_network=True,
    ),
    Method(
        "jax-hvp",
        "jax",
        "fwd-over-rev",
        "jax.jit of jax.jvp of jax.jacrev (vmap over the batch); compile time apart",
        _build_jax_hvp,
        _jax_available,
        _JAX_EXTRA,
        operator="hvp",
    ),
)


METHODS: dict[str, Method] = {
    m.name: m
    for m in [
        Method(
            "forward",
            "jacbench",
            "forward",
            "hand-written forward mode (tangent rows, one GEMM per layer)",
            functools.partial(_build_jacbench, jacobian_forward),
        ),
        Method(
            "reverse",
            "jacbench",
            "reverse",
            "hand-written reverse mode (adjoint rows after one primal pass)",
            functools.partial(_build_jacbench, jacobian_reverse),
        ),
        Method(
            "mixed",
            "jacbench",
            "mixed",
            "the chain bracketed by matrix-chain dynamic programming",
            functools.partial(_build_jacbench, jacobian_mixed),
        ),
        Method(
            "auto",
            "jacbench",
            "auto",
            'jacobian(mode="auto"): the mode cost.plan predicts fastest (for a model: the '
            "mode its counted JVP and VJP say, generic.plan_of)",
            _build_auto,
            any_network=True,
        ),
        Method(
            "func-jacfwd",
            "torch.func",
            "forward",
            "torch.func.jacfwd (vmap over the batch)",
            functools.partial(_build_func, torch.func.jacfwd),
            any_network=True,
        ),
        Method(
            "func-jacrev",
            "torch.func",
            "reverse",
            "torch.func.jacrev (vmap over the batch)",
            functools.partial(_build_func, torch.func.jacrev),
            any_network=True,
        ),
        Method(
            "autograd-forward",
            "autograd",
            "forward",
            'torch.autograd.functional.jacobian(vectorize=True, strategy="forward-mode")',
            functools.partial(_build_autograd, "forward-mode"),
            any_network=True,
        ),
        Method(
            "autograd-reverse",
            "autograd",
            "reverse",
            'torch.autograd.functional.jacobian(vectorize=True, strategy="reverse-mode")',
            functools.partial(_build_autograd, "reverse-mode"),
            any_network=True,
        ),
        Method(
            "naive-forward",
            "naive",
            "forward",
            "textbook forward mode: torch.diag(σ') materialised, one input at a time",
            functools.partial(_build_naive, _naive_forward_one),
        ),
        Method(
            "naive-reverse",
            "naive",
            "reverse",
            "textbook reverse mode: torch.diag(σ') materialised, one input at a time",
            functools.partial(_build_naive, _naive_reverse_one),
        ),
        Method(
            "auto-compiled",
            "jacbench",
            "auto",
            "the auto routine under torch.compile (for a model: its plan's vmapped jacfwd or "
            "jacrev); compile time reported apart (--compile)",
            _build_compiled,
            opt_in=True,
            any_network=True,
        ),
        Method(
            "auto-cudagraph",
            "jacbench",
            "auto",
            "the auto routine captured in a CUDA graph and replayed (--cuda-graphs)",
            _build_cuda_graph,
            torch.cuda.is_available,
            "a CUDA device",
            opt_in=True,
            needs_cuda=True,
        ),
        Method(
            "fused",
            "jacbench",
            "forward",
            "forward mode as one Triton kernel: widths up to 128, float32 (--fused)",
            _build_fused,
            fused.available,
            "Triton and a CUDA device",
            opt_in=True,
            needs_cuda=True,
        ),
        Method(
            "jax-jacfwd",
            "jax",
            "forward",
            "jax.jit(jax.jacfwd) (vmap over the batch), a model through its "
            "to_jax() twin; compile time reported apart",
            functools.partial(_build_jax, "jacfwd"),
            _jax_available,
            _JAX_EXTRA,
            any_network=True,
        ),
        Method(
            "jax-jacrev",
            "jax",
            "reverse",
            "jax.jit(jax.jacrev) (vmap over the batch), a model through its "
            "to_jax() twin; compile time reported apart",
            functools.partial(_build_jax, "jacrev"),
            _jax_available,
            _JAX_EXTRA,
            any_network=True,
        ),
        *_hessian_methods(),
        *_composition_peers(),
        *_LAPLACIAN_AND_HVP,
    ]
}


# A model's methods unless a run names others: torch.func's two modes and the auto mode.
MODEL_METHODS = ("func-jacfwd", "func-jacrev", "auto")


def model_methods(operator: str = "jacobian") -> tuple[str, ...]:
    """A model's methods of ``operator`` unless a run names others: for the Jacobian
    ``MODEL_METHODS``; for the second order every installed one that takes any network
    (torch.func's compositions)."""
    if operator == "jacobian":
        return MODEL_METHODS
    return tuple(m for m in default_methods(operator) if METHODS[m].any_network)


def default_methods(operator: str = "jacobian") -> tuple[str, ...]:
    """Every registered method of ``operator`` whose library is installed (JAX's only with
    JAX), opt-ins aside."""
    return tuple(
        name
        for name, method in METHODS.items()
        if method.operator == operator and method.available() and not method.opt_in
    )


def get_method(name: str) -> Method:
    """The registered ``Method`` called ``name``.

    Raises:
        ValueError: no such method.
    """
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(
            f"unknown method {name!r}; expected one of: {', '.join(METHODS)}"
        ) from None
