"""Input Jacobians of an MLP: forward, reverse and mixed mode, and a torch.func reference.

Shape rule, for every function here: a Jacobian is ``(out, in)``. For x of shape (D,) the
Jacobian J = ∂f/∂x has shape (P, D); for a batch x of shape (B, D) it has shape (B, P, D),
J[b] being the Jacobian at x[b]. The result has x's dtype and device, which must be the
network's.

All routines evaluate the chain J = W_F·Σ_L·W_L ⋯ Σ_1·W_1 (see ``jacbench.cost``,
NOTE: [The chain]) after one primal pass that keeps σ'(z_k) for every layer. A diagonal
Σ_k is applied as a scaling of rows or columns; it is never built as a matrix.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from jacbench import cost
from jacbench.networks import MLP

JACOBIAN_MODES = ("forward", "reverse", "mixed", "auto")
REFERENCE_METHODS = ("jacrev", "jacfwd")


def _check_input(net: MLP, x: Tensor) -> None:
    if not isinstance(net, MLP):
        raise TypeError(f"net must be a jacbench MLP, got {type(net).__name__}")
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim not in (1, 2):
        raise ValueError(
            f"x must have shape (D,) or (B, D) with D = {net.d_in}, got shape {tuple(x.shape)}"
        )
    if x.shape[-1] != net.d_in:
        raise ValueError(
            f"x's last dimension must be the network's input size D = {net.d_in}, "
            f"got shape {tuple(x.shape)}"
        )
    if x.dtype != net.dtype:
        raise TypeError(f"x has dtype {x.dtype} but the network has {net.dtype}; convert one")
    if x.device != net.device:
        raise ValueError(
            f"x is on {x.device} but the network is on {net.device}; move one with .to()"
        )


def _check_chunk_size(chunk_size: int | None) -> None:
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")


def _primal(net: MLP, x: Tensor) -> list[Tensor]:
    """σ'(z_k) for k = 1..L, each (B, K_k), from one pass over a batch x of shape (B, D)."""
    slopes = []
    h = x
    for w, b, act in zip(net.weights, net.biases, net.activations):
        z = torch.nn.functional.linear(h, w, b)
        h = act.fn(z)
        slopes.append(act.derivative(z, h))
    return slopes


def _sweep(start: Tensor, slopes: Sequence[Tensor], matrices: Sequence[Tensor]) -> Tensor:
    """Carry a block of row vectors through the chain: the loop both pure modes share.

    ``start`` (r, K) is scaled by ``slopes[0]`` (B, K); then, for each matrix but the last,
    multiply and scale by the next slope; finally multiply by the last matrix. Returns (B, r, ·).
    """
    block = start * slopes[0][:, None, :]
    for matrix, slope in zip(matrices[:-1], slopes[1:]):
        block = (block @ matrix) * slope[:, None, :]
    return block @ matrices[-1]


def _chunks(n: int, chunk_size: int | None) -> list[slice]:
    step = n if chunk_size is None else chunk_size
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


def _batched(x: Tensor) -> Tensor:
    return x if x.ndim == 2 else x.unsqueeze(0)


def _unbatched_like(x: Tensor, jac: Tensor) -> Tensor:
    return jac if x.ndim == 2 else jac.squeeze(0)


def jacobian_forward(net: MLP, x: Tensor, *, chunk_size: int | None = None) -> Tensor:
    """The input Jacobian by forward mode: tangents carried from input to output.

    Jᵀ = W_1ᵀ·Σ_1·W_2ᵀ ⋯ Σ_L·W_Fᵀ is evaluated left to right on a block of D tangent rows
    (one per input direction), so its cost grows with D (see ``cost.flop_count``).

    Args:
        net: the network.
        x: input of shape (D,) or (B, D); see the module docstring for the shape rule.
        chunk_size: at most this many input directions per pass, to bound memory.

    Returns:
        J of shape (P, D) or (B, P, D).

    >>> net = make_mlp(depth=3, d_in=4, width=8, d_out=2)
    >>> jacobian_forward(net, torch.ones(4)).shape
    torch.Size([2, 4])
    """
    _check_input(net, x)
    _check_chunk_size(chunk_size)
    xb = _batched(x)
    slopes = _primal(net, xb)
    first, *rest = net.weights
    matrices = [w.T for w in rest]
    blocks = [_sweep(first.T[cols], slopes, matrices) for cols in _chunks(net.d_in, chunk_size)]
    jac = blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=1)
    return _unbatched_like(x, jac.transpose(1, 2))


