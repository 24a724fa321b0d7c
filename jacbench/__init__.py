"""jacbench: measure, explain and pick between forward-mode and reverse-mode Jacobians."""

from importlib.metadata import PackageNotFoundError, version

from jacbench.activations import ACTIVATIONS, Activation, get_activation
from jacbench.cost import (
    Plan,
    SecondOrderPlan,
    chain_order,
    elementwise_flops,
    flop_count,
    hessian_flops,
    laplacian_flops,
    memory_bytes,
    plan,
    plan_second_order,
)
from jacbench.grid import PRESETS, Point
from jacbench.harness import sweep
from jacbench.hessians import hessian, hvp, laplacian, reference_hessian
from jacbench.jacobians import (
    capture_jacobian,
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
    "SecondOrderPlan",
    "__version__",
    "capture_jacobian",
    "chain_order",
    "elementwise_flops",
    "flop_count",
    "get_activation",
    "hessian",
    "hessian_flops",
    "hvp",
    "jacobian",
    "jacobian_forward",
    "jacobian_mixed",
    "jacobian_reverse",
    "laplacian",
    "laplacian_flops",
    "make_mlp",
    "memory_bytes",
    "plan",
    "plan_second_order",
    "reference_hessian",
    "reference_jacobian",
    "relative_error",
    "sweep",
]
