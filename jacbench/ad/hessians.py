"""Second order: Hessians, Hessian-vector products and Laplacians of an MLP by mode composition.

Shape rule, as for the Jacobians: for x of shape (D,) the Hessian of every output is
(P, D, D) (H[p, i, j] = ∂²f_p/∂x_i∂x_j, the P axis kept when P = 1, as the Jacobians keep
it), ``hvp`` gives (P, D) and ``laplacian`` (P,); a batch x of shape (B, D) puts B in
front. Results have x's dtype and device.

Notation (one sample; NOTE: [Second order of a chain]): z_k = W_k·h_{k-1} + b_k,
h_k = σ(z_k) for k = 1..L, f = W_F·h_L + b_F. Row layouts throughout: the tangents
T_k = ∂z_k/∂x are carried as D rows of length K_k, T_1 = W_1ᵀ (no product), T_k =
(σ'(z_{k-1}) ⊙ T_{k-1})·W_kᵀ; the adjoints A_k = ∂f/∂h_k as P rows, A_L = W_F (no product),
A_{k-1} = (A_k ⊙ σ'(z_k))·W_k.

Modes of ``hessian`` (``HESSIAN_MODES``):

- ``fwd-over-rev``: forward mode through the reverse sweep. The adjoint rows carry D
  tangents each: Ȧ_{k-1} = (Ȧ_k ⊙ σ'_k + A_k ⊙ σ''_k ⊙ T_k)·W_k, H = (…)_1·W_1.
- ``rev-over-rev``: reverse mode through the gradient: the adjoints first, then one sweep
  up making T_k and the seeds z̄_k = A_k ⊙ σ''_k ⊙ T_k, then one sweep down,
  R_{k-1} = z̄_{k-1} + σ'_{k-1} ⊙ (R_k·W_k). For an MLP it does the very products of
  fwd-over-rev (the sweep down is Ȧ's recurrence); it keeps the P·D seed rows of every
  layer instead of the D tangent rows, so it needs more memory and never wins on time.
- ``rev-over-fwd``: reverse mode through the forward tangent pass: the D tangent rows up
  first, then the adjoint rows and their D-fold derivative rows down together,
  R_{k-1} = z̄_{k-1} + σ'_{k-1} ⊙ (R_k·W_k) with A_{k-1} made on the way. The same products
  again; it keeps the tangent rows of every layer, not the adjoint rows.
- ``fwd-over-fwd``: second-order forward propagation: every unit carries its gradient and
  its D×D Hessian, Q_{k+1} = (σ''_k ⊙ T_k T_kᵀ + σ'_k ⊙ Q_k)·W_{k+1}ᵀ. D² tangents per unit.
- ``structured``: H = Σ_k T_kᵀ·diag(A_k ⊙ σ''(z_k))·T_k: the Hessian of an MLP as a sum
  over its layers; one product of D×K by K×D per layer and output.
- ``auto``: the mode the cost model predicts fastest (``cost.plan_second_order``).

``laplacian`` methods: ``forward-laplacian`` (value, D tangent rows and the Laplacian
carried layer by layer: Δh_k = σ''_k ⊙ Σ_d T_k[d]² + σ'_k ⊙ Δz_k, Δz_{k+1} = Δh_k·W_{k+1}ᵀ),
``hessian-trace`` (the trace of ``hessian(mode="auto")``), and ``hutchinson``: the same
propagation with S random ±1 directions instead of the D unit ones, an unbiased estimate
(not exact: reported apart).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import Tensor

from jacbench.ad import cost
from jacbench.ad.jacobians import _check_input
from jacbench.ad.networks import MLP
from jacbench.ad.workspace import Workspace, records, take, workspace
from jacbench.kernels.eager import plain_eager

HESSIAN_MODES = (
    "fwd-over-rev",
    "rev-over-rev",
    "rev-over-fwd",
    "fwd-over-fwd",
    "structured",
    "auto",
)
LAPLACIAN_METHODS = ("forward-laplacian", "hessian-trace", "hutchinson")
EXACT_LAPLACIAN_METHODS = ("forward-laplacian", "hessian-trace")


class _Primal:
    """One primal pass of a batch (B, D): per layer z_k's σ'(z_k) and σ''(z_k), (B, K_k);
    its tensors are the workspace's ``ws`` where one is given (NOTE: [Buffers reused from
    call to call] in ``jacbench.ad.workspace``)."""

    def __init__(self, net: MLP, x: Tensor, ws: Workspace | None = None) -> None:
        self.ws = ws
        self.first: list[Tensor] = []
        self.second: list[Tensor] = []
        h = x
        for k, (w, b, act) in enumerate(zip(net.weights, net.biases, net.activations)):
            shape = (h.shape[0], w.shape[0])
            if ws is None:
                z = torch.nn.functional.linear(h, w, b)
                h, first, second = act.evaluate(z)
            else:  # as F.linear computes it: addmm with a bias, mm without
                into = ws.take(("z", k), shape)
                z = torch.mm(h, w.T, out=into) if b is None else torch.addmm(b, h, w.T, out=into)
                buffers = (ws.take(("h", k), shape), ws.take(("σ'", k), shape))
                h, first, second = act.evaluate(z, (*buffers, ws.take(("σ''", k), shape)))
            assert second is not None
            self.first.append(first)
            self.second.append(second)


def _as_batch(net: MLP, x: Tensor) -> tuple[Tensor, bool]:
    _check_input(net, x)
    return (x, True) if x.ndim == 2 else (x[None], False)


def _per_sample(result: Tensor, batch: int, batched: bool) -> Tensor:
    """A routine's (B or 1, …) result as the caller's shape: one block per sample (where
    nothing depended on the batch, σ'' ≡ 0 say, the one block stands for all), without
    the batch axis for an unbatched x."""
    if result.shape[0] != batch:
        result = result.expand(batch, *result.shape[1:])
    return result if batched else result[0]


def _scaled_product(
    ws: Workspace | None, name: str, k: int, rows: Tensor, slope: Tensor, weight: Tensor
) -> Tensor:
    """(rows ⊙ slope)·weight for rows (B or 1, m, K) and a slope (B, 1, K): the step of every
    tangent and adjoint sweep, into the workspace's buffers where there is one: the
    product, kept, in layer k's; the scaled rows, used at once, in one of two taken in turn
    (still in the cores' caches, as a fresh allocation's memory would be)."""
    scaled_shape = torch.broadcast_shapes(rows.shape, slope.shape)
    scaled = torch.mul(rows, slope, out=take(ws, (name, "scaled", k % 2), scaled_shape))
    product_shape = (*scaled_shape[:-1], weight.shape[-1])
    return torch.matmul(scaled, weight, out=take(ws, (name, k), product_shape))


def _tangents(net: MLP, primal: _Primal, first: Tensor | None) -> list[Tensor]:
    """T_k = ∂z_k/∂x·V as rows (B or 1, m, K_k); ``first`` is T_1 (None: V = I, T_1 = W_1ᵀ)."""
    # W_1ᵀ made contiguous: a transposed view would give every product below a strided
    # (B, D, K) operand, which matmul copies first (12 ms against 3 at L=6 D=2 K=64 B=4096).
    rows = net.weights[0].T.contiguous()[None] if first is None else first
    tangents = [rows]
    for k in range(1, net.depth):
        slope = primal.first[k - 1][:, None, :]
        rows = _scaled_product(primal.ws, "T", k, rows, slope, net.weights[k].T)
        tangents.append(rows)
    return tangents


def _adjoints_down(net: MLP, primal: _Primal) -> Iterator[Tensor]:
    """A_k = ∂f/∂h_k as P rows, (B or 1, P, K_k), made one at a time on the way down:
    A_L = W_F, then A_{L-1}, …, A_1."""
    rows = net.weights[-1][None]
    yield rows
    for k in range(net.depth - 1, 0, -1):
        slope = primal.first[k][:, None, :]
        rows = _scaled_product(primal.ws, "A", k, rows, slope, net.weights[k])
        yield rows


def _adjoints(net: MLP, primal: _Primal) -> list[Tensor]:
    """A_k for k = 1..L, all kept."""
    return list(_adjoints_down(net, primal))[::-1]


def _seeds(
    adjoint: Tensor, second: Tensor, tangents: Tensor, ws: Workspace | None = None, k: int = 0
) -> Tensor:
    """A_k ⊙ σ''(z_k) ⊙ T_k as (B, P, m, K_k): each output's adjoint row, scaled by σ'', times
    each tangent row; the term of layer k in every mode's Hessian (NOTE: [Second order of a
    chain]). With a workspace, in one of two buffers taken in turn: the caller uses them
    before it asks for the next layer's."""
    weighted_shape = torch.broadcast_shapes(adjoint.shape, second[:, None, :].shape)
    weighted = torch.mul(adjoint, second[:, None, :], out=take(ws, "a σ''", weighted_shape))
    left, right = weighted[:, :, None, :], tangents[:, None]
    shape = torch.broadcast_shapes(left.shape, right.shape)
    return torch.mul(left, right, out=take(ws, ("seeds", k % 2), shape))


