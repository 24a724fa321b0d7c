"""The registry of benchmarkable Jacobian methods: name → builder.

A builder takes (net, x) and returns a zero-argument callable computing the Jacobian in
the shape rule of ``jacbench.jacobians``; everything that can be made ahead (transformed
functions, closures) is made by the builder, so a timer around the callable measures the
Jacobian alone. The CLI, the sweep and the pytest-benchmark suites all read this one table.
"""

from __future__ import annotations

import functools
import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from jacbench.jacobians import (
    auto_routine,
    jacobian,
    jacobian_forward,
    jacobian_mixed,
    jacobian_reverse,
)
from jacbench.networks import MLP
from jacbench.timing import synchronize

JacobianCall = Callable[[], Tensor]


def _always() -> bool:
    return True


@dataclass(frozen=True)
class Method:
    """One way to compute an input Jacobian, as named in the CLI, the CSV and the docs."""

    name: str
    family: str
    mode: str  # the AD mode it uses: forward, reverse, mixed or auto ("" where unknown)
    description: str
    build: Callable[[MLP, Tensor], JacobianCall]
    available: Callable[[], bool] = _always
    requirement: str = ""  # what to install when it is not available
    opt_in: bool = False  # only run when asked for (compiled variants: slow to build)
    source: str = ""  # a user routine's file:function; empty for the registered methods

    def mode_for(self, predicted: str) -> str:
        """The AD mode this method runs where ``cost.plan`` predicts ``predicted``."""
        return predicted if self.mode == "auto" else self.mode


def _build_jacbench(routine: Callable[..., Tensor], net: MLP, x: Tensor) -> JacobianCall:
    return functools.partial(routine, net, x)


def _build_auto(net: MLP, x: Tensor) -> JacobianCall:
    return functools.partial(jacobian, net, x, "auto")


def _build_func(transform: Callable, net: MLP, x: Tensor) -> JacobianCall:
    single = transform(net.__call__)
    jac = single if x.ndim == 1 else torch.func.vmap(single)
    return functools.partial(jac, x)


def _build_autograd(strategy: str, net: MLP, x: Tensor) -> JacobianCall:
    # Samples are independent, so the Jacobian of Σ_b f(x_b) with respect to the whole batch
    # holds every per-sample Jacobian: (P, B, D), permuted to (B, P, D). In forward mode this
    # carries B·D tangents through the whole batch, as autograd.functional does for a user.
    # A single input goes through as a batch of one: forward-mode vmap rejects F.linear on 1-D.
    xb = x if x.ndim == 2 else x.unsqueeze(0)

    def summed(inputs: Tensor) -> Tensor:
        return net(inputs).sum(0)

    def call() -> Tensor:
        jac = torch.autograd.functional.jacobian(summed, xb, vectorize=True, strategy=strategy)
        jac = jac.permute(1, 0, 2)
        return jac if x.ndim == 2 else jac[0]

    return call


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
    compiled = torch.compile(auto_routine(net, x), dynamic=False)
    start = time.perf_counter()
    compiled(x)
    synchronize(x.device)
    return CompiledCall(functools.partial(compiled, x), time.perf_counter() - start)


def _build_cuda_graph(net: MLP, x: Tensor) -> JacobianCall:
    # Capture the auto routine once on a static input; replay re-launches every kernel
    # with one call, which removes the per-kernel launch cost that dominates small shapes.
    if x.device.type != "cuda":
        raise ValueError("CUDA graphs need a CUDA device (--device cuda)")
    routine = auto_routine(net, x)
    static_x = x.clone()
    start = time.perf_counter()
    side = torch.cuda.Stream(x.device)
    side.wait_stream(torch.cuda.current_stream(x.device))
    with torch.cuda.stream(side):
        for _ in range(3):  # warm up outside the capture: lazy initialisation, workspaces
            routine(static_x)
    torch.cuda.current_stream(x.device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = routine(static_x)
    synchronize(x.device)

    def replay() -> Tensor:
        graph.replay()
        return static_out

    return CompiledCall(replay, time.perf_counter() - start)


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
    ``transform`` a name in ``jax`` (``jacfwd``, ``hessian``, …) or a function of f."""
    import jax
    import jax.numpy as jnp

    dtype = str(net.dtype).removeprefix("torch.")
    if dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    platform = "gpu" if net.device.type == "cuda" else "cpu"
    device = jax.devices(platform)[0]

    def to_jax(t: Tensor | None):
        if t is None:
            return None
        array = t.detach().to("cpu", torch.float64).numpy()
        return jax.device_put(jnp.asarray(array, dtype=getattr(jnp, dtype)), device)

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

    def f(inputs):
        h = inputs
        for w, b, sigma in zip(weights, biases, sigmas):
            h = sigma(w @ h if b is None else w @ h + b)
        out = weights[-1] @ h
        return out if biases[-1] is None else out + biases[-1]

    jac = transform(f) if callable(transform) else getattr(jax, transform)(f)
    compiled = jax.jit(jac if x.ndim == 1 else jax.vmap(jac))
    xj = to_jax(x)
    start = time.perf_counter()
    compiled(xj).block_until_ready()
    return CompiledCall(lambda: compiled(xj).block_until_ready(), time.perf_counter() - start)


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
            'jacobian(mode="auto"): the mode cost.plan predicts fastest',
            _build_auto,
        ),
        Method(
            "func-jacfwd",
            "torch.func",
            "forward",
            "torch.func.jacfwd (vmap over the batch)",
            functools.partial(_build_func, torch.func.jacfwd),
        ),
        Method(
            "func-jacrev",
            "torch.func",
            "reverse",
            "torch.func.jacrev (vmap over the batch)",
            functools.partial(_build_func, torch.func.jacrev),
        ),
        Method(
            "autograd-forward",
            "autograd",
            "forward",
            'torch.autograd.functional.jacobian(vectorize=True, strategy="forward-mode")',
            functools.partial(_build_autograd, "forward-mode"),
        ),
        Method(
            "autograd-reverse",
            "autograd",
            "reverse",
            'torch.autograd.functional.jacobian(vectorize=True, strategy="reverse-mode")',
            functools.partial(_build_autograd, "reverse-mode"),
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
            "the auto routine under torch.compile; compile time reported apart (--compile)",
            _build_compiled,
            opt_in=True,
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
        ),
        Method(
            "jax-jacfwd",
            "jax",
            "forward",
            "jax.jit(jax.jacfwd) (vmap over the batch); compile time reported apart",
            functools.partial(_build_jax, "jacfwd"),
            _jax_available,
            "pip install 'jacbench[jax]'",
        ),
        Method(
            "jax-jacrev",
            "jax",
            "reverse",
            "jax.jit(jax.jacrev) (vmap over the batch); compile time reported apart",
            functools.partial(_build_jax, "jacrev"),
            _jax_available,
            "pip install 'jacbench[jax]'",
        ),
    ]
}


def default_methods() -> tuple[str, ...]:
    """Every registered method whose library is installed (JAX's only with JAX), opt-ins aside."""
    return tuple(
        name for name, method in METHODS.items() if method.available() and not method.opt_in
    )


def get_method(name: str) -> Method:
    """The registered :class:`Method` called ``name``.

    Raises:
        ValueError: no such method.
    """
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(
            f"unknown method {name!r}; expected one of: {', '.join(METHODS)}"
        ) from None
