"""Input Jacobians of an MLP: forward, reverse and mixed mode, and a torch.func reference.

Shape rule, for every function here: a Jacobian is ``(out, in)``. For x of shape (D,) the
Jacobian J = ∂f/∂x has shape (P, D); for a batch x of shape (B, D) it has shape (B, P, D),
J[b] being the Jacobian at x[b]. The result has x's dtype and device, which must be the
network's.

All routines evaluate the chain J = W_F·Σ_L·W_L ⋯ Σ_1·W_1 (see ``jacbench.ad.cost``,
NOTE: [The chain]) with one primal pass that yields σ'(z_k) layer by layer: reverse and
mixed mode keep them all first, forward mode uses each as soon as it is made. A diagonal
Σ_k is applied as a scaling of rows or columns; it is never built as a matrix.
"""

from __future__ import annotations

import collections
import functools
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from jacbench.ad import cost, generic, graphs
from jacbench.ad.networks import MLP
from jacbench.ad.workspace import Workspace, workspace
from jacbench.kernels import native, small, team
from jacbench.kernels.activations import Activation
from jacbench.kernels.products import (
    NARROW_BLOCK,
    TUNED_MIN_ELEMENTS,
    batched_rows_product,
    few_columns,
    narrow_product,
    narrow_size,
    rows_times_weight_t,
    size_class,
    split_blocks,
    tanh_by_sigmoid,
)
from jacbench.measure import tuning

JACOBIAN_MODES = ("forward", "reverse", "mixed", "auto")
TANH_MIN = tuning.TANH_MIN_ELEMENTS
REFERENCE_METHODS = ("jacrev", "jacfwd")


def _check_input(net: MLP, x: Tensor) -> None:
    if not isinstance(net, MLP):
        raise TypeError(f"net must be a jacbench MLP, got {type(net).__name__}")
    net.refresh()  # NOTE: [A network's derived parts follow its tensors]
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


def _tuned_product(block: Tensor, matrix: Tensor, forward: bool) -> Tensor:
    """block @ matrix for a narrow 2-D block, by the kernel measured for its class."""
    if not matrix.is_cpu:
        return torch.mm(block, matrix)
    size = narrow_size(matrix.numel())
    kernel = tuning.active().narrow_kernel(forward, block.shape[0], size)
    return narrow_product(block, matrix, forward, kernel)


def _times(
    block: Tensor,
    matrix: Tensor,
    columns: bool,
    buffer: Callable[[tuple[int, ...]], Tensor] | None = None,
) -> Tensor:
    """matrix @ block for a block of columns, block @ matrix for a block of rows.

    Narrow 2-D row blocks go to the kernel measured fastest on this machine for their class
    (``jacbench.measure.tuning``); narrow columns to the split kernels (NOTE: [Narrow products on
    all cores]) or the BLAS layout that is fast for them (NOTE: [Forward mode's block
    layout]); a batched block folds into one GEMM (or a bmm) through matmul, into
    ``buffer(shape)`` where a workspace gives one.
    """
    if block.ndim == 3:
        if columns and block.shape[2] < FORWARD_COLUMNS_MIN:
            # A batch of narrow column blocks as rows, one folded GEMM, and a view back:
            # MKL's W·T for a batch of few columns is the slow layout (NOTE: [Forward mode's
            # block layout]): mixed mode at L=6 D=3 K=128 P=3 B=1024 ran 10× slower than
            # forward mode, whose products these are. A block that is such a view already
            # is contiguous as rows, so only a chain's first product copies.
            shape = (block.shape[0], block.shape[2], matrix.shape[0])
            out = None if buffer is None else buffer(shape)
            rows = block.transpose(1, 2).contiguous()  # a copy only where it is not rows yet
            return torch.matmul(rows, matrix.T, out=out).transpose(1, 2)
        if columns:
            shape = (block.shape[0], matrix.shape[0], block.shape[2])
            return torch.matmul(matrix, block, out=None if buffer is None else buffer(shape))
        tuned = tuning.active()
        shared = (
            block.shape[1] >= NARROW_BLOCK
            and matrix.ndim == 2
            and matrix.is_cpu
            and tuned.shares_weight(size_class(matrix.numel()))
        )
        transposed = not shared and few_columns(block, matrix) and tuned.transposes_few_columns()
        out = None if buffer is None else buffer((*block.shape[:2], matrix.shape[-1]))
        return batched_rows_product(block, matrix, shared, out, transposed)
    if columns:  # matrix is a weight W; W·T = (Tᵀ·Wᵀ)ᵀ
        if block.shape[1] < NARROW_BLOCK:
            blocks = split_blocks(matrix)
            if blocks:
                return rows_times_weight_t(block.T, matrix, blocks).T
            if block.shape[1] == 1:
                return torch.mv(matrix, block.view(-1)).view(-1, 1)
            return torch.mm(block.T, matrix.T).T
        return torch.mm(matrix, block)
    if block.shape[0] < NARROW_BLOCK and matrix.numel() >= TUNED_MIN_ELEMENTS:
        # matrix is W (reverse mode, mixed mode's lone weights) or the view Wᵀ (forward
        # mode's rows); anything else (a product inside mixed mode) goes to the BLAS.
        if matrix.is_contiguous():
            return _tuned_product(block, matrix, forward=False)
        if matrix.stride(0) == 1:  # a transposed weight
            return _tuned_product(block, matrix, forward=True)
    return torch.mm(block, matrix)