def _fwd_over_rev(net: MLP, primal: _Primal, tangents: list[Tensor]) -> Tensor:
    """Forward mode through the reverse sweep: (B, P, m, D), the Hessian times each of the
    m directions whose tangent rows ``tangents`` carries."""
    adjoints = _adjoints(net, primal)
    ws = primal.ws
    dot = None  # Ȧ_L = 0: W_F does not depend on x
    for k in range(net.depth - 1, -1, -1):
        seeds = _seeds(adjoints[k], primal.second[k], tangents[k], ws, k)
        if dot is None:
            scaled = seeds
        else:
            slope = primal.first[k][:, None, None, :]
            shape = torch.broadcast_shapes(dot.shape, slope.shape)
            scaled = torch.mul(dot, slope, out=take(ws, ("Ȧ scaled", k % 2), shape)).add_(seeds)
        # The last product is the result: never a workspace buffer.
        shape = (*scaled.shape[:-1], net.weights[k].shape[-1])
        dot = torch.matmul(scaled, net.weights[k], out=take(ws if k else None, ("Ȧ", k % 2), shape))
    assert dot is not None
    return dot


def _sweep_down(net: MLP, primal: _Primal, seeds: Iterable[Tensor]) -> Tensor:
    """The reverse modes' sweep down: R_L = z̄_L, R_{k-1} = z̄_{k-1} + σ'_{k-1} ⊙ (R_k·W_k),
    H = R_1·W_1; ``seeds`` gives z̄_L, …, z̄_1 in that order (kept or made as it goes)."""
    down = iter(seeds)
    rows = next(down)
    for k, seed in zip(range(net.depth - 1, 0, -1), down):
        rows = seed + primal.first[k - 1][:, None, None, :] * (rows @ net.weights[k])
    return rows @ net.weights[0]


