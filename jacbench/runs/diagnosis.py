"""What a wrong result looks like: one diagnosis, in the same words for run, check and grade.

A method's result is compared with its operator's float64 reference. Where it is wrong the
diagnosis names the mistake when it can tell: not a tensor, the wrong shape (a transposed
Jacobian, a lost output axis), NaN or inf, the transpose Jᵀ, or, for the Jacobian of an
MLP, the chain with σ' left out at one layer or at every layer. Otherwise it gives the error
against the tolerance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from jacbench.ad.cost import flop_count
from jacbench.ad.jacobians import relative_error
from jacbench.ad.networks import MLP
from jacbench.measure.rows import Mistake
from jacbench.runs.plain import PlainResult, tensor_of, tensor_of_array

# Looking for a missing σ' evaluates L + 1 chains in float64 on the CPU: past this many FLOPs
# (a net of a few hundred units) the diagnosis stays the error against the tolerance.
SEARCH_MAX_FLOPS = 10**9


@dataclass(frozen=True)
class Diagnosis:
    """The error of a result against its reference (nan where none could be computed), what
    is wrong with it as one kind (None: it is within the tolerance) and the message made
    from that kind with its particulars (shapes, a layer, the error and tolerance)."""

    max_rel_err: float
    mistake: Mistake | None = None
    message: str = ""

    @property
    def right(self) -> bool:
        """Whether the result is within the tolerance."""
        return self.mistake is None


def as_tensor(value: Any) -> Tensor | None:
    """A result as a tensor (an array of JAX's or NumPy's converts), or None: a list or a
    number is not a Jacobian, whatever dtype it would convert to."""
    if isinstance(value, Tensor):
        return value
    if value is not None and hasattr(value, "__array__") and hasattr(value, "shape"):
        return tensor_of_array(value)
    return None


def diagnose(
    result: Any,
    reference: Tensor,
    tolerance: float,
    *,
    net: MLP | None = None,
    x: Tensor | None = None,
    jacobian: bool = True,
) -> Diagnosis:
    """Compare ``result`` with ``reference`` and name what is wrong with it.

    ``jacobian``: the reference is a Jacobian, (P, D) or (B, P, D), so a transposed shape or
    value is named as such; with ``net`` and ``x`` a result that matches the chain with σ'
    left out is named too.
    """
    tensor = as_tensor(result)
    if tensor is None:
        message = f"returned a {type(result).__name__}, not a tensor"
        return Diagnosis(math.nan, Mistake.NOT_A_TENSOR, message)
    found = shape_problem(tuple(tensor.shape), tuple(reference.shape), jacobian)
    if found is not None:
        return found
    if tensor.is_floating_point() and not torch.isfinite(tensor).all():
        return Diagnosis(math.nan, Mistake.NAN, "the result holds NaN or inf")
    error = relative_error(tensor, reference)
    if error <= tolerance:
        return Diagnosis(error)
    named = value_problem(tensor, reference, tolerance, net=net, x=x) if jacobian else None
    if named is not None:
        return replace(named, max_rel_err=error)
    return Diagnosis(error, Mistake.WRONG_VALUES, f"max relative error {error:.3g} > {tolerance:g}")


def diagnose_plain(
    result: PlainResult,
    reference: Tensor,
    tolerance: float,
    *,
    dtype: str,
    device: str,
    strict: bool,
    net: MLP | None = None,
    x: Tensor | None = None,
    jacobian: bool = True,
) -> Diagnosis:
    """A result sent back as plain data (``jacbench.runs.plain``) against ``reference``.

    Something other than an array, a Tensor subclass included, is not judged by its own
    operators: it is not a tensor. ``strict`` (a user's code): the result must have the
    network's ``dtype`` (float64 is no float32 answer, a complex one none at all) and be on
    its ``device``. Then as ``diagnose``.
    """
    if not result.array:
        if result.subclass:
            message = f"returned a {result.kind}, a subclass of torch.Tensor: return a plain tensor"
        else:
            message = f"returned a {result.kind}, not a tensor"
        return Diagnosis(math.nan, Mistake.NOT_A_TENSOR, message)
    if strict and result.dtype != dtype:
        message = f"returns {result.dtype}, expected {dtype} (the network's dtype)"
        return Diagnosis(math.nan, Mistake.WRONG_TYPE, message)
    if strict and not _same_device(result.device, device):
        message = f"returns a tensor on {result.device}, expected {device}"
        return Diagnosis(math.nan, Mistake.WRONG_TYPE, message)
    try:
        tensor = tensor_of(result)
    except ValueError as error:
        return Diagnosis(math.nan, Mistake.NOT_A_TENSOR, f"returned damaged data: {error}")
    return diagnose(tensor, reference, tolerance, net=net, x=x, jacobian=jacobian)


def _same_device(found: str, expected: str) -> bool:
    a, b = torch.device(found), torch.device(expected)
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def shape_problem(
    got: tuple[int, ...], expected: tuple[int, ...], jacobian: bool = True
) -> Diagnosis | None:
    """What is wrong with a result's shape (None when it is the reference's)."""
    if got == expected:
        return None
    message = f"returns shape {got}, expected {expected}"
    if not jacobian or len(expected) < 2:
        return Diagnosis(math.nan, Mistake.WRONG_SHAPE, message)
    *lead, p, d = expected
    if got == (*lead, d, p):
        message = f"returns the transpose: shape {got}, expected (P, D) = {expected}"
        return Diagnosis(math.nan, Mistake.TRANSPOSED, message)
    if p == 1 and got == (*lead, d):
        message = f"returns shape {got}: keep the output axis, (P, D) = {expected}"
    else:
        message += " (the Jacobian is (P, D), batch first)"
    return Diagnosis(math.nan, Mistake.WRONG_SHAPE, message)


def value_problem(
    result: Tensor,
    reference: Tensor,
    tolerance: float,
    *,
    net: MLP | None = None,
    x: Tensor | None = None,
) -> Diagnosis | None:
    """Which known mistake a wrong Jacobian of the right shape matches (None if none)."""
    if reference.shape[-1] == reference.shape[-2] and (
        relative_error(result.transpose(-1, -2), reference) <= tolerance
    ):
        message = "returns the transpose Jᵀ (a Jacobian is (P, D): rows are outputs)"
        return Diagnosis(math.nan, Mistake.TRANSPOSED, message)
    if net is None or x is None:
        return None
    batch = x.shape[0] if x.ndim == 2 else 1
    if flop_count(net.widths, "forward", batch) * (net.depth + 1) > SEARCH_MAX_FLOPS:
        return None
    layers = range(1, net.depth + 1)
    if net.depth > 1 and _matches(result, chain_without_slopes(net, x, set(layers)), tolerance):
        message = "matches the Jacobian with no σ' at any layer: tanh' is missing everywhere"
        return Diagnosis(math.nan, Mistake.SLOPES_LEFT_OUT, message)
    for k in layers:
        if _matches(result, chain_without_slopes(net, x, {k}), tolerance):
            message = f"matches the Jacobian with σ' left out at layer {k}: its tanh' is missing"
            return Diagnosis(math.nan, Mistake.SLOPES_LEFT_OUT, message)
    return None


def _matches(result: Tensor, candidate: Tensor, tolerance: float) -> bool:
    return relative_error(result, candidate) <= tolerance


def chain_without_slopes(net: MLP, x: Tensor, dropped: set[int]) -> Tensor:
    """J = W_F Σ_L W_L ⋯ Σ_1 W_1 in float64, with Σ_k = I for every layer k in ``dropped``."""
    net64 = net.to(dtype=torch.float64, device="cpu")
    samples = x.to("cpu", torch.float64).reshape(-1, net.d_in)
    jacobians = []
    for sample in samples:
        jac = torch.eye(net.d_in, dtype=torch.float64)
        h = sample
        for k, (w, b, act) in enumerate(zip(net64.weights, net64.biases, net64.activations), 1):
            z = w @ h if b is None else w @ h + b
            h = act.fn(z)
            jac = w @ jac
            if k not in dropped:
                jac = act.derivative(z, h)[:, None] * jac
        jacobians.append(net64.weights[-1] @ jac)
    stacked = torch.stack(jacobians)
    return stacked if x.ndim == 2 else stacked[0]


class Snapshot:
    """A network's tensors and an input as they were, to tell whether a call changed them."""

    def __init__(self, net: MLP | Any, x: Tensor) -> None:
        self.params = {k: v.clone() for k, v in tensors_of(net).items()}
        self.x = x.clone()

    def changed(
        self, net: MLP | Any, x: Tensor, weights: str = "the network's weights"
    ) -> Diagnosis | None:
        """What the call changed in place (None if nothing); ``weights``: what the routine
        calls the weights (``param_dict`` for the textbook's convention)."""
        changed = [k for k, v in tensors_of(net).items() if not torch.equal(v, self.params[k])]
        what = f"{weights} in place ({', '.join(changed)})" if changed else "x in place"
        if not changed and torch.equal(x, self.x):
            return None
        message = f"changes {what}: a routine must not modify its arguments"
        return Diagnosis(math.nan, Mistake.CHANGES_ARGUMENTS, message)


def tensors_of(net: MLP | Any) -> dict[str, Tensor]:
    """A network's weights by name: an MLP's ``param_dict``, a module's state dict (a plain
    function's are its own: none)."""
    if isinstance(net, MLP):
        return net.param_dict()
    if isinstance(net, torch.nn.Module):
        return dict(net.state_dict())
    return {}