# A layer's slope Σ_k, kept as the activation's one-kernel scaling g ↦ g ⊙ σ'(z_k) and the
# tensor it reads (z_k or σ(z_k)): applying Σ_k to a block is then one launch, not two.
Slope = tuple[Callable[[Tensor, Tensor], Tensor], Tensor]


def _slopes(
    net: MLP,
    x: Tensor,
    shape: Callable[[Tensor], Tensor] | None = None,
    ws: Workspace | None = None,
) -> Iterator[Slope]:
    """Σ_k for k = 1..L, one primal layer at a time; ``shape`` fits what Σ_k reads to a block.

    What Σ_k reads is a (1, K_k) row for one input (NOTE: [One input as a row]) or (B, K_k)
    for a batch, before ``shape``. Lazy, so that forward mode reads W_k for the tangents
    right after the primal step read it. With a workspace ``ws`` the primal pass and the
    scalings write into its buffers (NOTE: [Buffers reused from call to call]).
    """
    h = x.view(1, -1) if x.ndim == 1 else x
    tuned = tuning.active()
    layers = zip(net.weights, net.transposed_weights, net.biases, net.activations)
    for k, (w, wt, b, act) in enumerate(layers):
        h, saved = _activate(_primal_step(h, w, wt, b, tuned, ws, k), act, tuned, ws, k)
        yield _scaling(act, ws, k), (saved if shape is None else shape(saved))


def _scaling(act: Activation, ws: Workspace | None, k: int) -> Callable[[Tensor, Tensor], Tensor]:
    """Σ_k's scaling g ↦ g ⊙ σ'(z_k), into a workspace buffer where there is one."""
    into = act.times_derivative_into
    if ws is None or into is None:
        return act.times_derivative

    def scale(g: Tensor, saved: Tensor) -> Tensor:
        # In place on a product the sweep has just written (a workspace buffer, still in
        # the cores' caches: a buffer per layer would keep every block apart, out of them);
        # a block of the caller's (the first, a weight's view) into a buffer of its own.
        if ws.owns(g):
            return into(g, saved, g)
        return into(g, saved, ws.take("scaled", torch.broadcast_shapes(g.shape, saved.shape)))

    return scale


# NOTE: [One input as a row]
#     The primal pass carries one input x (D,) as the row (1, D), and Σ_k reads (1, K_k)
#     rows: they scale a block of rows (reverse mode's adjoints, forward mode's tangent
#     rows) by broadcasting, as they are. A 1-D h would cost two views per layer around
#     each product (a view is about 0.7 µs of dispatch, a small net's whole product about
#     1 µs): measured on an Intel Xeon (two cores), the primal pass of L=8 D=4 K=24 P=6 went
#     from 27 to 18 µs. Only the consumers that want another shape view the row (a column
#     for forward mode's columns, a vector for mixed mode).


def _primal_step(
    h: Tensor,
    w: Tensor,
    wt: Tensor,
    b: Tensor | None,
    tuned: tuning.Tuning,
    ws: Workspace | None = None,
    k: int = 0,
) -> Tensor:
    """z = h·Wᵀ + b for h of shape (B, K) (one input: B = 1), by the kernel measured for
    its class; a batch's into the workspace's buffer where there is one."""
    if h.shape[0] >= NARROW_BLOCK:
        if ws is None:
            return torch.nn.functional.linear(h, w, b)
        into = ws.take(("z", k), (h.shape[0], w.shape[0]))  # as F.linear: addmm, or mm
        return torch.mm(h, wt, out=into) if b is None else torch.addmm(b, h, wt, out=into)
    if w.numel() >= TUNED_MIN_ELEMENTS and h.is_cpu:  # a narrow product
        z = _tuned_product(h, wt, forward=True)
        return z if b is None else z.add_(b)
    # A few microseconds of launch: the plain product, with no view and no other op.
    return torch.mm(h, wt) if b is None else torch.addmm(b, h, wt)


