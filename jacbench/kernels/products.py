"""Products that can run more than one way with the same arithmetic, and tanh by sigmoid.

A narrow product, a block of fewer than ``NARROW_BLOCK`` rows times a weight, runs as the
plain BLAS call (``rows``), with the weight as the left operand (``weight-first``), with the
weight cut into row blocks over the threads (``split``) or by jacbench's own C++ kernel
(``native``, ``jacbench.kernels.native``); a batch's wide row blocks fold into
one GEMM or run as one bmm with the weight shared. Which is fastest depends on the machine:
``jacbench.measure.tuning`` times them, and the routines of ``jacbench.ad.jacobians`` run
the one chosen. Every way computes the same products.
"""

from __future__ import annotations

import torch
from torch import Tensor

from jacbench.kernels import native

# NOTE: [Narrow products on all cores]
#     A block of fewer than 16 vectors times a weight (P = 1 reverse mode, D = 1 forward
#     mode, every primal step of an unbatched x or a small batch) is memory-bound: about one
#     read of W. The CPU BLAS runs such products on one thread, at about half the machine's
#     read bandwidth. Cutting W (row-major) into b = 2·threads row blocks and handing them
#     to one bmm spreads the read over every thread:
#
#         V·Wᵀ = [V·W_1ᵀ | … | V·W_bᵀ]              W (n × k) = [W_1; …; W_b]  (bmm, then join)
#         U·W  = Σ_i U_i·W_i,  U = [U_1 | … | U_b]   W (k × n) = [W_1; …; W_b]  (bmm, then sum)
#
#     Both read W exactly once in its own layout, so the primal pass and the sweep reuse
#     what the cache holds of the same weight. The blocks are strided views of W made with
#     one as_strided/view each: on these shapes every extra view op costs about a
#     microsecond, 10% of a 4 MB product from cache. Measured on two cores (K = 1000, per
#     weight): one vector 126 → 77 µs, 4 vectors 239–328 → 132–182 µs. Two blocks per thread
#     beat one (balance). Matrices under 2^19 elements keep the BLAS path, where the bmm
#     launch costs more than it saves (a loss at 512×512, a gain from 724×724).
SPLIT_MIN_ELEMENTS = 1 << 19
# Below this a product is a few microseconds of launch: the measured kernels (made on
# 256-wide weights and up) do not apply, and the plain BLAS call adds no view.
TUNED_MIN_ELEMENTS = 1 << 15
# Narrow products through weights from 2^18 elements (512 × 512) to SPLIT_MIN_ELEMENTS are
# their own class: where the split starts to pay differs between CPUs. On an AMD EPYC (two
# cores) a chain of 8 weights, one vector, per product: at 512 wide rows 31 µs, split 32;
# at 700 wide rows 149–214 µs, split 105–126 (both orientations); on the Xeon the split
# paid from 724 wide. Below 2^18 elements the plain call won on both.
MEDIUM_MIN_ELEMENTS = 1 << 18
NARROW_BLOCK = 16  # fewer vectors than this make a narrow product


def split_blocks(weight: Tensor) -> int:
    """How many row blocks to cut ``weight`` into for a narrow product (0: do not cut)."""
    if weight.numel() < SPLIT_MIN_ELEMENTS:  # first: the cheapest test, and most calls
        return 0
    return 2 * torch.get_num_threads() if can_split(weight) else 0


def rows_times_weight_t(rows: Tensor, weight: Tensor, blocks: int) -> Tensor:
    """V (m, k) · Wᵀ → (m, n) for W (n, k) cut into ``blocks`` row blocks."""
    n, k = weight.shape
    m = rows.shape[0]
    part = n // blocks
    parts = weight.as_strided((blocks, k, part), (part * k, 1, k))  # block i: W_iᵀ
    # Every block multiplies the same V: a zero batch stride, plain row-major strides within.
    shared = rows.contiguous().as_strided((blocks, m, k), (0, k, 1))
    return torch.bmm(shared, parts).transpose(0, 1).reshape(m, n)


