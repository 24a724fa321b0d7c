"""Elementwise activations σ with their derivatives σ' written beside them.

Each derivative takes both the pre-activation ``z`` and the output ``out = σ(z)``,
so that activations whose derivative is cheapest in terms of the output
(tanh: 1 − t², sigmoid: s(1 − s)) never evaluate σ twice. Every derivative
matches what ``torch.autograd`` computes, including at kinks (ReLU'(0) = 0) and
thresholds (softplus is linear above z = 20), so that the hand-written Jacobians
agree with ``torch.func`` to rounding.

Beside σ' itself, each activation scales a block by σ' in one kernel,
``times_derivative(g, saved) = g ⊙ σ'(z)``, with ``saved`` the one tensor σ' is read
from (``out`` where ``reads_output``, else ``z``), broadcast against g. This is what the
Jacobian routines use: one launch per layer instead of two (make σ', then multiply).
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
    """An elementwise function σ and its derivative σ'(z) = derivative(z, σ(z)).

    ``times_derivative(g, saved)`` is g ⊙ σ'(z) in one kernel, where ``saved`` is σ(z)
    if ``reads_output`` else z, shaped to broadcast against g.
    """

    name: str
    fn: Callable[[Tensor], Tensor]
    derivative: Callable[[Tensor, Tensor], Tensor]
    times_derivative: Callable[[Tensor, Tensor], Tensor]
    reads_output: bool

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


# g ⊙ σ'(z) by the kernels autograd runs for σ's backward: the same rounding as torch.func.
# The bound OpOverloads skip the packet's overload resolution (a microsecond a call).
_TANH_BACKWARD = torch.ops.aten.tanh_backward.default  # g ⊙ (1 − t²)
_SIGMOID_BACKWARD = torch.ops.aten.sigmoid_backward.default  # g ⊙ s(1 − s)
_THRESHOLD_BACKWARD = torch.ops.aten.threshold_backward.default  # g where z > 0, else 0
_SOFTPLUS_BACKWARD = torch.ops.aten.softplus_backward.default  # g ⊙ sigmoid(z), g above 20


def _relu_times_derivative(g: Tensor, z: Tensor) -> Tensor:
    return _THRESHOLD_BACKWARD(g, z, 0)


def _softplus_times_derivative(g: Tensor, z: Tensor) -> Tensor:
    return _SOFTPLUS_BACKWARD(g, z, 1, SOFTPLUS_THRESHOLD)


def _identity_times_derivative(g: Tensor, z: Tensor) -> Tensor:
    # σ' = 1: no arithmetic, but a batched z still gives a weight's block its batch axis.
    # A view: callers never write into the block they pass.
    if g.ndim >= z.ndim:
        return g
    return g.expand(torch.broadcast_shapes(g.shape, z.shape))


ACTIVATIONS: dict[str, Activation] = {
    "tanh": Activation("tanh", torch.tanh, _tanh_derivative, _TANH_BACKWARD, True),
    "sigmoid": Activation("sigmoid", torch.sigmoid, _sigmoid_derivative, _SIGMOID_BACKWARD, True),
    "relu": Activation("relu", torch.relu, _relu_derivative, _relu_times_derivative, False),
    "softplus": Activation(
        "softplus",
        torch.nn.functional.softplus,
        _softplus_derivative,
        _softplus_times_derivative,
        False,
    ),
    "identity": Activation(
        "identity", lambda z: z, _identity_derivative, _identity_times_derivative, False
    ),
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