def _as_column(saved: Tensor) -> Tensor:
    """One input's (1, K) row as the (K, 1) column that scales a (K, cols) block's rows."""
    return saved.view(-1, 1)


def _as_vector(saved: Tensor) -> Tensor:
    """One input's (1, K) row as a (K,) vector (mixed mode scales either side with it)."""
    return saved.view(-1)


def _activate(
    z: Tensor, act: Activation, tuned: tuning.Tuning, ws: Workspace | None = None, k: int = 0
) -> tuple[Tensor, Tensor]:
    """σ(z), and what σ' reads (σ(z) or z). z is the caller's own: it may be overwritten."""
    h: Tensor | None = None
    if tuned.tanh != "tanh" and act.name == "tanh" and z.is_cpu and z.numel() >= TANH_MIN:
        # tanh reads only its output: in place on z, by the form measured fastest here
        h = native.tanh_(z) if tuned.tanh == "native" else tanh_by_sigmoid(z)
    if h is None:
        if ws is not None and act.fn_into is not None:
            h = act.fn_into(z, ws.take(("h", k), z.shape))
        else:
            h = act.fn(z)
    return h, (h if act.reads_output else z)


def _scaling_columns(saved: Tensor) -> Tensor:
    """What Σ_k reads, shaped to scale the columns (last axis) of a (rows, K) or (B, rows, K)."""
    return saved if saved.ndim == 1 else saved.unsqueeze(-2)


def _scaling_rows(saved: Tensor) -> Tensor:
    """What Σ_k reads, shaped to scale the rows of a (K, cols) or (B, K, cols) block."""
    return saved.unsqueeze(-1)


def _sweep(
    start: Tensor,
    slopes: Iterable[Slope],
    matrices: Sequence[Tensor],
    columns: bool,
    ws: Workspace | None = None,
) -> Tensor:
    """Carry a block through the chain: the loop both pure modes share.

    A block of rows is multiplied on the right (reverse mode's adjoints, forward mode's
    tangents through Wᵀ), a block of columns on the left (forward mode's tangents through W):
    the same loop, transposed.
    ``start`` is scaled by the first slope; then, for each matrix but the last, multiply and
    scale by the next slope; finally multiply by the last matrix. Slopes are drawn one by
    one, so a lazy primal pass interleaves with the sweep. Every scaling is out of place
    (``start`` is a view of a weight), so no block a caller passed in is ever written.
    """
    slopes = iter(slopes)
    times_slope, saved = next(slopes)
    block = times_slope(start, saved)
    for k, (matrix, (times_slope, saved)) in enumerate(zip(matrices[:-1], slopes)):
        block = times_slope(_times(block, matrix, columns, _product_buffer(ws, k)), saved)
    return _times(block, matrices[-1], columns)  # the result: never a workspace buffer


def _product_buffer(ws: Workspace | None, k: int) -> Callable[[tuple[int, ...]], Tensor] | None:
    """Where a batched sweep's k-th product goes: a workspace buffer of its shape."""
    if ws is None:
        return None
    return lambda shape: ws.take(("product", k % 2), shape)  # two, in turn


def _chunks(n: int, chunk_size: int | None) -> list[slice]:
    step = n if chunk_size is None else chunk_size
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


def jacobian_forward(net: MLP, x: Tensor, *, chunk_size: int | None = None) -> Tensor:
    """The input Jacobian by forward mode: tangents carried from input to output.

    J = W_F·Σ_L·W_L ⋯ Σ_1·W_1 is evaluated right to left on a block of D tangents (one per
    input direction, starting from W_1 itself), each layer's primal step just before its
    tangent step, so its cost grows with D (see ``cost.flop_count``). The block is laid out
    as columns or rows, whichever the BLAS multiplies faster (NOTE: [Forward mode's block
    layout]).

    Args:
        net: the network.
        x: input of shape (D,) or (B, D); see the module docstring for the shape rule.
        chunk_size: at most this many input directions per pass, to bound memory.

    Returns:
        J of shape (P, D) or (B, P, D).

    >>> from jacbench import make_mlp
    >>> net = make_mlp(depth=3, d_in=4, width=8, d_out=2)
    >>> jacobian_forward(net, torch.ones(4)).shape
    torch.Size([2, 4])
    """
    _check_chunk_size(chunk_size)
    return _run(_forward, net, x, chunk_size)