def rows_times_weight(rows: Tensor, weight: Tensor, blocks: int) -> Tensor:
    """U (m, k) · W → (m, n) for W (k, n) cut into ``blocks`` row blocks."""
    k, n = weight.shape
    m = rows.shape[0]
    part = k // blocks
    # Block i of U's columns, U_i (m, part); for one row a plain view.
    pieces = (
        rows.reshape(blocks, 1, part) if m == 1 else rows.reshape(m, blocks, part).transpose(0, 1)
    )
    return torch.bmm(pieces, weight.view(blocks, part, n)).sum(0)


def can_split(weight: Tensor) -> bool:
    """Whether ``weight`` can be cut into row blocks over the threads (any size)."""
    threads = torch.get_num_threads()
    return (
        threads > 1
        and weight.is_cpu
        and weight.is_contiguous()
        and weight.shape[0] % (2 * threads) == 0
    )


def narrow_product(block: Tensor, matrix: Tensor, forward: bool, kernel: str) -> Tensor:
    """block @ matrix for a narrow row block, by ``kernel`` (see ``jacbench.measure.tuning``).

    ``matrix`` is the view Wᵀ of a weight when ``forward`` (a primal step, forward mode's
    tangent rows), else the weight W itself (reverse mode's adjoint rows). A ``split`` that
    does not divide the weight falls back to ``rows``. The default kernels add no view to
    the product: on small shapes each view costs about a microsecond.
    """
    if kernel == "rows":
        return torch.mm(block, matrix)
    if kernel == "native":  # NOTE: [jacbench's own matrix-vector kernels]
        product = native.rows_times(block, matrix)
        if product is not None:
            return product
        kernel = "split"  # where the kernels cannot take it: the built-in choice for large
    weight = matrix.T if forward else matrix
    if kernel == "split" and can_split(weight):
        blocks = 2 * torch.get_num_threads()
        if forward:
            return rows_times_weight_t(block, weight, blocks)
        return rows_times_weight(block, weight, blocks)
    if kernel == "weight-first":  # W·Tᵀ (or Wᵀ·Uᵀ), transposed back to rows
        if block.shape[0] == 1:
            return torch.mv(matrix.T, block.view(-1)).view(1, -1)
        return torch.mm(matrix.T, block.T).T.contiguous()
    return torch.mm(block, matrix)


def batched_rows_product(
    block: Tensor, matrix: Tensor, shared: bool, out: Tensor | None = None, transposed: bool = False
) -> Tensor:
    """block (B, m, k) @ matrix (k, n): folded into one (B·m, k) GEMM by matmul, or, where
    ``shared``, one bmm over the samples with the matrix at a zero batch stride (NOTE:
    [Wide batched blocks]); folded, where ``transposed``, reading a copy of the matrix's
    transpose (NOTE: [A weight of few columns]). All do the same products; ``out``: the
    tensor to write."""
    if shared:
        return torch.bmm(block, matrix.expand(block.shape[0], *matrix.shape), out=out)
    if transposed:
        matrix = matrix.T.contiguous().T  # (k, n) with strides (1, k)
    return torch.matmul(block, matrix, out=out)


def few_columns(block: Tensor, matrix: Tensor) -> bool:
    """Whether ``block`` @ ``matrix`` is a batch's product with a CPU weight stored row after
    row whose shape is in the few-columns class (``few_columns_shape``)."""
    return (
        matrix.ndim == 2
        and matrix.is_cpu
        and matrix.is_contiguous()
        and few_columns_shape(matrix.shape[1], block.numel())
    )


def few_columns_shape(columns: int, block_elements: int) -> bool:
    """Whether a block of ``block_elements`` times a weight of ``columns`` columns is in the
    class whose layout the tuning chooses: 2 to 15 columns, a block of at least
    FEW_COLUMNS_MIN_ELEMENTS (NOTE: [A weight of few columns])."""
    return 2 <= columns < NARROW_BLOCK and block_elements >= FEW_COLUMNS_MIN_ELEMENTS


