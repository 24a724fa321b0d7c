"""Forward and reverse mode for one input through a small network, in NumPy.

NOTE: [Small networks in NumPy]
    A small network's Jacobian (one input, every weight under the tuned size: K up to
    about 181) is a few dozen products of a few hundred elements. Its time is what each
    operation costs to call, not its arithmetic, and a NumPy call costs less than a torch
    one. On an AMD EPYC (two cores, torch 2.13 CPU, float32) reverse mode at L=8 D=4 K=24
    P=6 took 80 µs through torch and 37 µs in NumPy (JAX's compiled jacrev: 26 µs); at
    L=10 D=2 K=30 P=10, 87 against 48 µs. Which is faster depends on the machine (the BLAS
    NumPy links, the CPU), so the route is measured per machine with the kernels
    (``jacbench.measure.tuning``, classes ``small forward`` and ``small reverse``).

    Both routes do the same products in the same order (the FLOP model holds); the weights
    are read where they lie (``Tensor.numpy`` shares memory), and the result is an array of
    its own. NumPy takes float32 and float64 on the CPU, no autograd: anything else, or an
    activation NumPy does not have here, goes through torch. The routines take a
    ``Network`` made from a network's parts (weights, biases, activation names), so that the
    tuning can time them too; ``jacbench.ad.networks.MLP`` makes its own once and keeps it.

    Each call is a few dozen NumPy calls of under a microsecond, so what a call costs to
    make is the time: the arrays are made once per network (``Tensor.numpy`` costs about
    a microsecond a tensor, a fifth of the whole at K=24), products go through
    ``ndarray.dot`` (half of ``@``'s cost here) and σ' through arrays, not Python scalars.
    Measured on the AMD EPYC above (median of 7 interleaved rounds, the old route and JAX in
    the same process): L=8 D=4 K=24 P=6 reverse mode 80 → 47 µs, forward 68 → 44 µs,
    ``jacobian`` (auto) 46 µs against JAX's jit(jacrev) 38 µs; L=10 D=2 K=30 P=10 reverse
    83 → 55 µs (JAX 49 µs).

    NumPy's BLAS (OpenBLAS) keeps threads of its own, which spin after a call that used
    them and then starve torch's: on the AMD EPYC a torch product over both cores took
    4.6 ms right after a 700×700 NumPy matrix-vector product, 0.32 ms otherwise. OpenBLAS
    runs products of the sizes this route takes (every weight under the tuned size, 181 ×
    181) on the calling thread, and no slowdown followed them; larger products stay in torch.

    Where the C++ kernels build, the whole float32 tanh chain in one C++ call is a third
    candidate (NOTE: [The reverse chain in one call] in ``jacbench.kernels.native``); a
    network the chosen route cannot take goes the next way this machine measured faster
    (``Tuning.small_routes``), down to torch. On the AMD EPYC above the chain took 14 and
    16.5 µs (forward, reverse; the tuning's nets), NumPy 38 and 36, torch 93 and 75 (every
    route 1–3 µs more through ``jacobian`` since each call compares the network's tensors
    with those its parts were made from: NOTE: [A network's derived parts follow its
    tensors] in ``jacbench.ad.networks``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from jacbench.kernels.eager import unwatched

Biases = Sequence[Tensor | None]
ArraySlope = Callable[[np.ndarray, np.ndarray], np.ndarray]  # σ'(z, h = σ(z))


def _one_minus_square(k: int, dtype: np.dtype) -> ArraySlope:
    ones = np.ones(k, dtype)
    return lambda z, h: np.subtract(ones, np.multiply(h, h))


def _value_times_one_minus(k: int, dtype: np.dtype) -> ArraySlope:
    ones = np.ones(k, dtype)
    return lambda z, h: np.multiply(h, np.subtract(ones, h))


def _step(k: int, dtype: np.dtype) -> ArraySlope:
    # 1 unless z ≤ 0, as autograd's threshold_backward: ReLU'(NaN) = 1 there, where
    # z > 0 would say 0 (one input's NaN gave a Jacobian of 0 here and 0.71 in torch).
    zeros, ones = np.zeros(k, dtype), np.ones(k, dtype)
    return lambda z, h: np.subtract(ones, np.less_equal(z, zeros), dtype=dtype)


def _constant(k: int, dtype: np.dtype) -> ArraySlope:
    ones = np.ones(k, dtype)
    return lambda z, h: ones


# σ'(h) for an activation whose derivative is a function of its value (tanh' = 1 − h²,
# σ' = h·(1 − h)), or of z (ReLU'(0) = 0, as autograd has it), made for one layer of width k
# in the network's dtype: the constants are arrays made once, because a NumPy operation with
# a Python scalar costs twice one with an array of the same shape (1.6 µs against 0.6 µs
# for 1 − h² on 24 elements, AMD EPYC).
_EXP_MAX = {np.float32: 88.7, np.float64: 709.7}  # log of each float's largest, rounded down
_SLOPES: dict[str, Callable[[int, np.dtype], ArraySlope]] = {
    "tanh": _one_minus_square,
    "sigmoid": _value_times_one_minus,
    "relu": _step,
    "identity": _constant,
}
_VALUES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "tanh": np.tanh,
    # e^−z clamped below float's overflow: NumPy warns at inf (an error under -W error);
    # σ(z) is then 1e-38 or 1e-308 where torch's is 0 (z below −88.7 or −709.8).
    "sigmoid": lambda z: 1 / (1 + np.exp(np.minimum(-z, _EXP_MAX[z.dtype.type]))),
    "relu": lambda z: np.maximum(z, 0),
    "identity": lambda z: z,
}


@dataclass(frozen=True)
class Network:
    """A network's parts for the NumPy route, made once per network: the weights and
    biases as arrays that share the tensors' memory (in-place changes are seen), the
    weights' transposes as views, each layer's σ and σ', and the tensors themselves."""

    weights: tuple[np.ndarray, ...]
    transposed: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray | None, ...]
    values: tuple[Callable[[np.ndarray], np.ndarray], ...]
    slopes: tuple[ArraySlope, ...]
    tensors: tuple[Tensor, ...]