# NOTE: [Forward mode's block layout]
#     Forward mode may carry its r tangents as columns (K × r, multiplied as W·T) or as rows
#     (r × K, multiplied as T·Wᵀ); the arithmetic is the same, the BLAS kernels are not.
#     Measured with MKL on two cores, K from 128 to 1024: with r < 16, W·T runs 2–4× slower
#     than T·Wᵀ; with r ≥ 16, W·T is 10–25% faster. A lone tangent of one input is a row
#     too, like the primal row it follows (NOTE: [One input as a row]), and its product
#     goes to the kernel tuned for one row: as a column it cost two views and a column
#     view of Σ_k per layer, and on small nets (Xeon, L=8 K=16–64) D = 1 ran 1.35× slower
#     than D = 2. (Reverse mode's rows, U·W, were as fast or faster than the column form
#     at every size.)
FORWARD_COLUMNS_MIN = 16


# NOTE: [The primal stacked on the tangents]
#     Forward mode on one input reads each hidden weight twice: the primal step W_k·h, then
#     the tangent step T·W_kᵀ. Where the weight stays in cache between the two the second
#     read is cheap; where it does not (a 1000×1000 float32 weight is 4 MB, more than a
#     core's L2) the two cost about two reads. With h stacked on top of the r tangent rows
#     one product of 1 + r rows reads W_k once: on an Intel Xeon (two cores), L=5 D=1
#     K=1000 P=1000 took 862 µs with two products and 551 µs stacked. Where the weight
#     stays in cache the copy and the wider block's kernel can lose instead (D=3, K=600:
#     512 → 581 µs), so whether to stack is measured per class on the machine at hand
#     (``jacbench.measure.tuning``), layer by layer. The products and FLOPs are the same.


def _forward_stacked(net: MLP, x: Tensor) -> Tensor:
    """Forward mode on one input, D < NARROW_BLOCK tangents as rows, each hidden layer's
    primal step stacked on its tangent step where the tuning says so (NOTE: [The primal
    stacked on the tangents])."""
    tuned = tuning.active()
    layers = zip(net.weights, net.transposed_weights, net.biases, net.activations)
    w, wt, b, act = next(layers)
    h, saved = _activate(_primal_step(x.view(1, -1), w, wt, b, tuned), act, tuned)
    block = act.times_derivative(wt, saved)  # the tangents start as W_1ᵀ's rows
    for w, wt, b, act in layers:
        if _stacks(tuned, w, block.shape[0]):
            both = _times(torch.cat((h, block)), wt, columns=False)
            z, product = both[:1], both[1:]
            z = z if b is None else z.add_(b)
        else:
            z = _primal_step(h, w, wt, b, tuned)
            product = _times(block, wt, columns=False)
        h, saved = _activate(z, act, tuned)
        block = act.times_derivative(product, saved)
    return _times(block, net.transposed_weights[-1], columns=False).T


def _stacks(tuned: tuning.Tuning, weight: Tensor, rows: int) -> bool:
    elements = weight.numel()
    return elements >= TUNED_MIN_ELEMENTS and tuned.stacks_primal(rows, narrow_size(elements))


def _stacks_any(net: MLP, x: Tensor) -> bool:
    """Whether forward mode stacks any primal step of this one input (on the CPU)."""
    # The cheap tests first: on a small net this runs on every call.
    if x.ndim != 1 or net.d_in >= NARROW_BLOCK or not _has_tuned_hidden(net.widths) or not x.is_cpu:
        return False
    tuned = tuning.active()
    return any(_stacks(tuned, w, net.d_in) for w in net.weights[1:-1])


@functools.lru_cache(maxsize=1024)
def _has_tuned_hidden(widths: tuple[int, ...]) -> bool:
    """Whether a hidden-to-hidden weight is large enough for the tuned kernels."""
    hidden = widths[1:-1]
    return any(a * b >= TUNED_MIN_ELEMENTS for a, b in zip(hidden[:-1], hidden[1:]))


def _chains(net: MLP, x: Tensor, forward: bool) -> bool:
    """Whether one input's Jacobian runs as one C++ call (NOTE: [The reverse chain in one
    call] in ``jacbench.kernels.native``): a float32 network on the CPU with few enough rows,
    every product of the chain that the tuning measures (a weight of at least
    TUNED_MIN_ELEMENTS, one at least) given to the C++ kernels on this machine."""
    if x.ndim != 1 or x.dtype != torch.float32 or not x.is_cpu:
        return False
    classes = _chain_classes(net.widths, forward)  # cached: the common refusal costs nothing
    if not classes:
        return False
    tuned = tuning.active()
    return all(tuned.narrow_kernel(*way) == "native" for way in classes)


