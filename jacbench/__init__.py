"""jacbench: measure, explain and pick between forward-mode and reverse-mode Jacobians.

The public API, re-exported from the layers (docs/design.md, "Layers"): ``kernels`` under
``measure`` under ``ad`` (the mathematics) under ``runs`` under ``cluster`` under ``faces``.
"""

from jacbench import moved
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
from jacbench.ad.generic import GenericPlan, compiled_jacobian, plan_of
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
from jacbench.faces.grading import check
from jacbench.faces.library import sweep
from jacbench.kernels.activations import ACTIVATIONS, Activation, get_activation
from jacbench.measure.machine import jacbench_version
from jacbench.measure.rows import Row, Status
from jacbench.runs.grid import PRESETS, Point

__version__ = jacbench_version()

# Old module paths (jacbench.cost, …) still import, with a DeprecationWarning (jacbench.moved).
moved.install()


def __getattr__(name: str) -> object:
    """``from jacbench import cost``: an old module path's module, with a warning."""
    if f"jacbench.{name}" in moved.MOVED:
        return moved.moved_module(f"jacbench.{name}")
    raise AttributeError(f"module 'jacbench' has no attribute {name!r}")


__all__ = [
    "ACTIVATIONS",
    "MLP",
    "PRESETS",
    "Point",
    "Row",
    "Status",
    "Activation",
    "GenericPlan",
    "Plan",
    "SecondOrderPlan",
    "__version__",
    "capture_jacobian",
    "chain_order",
    "check",
    "compiled_jacobian",
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
    "plan_of",
    "plan_second_order",
    "reference_hessian",
    "reference_jacobian",
    "relative_error",
    "sweep",
]
