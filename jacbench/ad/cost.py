"""A cost model of the Jacobian routines: FLOPs, memory, bracketing and a plan.

Every count here is a function of ``widths = (D, K_1, …, K_L, P)``, the mode and the batch:
no tensors are made. The plans also follow the tuning's tie classes where the counts tie or
mislead (NOTE: [Ties measured, not assumed] in ``jacbench.ad.ties``). The counts are exact
for what ``jacbench.ad.jacobians`` executes; see NOTE: [The chain] and NOTE: [FLOPs of each
mode].

NOTE: [The chain]
    With p = widths (p_0 = D, p_{L+1} = P) and n = L+1 matrices M_k = W_k (p_k × p_{k-1}),
    M_n = W_F, the Jacobian of one sample is the chain

        J = M_n · Σ_{n-1} · M_{n-1} · … · Σ_1 · M_1,     Σ_k = diag(σ'(z_k)).

    A diagonal Σ_k costs no matmul: it scales the columns of whatever stands on its left or
    the rows of whatever stands on its right. Every product of two neighbours has a Σ between
    them, so every product is per sample: a batch of B costs B times one sample.

    Forward mode brackets right to left, starting from M_1 itself (I·M_1 is never multiplied):

        J = M_n(Σ_{n-1} M_{n-1}( … (Σ_2 M_2 (Σ_1 M_1)) … ))      tangents: p_0 = D columns

    Reverse mode brackets left to right, starting from M_n itself:

        J = (( … ((M_n Σ_{n-1}) M_{n-1} Σ_{n-2}) … ) M_2 Σ_1) M_1    adjoints: p_n = P rows

    Mixed mode takes the cheapest of all bracketings (matrix-chain dynamic programming);
    the two pure modes are two of them, so mixed never costs more than either.

NOTE: [FLOPs of each mode]
    A product of an (a × b) by a (b × c) matrix costs 2·a·b·c FLOPs (one multiply and one
    add per term: the convention of torch.utils.flop_counter). Every mode first runs the
    primal pass z_k = W_k h_{k-1} (+ b_k) for k = 1..L, keeping σ'(z_k); W_F · h_L is not
    needed for J and is not computed:

        primal  = B · Σ_{k=1..L}   2 · p_k · p_{k-1}
        forward = primal + B · Σ_{k=2..L+1} 2 · p_k · p_{k-1} · D
        reverse = primal + B · Σ_{k=1..L}   2 · P · p_k · p_{k-1}
        mixed   = primal + B · (cost of the best bracketing)

    Worked example, widths (D, K, K, P) = (4, 3, 3, 1), B = 1:

        primal  = 2·3·4 + 2·3·3            = 24 + 18 = 42
        forward = 42 + 2·3·3·4 + 2·1·3·4   = 42 + 72 + 24 = 138
        reverse = 42 + 2·1·3·3 + 2·1·3·4   = 42 + 18 + 24 = 84

    So with one output reverse wins; transpose the shape (D = 1, P = 4) and forward wins.
    Hourglass widths (64, 64, 4, 64, 64) make mixed win: it forms W_F·Σ·W_3 (64×4) and
    W_2·Σ·W_1 (4×64), then multiplies the two through the narrow waist: 98,304 FLOPs against
    589,824 for either pure mode, which carry 64 columns or rows through every layer.
    Chunking (chunk_size) splits the D tangents or P adjoints into passes and changes no count.

NOTE: [Elementwise work and memory]
    Elementwise work is counted in element-operations, one per element per kernel pass:
    the primal pass does σ (and a bias add when there are biases) on B·p_k elements per
    layer; forward mode scales B·D·p_k tangent entries per layer, reverse mode B·P·p_k
    adjoint entries; mixed mode scales the smaller of the two operands at each product.
    σ' is never a pass of its own: one kernel reads σ(z_k) (or z_k) and scales the block by
    σ'(z_k) as it goes (``Activation.times_derivative``). They are reported apart from
    matmul FLOPs because they are memory-bound, not compute-bound.

    memory_bytes is the peak extra memory of a call beyond the weights and x: the kept
    vectors σ' is read from (B·Σ p_k), the result (B·P·D), and the largest pair of live
    sweep blocks (input and output of one matmul: B·c·(p_{k-1} + p_k) for a chunk of c
    tangents or adjoints).

NOTE: [Memory of vmap-style peers]
    torch.func, autograd.functional and JAX do not keep the chain's structure: they carry
    one tangent (forward mode, D of them) or one cotangent (reverse mode, P of them) per
    Jacobian column or row through every layer, batched by vmap, with about four blocks of
    that size alive at once (the saved activations, the incoming and outgoing block, and
    the scaled copy). So c·Σ p_k·4 elements per sample, c = D or P. autograd.functional in
    forward mode differentiates the sum over the batch with respect to the whole batch, so
    each of its B·D tangents spans all B samples: B times that again. The estimate only has
    to be right to a small factor: it decides whether a task would exhaust the machine.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import torch

from jacbench.measure import tuning
from jacbench.measure.tuning import LAPLACIAN_WIDE, ONE_INPUT_WIDE, Tuning

MODES = ("forward", "reverse", "mixed")

# A bracketing: a leaf is the 1-based index k of M_k; a node is (left, right) = left · right,
# where left holds the higher-index matrices (closer to the output).
Bracketing = int | tuple["Bracketing", "Bracketing"]


def check_widths(widths: Sequence[int]) -> tuple[int, ...]:
    """``widths`` as a tuple of ints, checked: at least (D, K_1, P), every entry a whole
    number ≥ 1 (2.5 or True is refused, not truncated).

    Raises:
        ValueError: naming the first entry that does not fit.
    """
    widths = tuple(widths)
    for w in widths:
        if isinstance(w, bool) or not isinstance(w, numbers.Integral) or w < 1:
            raise ValueError(f"every width must be a whole number ≥ 1, got {w!r} in {widths}")
    if len(widths) < 3:
        raise ValueError(f"widths needs at least 3 entries (D, K_1, P), got {widths}")
    return tuple(int(w) for w in widths)


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of: {', '.join(MODES)}")


def matrix_name(k: int, n: int) -> str:
    """The textbook name of M_k in a chain of n matrices: W1 … WL, and WF for M_n."""
    return "WF" if k == n else f"W{k}"


def forward_bracketing(n: int) -> Bracketing:
    """M_n(… (M_2 M_1)): right to left."""
    tree: Bracketing = 1
    for k in range(2, n + 1):
        tree = (k, tree)
    return tree


def reverse_bracketing(n: int) -> Bracketing:
    """((M_n M_{n-1}) …) M_1: left to right."""
    tree: Bracketing = n
    for k in range(n - 1, 0, -1):
        tree = (tree, k)
    return tree


def span(tree: Bracketing) -> tuple[int, int]:
    """(i, j) such that ``tree`` is the product M_j … M_i."""
    if isinstance(tree, int):
        return tree, tree
    return span(tree[1])[0], span(tree[0])[1]


def bracketing_cost(widths: Sequence[int], tree: Bracketing) -> int:
    """Matmul FLOPs of one sample's chain evaluated as ``tree``."""
    if isinstance(tree, int):
        return 0
    left, right = tree
    i, k = span(right)
    j = span(left)[1]
    return (
        bracketing_cost(widths, left)
        + bracketing_cost(widths, right)
        + 2 * widths[j] * widths[k] * widths[i - 1]
    )