@functools.lru_cache(maxsize=1024)
def _chain_classes(widths: tuple[int, ...], forward: bool) -> tuple[tuple[bool, int, int], ...]:
    """The tuning's classes (orientation, rows, size) of a chain's measured products; empty
    where no chain takes these widths (too many rows, or no weight the tuning measures)."""
    d, p = widths[0], widths[-1]
    rows = d + 1 if forward else p  # forward: the primal row on the tangents
    if rows > native.MAX_ROWS:
        return ()
    shapes = list(zip(widths[1:], widths[:-1]))  # each weight's (rows, columns)
    ways = set()
    for k, (n, m) in enumerate(shapes if forward else shapes[:-1]):
        if n * m < TUNED_MIN_ELEMENTS:
            continue
        size = narrow_size(n * m)
        if forward:  # W_1 takes x alone, W_F the tangents alone
            ways.add((True, 1 if k == 0 else d if k == len(shapes) - 1 else rows, size))
        else:  # the primal row, then the P adjoints
            ways.update({(True, 1, size), (False, rows, size)})
    return tuple(sorted(ways))


def _forward(net: MLP, x: Tensor, chunk_size: int | None) -> Tensor:
    tangents = net.d_in if chunk_size is None else min(chunk_size, net.d_in)
    if tangents == net.d_in and _chains(net, x, forward=True) and net.native_chain is not None:
        chained = net.native_chain.forward(x)
        if chained is not None:
            return chained
    if tangents == net.d_in and _stacks_any(net, x):
        return _forward_stacked(net, x)
    columns = tangents >= FORWARD_COLUMNS_MIN
    first, *rest = net.weights if columns else net.transposed_weights
    if x.ndim == 2:
        scale: Callable[[Tensor], Tensor] | None = _scaling_rows if columns else _scaling_columns
    else:  # one input's rows scale a block of rows as they are
        scale = _as_column if columns else None
    if tangents == net.d_in:
        # One pass: each layer's primal step and tangent step read W_k back to back,
        # the second time from cache (zip draws the slope before the product).
        ws = workspace("jacobian forward", net, x) if x.ndim == 2 else None
        slopes = _slopes(net, x, scale, ws)
        jac = _sweep(first, slopes, rest, columns, ws)
    else:
        kept = list(_slopes(net, x, scale))
        parts = _chunks(net.d_in, chunk_size)
        starts = [first[:, cols] if columns else first[cols] for cols in parts]
        blocks = [_sweep(start, kept, rest, columns) for start in starts]
        jac = torch.cat(blocks, dim=-1 if columns else -2)
    return jac if columns else jac.transpose(-1, -2)


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

    >>> from jacbench import make_mlp
    >>> net = make_mlp(depth=3, d_in=4, width=8, d_out=2)
    >>> jacobian_reverse(net, torch.ones(4)).shape
    torch.Size([2, 4])
    """
    _check_chunk_size(chunk_size)
    return _run(_reverse, net, x, chunk_size)


def _reverse(net: MLP, x: Tensor, chunk_size: int | None) -> Tensor:
    whole = chunk_size is None or chunk_size >= net.d_out
    if whole and _chains(net, x, forward=False) and net.native_chain is not None:
        chained = net.native_chain.reverse(x)
        if chained is not None:
            return chained
    *rest, last = net.weights
    batched = x.ndim == 2
    ws = workspace("jacobian reverse", net, x) if batched else None
    slopes = list(_slopes(net, x, _scaling_columns if batched else None, ws))
    slopes.reverse()
    if chunk_size is None or chunk_size >= net.d_out:  # the common case, without list-building
        return _sweep(last, slopes, rest[::-1], columns=False, ws=ws)
    parts = _chunks(net.d_out, chunk_size)
    blocks = [_sweep(last[rows], slopes, rest[::-1], columns=False) for rows in parts]
    return torch.cat(blocks, dim=-2)


def _evaluate(tree: cost.Bracketing, weights: Sequence[Tensor], slopes: Sequence[Slope]) -> Tensor:
    """The product M_j Σ_{j-1} ⋯ Σ_i M_i that ``tree`` brackets (2-D only for a lone weight)."""
    if isinstance(tree, int):
        return weights[tree - 1]
    left_tree, right_tree = tree
    left = _evaluate(left_tree, weights, slopes)
    right = _evaluate(right_tree, weights, slopes)
    times_slope, saved = slopes[cost.span(right_tree)[1] - 1]  # Σ_k: between M_{k+1} and M_k
    # Scale whichever operand is smaller (per sample): the cost model counts the same.
    if left.shape[-2] <= right.shape[-1]:
        left = times_slope(left, _scaling_columns(saved))
    else:
        right = times_slope(right, _scaling_rows(saved))
    # An unscaled lone weight on either side makes this one step of a sweep: let _times
    # pick the kernel (a vector product for a lone row or column).
    if isinstance(right_tree, int) and right.ndim == 2:
        return _times(left, right, columns=False)
    if isinstance(left_tree, int) and left.ndim == 2:
        return _times(right, left, columns=True)
    return torch.matmul(left, right)


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
    return _run(_mixed, net, x, None)


def _mixed(net: MLP, x: Tensor, chunk_size: int | None) -> Tensor:
    # chunk_size is always None: the signature is the other routines', for _ROUTINES.
    _, tree = cost.chain_order(net.widths)
    slopes = list(_slopes(net, x, _as_vector if x.ndim == 1 else None))
    return _evaluate(tree, net.weights, slopes)


def jacobian(
    net: MLP | Callable[[Tensor], Tensor],
    x: Tensor,
    mode: str = "auto",
    *,
    chunk_size: int | None = None,
) -> Tensor:
    """The input Jacobian by ``mode``: "forward", "reverse", "mixed", or "auto".

    For an ``MLP``, "auto" runs the mode ``cost.plan(net.widths, batch)`` predicts
    fastest; on a CUDA device it replays that mode as a CUDA graph from the second call
    with an input of the same shape (NOTE: [Auto replays CUDA graphs]). ``chunk_size``
    applies to the pure modes only. Shapes as in the module docstring.

    Any other module or function of x (one sample (D,) → (P,), a batch (B, D) → (B, P))
    goes to ``jacbench.ad.generic.jacobian_of``: "forward" or "reverse" through
    ``torch.func``, "auto" the mode its counted JVP and VJP say (``plan_of``).

    >>> from jacbench import make_mlp
    >>> net = make_mlp(depth=2, d_in=5, width=8, d_out=1)
    >>> jacobian(net, torch.ones(3, 5)).shape
    torch.Size([3, 1, 5])
    >>> jacobian(torch.nn.Linear(5, 2), torch.ones(5)).shape
    torch.Size([2, 5])
    """
    if not isinstance(net, MLP):
        return generic.jacobian_of(net, x, mode, chunk_size=chunk_size)
    if mode == "auto":
        _check_input(net, x)
        if _batch_size(x) == 0:
            return _empty_jacobian(net, x)
        mode = _predicted_mode(net.widths, _batch_size(x))
        if chunk_size is None:
            if x.is_cuda:
                replayed = _replay_graph(net, x, mode)
                if replayed is not None:
                    return replayed
            return _run_checked(_ROUTINES[mode], net, x, None)
    if mode not in _ROUTINES:
        raise ValueError(f"unknown mode {mode!r}; expected one of: {', '.join(JACOBIAN_MODES)}")
    _check_chunk_size(chunk_size)  # mixed mode takes none, but a bad one is still bad
    if mode == "mixed":
        return _run(_mixed, net, x, None)
    return _run(_ROUTINES[mode], net, x, chunk_size)


def auto_routine(net: MLP, x: Tensor) -> Callable[[Tensor], Tensor]:
    """The routine ``jacobian(net, x, "auto")`` runs, as a plain function of an input like x.

    It skips input checks and thread handling: made for ``torch.compile`` and CUDA-graph
    capture, which want one function of one tensor.
    """
    _check_input(net, x)
    routine = _ROUTINES[_predicted_mode(net.widths, _batch_size(x))]

    def call(inputs: Tensor) -> Tensor:
        return routine(net, inputs, None)

    return call


def capture_jacobian(net: MLP, x: Tensor, mode: str = "auto") -> graphs.CapturedCall:
    """``jacobian(net, ·, mode)`` captured as a CUDA graph for inputs shaped like x.

    Capture once, then call the result with any input of x's shape and dtype: it replays
    every kernel of the Jacobian with one launch (NOTE: [CUDA graphs for launch-bound
    Jacobians] in ``jacbench.ad.graphs``) and returns a new tensor, as ``jacobian`` does.
    ``.replay()`` skips the copies in and out: it computes from ``.input`` into ``.output``.
    The graph reads the network's weights where they lie: in-place changes are seen.

    Raises:
        ValueError: x is not on a CUDA device, or an unknown mode.

    Example (on a CUDA device)::

        jac = capture_jacobian(net, x)   # x of shape (D,) or (B, D) on the GPU
        J = jac(x_new)                   # same shape as x: one replay
    """
    _check_input(net, x)
    if x.device.type != "cuda":
        raise ValueError("CUDA graphs need a CUDA device (--device cuda)")
    if mode == "auto":
        mode = _predicted_mode(net.widths, _batch_size(x))
    if mode not in _ROUTINES:
        raise ValueError(f"unknown mode {mode!r}; expected one of: {', '.join(JACOBIAN_MODES)}")
    routine = _ROUTINES[mode]
    return graphs.CapturedCall(lambda inputs: routine(net, inputs, None), x, _tensors_of(net))


# NOTE: [Auto replays CUDA graphs]
#     On a CUDA device ``jacobian(mode="auto")`` keeps, per network, the graphs of the last
#     GRAPHS_PER_NETWORK input shapes it was called with twice: the first call of a shape
#     runs eagerly (a shape seen once may never come again, and a capture costs about
#     WARMUP_CALLS + 1 calls), the second captures, later ones replay. Each graph holds its
#     intermediates for as long as it is kept, so a shape whose mode is estimated to need
#     more than GRAPH_MEMORY_BYTES runs eagerly, as does any call that cannot be captured
#     (graphs.capturable: autograd to record, a torch.func transform, a capture or compile
#     already under way). A graph whose network's tensors have moved is captured again; a
#     network's graphs go when the network does. Replaying removes the per-kernel launch
#     cost that sets the time of every shape measured so far (NOTE: [CUDA graphs for
#     launch-bound Jacobians]); the copies in and out cost two kernels.
GRAPHS_PER_NETWORK = 4
GRAPH_MEMORY_BYTES = 256 * 2**20
SEEN_SHAPES = 64  # shapes seen once that a network remembers


class _NetworkGraphs:
    """One network's shapes seen once and its captured graphs, least recently used first."""

    def __init__(self) -> None:
        self.seen: set[tuple] = set()
        self.graphs: collections.OrderedDict[tuple, graphs.CapturedCall] = collections.OrderedDict()


