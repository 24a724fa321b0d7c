"""The one timing primitive: ``torch.utils.benchmark.Timer``, warmed up, CUDA-synchronised.

``Timer`` synchronises CUDA around every block it times and runs the statement with
``num_threads`` threads (its default is 1, so the threads in use are passed explicitly).
A ``Measurement`` keeps the raw per-call times of every block; median, IQR, mean and
run count are derived from them, never stored apart.

NOTE: [Blocks of one size]
    A measurement is about ``BLOCKS`` blocks of the same number of calls, the number chosen
    from the median of three calls so that a block lasts ``min_time / BLOCKS`` (and at least
    ``MIN_BLOCK_S``), on every device. ``Timer.blocked_autorange`` is not used, for two
    reasons. On a GPU its rule (the timer's own overhead under 1e-4 of a block) asks for
    blocks of a tenth of a second and more, because ``Timer``'s clock synchronises whatever
    accelerator torch sees (tens of microseconds): one block filled min_time, and the first
    CUDA runs (results/cuda-*) had one sample a row, no spread, no interval. On a CPU it
    rounds the calls a block holds to a power of ten where that rule is just met, so a call
    near 3 ms (the timer's 0.3 µs over 1e-4) made blocks of 1 call in one round and of 10 in
    the next: on an AMD EPYC a seed run's auto at L=10 had 7, 8 and 55 blocks in its three
    rounds (medians 2.46, 2.00, 2.98 ms), and the row's median over all blocks was the third
    round's alone. Blocks of one size give every round about the same weight. The timer's
    overhead is about 0.4 µs a block on a CPU, under 1e-3 of the shortest block.
"""

from __future__ import annotations

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
# About this many blocks of one size per measurement, none shorter than MIN_BLOCK_S (NOTE:
# [Blocks of one size]); never fewer than stats.MIN_SAMPLES.
BLOCKS = 20
MIN_BLOCK_S = 1e-3


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
    return Measurement(sized_blocks(fn, device=device, min_time=min_time, threads=threads))


def sized_blocks(
    fn: Callable[[], object], *, device: torch.device | str, min_time: float, threads: int
) -> tuple[float, ...]:
    """Per-call times of blocks of one size, about ``BLOCKS`` in ``min_time`` (NOTE: [Blocks
    of one size]); at least ``stats.MIN_SAMPLES`` blocks, however slow the call."""
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads)
    per_call = statistics.median(time_once(fn, device) for _ in range(3))
    block_s = max(min_time / BLOCKS, MIN_BLOCK_S)
    number = max(1, math.ceil(block_s / per_call)) if per_call > 0 else 1
    times: list[float] = []
    while sum(times) * number < min_time or len(times) < stats.MIN_SAMPLES:
        times.append(timer.timeit(number).times[0])
    return tuple(times)