def format_bracketing(tree: Bracketing, n: int) -> str:
    """E.g. ``(WF·(W2·W1))``."""
    if isinstance(tree, int):
        return matrix_name(tree, n)
    return f"({format_bracketing(tree[0], n)}·{format_bracketing(tree[1], n)})"


def chain_order(widths: Sequence[int]) -> tuple[int, Bracketing]:
    """The cheapest bracketing of one sample's chain and its matmul FLOPs.

    Classic O(n³) matrix-chain dynamic programming over ``widths``; among equally cheap
    splits the one nearest the output wins.

    >>> chain_order((64, 64, 4, 64, 64))
    (98304, ((4, 3), (2, 1)))
    """
    p = check_widths(widths)
    return _chain_order(p)


@functools.lru_cache(maxsize=256)
def _chain_order(p: tuple[int, ...]) -> tuple[int, Bracketing]:
    n = len(p) - 1
    best: dict[tuple[int, int], tuple[int, Bracketing]] = {(i, i): (0, i) for i in range(1, n + 1)}
    for length in range(2, n + 1):
        for i in range(1, n - length + 2):
            j = i + length - 1
            candidates = []
            for k in range(j - 1, i - 1, -1):
                left_cost, left = best[(k + 1, j)]
                right_cost, right = best[(i, k)]
                cost = left_cost + right_cost + 2 * p[j] * p[k] * p[i - 1]
                candidates.append((cost, (left, right)))
            best[(i, j)] = min(candidates, key=lambda c: c[0])
    return best[(1, n)]