_GRAPHS: dict[int, _NetworkGraphs] = {}
_GRAPHS_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1024)
def _fits_a_graph(widths: tuple[int, ...], mode: str, batch: int, dtype: torch.dtype) -> bool:
    return cost.memory_bytes(widths, mode, batch, dtype) <= GRAPH_MEMORY_BYTES


def _tensors_of(net: MLP) -> tuple[Tensor, ...]:
    return (*net.weights, *(b for b in net.biases if b is not None))


def _replay_graph(net: MLP, x: Tensor, mode: str) -> Tensor | None:
    """J from a replayed graph of ``mode``; None where auto runs eagerly this time."""
    if not _fits_a_graph(net.widths, mode, _batch_size(x), x.dtype):
        return None
    if not graphs.capturable(x, *_tensors_of(net)):
        return None
    key = (mode, tuple(x.shape), x.dtype, x.device)
    with _GRAPHS_LOCK:
        kept = _GRAPHS.get(id(net))
        if kept is None:
            kept = _GRAPHS[id(net)] = _NetworkGraphs()
            weakref.finalize(net, _GRAPHS.pop, id(net), None)
        graph = kept.graphs.get(key)
        if graph is not None and graph.current:
            kept.graphs.move_to_end(key)
            return graph(x)
        if graph is None and key not in kept.seen:
            if len(kept.seen) >= SEEN_SHAPES:  # a caller whose shapes never repeat
                kept.seen.clear()
            kept.seen.add(key)
            return None
        kept.graphs[key] = graph = capture_jacobian(net, x, mode)
        kept.graphs.move_to_end(key)
        while len(kept.graphs) > GRAPHS_PER_NETWORK:
            kept.graphs.popitem(last=False)
        return graph(x)


