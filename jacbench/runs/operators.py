"""Operators: what a method computes (the Jacobian, the Hessian, the Laplacian or Hessian-vector
products), with the float64 reference it is checked against and its cost model.

A method (``jacbench.runs.methods``) is one way to compute one operator. A run measures one
operator (``jacbench run --operator``, default ``jacobian``) and its rows say which in the
``operator`` column. What the harness needs to know about an operator lives here: the shape
of a result, the reference, the modes the cost model knows with their FLOPs and memory, the
mode it predicts, and jacbench's method that follows the prediction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import torch
from torch import Tensor

from jacbench.ad import cost, hessians
from jacbench.ad.generic import SampleWise
from jacbench.ad.jacobians import reference_jacobian
from jacbench.ad.networks import MLP

# The seed of the hvp direction v: fixed, so every method and the reference see one v.
DIRECTION_SEED = 7


@dataclass(frozen=True)
class Costs:
    """The cost model at one shape: the predicted mode, and per mode its matmul FLOPs,
    elementwise operations and memory (a mode missing from a mapping: not modelled)."""

    predicted: str
    flops: Mapping[str, int]
    elementwise_flops: Mapping[str, int] = field(default_factory=dict)
    memory_bytes: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Operator:
    """Something computed from a network at x, as named by ``--operator`` and the
    ``operator`` column."""

    name: str
    description: str
    result: str  # the result's shape for one sample x of shape (D,); a batch puts B in front
    best_method: str  # jacbench's method that runs the cost model's pick: the peers' rival
    reference: Callable[[MLP, Tensor], Tensor]  # a float64 net and x → the exact result
    costs: Callable[[tuple[int, ...], int, torch.dtype], Costs]


def direction(x: Tensor) -> Tensor:
    """The hvp direction v at x: seeded normal entries of x's shape, dtype and device (drawn
    in float64 on the CPU, as inputs are, so every device and dtype sees one v)."""
    generator = torch.Generator().manual_seed(DIRECTION_SEED)
    v = torch.randn(x.shape, generator=generator, dtype=torch.float64)
    return v.to(dtype=x.dtype, device=x.device)


def _jacobian_costs(widths: tuple[int, ...], batch: int, dtype: torch.dtype) -> Costs:
    plan = cost.plan(widths, batch, dtype)
    return Costs(plan.mode, plan.flops, plan.elementwise_flops, plan.memory_bytes)


def _hessian_costs(widths: tuple[int, ...], batch: int, dtype: torch.dtype) -> Costs:
    plan = cost.plan_second_order(widths, batch, dtype)
    return Costs(plan.hessian_mode, plan.hessian_flops, memory_bytes=plan.hessian_memory_bytes)


def _laplacian_costs(widths: tuple[int, ...], batch: int, dtype: torch.dtype) -> Costs:
    plan = cost.plan_second_order(widths, batch, dtype)
    stochastic = cost.laplacian_flops(widths, "hutchinson", batch)  # the default samples
    flops = {**plan.laplacian_flops, "hutchinson": stochastic}
    return Costs(plan.laplacian_method, MappingProxyType(flops))


def _hvp_costs(widths: tuple[int, ...], batch: int, dtype: torch.dtype) -> Costs:
    return Costs("fwd-over-rev", MappingProxyType({"fwd-over-rev": cost.hvp_flops(widths, batch)}))


def _reference_laplacian(net: MLP, x: Tensor) -> Tensor:
    return hessians.reference_hessian(net, x).diagonal(dim1=-2, dim2=-1).sum(-1)


def _reference_hvp(net: MLP, x: Tensor) -> Tensor:
    return torch.einsum("...pij,...j->...pi", hessians.reference_hessian(net, x), direction(x))


def _reference_jacobian(net: MLP, x: Tensor) -> Tensor:
    if isinstance(net, SampleWise) and net.refused:
        # code torch.func cannot transform (NOTE: [Models of one sample]): autograd's own
        # loop of VJPs at each sample
        samples = x if x.ndim == 2 else x[None]
        found = torch.stack([torch.autograd.functional.jacobian(net, s) for s in samples])
        return found if x.ndim == 2 else found[0]
    if x.ndim == 2 and isinstance(net, SampleWise) and not net.vmaps:
        # code vmap cannot run: jacrev at each sample
        return torch.stack([reference_jacobian(net, sample, "jacrev") for sample in x])
    return reference_jacobian(net, x, "jacrev")


OPERATORS: Mapping[str, Operator] = MappingProxyType(
    {
        op.name: op
        for op in [
            Operator(
                "jacobian",
                "the input Jacobian ∂f/∂x",
                "(P, D)",
                "auto",
                _reference_jacobian,
                _jacobian_costs,
            ),
            Operator(
                "hessian",
                "the Hessian ∂²f_p/∂x_i∂x_j of every output",
                "(P, D, D)",
                "hessian-auto",
                hessians.reference_hessian,
                _hessian_costs,
            ),
            Operator(
                "laplacian",
                "the Laplacian Σ_i ∂²f_p/∂x_i² of every output",
                "(P,)",
                "forward-laplacian",
                _reference_laplacian,
                _laplacian_costs,
            ),
            Operator(
                "hvp",
                "Hessian-vector products H_p·v of every output (v seeded, one per sample)",
                "(P, D)",
                "hvp",
                _reference_hvp,
                _hvp_costs,
            ),
        ]
    }
)


def get_operator(name: str) -> Operator:
    """The ``Operator`` called ``name``.

    Raises:
        ValueError: no such operator.
    """
    try:
        return OPERATORS[name]
    except KeyError:
        raise ValueError(
            f"unknown operator {name!r}; expected one of: {', '.join(OPERATORS)}"
        ) from None
