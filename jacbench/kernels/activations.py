"""Elementwise activations σ with their derivatives σ' written beside them.

Each activation gives its derivative as a scaling, ``times_derivative(g, saved) =
g ⊙ σ'(z)`` in one kernel, where ``saved`` is the one tensor σ' is read from: the output
``out = σ(z)`` where ``reads_output`` (tanh: 1 − t², sigmoid: s(1 − s), so σ is never
evaluated twice), else the pre-activation ``z``; it broadcasts against g. The Jacobian
routines scale their blocks with it: one launch per layer instead of two (make σ', then
multiply). σ' itself, ``derivative(z, out)``, is the same scaling applied to a 1.

The scalings are the kernels autograd runs for σ's backward, so every derivative matches
what ``torch.autograd`` computes, including at kinks (ReLU'(0) = 0), at thresholds
(softplus is linear above z = 20) and in the rounding of 1 − t² where tanh saturates and
1 − t² cancels: the hand-written Jacobians agree with ``torch.func`` to rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

# torch.nn.Softplus defaults: above beta·z > threshold it returns z, so σ' = 1 there.
SOFTPLUS_THRESHOLD = 20.0

_ONES: dict[tuple[torch.dtype, torch.device], Tensor] = {}


def _one(dtype: torch.dtype, device: torch.device) -> Tensor:
    # A plain dict rather than lru_cache: torch.compile traces through a dict lookup.
    one = _ONES.get((dtype, device))
    if one is None:
        one = _ONES[(dtype, device)] = torch.ones((), dtype=dtype, device=device)
    return one


@dataclass(frozen=True)
class Activation:
    """An elementwise function σ and its derivative, as the scaling g ↦ g ⊙ σ'(z).

    ``times_derivative(g, saved)`` is g ⊙ σ'(z) in one kernel, where ``saved`` is σ(z)
    if ``reads_output`` else z, shaped to broadcast against g.
    """

    name: str
    fn: Callable[[Tensor], Tensor]
    times_derivative: Callable[[Tensor, Tensor], Tensor]
    reads_output: bool
    second: Callable[[Tensor, Tensor, Tensor], Tensor]  # (z, out, σ'(z)) → σ''(z)
    # The same three written into a buffer the caller owns (a workspace's: NOTE: [Buffers
    # reused from call to call] in jacbench.ad.workspace): (z, into), (g, saved, into),
    # (z, out, σ'(z), into).
    fn_into: Callable[[Tensor, Tensor], Tensor] | None = None
    times_derivative_into: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None
    second_into: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor] | None = None

    def derivative(self, z: Tensor, out: Tensor) -> Tensor:
        """σ'(z), given z and out = σ(z): the scaling of a 1, broadcast to z's shape."""
        saved = out if self.reads_output else z
        return self.times_derivative(_one(saved.dtype, saved.device), saved)

    def second_derivative(self, z: Tensor, out: Tensor, first: Tensor | None = None) -> Tensor:
        """σ''(z), given z, out = σ(z) and, to save work, σ'(z) (zero for the piecewise-linear
        ReLU and identity, as autograd's double backward has it)."""
        return self.second(z, out, self.derivative(z, out) if first is None else first)

    def evaluate(
        self, z: Tensor, into: tuple[Tensor, Tensor, Tensor | None] | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """(σ(z), σ'(z), σ''(z)) of z, written into the three buffers ``into`` where given
        (σ'' only where its buffer is), else made anew as ``fn``, ``derivative``
        and ``second_derivative`` make them."""
        if into is None or self.fn_into is None:
            out = self.fn(z)
            first = self.derivative(z, out)
            return out, first, self.second_derivative(z, out, first)
        out_into, first_into, second_into = into
        assert self.times_derivative_into is not None and self.second_into is not None
        out = self.fn_into(z, out_into)
        saved = out if self.reads_output else z
        first = self.times_derivative_into(_one(z.dtype, z.device), saved, first_into)
        second = None if second_into is None else self.second_into(z, out, first, second_into)
        return out, first, second

    def __repr__(self) -> str:
        return f"Activation({self.name!r})"


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


# σ'' in closed form from σ(z) and σ'(z), two passes where it can be: tanh'' = −2·t·tanh',
# sigmoid'' = sigmoid'·(1 − 2s); softplus'' = σ'(1 − σ') with σ' = sigmoid(z) (and 0 above
# the threshold where softplus is linear, σ' = 1: torch's double backward agrees); ReLU's
# and the identity's are 0.
def _tanh_second(z: Tensor, t: Tensor, first: Tensor) -> Tensor:
    return torch.mul(t, first).mul_(-2)


def _sigmoid_second(z: Tensor, s: Tensor, first: Tensor) -> Tensor:
    return torch.mul(s, -2).add_(1).mul_(first)


def _softplus_second(z: Tensor, out: Tensor, first: Tensor) -> Tensor:
    # At z = threshold exactly, autograd's double backward already says 0.
    return torch.where(z >= SOFTPLUS_THRESHOLD, 0, first * (1 - first))


def _zero_second(z: Tensor, out: Tensor, first: Tensor) -> Tensor:
    return torch.zeros_like(z)


# The out= forms, for buffers that are reused (jacbench.ad.workspace).
def _tanh_second_into(z: Tensor, t: Tensor, first: Tensor, into: Tensor) -> Tensor:
    return torch.mul(t, first, out=into).mul_(-2)


def _sigmoid_second_into(z: Tensor, s: Tensor, first: Tensor, into: Tensor) -> Tensor:
    return torch.mul(s, -2, out=into).add_(1).mul_(first)


def _softplus_second_into(z: Tensor, out: Tensor, first: Tensor, into: Tensor) -> Tensor:
    return into.copy_(_softplus_second(z, out, first))


def _zero_second_into(z: Tensor, out: Tensor, first: Tensor, into: Tensor) -> Tensor:
    return into.zero_()


def _backward_into(op: torch._ops.OpOverloadPacket, *extra: float) -> Callable:
    grad_input = op.grad_input  # the overload that writes into a given tensor

    def into(g: Tensor, saved: Tensor, out: Tensor) -> Tensor:
        return grad_input(g, saved, *extra, grad_input=out)

    return into


def _identity_into(g: Tensor, saved: Tensor, out: Tensor) -> Tensor:
    return out.copy_(g.expand_as(out))


ACTIVATIONS: dict[str, Activation] = {
    "tanh": Activation(
        "tanh",
        torch.tanh,
        _TANH_BACKWARD,
        True,
        _tanh_second,
        lambda z, into: torch.tanh(z, out=into),
        _backward_into(torch.ops.aten.tanh_backward),
        _tanh_second_into,
    ),
    "sigmoid": Activation(
        "sigmoid",
        torch.sigmoid,
        _SIGMOID_BACKWARD,
        True,
        _sigmoid_second,
        lambda z, into: torch.sigmoid(z, out=into),
        _backward_into(torch.ops.aten.sigmoid_backward),
        _sigmoid_second_into,
    ),
    "relu": Activation(
        "relu",
        torch.relu,
        _relu_times_derivative,
        False,
        _zero_second,
        lambda z, into: torch.clamp_min(z, 0, out=into),
        _backward_into(torch.ops.aten.threshold_backward, 0),
        _zero_second_into,
    ),
    "softplus": Activation(
        "softplus",
        torch.nn.functional.softplus,
        _softplus_times_derivative,
        False,
        _softplus_second,
        lambda z, into: torch.ops.aten.softplus.out(z, 1, SOFTPLUS_THRESHOLD, out=into),
        _backward_into(torch.ops.aten.softplus_backward, 1, SOFTPLUS_THRESHOLD),
        _softplus_second_into,
    ),
    "identity": Activation(
        "identity",
        lambda z: z,
        _identity_times_derivative,
        False,
        _zero_second,
        lambda z, into: into.copy_(z),
        _identity_into,
        _zero_second_into,
    ),
}


def get_activation(activation: str | Activation) -> Activation:
    """Return the ``Activation`` called ``activation`` (or ``activation`` itself).

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
