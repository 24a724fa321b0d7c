"""jacbench: measure, explain and pick between forward-mode and reverse-mode Jacobians."""

from importlib.metadata import PackageNotFoundError, version

from jacbench.ad.cost import (
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
from jacbench.ad.hessians import hessian, hvp, laplacian, reference_hessian
from jacbench.ad.jacobians import (
    capture_jacobian,
    jacobian,
    jacobian_forward,
    jacobian_mixed,
    jacobian_reverse,
    reference_jacobian,
    relative_error,
)
from jacbench.ad.networks import MLP, make_mlp
from jacbench.kernels.activations import ACTIVATIONS, Activation, get_activation
from jacbench.runs.grid import PRESETS, Point
from jacbench.runs.harness import sweep
from jacbench.runs.rows import Row, Status

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