def mode_bracketing(widths: Sequence[int], mode: str) -> Bracketing:
    """The bracketing the routine for ``mode`` evaluates."""
    p = check_widths(widths)
    _check_mode(mode)
    n = len(p) - 1
    if mode == "forward":
        return forward_bracketing(n)
    if mode == "reverse":
        return reverse_bracketing(n)
    return _chain_order(p)[1]


def primal_flops(widths: Sequence[int], batch: int = 1) -> int:
    """Matmul FLOPs of the primal pass z_k = W_k h_{k-1}, k = 1..L."""
    p = check_widths(widths)
    return batch * sum(2 * p[k] * p[k - 1] for k in range(1, len(p) - 1))


def flop_count(widths: Sequence[int], mode: str, batch: int = 1) -> int:
    """Exact matmul FLOPs (2·m·n·k) of ``jacobian_<mode>`` on a batch, primal pass included.

    See NOTE: [FLOPs of each mode].

    >>> flop_count((4, 3, 3, 1), "forward"), flop_count((4, 3, 3, 1), "reverse")
    (138, 84)
    """
    p = check_widths(widths)
    tree = mode_bracketing(p, mode)
    return primal_flops(p, batch) + batch * bracketing_cost(p, tree)


def _scaled_elements(widths: tuple[int, ...], tree: Bracketing) -> int:
    """Elements scaled by the Σ's when mixed mode evaluates ``tree`` (one sample)."""
    if isinstance(tree, int):
        return 0
    left, right = tree
    i, k = span(right)
    j = span(left)[1]
    here = min(widths[j] * widths[k], widths[k] * widths[i - 1])
    return here + _scaled_elements(widths, left) + _scaled_elements(widths, right)


def elementwise_flops(
    widths: Sequence[int], mode: str, batch: int = 1, *, bias: bool = False
) -> int:
    """Elementwise operations of ``jacobian_<mode>``; see NOTE: [Elementwise work and memory]."""
    p = check_widths(widths)
    _check_mode(mode)
    hidden = p[1:-1]
    primal = (2 if bias else 1) * sum(hidden)
    if mode == "forward":
        sweep = p[0] * sum(hidden)
    elif mode == "reverse":
        sweep = p[-1] * sum(hidden)
    else:
        sweep = _scaled_elements(p, _chain_order(p)[1])
    return batch * (primal + sweep)


def _mixed_peak_elements(widths: tuple[int, ...], tree: Bracketing) -> tuple[int, int]:
    """(elements of the result, peak live elements) when mixed mode evaluates ``tree``."""
    if isinstance(tree, int):
        return 0, 0  # a weight matrix: already in memory
    left, right = tree
    i, k = span(right)
    j = span(left)[1]
    left_size, left_peak = _mixed_peak_elements(widths, left)
    right_size, right_peak = _mixed_peak_elements(widths, right)
    result = widths[j] * widths[i - 1]
    peak = max(left_peak, left_size + right_peak, left_size + right_size + result)
    return result, peak


