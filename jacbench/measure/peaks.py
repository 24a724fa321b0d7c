"""The machine's limits, measured: matmul throughput, read bandwidth from memory and from
cache, elementwise rates, launches.

A routine cannot beat ``bound_s = max(matmul FLOPs / peak FLOP/s, weight bytes / read rate,
elementwise time)``: the arithmetic, reading every weight once (from the cache they fit in,
at that cache's measured rate; weights larger than the cache, as NOTE: [Weights a little
larger than the cache] says), and the activations — σ on every hidden
unit of the primal pass at the measured rate of σ, and every scaling by σ' at the measured
rate of the cheapest scaling, an in-place product with a broadcast factor (see
``cost.elementwise_flops``). Efficiency is ``bound_s / median_s``, at most 1 by
construction. All are measured on the run's device and dtype with the same timing primitive
as everything else, so they share its threads and synchronisation.

NOTE: [Three ceilings]
    A GEMM-bound shape (square nets, large batches) is judged against the GEMM peak, a chain
    of matrix-vector products against the rate its weights can be read at. Weights that fit
    in the last-level cache (the CPU's L3, the GPU's L2) stay there between calls: the seed
    problem's 12 MB at L=3 in a 32 MB L3, 4–12 MB in an H200's 50 MB L2, read faster than
    memory. Judged against memory bandwidth, such rows read above 100% (152% on the H200), so
    the weights are timed against the rate of a read from a buffer half the cache's size,
    repeated, where they fit. A PINN-sized batch (D = 2, K = 64, B = 4096) is neither: its
    matmuls are 64 wide, and evaluating tanh and scaling by σ' over the (B, K) activations
    is a large share of the time. How fast σ runs depends on the CPU (vectorised tanh on one
    machine, a scalar loop on another, 0.14 against 1.7 ns per element), so its rate is
    measured, on a (4096, 64) buffer that stays in cache as the activations of such a batch
    do (on a GPU on 2²⁰ × 64 elements: a smaller buffer is one launch, not a rate). A
    scaling's least cost is an in-place product with a factor computed once per unit and
    broadcast along the tangent or adjoint rows, which is how forward mode scales its (B, K,
    D) tangents: timed as ``g ⊙ σ'(z)`` on whole buffers instead, the bound read 41 ms for a
    forward pass measured at 6.7 ms (H200, bfloat16).

    Launches are no ceiling: a routine that fuses kernels (``fused``), replays a CUDA graph,
    is compiled (JAX's jit, torch.compile) or stays out of torch's dispatch (the small
    kernels) launches fewer than an eager one, and the cost of one launch measured as a
    whole synchronised call is its latency, not what a stream of launches costs. Counted as
    four launches per hidden layer, the bound read 1162% for ``fused`` and 130% for JAX on a
    tiny net. A small network's rows therefore read low efficiencies: their time is
    overhead, which no hardware ceiling describes; ``launch_s`` is kept as a measure of it.

    A user's model has one ceiling only: the generic plan counts its FLOPs, not what its
    layers read and write, so its rows' bound is FLOPs / peak FLOP/s, a floor under the
    time, and their efficiency the share of the FLOP peak reached (small models read a
    few percent: their time is overhead too).

    A run whose peaks have no cache measurements (made before they were) has no bound at a
    row whose weights could have stayed in a cache (smaller than the buffer its bandwidth was
    read from) where the read would be the largest ceiling: ``bound_s`` and the efficiency
    are empty there and ``bound_note`` says why.

NOTE: [Weights a little larger than the cache]
    Weights larger than the last-level cache are not all read from memory at every call: the
    cache still holds its size of them from the call before, and a routine that reads them
    back to front finds there what it read last (reverse mode's second pass does, and the
    next call's first pass finds what that pass read last). Their read is bounded by the
    larger of all of them at the cache's rate and the part the cache cannot hold at
    memory's: the same bound as the cache's one byte short of its size, memory's far above
    it. Timed against all of them from memory, the seed problem at L=10 (40 MB of weights, a
    32 MiB L3; AMD EPYC) read 86–89% efficient in reverse mode, which reads every weight
    twice (80 MB in 1.35 ms, 59 GB/s where memory's rate read 34.5 GB/s), while L=3 (12 MB,
    in the cache) read 39%: one read's bound from memory, 1.16 ms, is no floor for a routine
    that reads once, back and forth. By the larger of the two it reads 17%.

NOTE: [A ceiling is the fastest block]
    Every ceiling is the rate of its fastest timed block, not its median: a ceiling is what
    the machine can do, and on a VM whose share of the host drifts from minute to minute the
    median of the ceiling's own blocks can fall below what a row timed a minute later
    reaches. Measured on an AMD EPYC (two cores of a shared VM): a seed run's GEMM peak read
    173 GFLOP/s by its median and forward mode's L=3 row (1000 tangents, GEMM-bound) then
    read 104% efficient; a classes run's read 126 GFLOP/s, and three GEMM-bound rows read
    103–138%.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from jacbench.kernels import native
from jacbench.kernels.activations import Activation, get_activation
from jacbench.kernels.products import tanh_by_sigmoid
from jacbench.measure import timing

# Large enough to reach steady-state throughput, small enough to measure in about a second.
GEMM_SIZE = {"cpu": 2048, "cuda": 8192}
READ_BYTES = {"cpu": 256 * 2**20, "cuda": 2 * 2**30}
# A PINN batch's activations, in cache as they are there; on a GPU a buffer that size is one
# launch (microseconds), so the rate is read off one large enough to outlast it.
ELEMENTWISE_SHAPE = {"cpu": (4096, 64), "cuda": (2**20, 64)}
LAUNCH_SHAPE = (1, 16)  # a few elements: the call is all launch, no arithmetic


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
    cache_bytes: int = 0  # the last-level cache (CPU L3, GPU L2); 0: not known
    cache_bytes_per_s: float = 0.0  # a read from a buffer half that size; 0: not measured
    scaling_per_s: float = 0.0  # elements/s of g *= d (d broadcast); 0: not measured

    def as_dict(self) -> dict:
        """The fields by name, as meta.json stores them."""
        return asdict(self)


def _fastest(measured: timing.Measurement) -> float:
    """Seconds per call of the fastest block: a ceiling's (NOTE: [A ceiling is the fastest
    block])."""
    return min(measured.times)


def _gemm_peak(n: int, device: str, dtype: torch.dtype, min_time: float) -> tuple[int, float]:
    """The faster of square GEMMs of sizes n and n/2, with its size. A larger GEMM is not
    always the faster: on an AMD EPYC (two cores, MKL) 1024² ran at 207 GFLOP/s and 2048² at
    194, and forward mode's 1000-wide GEMMs then read 103% of the 2048² peak."""
    rates = {m: _gemm_flops_per_s(m, device, dtype, min_time / 2) for m in (n, n // 2)}
    best = max(rates, key=rates.__getitem__)
    return best, rates[best]


def _gemm_flops_per_s(n: int, device: str, dtype: torch.dtype, min_time: float) -> float:
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=generator).to(device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    gemm = timing.measure(lambda: torch.mm(a, b, out=out), device=device, min_time=min_time)
    return 2 * n**3 / _fastest(gemm)


def _read_bytes_per_s(nbytes: int, device: str, min_time: float) -> float:
    # Bytes are bytes: read a float32 buffer whatever the dtype, so that no conversion
    # (bfloat16 → float32 accumulation) makes the read compute-bound.
    buffer = torch.ones(nbytes // 4, device=device, dtype=torch.float32)
    read = timing.measure(buffer.sum, device=device, min_time=min_time)
    return buffer.numel() * 4 / _fastest(read)


def _elementwise_per_s(
    activation: Activation, device: str, dtype: torch.dtype, min_time: float
) -> tuple[float, float]:
    """Elements per second of σ(z) and of the scaling g ⊙ σ'(z), as the routines run them."""
    generator = torch.Generator().manual_seed(0)
    shape = ELEMENTWISE_SHAPE[torch.device(device).type]
    z = torch.randn(shape, generator=generator).to(device=device, dtype=dtype)
    g = torch.randn(shape, generator=generator).to(device=device, dtype=dtype)
    saved = activation.fn(z) if activation.reads_output else z
    value = _fastest(timing.measure(lambda: activation.fn(z), device=device, min_time=min_time))
    if activation.name == "tanh" and torch.device(device).type == "cpu":
        # The routines may evaluate tanh as 2·σ(2z) − 1 or by the C++ kernels' rational
        # form where the tuning found it faster (torch.tanh runs at 1.3–1.7 ns an element on
        # an AMD EPYC, the sigmoid form at 0.24–0.38, the C++ form at 0.16): σ's ceiling is
        # the fastest form's. In place, again and again: tanh's values stay in [−1, 1], so
        # every call does the same work.
        values = torch.tanh(z)
        by_sigmoid = timing.measure(
            lambda: tanh_by_sigmoid(values), device=device, min_time=min_time
        )
        value = min(value, _fastest(by_sigmoid))
        if dtype == torch.float32 and native.tanh_(values) is not None:  # the C++ form
            by_cpp = timing.measure(lambda: native.tanh_(values), device=device, min_time=min_time)
            value = min(value, _fastest(by_cpp))
    scaling = timing.measure(
        lambda: activation.times_derivative(g, saved), device=device, min_time=min_time
    )
    return z.numel() / value, z.numel() / _fastest(scaling)


def _scaling_per_s(device: str, dtype: torch.dtype, min_time: float) -> float:
    """Elements per second of the cheapest σ' scaling: in place, by a factor broadcast along
    the rows (NOTE: [Three ceilings])."""
    generator = torch.Generator().manual_seed(0)
    shape = ELEMENTWISE_SHAPE[torch.device(device).type]
    g = torch.randn(shape, generator=generator).to(device=device, dtype=dtype)
    d = torch.rand((1, shape[1]), generator=generator).to(device=device, dtype=dtype) + 0.5
    scaled = timing.measure(lambda: g.mul_(d), device=device, min_time=min_time)
    return g.numel() / _fastest(scaled)


def cache_bytes(device: str) -> int:
    """The last-level cache's size in bytes: the CPU's largest (from sysfs), the GPU's L2; 0
    where the system does not say."""
    if torch.device(device).type == "cuda":
        properties = torch.cuda.get_device_properties(torch.device(device))
        return int(getattr(properties, "L2_cache_size", 0) or 0)
    sizes = [0]
    for level in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        with contextlib.suppress(OSError, ValueError):
            if (level / "type").read_text().strip() == "Instruction":
                continue
            text = (level / "size").read_text().strip().upper()
            scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
            sizes.append(int(text.rstrip("KMG")) * scale)
    return max(sizes)


def _launch_s(activation: Activation, device: str, dtype: torch.dtype, min_time: float) -> float:
    z = torch.zeros(LAUNCH_SHAPE, device=device, dtype=dtype)
    return _fastest(timing.measure(lambda: activation.fn(z), device=device, min_time=min_time))


def measure_peaks(
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    min_time: float = 0.5,
    activation: str = "tanh",
) -> Peaks:
    """Time a square GEMM (2·n³ FLOPs), a full read of a large buffer (a sum) and of one half
    the last-level cache's size, σ and σ', the cheapest scaling, and σ on a few elements
    (the cost of one kernel launch)."""
    kind = torch.device(device).type
    act = get_activation(activation)
    gemm_size, flops_per_s = _gemm_peak(GEMM_SIZE[kind], device, dtype, min_time)
    per_value, per_scaling = _elementwise_per_s(act, device, dtype, min_time / 2)
    cache = cache_bytes(device)
    peaks = Peaks(
        device=str(device),
        dtype=str(dtype).removeprefix("torch."),
        flops_per_s=flops_per_s,
        bytes_per_s=_read_bytes_per_s(READ_BYTES[kind], device, min_time),
        gemm_size=gemm_size,
        activation=act.name,
        activation_per_s=per_value,
        derivative_per_s=per_scaling,
        launch_s=_launch_s(act, device, dtype, min_time / 4),
        cache_bytes=cache,
        cache_bytes_per_s=_read_bytes_per_s(cache // 2, device, min_time / 2) if cache else 0.0,
        scaling_per_s=_scaling_per_s(device, dtype, min_time / 4),
    )
    if kind == "cuda":
        torch.cuda.empty_cache()
    return peaks


def weight_bytes(widths: Sequence[int], dtype: torch.dtype) -> int:
    """Bytes of the L+1 weight matrices: what any Jacobian routine must read at least once."""
    return dtype.itemsize * sum(a * b for a, b in zip(widths[:-1], widths[1:]))


def elementwise_seconds(elementwise: int, widths: Sequence[int], batch: int, peaks: Peaks) -> float:
    """The least time the activations take: σ on the hidden units, then the σ' scalings at
    the cheapest scaling's rate (NOTE: [Three ceilings]).

    ``elementwise`` is ``cost.elementwise_flops`` of the mode (bias additions not counted):
    batch · Σ K_k evaluations of σ, the rest scalings by σ'. Peaks without the scaling's rate
    (older runs) count σ alone; 0 where σ's rate is unknown too.
    """
    if peaks.activation_per_s <= 0:
        return 0.0
    values = batch * sum(widths[1:-1])
    scalings = max(elementwise - values, 0)
    scaling = scalings / peaks.scaling_per_s if peaks.scaling_per_s > 0 else 0.0
    return values / peaks.activation_per_s + scaling


def weight_seconds(widths: Sequence[int], dtype: torch.dtype, peaks: Peaks) -> float | None:
    """The least time reading every weight once takes: from the last-level cache where they
    fit in it; where they do not, the larger of all of them at the cache's rate and the part
    the cache cannot hold at memory's (NOTE: [Weights a little larger than the cache]); None
    where they might fit in a cache whose rate was not measured (peaks from before it was,
    weights smaller than the buffer memory was read from)."""
    nbytes = weight_bytes(widths, dtype)
    if peaks.cache_bytes > 0:
        rate = peaks.cache_bytes_per_s
        from_cache = nbytes / rate if rate > 0 else 0.0
        if nbytes <= peaks.cache_bytes:
            return from_cache or None
        beyond = nbytes - peaks.cache_bytes  # what the cache cannot hold, from memory
        from_memory = beyond / peaks.bytes_per_s if peaks.bytes_per_s > 0 else 0.0
        return max(from_cache, from_memory) or None
    read_from = READ_BYTES.get(torch.device(peaks.device).type, 0)
    return nbytes / peaks.bytes_per_s if nbytes >= read_from else None


@dataclass(frozen=True)
class Bound:
    """The roofline bound of a row (None: there is none) and, where there is none, why."""

    seconds: float | None
    note: str = ""


def model_bound_seconds(flops: int, peaks: Peaks) -> float:
    """A user's model's bound: its FLOPs are counted (the generic plan), what its layers read
    and write is not, so the FLOPs' ceiling alone, a floor under the time (NOTE: [Three
    ceilings])."""
    return flops / peaks.flops_per_s


def bound_seconds(
    flops: int,
    widths: Sequence[int],
    dtype: torch.dtype,
    peaks: Peaks,
    *,
    elementwise: int | None = None,
    batch: int = 1,
) -> Bound:
    """The roofline bound: the largest of FLOPs / peak FLOP/s, the weights' read and, where
    ``elementwise`` is given, the activations' time (NOTE: [Three ceilings]). None where the
    read would be the largest ceiling and its rate is not known."""
    others = flops / peaks.flops_per_s
    if elementwise is not None:
        others = max(others, elementwise_seconds(elementwise, widths, batch, peaks))
    read = weight_seconds(widths, dtype, peaks)
    if read is not None:
        return Bound(max(others, read))
    from_memory = weight_bytes(widths, dtype) / peaks.bytes_per_s
    if others >= from_memory:  # a read from cache is faster still: the others bound it
        return Bound(others)
    mib = weight_bytes(widths, dtype) / 2**20
    return Bound(
        None,
        f"the weights ({f'{mib:,.0f}' if mib >= 100 else f'{mib:.3g}'} MiB) may stay in a cache "
        "whose read rate this run's peaks do not hold",
    )