# NOTE: [A weight of few columns]
#     Reverse mode's last product on a batch is the adjoints (B·P rows of K_1) times W_1
#     (K_1 × D): for a few inputs, a GEMM whose right operand has a few columns. MKL runs it
#     slowly on an AMD EPYC (two cores) with the operand as stored, row after row, and 2–4×
#     faster reading the same numbers as the transpose of an (n × K) matrix: 3072 × 128 by
#     128 × 3 took 229 µs against 60 µs (with the copy), 16384 × 64 by 64 × 2 554 against
#     144, 640 × 256 by 256 × 8 96 against 48; one column (a matrix-vector product) and 16
#     or more ran as fast or faster as stored (16: 86 against 93 µs). The copy is n·K
#     elements, a few microseconds. Whether it pays is the BLAS's and the CPU's affair, so
#     the tuning times both on each machine (``FEW_COLUMNS``); in the routines (same
#     process, 15 interleaved rounds), reverse mode at L=6 D=P=3 K=128 B=1024 took 0.96 of
#     the time, the PINN batches L=6 D=2 K=64 P=1 B=4096 and L=4 D=2 K=128 B=2048 0.97 and
#     0.96. Below FEW_COLUMNS_MIN_ELEMENTS in the block the copy's launch outweighs
#     what it saves (one thread: 8 × 6 × 24 by 24 × 4 3.5 µs as stored, 6.7 with the copy;
#     64 × 1 × 64 by 64 × 2 6.8 against 7.1; 32 × 3 × 64 by 64 × 3 9.5 against 8.2), so
#     such blocks keep the weight as stored.
FEW_COLUMNS_MIN_ELEMENTS = 1 << 13


# NOTE: [Wide batched blocks]
#     A batch's block of m ≥ 16 rows per sample (reverse mode's adjoints for P ≥ 16) times
#     a weight is one tall GEMM when matmul folds the batch, or B products of m rows in one
#     bmm. On an Intel Xeon (two cores, MKL) the bmm was 3–8% faster for weights up to 256
#     wide (reverse mode at L=8 D=K=P=64 B=256: 5.76 → 5.36 ms, level with forward mode)
#     and 1.5× slower with 1024-wide ones, so it is a measured choice per weight size
#     (``jacbench.measure.tuning``); blocks of fewer rows always fold (a bmm of one row per sample
#     ran 1.4× slower on a PINN batch).


def size_class(elements: int) -> int:
    """0, 1, 2: a weight of ``elements`` below the tuned size, below the split size, above
    (a batch's wide blocks)."""
    return 0 if elements < TUNED_MIN_ELEMENTS else 1 if elements < SPLIT_MIN_ELEMENTS else 2


def narrow_size(elements: int) -> int:
    """0, 1, 2: a weight of ``elements`` (at least TUNED_MIN_ELEMENTS) for a narrow product:
    small, medium (from MEDIUM_MIN_ELEMENTS), large (from SPLIT_MIN_ELEMENTS)."""
    return 0 if elements < MEDIUM_MIN_ELEMENTS else 1 if elements < SPLIT_MIN_ELEMENTS else 2


def tanh_by_sigmoid(z: Tensor) -> Tensor:
    """tanh(z) = 2·σ(2z) − 1, in place on z (out of place where autograd records): three
    kernels, for CPUs where they beat one.

    The doubling is exact in floating point; the result differs from torch.tanh by rounding
    (an absolute error of a few units of the last place of 1).
    """
    if z.requires_grad and torch.is_grad_enabled():  # autograd records: no out=, no in place
        return torch.sigmoid(z * 2) * 2 - 1  # (sigmoid_'s backward reads its output)
    s = torch.sigmoid_(z.mul_(2))
    return torch.add(_minus_one(s), s, alpha=2, out=s)


def _minus_one(like: Tensor) -> Tensor:
    return torch.full((), -1.0, dtype=like.dtype, device=like.device)
