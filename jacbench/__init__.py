"""jacbench: measure, explain and pick between forward-mode and reverse-mode Jacobians."""

from jacbench.activations import ACTIVATIONS, Activation, get_activation
from jacbench.cost import Plan, chain_order, elementwise_flops, flop_count, memory_bytes, plan
from jacbench.jacobians import (
    jacobian,
    jacobian_forward,
    jacobian_mixed,
    jacobian_reverse,
    reference_jacobian,
    relative_error,
)
from jacbench.networks import MLP, make_mlp

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "Activation",
    "Plan",
    "__version__",
    "chain_order",
    "elementwise_flops",
    "flop_count",
    "get_activation",
    "jacobian",
    "jacobian_forward",
    "jacobian_mixed",
    "jacobian_reverse",
    "make_mlp",
    "memory_bytes",
    "plan",
    "reference_jacobian",
    "relative_error",
]
