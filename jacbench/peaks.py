"""The machine's limits, measured: peak matmul throughput and memory read bandwidth.

A routine cannot beat ``bound_s = max(matmul FLOPs / peak FLOP/s, weight bytes / bandwidth)``:
the first term is the arithmetic, the second reading every weight once. Efficiency is
``bound_s / median_s``. Both peaks are measured on the run's device and dtype with the same
timing primitive as everything else, so they share its threads and synchronisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from jacbench import timing

# Large enough to reach steady-state throughput, small enough to measure in about a second.
GEMM_SIZE = {"cpu": 2048, "cuda": 8192}
READ_BYTES = {"cpu": 256 * 2**20, "cuda": 2 * 2**30}


@dataclass(frozen=True)
class Peaks:
    """Measured limits of one device in one dtype."""

    device: str
    dtype: str
    flops_per_s: float
    bytes_per_s: float
    gemm_size: int

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


def measure_peaks(
    device: str = "cpu", dtype: torch.dtype = torch.float32, *, min_time: float = 0.5
) -> Peaks:
    """Time a square GEMM (2·n³ FLOPs) and a full read of a large buffer (a sum)."""
    kind = torch.device(device).type
    peaks = Peaks(
        device=str(device),
        dtype=str(dtype).removeprefix("torch."),
        flops_per_s=_gemm_flops_per_s(GEMM_SIZE[kind], device, dtype, min_time),
        bytes_per_s=_read_bytes_per_s(READ_BYTES[kind], device, min_time),
        gemm_size=GEMM_SIZE[kind],
    )
    if kind == "cuda":
        torch.cuda.empty_cache()
    return peaks


def weight_bytes(widths: Sequence[int], dtype: torch.dtype) -> int:
    """Bytes of the L+1 weight matrices: what any Jacobian routine must read at least once."""
    return dtype.itemsize * sum(a * b for a, b in zip(widths[:-1], widths[1:]))


def bound_seconds(flops: int, widths: Sequence[int], dtype: torch.dtype, peaks: Peaks) -> float:
    """The roofline bound: max(FLOPs / peak FLOP/s, weight bytes / bandwidth)."""
    return max(flops / peaks.flops_per_s, weight_bytes(widths, dtype) / peaks.bytes_per_s)