def _rev_over_rev(net: MLP, primal: _Primal) -> Tensor:
    """Reverse mode through the gradient: adjoints, a sweep up keeping the seeds, a sweep down."""
    adjoints = _adjoints(net, primal)
    tangents = _tangents(net, primal, None)
    seeds = [_seeds(a, s, t) for a, s, t in zip(adjoints, primal.second, tangents)]
    return _sweep_down(net, primal, reversed(seeds))


def _rev_over_fwd(net: MLP, primal: _Primal) -> Tensor:
    """Reverse mode through the forward pass of the tangents: tangents up, then the adjoint
    rows and the seeds made as the sweep goes down, none kept."""
    tangents = _tangents(net, primal, None)
    layers = range(net.depth - 1, -1, -1)
    seeds = (
        _seeds(adjoint, primal.second[k], tangents[k])
        for k, adjoint in zip(layers, _adjoints_down(net, primal))
    )
    return _sweep_down(net, primal, seeds)


def _fwd_over_fwd(net: MLP, primal: _Primal) -> Tensor:
    """Second-order forward propagation: each unit's gradient rows and D×D Hessian."""
    rows = net.weights[0].T.contiguous()[None]  # (1, D, K_1), contiguous as in _tangents
    hessian: Tensor | None = None  # ∂²z_1/∂x² = 0
    for k in range(net.depth):
        first, second = primal.first[k], primal.second[k]
        outer = rows[:, :, None, :] * rows[:, None, :, :]  # (B, D, D, K_k)
        h_hessian = second[:, None, None, :] * outer
        if hessian is not None:
            h_hessian = h_hessian + first[:, None, None, :] * hessian
        hessian = h_hessian @ net.weights[k + 1].T  # (B, D, D, K_{k+1}); at k = L: P
        if k + 1 < net.depth:
            rows = (first[:, None, :] * rows) @ net.weights[k + 1].T
    assert hessian is not None
    return hessian.permute(0, 3, 1, 2)


def _structured(net: MLP, primal: _Primal) -> Tensor:
    """H = Σ_k T_kᵀ·diag(A_k ⊙ σ''_k)·T_k."""
    adjoints = _adjoints(net, primal)
    tangents = _tangents(net, primal, None)
    total = None
    for k, (a, s, t) in enumerate(zip(adjoints, primal.second, tangents)):
        term = _seeds(a, s, t, primal.ws, k) @ t[:, None].transpose(-1, -2)  # (B, P, D, D)
        total = term if total is None else total.add_(term)
    assert total is not None
    return total


_HESSIAN_ROUTINES = {
    "fwd-over-rev": lambda net, primal: _fwd_over_rev(net, primal, _tangents(net, primal, None)),
    "rev-over-rev": _rev_over_rev,
    "rev-over-fwd": _rev_over_fwd,
    "fwd-over-fwd": _fwd_over_fwd,
    "structured": _structured,
}