# The unchecked routine of each mode: (net, x, chunk_size) → J.
_ROUTINES: dict[str, Callable[[MLP, Tensor, int | None], Tensor]] = {
    "forward": _forward,
    "reverse": _reverse,
    "mixed": _mixed,
}
# The pure modes' routines, by mode: a small network may take the NumPy route instead.
_SMALL_MODES: dict[Callable, str] = {_forward: "forward", _reverse: "reverse"}


def _batch_size(x: Tensor) -> int:
    return x.shape[0] if x.ndim == 2 else 1


@functools.lru_cache(maxsize=1024)
def _predicted_mode(widths: tuple[int, ...], batch: int) -> str:
    return cost.plan(widths, batch).mode


# NOTE: [One thread for small problems]
#     Below about a megaflop a Jacobian is a few dozen tiny kernels, and waking a second
#     intra-op thread for each costs more than it saves: on two cores the textbook case
#     (L=10, D=2, K=30, P=10) runs about 15% faster on one. The same holds for one input
#     through weights that are all below the tuned size (TUNED_MIN_ELEMENTS, K up to 181
#     for square layers), however many FLOPs: every product is then a few microseconds.
#     Measured on an Intel Xeon (two cores), one input, L = 3/8, K = 96–181, 1–8 MFLOP:
#     one thread 0–29% faster in both modes (L=8 K=128 D=P=16: forward 120 → 94 µs,
#     reverse 108 → 77 µs); at K = 256 two threads were up to 2× faster for forward mode's
#     few-row products, so the rule stops below it. Such calls run the C++ chain with a
#     team of one, or torch's operations on one thread of the calling Python thread for
#     their duration, whatever happens (NOTE: [One thread for this call only]; the megaflop
#     is cost.LAUNCH_BOUND_FLOPS, below which the cost model also stops counting FLOPs).


