"""The machine's limits, measured: matmul throughput, read bandwidth, elementwise rate, launches.

A routine cannot beat ``bound_s = max(matmul FLOPs / peak FLOP/s, weight bytes / bandwidth,
elementwise time, launch time)``: the arithmetic, reading every weight once, the activations
— σ on every hidden unit of the primal pass at the measured rate of σ, and every scaling by
σ' at the measured rate of the scaling (see ``cost.elementwise_flops``) — and launching the
kernels an eager routine needs. Efficiency is ``bound_s / median_s``. All are measured on the
run's device and dtype with the same timing primitive as everything else, so they share its
threads and synchronisation.

NOTE: [Four ceilings]
    A GEMM-bound shape (square nets, large batches) is judged against the GEMM peak, a chain
    of matrix-vector products against bandwidth. A PINN-sized batch (D = 2, K = 64, B = 4096)
    is neither: its matmuls are 64 wide, and evaluating tanh and scaling by 1 − t² over the (B,
    K) activations is a large share of the time. How fast that runs depends on the CPU
    (vectorised tanh on one machine, a scalar loop on another, 0.14 against 1.7 ns per element),
    so the rate is measured, on a (4096, 64) buffer that stays in cache as the activations of
    such a batch do. On a GPU that buffer is one launch, not a rate (runs made so took 33–40 G
    elements/s on the H200, a sixteenth of what its bandwidth allows, and bfloat16 rows read
    above 100% of such a bound): there the rate is measured on 2²⁰ × 64 elements. A small
    network is none of these: L=8 D=4 K=24 P=6 is 58 kFLOP, a few hundred nanoseconds of
    arithmetic, yet takes tens of microseconds on a CPU and hundreds on a GPU, because every
    kernel costs a fixed launch (dispatch from Python, an output allocated, on a GPU the launch
    itself). Any eager routine launches at least four kernels per hidden layer — a product and σ
    for the primal step, a product and a σ' scaling for the tangent or adjoint step (a bias
    rides in the product, ``addmm``) — so the fourth ceiling is 4·L launches at the measured
    cost of one: σ on a few elements. A routine that fuses kernels or replays a CUDA graph can
    beat it (efficiency above 100%).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from jacbench.kernels.activations import Activation, get_activation
from jacbench.measure import timing

# Large enough to reach steady-state throughput, small enough to measure in about a second.
GEMM_SIZE = {"cpu": 2048, "cuda": 8192}
READ_BYTES = {"cpu": 256 * 2**20, "cuda": 2 * 2**30}
# A PINN batch's activations, in cache as they are there; on a GPU a buffer that size is one
# launch (microseconds), so the rate is read off one large enough to outlast it.
ELEMENTWISE_SHAPE = {"cpu": (4096, 64), "cuda": (2**20, 64)}
LAUNCH_SHAPE = (1, 16)  # a few elements: the call is all launch, no arithmetic
# The fewest kernels an eager Jacobian launches per hidden layer (NOTE: [Four ceilings]).
EAGER_KERNELS_PER_LAYER = 4


@dataclass(frozen=True)
class Peaks:
    """Measured limits of one device in one dtype."""

    device: str
    dtype: str
    flops_per_s: float
    bytes_per_s: float
    gemm_size: int
    activation: str = "tanh"
    activation_per_s: float = 0.0  # elements of σ(z) per second; 0: not measured
    derivative_per_s: float = 0.0  # elements of g ⊙ σ'(z) per second; 0: not measured
    launch_s: float = 0.0  # seconds per eager kernel: σ on a few elements; 0: not measured

    def as_dict(self) -> dict:
        """The fields by name, as meta.json stores them."""
        return asdict(self)


def _gemm_flops_per_s(n: int, device: str, dtype: torch.dtype, min_time: float) -> float:
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=generator).to(device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    gemm = timing.measure(lambda: torch.mm(a, b, out=out), device=device, min_time=min_time)
    return 2 * n**3 / gemm.median


def _read_bytes_per_s(nbytes: int, device: str, min_time: float) -> float:
    # Bytes are bytes: read a float32 buffer whatever the dtype, so that no conversion
    # (bfloat16 → float32 accumulation) makes the read compute-bound.
    buffer = torch.ones(nbytes // 4, device=device, dtype=torch.float32)
    read = timing.measure(buffer.sum, device=device, min_time=min_time)
    return buffer.numel() * 4 / read.median


def _elementwise_per_s(
    activation: Activation, device: str, dtype: torch.dtype, min_time: float
) -> tuple[float, float]:
    """Elements per second of σ(z) and of the scaling g ⊙ σ'(z), as the routines run them."""
    generator = torch.Generator().manual_seed(0)
    shape = ELEMENTWISE_SHAPE[torch.device(device).type]
    z = torch.randn(shape, generator=generator).to(device=device, dtype=dtype)
    g = torch.randn(shape, generator=generator).to(device=device, dtype=dtype)
    saved = activation.fn(z) if activation.reads_output else z
    value = timing.measure(lambda: activation.fn(z), device=device, min_time=min_time)
    scaling = timing.measure(
        lambda: activation.times_derivative(g, saved), device=device, min_time=min_time
    )
    return z.numel() / value.median, z.numel() / scaling.median