def _check_mode(mode: str, modes: Sequence[str], what: str) -> None:
    if mode not in modes:
        raise ValueError(f"unknown {what} {mode!r}; expected one of: {', '.join(modes)}")


def hessian(net: MLP, x: Tensor, mode: str = "auto") -> Tensor:
    """The Hessian of every output with respect to the input: (P, D, D), or (B, P, D, D).

    >>> from jacbench import make_mlp
    >>> net = make_mlp(depth=2, d_in=3, width=8, d_out=2, dtype=torch.float64)
    >>> hessian(net, torch.ones(3, dtype=torch.float64), mode="structured").shape
    torch.Size([2, 3, 3])
    """
    _check_mode(mode, HESSIAN_MODES, "Hessian mode")
    xb, batched = _as_batch(net, x)
    if mode == "auto":
        mode = cost.plan_second_order(net.widths, xb.shape[0]).hessian_mode
    primal = _Primal(net, xb, workspace(f"hessian {mode}", net, xb))
    result = _HESSIAN_ROUTINES[mode](net, primal)
    return _per_sample(result, xb.shape[0], batched)


def hvp(net: MLP, x: Tensor, v: Tensor) -> Tensor:
    """Hessian-vector products H_p·v of every output (forward over reverse): (P, D), or
    (B, P, D) for a batch x with v of shape (D,) or (B, D)."""
    xb, batched = _as_batch(net, x)
    wrong_batch = v.ndim == 2 and v.shape[0] != xb.shape[0]
    if v.shape[-1] != net.d_in or v.ndim > xb.ndim or v.dtype != x.dtype or wrong_batch:
        raise ValueError(f"v must have x's dtype and shape (D,) or (B, D), got {tuple(v.shape)}")
    vb = v.expand(xb.shape[0], net.d_in)  # one direction per sample
    primal = _Primal(net, xb, workspace("hvp", net, xb, v))
    first = (vb @ net.weights[0].T)[:, None, :]  # T_1·v as one row per sample
    result = _fwd_over_rev(net, primal, _tangents(net, primal, first))[:, :, 0, :]
    return _per_sample(result, xb.shape[0], batched)


def _forward_laplacian(net: MLP, primal: _Primal, rows: Tensor) -> Tensor:
    """Σ over the tangent ``rows`` (T_1 as (m, B or 1, K_1): direction-major) of their second
    directional derivatives: the Laplacian when the rows are W_1ᵀ, (B, P).

    Each layer's m scaled tangent rows and its Laplacian row share one buffer (m + 1, B, K),
    so one product with W_{k+1}ᵀ carries both: NOTE: [The forward Laplacian in one product].
    """
    batch = primal.first[0].shape[0]
    lap = None  # Δz_1 = 0
    for k in range(net.depth):
        first, second = primal.first[k], primal.second[k]
        m = rows.shape[0]
        shape = (m + 1, batch, first.shape[-1])
        carried = take(primal.ws, ("carried", k % 2), shape)  # two buffers in turn
        if carried is None:
            carried = torch.empty(shape, dtype=first.dtype, device=first.device)
        h_lap = carried[m]
        if rows.shape[1] == batch:
            _sum_of_squares(rows, out=h_lap).mul_(second)
        else:  # the first layer's rows, W_1ᵀ, are the same for every sample
            torch.mul(rows.square().sum(0), second, out=h_lap)
        if lap is not None:
            h_lap.addcmul_(first, lap)
        if k + 1 == net.depth:
            return h_lap @ net.weights[-1].T
        torch.mul(rows, first, out=carried[:m])
        stacked = carried.view(-1, carried.shape[-1])
        product = take(
            primal.ws, ("carried up", k % 2), (stacked.shape[0], net.weights[k + 1].shape[0])
        )
        width = net.weights[k + 1].shape[0]  # not -1: an empty batch has no size to infer
        out = torch.mm(stacked, net.weights[k + 1].T, out=product).view(m + 1, batch, width)
        rows, lap = out[:m], out[m]
    raise AssertionError("unreachable: a network has at least one layer")


def _forward_laplacian_traced(net: MLP, primal: _Primal, rows: Tensor) -> Tensor:
    """``_forward_laplacian`` as operations autograd and torch.func can follow: each layer's
    rows and Laplacian row are new tensors, joined for their one product."""
    batch = primal.first[0].shape[0]
    lap: Tensor | None = None  # Δz_1 = 0
    for k in range(net.depth):
        first, second = primal.first[k], primal.second[k]
        h_lap = rows.square().sum(0) * second
        if lap is not None:
            h_lap = h_lap + first * lap
        if k + 1 == net.depth:
            return h_lap @ net.weights[-1].T
        stacked = torch.cat([rows * first, h_lap[None]])  # (m + 1, B, K_k)
        shape = (stacked.shape[0], batch, net.weights[k + 1].shape[0])
        out = (stacked.view(-1, stacked.shape[-1]) @ net.weights[k + 1].T).view(shape)
        rows, lap = out[:-1], out[-1]
    raise AssertionError("unreachable: a network has at least one layer")


