"""jacbench: measure, explain and pick between forward-mode and reverse-mode Jacobians."""

from importlib.metadata import PackageNotFoundError, version

from jacbench.activations import ACTIVATIONS, Activation, get_activation
from jacbench.cost import Plan, chain_order, elementwise_flops, flop_count, memory_bytes, plan
from jacbench.grid import PRESETS, Point
from jacbench.harness import sweep
from jacbench.jacobians import (
    jacobian,
    jacobian_forward,
    jacobian_mixed,
    jacobian_reverse,
    reference_jacobian,
    relative_error,
)
from jacbench.networks import MLP, make_mlp
from jacbench.rows import Row, Status

try:
    __version__ = version("jacbench")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "PRESETS",
    "Point",
    "Row",
    "Status",
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
    "sweep",
]