def memory_bytes(
    widths: Sequence[int],
    mode: str,
    batch: int = 1,
    dtype: torch.dtype = torch.float32,
    chunk_size: int | None = None,
) -> int:
    """Modelled peak extra memory of ``jacobian_<mode>`` in bytes (weights and x excluded).

    See NOTE: [Elementwise work and memory]. ``chunk_size`` bounds the tangents (forward)
    or adjoints (reverse) carried at once; mixed mode takes none.
    """
    p = check_widths(widths)
    _check_mode(mode)
    d, out = p[0], p[-1]
    kept = sum(p[1:-1])
    result = d * out
    if mode == "mixed":
        sweep = _mixed_peak_elements(p, _chain_order(p)[1])[1]
    else:
        carried = d if mode == "forward" else out
        if chunk_size is not None:
            carried = min(carried, chunk_size)
        sweep = carried * max(a + b for a, b in zip(p[:-1], p[1:]))
    return batch * dtype.itemsize * (kept + result + sweep)


def peer_memory_bytes(
    widths: Sequence[int],
    mode: str,
    batch: int = 1,
    dtype: torch.dtype = torch.float32,
    *,
    batch_coupled: bool = False,
) -> int:
    """Estimated peak memory of a vmap-style peer in ``mode`` (NOTE: [Memory of vmap-style
    peers]); ``batch_coupled`` for a peer that differentiates the whole batch at once."""
    p = check_widths(widths)
    carried = p[0] if mode == "forward" else p[-1]
    per_sample = carried * sum(p[1:-1]) * 4 * dtype.itemsize
    return batch * (batch if batch_coupled else 1) * per_sample


@dataclass(frozen=True)
class Plan:
    """What the cost model says about one shape: the mode it predicts fastest, and why."""

    widths: tuple[int, ...]
    batch: int
    mode: str
    flops: Mapping[str, int]
    elementwise_flops: Mapping[str, int]
    memory_bytes: Mapping[str, int]
    bracketing: str
    reason: str = "fewest FLOPs"  # why ``mode``: which rule of the plan decided


# Mixed mode evaluates its bracketing recursively, with more and smaller products than a
# pure sweep; it is only predicted to win when it saves a clear share of the FLOPs.
MIXED_MIN_SAVING = 0.10


def plan(
    widths: Sequence[int],
    batch: int = 1,
    dtype: torch.dtype = torch.float32,
    *,
    tuned: Tuning | None = None,
) -> Plan:
    """Predict the fastest mode for ``widths`` and ``batch`` from the FLOP model.

    The pure mode with fewer FLOPs wins (on a tie, NOTE: [Ties between forward and reverse
    mode]); mixed wins when its bracketing saves more than ``MIXED_MIN_SAVING`` of the
    better pure mode's FLOPs, and on a batch where it saves less, when the tuning measured
    it faster (NOTE: [Ties measured, not assumed]). One input whose pure modes both cost
    under ``LAUNCH_BOUND_FLOPS`` goes to reverse mode (NOTE: [Launch-bound problems]).
    ``tuned``: the tuning whose tie classes decide (default the active one). Plans are
    cached: ``jacobian(mode="auto")`` asks for one on every call.

    >>> plan((1000, 1000, 1000, 1000, 1)).mode
    'reverse'
    """
    tuned = tuned or tuning.active()
    p = check_widths(widths)
    one_input = tuned.tie_rule(_ONE_INPUT_TIES[_wide(p)])  # a lookup: plan runs every call
    on_batch, batch_modes = tuned.tie_rule("tie batch"), tuned.tie_rule("tie batch modes")
    return _plan(p, int(batch), dtype, one_input, batch_modes, on_batch)


_ONE_INPUT_TIES = ("tie one input narrow", "tie one input wide")


def _wide(p: tuple[int, ...]) -> bool:
    """Whether one input's tie through widths ``p`` is the wide class's (NOTE: [One input's
    tie by width] in ``ties``)."""
    return max(p[1:-1]) >= ONE_INPUT_WIDE


