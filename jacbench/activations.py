"""Elementwise activations σ with their derivatives σ' written beside them.

Each derivative takes both the pre-activation ``z`` and the output ``out = σ(z)``,
so that activations whose derivative is cheapest in terms of the output
(tanh: 1 − t², sigmoid: s(1 − s)) never evaluate σ twice. Every derivative
matches what ``torch.autograd`` computes, including at kinks (ReLU'(0) = 0) and
thresholds (softplus is linear above z = 20), so that the hand-written Jacobians
agree with ``torch.func`` to rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

# torch.nn.Softplus defaults: above beta·z > threshold it returns z, so σ' = 1 there.
SOFTPLUS_THRESHOLD = 20.0


@dataclass(frozen=True)
class Activation:
    """An elementwise function σ and its derivative σ'(z) = derivative(z, σ(z))."""

    name: str
    fn: Callable[[Tensor], Tensor]
    derivative: Callable[[Tensor, Tensor], Tensor]

    def __repr__(self) -> str:
        return f"Activation({self.name!r})"


_ONES: dict[tuple[torch.dtype, torch.device], Tensor] = {}


def _one(dtype: torch.dtype, device: torch.device) -> Tensor:
    # A plain dict rather than lru_cache: torch.compile traces through a dict lookup.
    one = _ONES.get((dtype, device))
    if one is None:
        one = _ONES[(dtype, device)] = torch.ones((), dtype=dtype, device=device)
    return one


# tanh and sigmoid take their derivative from autograd's own backward kernels with an
# incoming gradient of 1: one launch instead of two or three (on small layers the launch,
# not the arithmetic, is the cost), and the very rounding of 1 − t² that torch.func uses,
# which matters where tanh saturates and 1 − t² cancels.
def _tanh_derivative(z: Tensor, out: Tensor) -> Tensor:
    return torch.ops.aten.tanh_backward(_one(out.dtype, out.device), out)  # 1 − t²


def _sigmoid_derivative(z: Tensor, out: Tensor) -> Tensor:
    return torch.ops.aten.sigmoid_backward(_one(out.dtype, out.device), out)  # s(1 − s)


def _relu_derivative(z: Tensor, out: Tensor) -> Tensor:
    # torch's threshold_backward passes the gradient only where z > 0, so ReLU'(0) = 0.
    return (z > 0).to(z.dtype)


def _softplus_derivative(z: Tensor, out: Tensor) -> Tensor:
    return torch.where(z > SOFTPLUS_THRESHOLD, torch.ones_like(z), torch.sigmoid(z))


def _identity_derivative(z: Tensor, out: Tensor) -> Tensor:
    return torch.ones_like(z)


ACTIVATIONS: dict[str, Activation] = {
    "tanh": Activation("tanh", torch.tanh, _tanh_derivative),
    "sigmoid": Activation("sigmoid", torch.sigmoid, _sigmoid_derivative),
    "relu": Activation("relu", torch.relu, _relu_derivative),
    "softplus": Activation("softplus", torch.nn.functional.softplus, _softplus_derivative),
    "identity": Activation("identity", lambda z: z, _identity_derivative),
}


def get_activation(activation: str | Activation) -> Activation:
    """Return the :class:`Activation` called ``activation`` (or ``activation`` itself).

    Raises:
        ValueError: the name is not one of ``ACTIVATIONS``.
    """
    if isinstance(activation, Activation):
        return activation
    try:
        return ACTIVATIONS[activation]
    except (KeyError, TypeError):
        known = ", ".join(ACTIVATIONS)
        raise ValueError(f"unknown activation {activation!r}; expected one of: {known}") from None
