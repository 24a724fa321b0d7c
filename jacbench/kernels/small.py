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
    activation NumPy does not have here, goes through torch. The routines take a network's
    parts (weights, biases, activation names), so that the tuning can time them too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

# σ and σ'(z, h = σ(z)) in NumPy, as autograd computes them (tanh' = 1 − h², ReLU'(0) = 0).
_ACTIVATIONS: dict[str, tuple[Callable, Callable]] = {
    "tanh": (np.tanh, lambda z, h: 1 - h * h),
    "sigmoid": (lambda z: 1 / (1 + np.exp(-z)), lambda z, h: h * (1 - h)),
    "relu": (lambda z: np.maximum(z, 0), lambda z, h: (z > 0).astype(z.dtype)),
    "identity": (lambda z: z, lambda z, h: np.ones_like(z)),
}
MODES = ("forward", "reverse")


Biases = Sequence[Tensor | None]


def takes(weights: Sequence[Tensor], biases: Biases, activations: Sequence[str], x: Tensor) -> bool:
    """Whether the NumPy route can compute this Jacobian: one input on the CPU in float32
    or float64, no gradient to record, activations it has."""
    if x.ndim != 1 or not x.is_cpu or x.dtype not in (torch.float32, torch.float64):
        return False
    tensors = [x, *weights, *(b for b in biases if b is not None)]
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    return all(name in _ACTIVATIONS for name in activations)


def _slopes(
    weights: Sequence[Tensor], biases: Biases, activations: Sequence[str], x: Tensor
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The weights as arrays, and σ'(z_k) of each layer for one input."""
    arrays = [w.numpy() for w in weights]
    h = x.numpy()
    slopes = []
    for w, b, name in zip(arrays, biases, activations):
        z = w @ h
        if b is not None:
            z += b.numpy()
        value, derivative = _ACTIVATIONS[name]
        h = value(z)
        slopes.append(derivative(z, h))
    return arrays, slopes


def reverse(
    weights: Sequence[Tensor], biases: Biases, activations: Sequence[str], x: Tensor
) -> Tensor:
    """J (P, D) by reverse mode: adjoint rows from W_F down to W_1."""
    arrays, slopes = _slopes(weights, biases, activations, x)
    adjoint = arrays[-1]
    for w, slope in zip(arrays[-2::-1], slopes[::-1]):
        adjoint = (adjoint * slope) @ w
    return torch.from_numpy(adjoint)


def forward(
    weights: Sequence[Tensor], biases: Biases, activations: Sequence[str], x: Tensor
) -> Tensor:
    """J (P, D) by forward mode: tangent columns from W_1 up to W_F."""
    arrays, slopes = _slopes(weights, biases, activations, x)
    tangent = arrays[0]
    for w, slope in zip(arrays[1:], slopes):
        tangent = w @ (slope[:, None] * tangent)
    return torch.from_numpy(tangent)