def _launch_s(activation: Activation, device: str, dtype: torch.dtype, min_time: float) -> float:
    z = torch.zeros(LAUNCH_SHAPE, device=device, dtype=dtype)
    return timing.measure(lambda: activation.fn(z), device=device, min_time=min_time).median


def measure_peaks(
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    min_time: float = 0.5,
    activation: str = "tanh",
) -> Peaks:
    """Time a square GEMM (2·n³ FLOPs), a full read of a large buffer (a sum), σ and σ', and
    σ on a few elements (the cost of one kernel launch)."""
    kind = torch.device(device).type
    act = get_activation(activation)
    per_value, per_scaling = _elementwise_per_s(act, device, dtype, min_time / 2)
    peaks = Peaks(
        device=str(device),
        dtype=str(dtype).removeprefix("torch."),
        flops_per_s=_gemm_flops_per_s(GEMM_SIZE[kind], device, dtype, min_time),
        bytes_per_s=_read_bytes_per_s(READ_BYTES[kind], device, min_time),
        gemm_size=GEMM_SIZE[kind],
        activation=act.name,
        activation_per_s=per_value,
        derivative_per_s=per_scaling,
        launch_s=_launch_s(act, device, dtype, min_time / 4),
    )
    if kind == "cuda":
        torch.cuda.empty_cache()
    return peaks


def weight_bytes(widths: Sequence[int], dtype: torch.dtype) -> int:
    """Bytes of the L+1 weight matrices: what any Jacobian routine must read at least once."""
    return dtype.itemsize * sum(a * b for a, b in zip(widths[:-1], widths[1:]))


def elementwise_seconds(elementwise: int, widths: Sequence[int], batch: int, peaks: Peaks) -> float:
    """The least time the activations take: σ on the hidden units, then the σ' scalings.

    ``elementwise`` is ``cost.elementwise_flops`` of the mode (bias additions not counted):
    batch · Σ K_k evaluations of σ, the rest scalings by σ'. 0 where the rates are unknown.
    """
    if peaks.activation_per_s <= 0 or peaks.derivative_per_s <= 0:
        return 0.0
    values = batch * sum(widths[1:-1])
    scalings = max(elementwise - values, 0)
    return values / peaks.activation_per_s + scalings / peaks.derivative_per_s


def launch_seconds(widths: Sequence[int], peaks: Peaks) -> float:
    """The least time an eager routine spends launching kernels: 4 per hidden layer at the
    measured cost of one (NOTE: [Four ceilings]). 0 where that cost is unknown."""
    return EAGER_KERNELS_PER_LAYER * (len(widths) - 2) * peaks.launch_s


def bound_seconds(
    flops: int,
    widths: Sequence[int],
    dtype: torch.dtype,
    peaks: Peaks,
    *,
    elementwise: int | None = None,
    batch: int = 1,
) -> float:
    """The roofline bound: the largest of FLOPs / peak FLOP/s, weight bytes / bandwidth, the
    launches and, where ``elementwise`` is given, the activations' time (NOTE: [Four
    ceilings])."""
    bound = max(
        flops / peaks.flops_per_s,
        weight_bytes(widths, dtype) / peaks.bytes_per_s,
        launch_seconds(widths, peaks),
    )
    if elementwise is None:
        return bound
    return max(bound, elementwise_seconds(elementwise, widths, batch, peaks))