def jacobian_reverse(net: MLP, x: Tensor, *, chunk_size: int | None = None) -> Tensor:
    """The input Jacobian by reverse mode: adjoints carried from output to input.

    J = W_F·Σ_L·W_L ⋯ Σ_1·W_1 is evaluated left to right on a block of P adjoint rows
    (one per output), after a primal pass that keeps σ'(z_k); its cost grows with P.

    Args:
        net: the network.
        x: input of shape (D,) or (B, D); see the module docstring for the shape rule.
        chunk_size: at most this many outputs per pass, to bound memory.

    Returns:
        J of shape (P, D) or (B, P, D).

    >>> net = make_mlp(depth=3, d_in=4, width=8, d_out=2)
    >>> jacobian_reverse(net, torch.ones(4)).shape
    torch.Size([2, 4])
    """
    _check_input(net, x)
    _check_chunk_size(chunk_size)
    xb = _batched(x)
    slopes = _primal(net, xb)
    *rest, last = net.weights
    matrices = rest[::-1]
    blocks = [_sweep(last[rows], slopes[::-1], matrices) for rows in _chunks(net.d_out, chunk_size)]
    jac = blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=1)
    return _unbatched_like(x, jac)


def _evaluate(tree: cost.Bracketing, weights: Sequence[Tensor], slopes: Sequence[Tensor]) -> Tensor:
    """The product M_j Σ_{j-1} ⋯ Σ_i M_i that ``tree`` brackets (2-D only for a lone weight)."""
    if isinstance(tree, int):
        return weights[tree - 1]
    left_tree, right_tree = tree
    left = _evaluate(left_tree, weights, slopes)
    right = _evaluate(right_tree, weights, slopes)
    slope = slopes[cost.span(right_tree)[1] - 1]  # Σ_k sits between M_{k+1} and M_k
    # Scale whichever operand is smaller (per sample): the cost model counts the same.
    if left.shape[-2] <= right.shape[-1]:
        left = left * slope[:, None, :]
    else:
        right = right * slope[:, :, None]
    return left @ right


def jacobian_mixed(net: MLP, x: Tensor) -> Tensor:
    """The input Jacobian with the chain bracketed for the fewest FLOPs.

    The bracketing is ``cost.chain_order(net.widths)``, a matrix-chain dynamic programme;
    it never costs more FLOPs than forward or reverse mode and costs strictly fewer on
    hourglass networks whose narrow layers sit inside the chain.

    Args:
        net: the network.
        x: input of shape (D,) or (B, D); see the module docstring for the shape rule.

    Returns:
        J of shape (P, D) or (B, P, D).

    >>> net = MLP.from_widths((16, 16, 2, 16, 16))
    >>> jacobian_mixed(net, torch.ones(16)).shape
    torch.Size([16, 16])
    """
    _check_input(net, x)
    xb = _batched(x)
    slopes = _primal(net, xb)
    _, tree = cost.chain_order(net.widths)
    return _unbatched_like(x, _evaluate(tree, net.weights, slopes))


def jacobian(net: MLP, x: Tensor, mode: str = "auto", *, chunk_size: int | None = None) -> Tensor:
    """The input Jacobian by ``mode``: "forward", "reverse", "mixed", or "auto".

    "auto" runs the mode ``cost.plan(net.widths, batch)`` predicts fastest.
    ``chunk_size`` applies to the pure modes only. Shapes as in the module docstring.

    >>> net = make_mlp(depth=2, d_in=5, width=8, d_out=1)
    >>> jacobian(net, torch.ones(3, 5)).shape
    torch.Size([3, 1, 5])
    """
    if mode not in JACOBIAN_MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of: {', '.join(JACOBIAN_MODES)}")
    if mode == "auto":
        _check_input(net, x)
        mode = cost.plan(net.widths, x.shape[0] if x.ndim == 2 else 1).mode
    if mode == "forward":
        return jacobian_forward(net, x, chunk_size=chunk_size)
    if mode == "reverse":
        return jacobian_reverse(net, x, chunk_size=chunk_size)
    return jacobian_mixed(net, x)


def reference_jacobian(net: MLP, x: Tensor, method: str = "jacrev") -> Tensor:
    """The input Jacobian from ``torch.func.jacrev`` or ``jacfwd`` (vmap over a batch).

    This is independent of jacbench's routines: torch differentiates ``net(x)`` itself.
    For a trustworthy reference pass a float64 network and input.
    """
    if method not in REFERENCE_METHODS:
        raise ValueError(
            f"unknown reference method {method!r}; expected one of: {', '.join(REFERENCE_METHODS)}"
        )
    _check_input(net, x)
    transform = torch.func.jacrev if method == "jacrev" else torch.func.jacfwd
    single = transform(net.__call__)
    return single(x) if x.ndim == 1 else torch.func.vmap(single)(x)


def relative_error(jac: Tensor, reference: Tensor) -> float:
    """max |J − J_ref| / max |J_ref|, computed in float64 (0 when both are 0)."""
    jac64, ref64 = jac.detach().double().cpu(), reference.detach().double().cpu()
    if jac64.shape != ref64.shape:
        raise ValueError(f"shapes differ: {tuple(jac64.shape)} vs {tuple(ref64.shape)}")
    scale = ref64.abs().max().item() if ref64.numel() else 0.0
    err = (jac64 - ref64).abs().max().item() if ref64.numel() else 0.0
    if scale == 0.0:
        return 0.0 if err == 0.0 else float("inf")
    return err / scale
