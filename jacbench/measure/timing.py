"""The one timing primitive: ``torch.utils.benchmark.Timer``, warmed up, CUDA-synchronised.

``Timer`` synchronises CUDA around every block it times and runs the statement with
``num_threads`` threads (its default is 1, so the threads in use are passed explicitly).
A ``Measurement`` keeps the raw per-call times of every block; median, IQR, mean and
run count are derived from them, never stored apart.

NOTE: [Blocks on a GPU]
    ``blocked_autorange`` sizes its blocks so that the timer's own overhead is under 1e-4 of a
    block. On a GPU that overhead is a device synchronisation, tens of microseconds, so it
    asks for blocks of a tenth of a second and more: one block fills the whole ``min_time``
    and a measurement has one sample, no spread and no interval (every row of the first CUDA
    runs, results/cuda-*, has runs = 1 but for the interleaved rounds). ``Timer``'s clock
    synchronises whatever accelerator torch sees, so the same holds for a CPU run on a GPU
    machine. Where an accelerator is present the blocks are sized here instead: enough calls
    that a block lasts ``min_time / GPU_BLOCKS``, and at least ``GPU_MIN_BLOCK_S`` so that a
    synchronisation stays a small share of it, each block timed by ``Timer.timeit``. A
    machine without one keeps ``blocked_autorange``.
"""

from __future__ import annotations

import functools
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils import benchmark

from jacbench.measure import stats

# A measurement whose IQR is more than this share of its median is flagged noisy.
NOISY_IQR_FRACTION = 0.10
# On a GPU, blocks sized by hand (NOTE: [Blocks on a GPU]): about this many per measurement,
# none shorter than this.
GPU_BLOCKS = 20
GPU_MIN_BLOCK_S = 1e-3


@dataclass(frozen=True)
class Measurement:
    """Per-call times in seconds, one per timed block (each block the mean of its calls).

    ``rounds`` holds the interleaved round each block was timed in (empty: all round 0).
    """

    times: tuple[float, ...]
    rounds: tuple[int, ...] = ()

    @property
    def samples(self) -> tuple[tuple[int, int, float], ...]:
        """(process 0, round, seconds) per block: what samples.csv keeps."""
        rounds = self.rounds or (0,) * len(self.times)
        return tuple((0, r, t) for r, t in zip(rounds, self.times))

    @property
    def interval(self) -> tuple[float, float]:
        """The distribution-free 95% interval of the median (``stats.median_interval``)."""
        return stats.median_interval(self.times)

    @property
    def runs(self) -> int:
        """The number of timed blocks."""
        return len(self.times)

    @property
    def median(self) -> float:
        """The median per-call time, in seconds."""
        return statistics.median(self.times)

    @property
    def mean(self) -> float:
        """The mean per-call time, in seconds."""
        return statistics.fmean(self.times)

    @property
    def iqr(self) -> float:
        """The interquartile range of the per-call times (0 with one block)."""
        if len(self.times) < 2:
            return 0.0
        q1, _, q3 = statistics.quantiles(self.times, n=4, method="inclusive")
        return q3 - q1

    @property
    def noisy(self) -> bool:
        """Whether the IQR is more than ``NOISY_IQR_FRACTION`` of the median."""
        return self.median > 0 and self.iqr / self.median > NOISY_IQR_FRACTION


def synchronize(device: torch.device | str) -> None:
    """Wait for queued work on ``device`` (a no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_once(fn: Callable[[], object], device: torch.device | str = "cpu") -> float:
    """Wall-clock seconds of one synchronised call."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def measure(
    fn: Callable[[], object],
    *,
    device: torch.device | str = "cpu",
    min_time: float = 0.2,
    threads: int | None = None,
    warmup: int = 2,
) -> Measurement:
    """Time ``fn`` after ``warmup`` calls: blocks of calls until ``min_time`` seconds have run.

    Args:
        fn: a zero-argument callable; make its inputs before calling this.
        device: where fn's work runs (CUDA is synchronised around every block).
        min_time: the least total measured time, in seconds.
        threads: intra-op threads to time with; default ``torch.get_num_threads()``.
        warmup: untimed calls first (lazy initialisation, caches, CUDA kernels' first load).
    """
    threads = torch.get_num_threads() if threads is None else threads
    for _ in range(warmup):
        fn()
    synchronize(device)
    if timer_synchronises():
        return Measurement(sized_blocks(fn, device=device, min_time=min_time, threads=threads))
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads)
    result = timer.blocked_autorange(min_run_time=min_time)
    if len(result.times) >= stats.MIN_SAMPLES:
        return Measurement(tuple(result.times))
    # blocked_autorange may fill min_time with one to four long blocks (its blocks keep its
    # own overhead under 1e-4 of them); no verdict rests on fewer than MIN_SAMPLES
    # (stats.py), so the same calls are timed again as that many shorter blocks.
    calls = result.number_per_run * len(result.times)
    number = max(1, calls // stats.MIN_SAMPLES)
    return Measurement(tuple(timer.timeit(number).times[0] for _ in range(stats.MIN_SAMPLES)))


@functools.cache
def timer_synchronises() -> bool:
    """Whether ``Timer``'s clock synchronises an accelerator at every reading (NOTE: [Blocks
    on a GPU]): torch's ``torch.accelerator``, or CUDA on versions before it."""
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None:
        return bool(accelerator.is_available())
    return torch.cuda.is_available()


def sized_blocks(
    fn: Callable[[], object], *, device: torch.device | str, min_time: float, threads: int
) -> tuple[float, ...]:
    """Per-call times of blocks sized for about ``GPU_BLOCKS`` in ``min_time`` (NOTE: [Blocks
    on a GPU]); at least two blocks, however slow the call."""
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads)
    per_call = statistics.median(time_once(fn, device) for _ in range(3))
    block_s = max(min_time / GPU_BLOCKS, GPU_MIN_BLOCK_S)
    number = max(1, math.ceil(block_s / per_call)) if per_call > 0 else 1
    times: list[float] = []
    while sum(times) * number < min_time or len(times) < 2:
        times.append(timer.timeit(number).times[0])
    return tuple(times)