# NOTE: [Ties between forward and reverse mode]
#     Where the two pure modes do the same matmuls (D = P through uniform layers), which is
#     faster is a matter of kernels and caches, not arithmetic. Reverse mode reads every
#     weight twice, a primal pass up and an adjoint pass down; forward mode on one input
#     reads each weight for its primal and tangent steps back to back, or once where it
#     stacks them (NOTE: [The primal stacked on the tangents] in ``jacobians``). On two
#     Xeon cores (MKL, float32, results/cpu-crossover and cpu-peers) forward mode was
#     faster on one input where D = P is narrower than the layers (K = 512: by 17–21% at
#     D = P = 1, 7–14% at 16, 2–5% at 128); at D = P = K (512, 1024) reverse mode was ahead
#     by 2–9% or level, and on batches (B = 32–1024, K = 64–128) reverse or mixed mode by
#     3–5% once wide batched blocks run as a bmm (NOTE: [Wide batched blocks]). So a tie
#     goes to forward mode for one input with D below every hidden width where the widest
#     is 512 or more (narrower, to reverse mode: NOTE: [One input's tie by width] in
#     ``ties``), else to reverse;
#     on two AMD EPYC cores forward mode was 1–10% ahead on a PINN batch (L=6 D=P=3 K=128
#     B=1024), within that VM's noise, so both are measured per machine where the tuning
#     has run (NOTE: [Ties measured, not assumed]: "tie one input narrow" and "wide", "tie
#     batch modes").
# NOTE: [Launch-bound problems]
#     Below about a megaflop a Jacobian is a few dozen tiny kernels whose launches, not
#     their arithmetic, set the time, and both pure modes launch as many. There reverse
#     mode is ahead: its products read each weight in its own layout, while forward mode's
#     rows read the transposed view (T·Wᵀ), which MKL's few-row kernels run slower (4 rows
#     through K = 64–128: 1.3–1.4× a product), and mixed mode's bracketing launches more,
#     smaller products. Measured on an Intel Xeon (two cores) over 21 one-input shapes with
#     both pure modes under a megaflop (L = 3/8, K = 16–128, D = 1/4, P = 8/64): reverse
#     mode ahead by 1–24% at D = 4, level at D = 1 (forward/reverse 0.93–1.07); on
#     hourglasses, where mixed mode saves 66–82% of the FLOPs, reverse 21–29 µs, forward
#     26–34, mixed 30–45. So one input whose pure modes both cost less than this goes to
#     reverse mode, whatever the counts say. (Batches were not measured: they keep the
#     FLOP rule.)
LAUNCH_BOUND_FLOPS = 1_000_000


@functools.lru_cache(maxsize=1024)
def _plan(
    p: tuple[int, ...],
    batch: int,
    dtype: torch.dtype,
    one_input: tuple[str, str],
    batch_modes: tuple[str, str],
    on_batch: tuple[str, str],
) -> Plan:
    flops = {mode: flop_count(p, mode, batch) for mode in MODES}
    reason = "fewest FLOPs"
    if flops["reverse"] != flops["forward"]:
        pure = "reverse" if flops["reverse"] < flops["forward"] else "forward"
    elif batch == 1 and p[0] < min(p[1:-1]):
        pure, measured = one_input
        width = f"hidden width {'from' if _wide(p) else 'under'} {ONE_INPUT_WIDE}"
        rule = f"by the rule for one input narrower than every layer, {width}"
        reason = f"a tie in FLOPs: {pure} mode {f'as {measured}' if measured else rule}"
    elif batch > 1 and batch_modes[1]:  # measured; unmeasured, the rule below stands
        pure, measured = batch_modes
        reason = f"a tie in FLOPs on a batch: {pure} mode as {measured}"
    else:
        pure, reason = "reverse", "a tie in FLOPs"
    saving = 1 - flops["mixed"] / flops[pure]
    if batch == 1 and max(flops["forward"], flops["reverse"]) < LAUNCH_BOUND_FLOPS:
        mode, reason = "reverse", "launch-bound: one input under a megaflop in both pure modes"
    elif saving > MIXED_MIN_SAVING:
        mode, reason = "mixed", f"its bracketing saves {saving:.0%} of {pure} mode's FLOPs"
    elif batch > 1 and on_batch[0] == "mixed":
        mode = "mixed"
        reason = (
            f"its bracketing saves {saving:.0%} of {pure} mode's FLOPs, a tie on a batch, "
            f"{on_batch[1] or 'by the tuning'}"
        )
    else:
        mode = pure
    return Plan(
        widths=p,
        batch=batch,
        mode=mode,
        flops=MappingProxyType(flops),
        elementwise_flops=MappingProxyType({m: elementwise_flops(p, m, batch) for m in MODES}),
        memory_bytes=MappingProxyType({m: memory_bytes(p, m, batch, dtype) for m in MODES}),
        bracketing=format_bracketing(_chain_order(p)[1], len(p) - 1),
        reason=reason,
    )