def network(
    weights: Sequence[Tensor], biases: Biases, activations: Sequence[str]
) -> Network | None:
    """The NumPy route's ``Network`` of these parts, or None where it cannot take them: not
    float32 or float64 plain CPU tensors, or an activation without a NumPy form here."""
    if not weights[0].is_cpu or weights[0].dtype not in (torch.float32, torch.float64):
        return None
    if not unwatched(*weights, *(b for b in biases if b is not None)):
        return None  # a transform's wrappers (an MLP made inside torch.func.grad): no memory
    if not all(name in _VALUES for name in activations):
        return None
    arrays = tuple(w.detach().numpy() for w in weights)
    return Network(
        weights=arrays,
        transposed=tuple(a.T for a in arrays),
        biases=tuple(None if b is None else b.detach().numpy() for b in biases),
        values=tuple(_VALUES[name] for name in activations),
        slopes=tuple(_SLOPES[name](w.shape[0], w.dtype) for w, name in zip(arrays, activations)),
        tensors=(*weights, *(b for b in biases if b is not None)),
    )


def takes(net: Network, x: Tensor) -> bool:
    """Whether the NumPy route can compute this Jacobian: one input (on the CPU, in the
    network's dtype, as the routines check), no gradient to record, and nothing that must
    see torch's operations: a torch.func transform (vmap's batched input), a compile, a
    dispatch mode (a FLOP counter, fake tensors)."""
    if x.ndim != 1 or not unwatched(x):
        return False
    if not torch.is_grad_enabled():
        return True
    if x.requires_grad:
        return False
    for tensor in net.tensors:  # a plain loop: any() over a generator costs twice this
        if tensor.requires_grad:
            return False
    return True


def _slopes(net: Network, x: Tensor) -> list[np.ndarray]:
    """σ'(z_k) of each layer for one input."""
    h = x.numpy()  # takes() has checked that no gradient is recorded
    slopes = []
    # ndarray.dot, not @: for these sizes matmul's ufunc machinery costs twice the product.
    for w, b, value, slope in zip(net.weights, net.biases, net.values, net.slopes):
        z = w.dot(h)
        if b is not None:
            z += b
        h = value(z)
        slopes.append(slope(z, h))
    return slopes


def reverse(net: Network, x: Tensor) -> Tensor:
    """J (P, D) by reverse mode: adjoint rows from W_F down to W_1."""
    slopes = _slopes(net, x)
    adjoint = net.weights[-1]
    for w, slope in zip(net.weights[-2::-1], slopes[::-1]):
        adjoint = np.multiply(adjoint, slope).dot(w)
    return torch.from_numpy(adjoint)


def forward(net: Network, x: Tensor) -> Tensor:
    """J (P, D) by forward mode: tangents from W_1 up to W_F, kept as rows (D, K_k) so that
    each σ'-scaling runs along rows (T·Σ·Wᵀ, the same products as W·Σ·T, transposed)."""
    slopes = _slopes(net, x)
    tangent = net.transposed[0]
    for w_t, slope in zip(net.transposed[1:], slopes):
        tangent = np.multiply(tangent, slope).dot(w_t)
    return torch.from_numpy(np.ascontiguousarray(tangent.T))