def _sum_of_squares(rows: Tensor, out: Tensor) -> Tensor:
    """Σ_d rows[d]² into ``out``: one fused multiply-add per direction for a few directions
    (3.4× faster than square-then-sum for two (4096, 64) blocks), a reduction for many."""
    if rows.shape[0] > 8:
        return torch.sum(rows.square(), 0, out=out)
    torch.mul(rows[0], rows[0], out=out)
    for row in rows[1:]:
        out.addcmul_(row, row)
    return out


# NOTE: [The forward Laplacian in one product]
#     Per layer the forward Laplacian multiplies the D scaled tangent rows and the one
#     Laplacian row by the same W_{k+1}ᵀ. Kept direction-major, (D, B, K), the rows of one
#     direction are one contiguous (B, K) block: the sum of squares over directions is D − 1
#     plain adds, and writing the scaled rows and the Laplacian row into one (D + 1, B, K)
#     buffer makes the two products one GEMM of (D + 1)·B rows, with no copy. The FLOPs are
#     those of the two products (cost.laplacian_flops).


def laplacian(
    net: MLP,
    x: Tensor,
    method: str = "forward-laplacian",
    *,
    samples: int = cost.HUTCHINSON_SAMPLES,
    seed: int = 0,
) -> Tensor:
    """Δf = Σ_i ∂²f/∂x_i² of every output: (P,), or (B, P) for a batch.

    ``hutchinson`` estimates it from ``samples`` random ±1 directions per input (seeded by
    ``seed``): unbiased, not exact; its error falls as 1/√samples.

    >>> from jacbench import make_mlp
    >>> net = make_mlp(depth=3, d_in=2, width=16, d_out=1, dtype=torch.float64)
    >>> x = torch.randn(5, 2, dtype=torch.float64)
    >>> torch.allclose(laplacian(net, x), hessian(net, x).diagonal(dim1=-2, dim2=-1).sum(-1))
    True
    """
    _check_mode(method, LAPLACIAN_METHODS, "Laplacian method")
    xb, batched = _as_batch(net, x)
    if method == "hessian-trace":
        result = hessian(net, xb).diagonal(dim1=-2, dim2=-1).sum(-1)
        return _per_sample(result, xb.shape[0], batched)
    bad_samples = isinstance(samples, bool) or not isinstance(samples, int) or samples < 1
    if method == "hutchinson" and bad_samples:
        raise ValueError(f"samples must be a whole number ≥ 1, got {samples!r}")
    primal = _Primal(net, xb, workspace(f"laplacian {method} {samples}", net, xb))
    # Where autograd or a transform watches (a PINN's loss differentiated by its weights),
    # the layers' rows are new tensors, not one buffer written with out=.
    watched = records(net, xb) or not plain_eager(xb)
    forward_laplacian = _forward_laplacian_traced if watched else _forward_laplacian
    if method == "forward-laplacian":
        rows = net.weights[0].T[:, None, :]  # (D, 1, K_1): direction-major
        result = forward_laplacian(net, primal, rows)
    else:
        directions = rademacher(xb.shape[0], samples, net.d_in, seed=seed, like=xb)
        shape = (samples, xb.shape[0], net.weights[0].shape[0])
        rows = torch.matmul(  # (S, B, K_1), contiguous
            directions.transpose(0, 1), net.weights[0].T, out=take(primal.ws, "rows", shape)
        )
        result = forward_laplacian(net, primal, rows) / samples
    return _per_sample(result, xb.shape[0], batched)


def rademacher(batch: int, samples: int, d_in: int, *, seed: int, like: Tensor) -> Tensor:
    """(batch, samples, D) random ±1 entries, seeded, in ``like``'s dtype and device."""
    generator = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (batch, samples, d_in), generator=generator)
    return (2 * signs - 1).to(dtype=like.dtype, device=like.device)


def reference_hessian(net: MLP, x: Tensor) -> Tensor:
    """``torch.func.hessian`` of the network at x (vmapped over a batch): the reference."""
    from torch.func import hessian as func_hessian
    from torch.func import vmap

    if x.ndim == 1:
        return func_hessian(net)(x)
    return vmap(func_hessian(net))(x)