# ------------------------------------------------------------------- second order
# NOTE: [Second order of a chain]
#     For one sample and output p of f = W_F·σ(W_L ⋯ σ(W_1·x)), with T_k = ∂z_k/∂x (K_k × D)
#     and a_k = ∂f_p/∂h_k (K_k), differentiating ∇f_p = Σ-chain once more gives
#
#         H_p = Σ_k T_kᵀ · diag(a_k ⊙ σ''(z_k)) · T_k                      (the structured form)
#
#     because only the σ'(z_k) on the chain depend on x, and ∂σ'(z_k)/∂x = σ''(z_k) ⊙ T_k.
#     Each composition of the two modes evaluates this sum in another order:
#       tangents   T_k for k ≥ 2: Σ_{k≥2} 2·D·K_{k-1}·K_k (T_1 = W_1ᵀ is free)
#       adjoints   a_k for k < L, for P outputs: Σ_{k≥2} 2·P·K_k·K_{k-1} (a_L = W_F is free)
#       fwd-over-rev, rev-over-rev and rev-over-fwd carry the D tangents of the P adjoints
#                  down the chain: Σ_{k≥1} 2·P·D·K_k·K_{k-1}, on top of tangents and adjoints
#       structured forms each layer's term directly: Σ_k 2·P·D²·K_k
#       fwd-over-fwd carries each unit's D×D Hessian up: Σ_k 2·D²·K_k·K_{k+1}, plus tangents
#     So per sample, with K the width: the composed modes cost ≈ 2·L·K²·(D + P + P·D), the
#     structured form ≈ 2·L·K·(K·(D + P) + P·D²), and fwd-over-fwd ≈ 2·L·K²·(D + D²). The
#     structured form wins whenever D < K (its extra term is P·D²·K against P·D·K²); the
#     compositions only where D exceeds K; fwd-over-fwd only where P ≫ D (many outputs,
#     very few inputs). rev-over-rev and rev-over-fwd do fwd-over-rev's products in another
#     order: rev-over-rev keeps the P·D seed rows of every layer (more memory), rev-over-fwd
#     keeps the D tangent rows and makes the adjoints on the way down (less memory than
#     fwd-over-rev where P·ΣK exceeds P·K_max; as fast or faster, measured): at equal FLOPs
#     the plan picks it (_HESSIAN_PREFERENCE).
#     Forward over reverse is the best *composition* for the usual reasons (one sweep each
#     way, D tangents on P adjoints), and the structured form beats it by using that an
#     MLP's Hessian is a sum over layers.
#
#     The Laplacian needs only trace(H_p): the forward Laplacian carries D tangent rows and
#     one Laplacian row up the chain, Σ_{k≥2} 2·D·K_{k-1}·K_k + Σ_k 2·K_k·K_{k+1}: the
#     tangents alone plus one matrix-vector product per layer. The trace of the structured
#     Hessian pays the adjoints and P·D²·K_k per layer on top of the same tangents, so the
#     forward Laplacian saves (P·ΣK² + P·D²·ΣK) against the trace: for P = 1 a share of
#     about (K + D²)/(D·K + K + D²) of the matmul work (D = 2, K = 64: 51%; D = 3, K =
#     128: 43%) and, more, the P·D·K-sized elementwise blocks the Hessian forms per layer.
SECOND_ORDER_MODES = ("fwd-over-rev", "rev-over-rev", "rev-over-fwd", "fwd-over-fwd", "structured")
# Where two modes cost the same FLOPs, the one earlier here is predicted. The three
# compositions always tie: rev-over-fwd keeps the least memory and was as fast as
# fwd-over-rev or faster at 14 of 16 shapes measured (results/cpu-pinn-hessian,
# results/cpu-hessian-crossover). The structured form ties with them exactly at D = K
# (uniform widths); there the compositions were 5–10% faster (L=4 D=K=64, P = 1 and 16).
_HESSIAN_PREFERENCE = (
    "rev-over-fwd",
    "fwd-over-rev",
    "structured",
    "fwd-over-fwd",
    "rev-over-rev",
)