@functools.lru_cache(maxsize=1024)
def _is_small(widths: tuple[int, ...], batch: int) -> bool:
    if batch == 1 and max(a * b for a, b in zip(widths, widths[1:])) < TUNED_MIN_ELEMENTS:
        return True
    return min(cost.plan(widths, batch).flops.values()) < cost.LAUNCH_BOUND_FLOPS


def _run(compute, net: MLP, x: Tensor, chunk_size: int | None) -> Tensor:
    """Check the input, then ``compute(net, x, chunk_size)`` on fitting threads, or by the
    NumPy route where this machine runs a small network faster that way."""
    _check_input(net, x)
    return _run_checked(compute, net, x, chunk_size)


def _run_checked(compute, net: MLP, x: Tensor, chunk_size: int | None) -> Tensor:
    """``_run`` without the input check, for a caller that has made it."""
    if _batch_size(x) == 0:
        return _empty_jacobian(net, x)
    if not x.is_cpu or not _is_small(net.widths, _batch_size(x)):
        return compute(net, x, chunk_size)
    mode = _SMALL_MODES.get(compute)
    # The routes first: the tuning a process reads first is the one for its thread count.
    routes = tuning.active().small_routes(mode) if mode is not None and x.ndim == 1 else ()
    for route in routes:
        done = _small_route(route, mode, net, x)  # type: ignore[arg-type]
        if done is not None:
            return done
    with team.one_thread():  # this Python thread's only (NOTE: [One thread for this call only])
        return compute(net, x, chunk_size)


def _empty_jacobian(net: MLP, x: Tensor) -> Tensor:
    """An empty batch's Jacobian, (0, P, D), as torch.func gives it: nothing to plan."""
    return x.new_zeros((0, net.d_out, net.d_in))


def _small_route(route: str, mode: str, net: MLP, x: Tensor) -> Tensor | None:
    """One input's Jacobian through a small network by ``route`` ("native": the C++ chain,
    "numpy"), None where that route does not take this network (or for "torch": the
    routine's own products)."""
    if route == "native":
        chain = net.native_chain
        if chain is not None:
            # A team of one: no barriers (NOTE: [One thread for small problems])
            return chain.forward(x, threads=1) if mode == "forward" else chain.reverse(x, threads=1)
    elif route == "numpy":
        arrays = net.numpy_network
        if arrays is not None and small.takes(arrays, x):
            return small.forward(arrays, x) if mode == "forward" else small.reverse(arrays, x)
    return None


def reference_jacobian(
    net: MLP | Callable[[Tensor], Tensor], x: Tensor, method: str = "jacrev"
) -> Tensor:
    """The input Jacobian from ``torch.func.jacrev`` or ``jacfwd`` (vmap over a batch), of
    jacbench's MLP or of any module or function of x.

    This is independent of jacbench's routines: torch differentiates ``net(x)`` itself.
    For a trustworthy reference pass a float64 network and input.
    """
    if method not in REFERENCE_METHODS:
        raise ValueError(
            f"unknown reference method {method!r}; expected one of: {', '.join(REFERENCE_METHODS)}"
        )
    if isinstance(net, MLP):
        _check_input(net, x)
    transform = torch.func.jacrev if method == "jacrev" else torch.func.jacfwd
    single = transform(net)
    return single(x) if x.ndim == 1 else torch.func.vmap(single)(x)


def _as_float64(array) -> Tensor:
    if isinstance(array, Tensor):
        return array.detach().to("cpu", torch.float64)
    return torch.from_numpy(np.asarray(array).astype(np.float64))  # e.g. a JAX array


def relative_error(jac, reference) -> float:
    """max |J − J_ref| / max |J_ref|, computed in float64 (0 when both are 0).

    Either argument may be a tensor or any array NumPy can read (a JAX result, say).
    """
    jac64, ref64 = _as_float64(jac), _as_float64(reference)
    if jac64.shape != ref64.shape:
        raise ValueError(f"shapes differ: {tuple(jac64.shape)} vs {tuple(ref64.shape)}")
    scale = ref64.abs().max().item() if ref64.numel() else 0.0
    err = (jac64 - ref64).abs().max().item() if ref64.numel() else 0.0
    if scale == 0.0:
        return 0.0 if err == 0.0 else float("inf")
    return err / scale