# Random directions of the Hutchinson Laplacian unless told otherwise (hessians.laplacian).
HUTCHINSON_SAMPLES = 64


def _tangent_flops(p: tuple[int, ...], rows: int) -> int:
    return sum(2 * rows * p[k - 1] * p[k] for k in range(2, len(p) - 1))


def _adjoint_flops(p: tuple[int, ...]) -> int:
    return sum(2 * p[-1] * p[k] * p[k - 1] for k in range(2, len(p) - 1))


def hessian_flops(widths: Sequence[int], mode: str, batch: int = 1) -> int:
    """Exact matmul FLOPs of ``hessian(net, x, mode)``, primal pass included
    (NOTE: [Second order of a chain]).

    >>> hessian_flops((2, 8, 8, 1), "structured"), hessian_flops((2, 8, 8, 1), "fwd-over-rev")
    (672, 864)
    """
    p = check_widths(widths)
    if mode not in SECOND_ORDER_MODES:
        raise ValueError(
            f"unknown Hessian mode {mode!r}; expected one of: {', '.join(SECOND_ORDER_MODES)}"
        )
    d, out, depth = p[0], p[-1], len(p) - 2
    tangents = _tangent_flops(p, d)
    if mode in ("fwd-over-rev", "rev-over-rev", "rev-over-fwd"):
        carried = sum(2 * out * d * p[k] * p[k - 1] for k in range(1, depth + 1))
        work = tangents + _adjoint_flops(p) + carried
    elif mode == "structured":
        work = (
            tangents + _adjoint_flops(p) + sum(2 * out * d * d * p[k] for k in range(1, depth + 1))
        )
    else:
        work = tangents + sum(2 * d * d * p[k] * p[k + 1] for k in range(1, depth + 1))
    return primal_flops(p, batch) + batch * work


def hvp_flops(widths: Sequence[int], batch: int = 1) -> int:
    """Exact matmul FLOPs of ``hvp``: forward over reverse with one direction."""
    p = check_widths(widths)
    depth = len(p) - 2
    carried = sum(2 * p[-1] * p[k] * p[k - 1] for k in range(1, depth + 1))
    work = 2 * p[0] * p[1] + _tangent_flops(p, 1) + _adjoint_flops(p) + carried
    return primal_flops(p, batch) + batch * work


def laplacian_flops(
    widths: Sequence[int], method: str, batch: int = 1, *, samples: int = HUTCHINSON_SAMPLES
) -> int:
    """Exact matmul FLOPs of ``laplacian(net, x, method)`` (``samples`` directions for
    ``hutchinson``).

    >>> laplacian_flops((2, 8, 8, 1), "forward-laplacian")
    560
    """
    p = check_widths(widths)
    depth = len(p) - 2
    carry = sum(2 * p[k] * p[k + 1] for k in range(1, depth + 1))
    if method == "forward-laplacian":
        return primal_flops(p, batch) + batch * (_tangent_flops(p, p[0]) + carry)
    if method == "hutchinson":
        first = 2 * samples * p[0] * p[1]
        return primal_flops(p, batch) + batch * (first + _tangent_flops(p, samples) + carry)
    if method == "hessian-trace":
        return hessian_flops(p, plan_second_order(p, batch).hessian_mode, batch)
    raise ValueError(
        f"unknown Laplacian method {method!r}; "
        "expected one of: forward-laplacian, hessian-trace, hutchinson"
    )


def second_order_memory_bytes(
    widths: Sequence[int], mode: str, batch: int = 1, dtype: torch.dtype = torch.float32
) -> int:
    """Modelled peak extra memory of ``hessian(mode=...)`` in bytes: the blocks each mode
    keeps (tangent rows, adjoint rows, seed rows, unit Hessians) and the result."""
    p = check_widths(widths)
    d, out, hidden = p[0], p[-1], p[1:-1]
    widest = max(hidden)
    kept = 2 * sum(hidden)  # σ' and σ'' of every layer
    result = out * d * d
    if mode == "fwd-over-rev":
        blocks = d * sum(hidden) + out * sum(hidden) + 3 * out * d * widest
    elif mode == "rev-over-rev":
        blocks = d * sum(hidden) + out * sum(hidden) + out * d * sum(hidden) + 2 * out * d * widest
    elif mode == "rev-over-fwd":
        blocks = d * sum(hidden) + out * widest + 3 * out * d * widest
    elif mode == "fwd-over-fwd":
        blocks = d * sum(hidden) + 3 * d * d * max(widest, out)
    else:
        blocks = d * sum(hidden) + out * sum(hidden) + 2 * out * d * widest
    return batch * dtype.itemsize * (kept + result + blocks)


@dataclass(frozen=True)
class SecondOrderPlan:
    """What the cost model says about a shape's second order: FLOPs of every Hessian mode
    and Laplacian method, memory of every Hessian mode, and the predicted picks."""

    widths: tuple[int, ...]
    batch: int
    hessian_mode: str
    hessian_flops: Mapping[str, int]
    hessian_memory_bytes: Mapping[str, int]
    laplacian_method: str
    laplacian_flops: Mapping[str, int]
    laplacian_reason: str = "fewest FLOPs"  # which rule picked ``laplacian_method``


def plan_second_order(
    widths: Sequence[int],
    batch: int = 1,
    dtype: torch.dtype = torch.float32,
    *,
    tuned: Tuning | None = None,
) -> SecondOrderPlan:
    """Predict the cheapest Hessian mode and the exact Laplacian method for ``widths``: the
    Laplacian's by the tuning's measurement where there is one (NOTE: [Ties measured, not
    assumed]), else by FLOPs.

    >>> plan_second_order((2, 64, 64, 64, 1)).hessian_mode
    'structured'
    """
    p = check_widths(widths)
    tuned = tuned or tuning.active()
    wide = max(p[1:-1]) >= LAPLACIAN_WIDE
    laplacian = tuned.tie_rule("laplacian wide" if wide else "laplacian narrow")
    return _plan_second_order(p, int(batch), dtype, laplacian)


@functools.lru_cache(maxsize=256)
def _plan_second_order(
    p: tuple[int, ...], batch: int, dtype: torch.dtype, laplacian: tuple[str, str]
) -> SecondOrderPlan:
    flops = {m: hessian_flops(p, m, batch) for m in SECOND_ORDER_MODES}
    mode = min(_HESSIAN_PREFERENCE, key=lambda m: (flops[m], _HESSIAN_PREFERENCE.index(m)))
    exact = {
        "forward-laplacian": laplacian_flops(p, "forward-laplacian", batch),
        "hessian-trace": flops[mode],
    }
    return SecondOrderPlan(
        widths=p,
        batch=batch,
        hessian_mode=mode,
        hessian_flops=MappingProxyType(flops),
        hessian_memory_bytes=MappingProxyType(
            {m: second_order_memory_bytes(p, m, batch, dtype) for m in SECOND_ORDER_MODES}
        ),
        laplacian_method=laplacian[0] if laplacian[1] else min(exact, key=lambda m: exact[m]),
        laplacian_flops=MappingProxyType(exact),
        laplacian_reason=laplacian[1] or "fewest FLOPs",
    )
