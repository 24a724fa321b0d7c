"""How many threads to time with: torch's thread pool, unless it stalls beside other work.

NOTE: [A stalled thread pool]
    torch splits one large operation over its intra-op threads and waits for the last of
    them. Where other processes keep a core busy, one of those threads waits for the
    scheduler, and each operation that splits waits with it: on a 2-core machine beside one
    busy core a parallel tanh of 2^20 numbers took 5.9 ms on 2 threads and 3.6 ms on one,
    and calls of 0.4 ms sat at 48–56 ms for a whole run. ``check_pool`` times that tanh on
    the pool and on one thread in alternating rounds before a sweep, with other work
    watched over the same time. The pool is kept unless the machine is busy and the pool is
    not faster than one thread by the one decision rule (NOTE: [One decision rule]); then
    the sweep is timed on the cores other work leaves free, and says so. Both signals are
    needed: a quiet machine never drops threads on a noisy probe, and a busy machine with
    cores to spare keeps its pool.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from jacbench.measure import stats
from jacbench.measure.machine import BUSY_LOAD, OtherWork

# The probe: a tanh large enough to be split over the threads (torch's grain is 2^15), timed
# CALLS times a side in each of ROUNDS alternating rounds (about 0.1–0.3 s in all).
PROBE_SIZE = 1 << 20
ROUNDS = 4
CALLS = 5


@dataclass(frozen=True)
class PoolCheck:
    """What the probe found: the threads torch had, the threads to time with, the probe's
    median seconds on the pool and on one thread, and other work meanwhile (cores' worth)."""

    threads: int
    used: int
    pooled_s: float
    single_s: float
    other_cores: float | None

    @property
    def stalled(self) -> bool:
        """Whether the sweep times with fewer threads than torch had."""
        return self.used < self.threads

    def as_dict(self) -> dict[str, Any]:
        """What meta.json keeps (``thread_pool``)."""
        return asdict(self)

    @classmethod
    def of_dict(cls, found: object) -> PoolCheck | None:
        """A recorded check, or None where there is none (or it does not read)."""
        if not isinstance(found, dict):
            return None
        try:
            return cls(
                threads=int(found["threads"]),
                used=int(found["used"]),
                pooled_s=float(found["pooled_s"]),
                single_s=float(found["single_s"]),
                other_cores=None if found.get("other_cores") is None
                else float(found["other_cores"]),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError):
            return None


def check_pool(device: str = "cpu") -> PoolCheck | None:
    """Whether torch's thread pool pays on this machine now (NOTE: [A stalled thread pool]);
    None where there is no pool to check (another device than the CPU, one thread)."""
    threads = torch.get_num_threads()
    if device != "cpu" or threads < 2:
        return None
    x = torch.randn(PROBE_SIZE)
    others = OtherWork()
    pooled: list[list[float]] = []
    single: list[list[float]] = []
    try:
        for _ in range(ROUNDS):
            torch.set_num_threads(threads)
            pooled.append(_times(x))
            torch.set_num_threads(1)
            single.append(_times(x))
    finally:
        torch.set_num_threads(threads)
    busy = others.cores()
    pays = stats.decide(single, pooled, paired=True).outcome() is stats.Outcome.FASTER
    used = threads
    if busy is not None and busy > BUSY_LOAD and not pays:
        free = len(os.sched_getaffinity(0)) - math.ceil(busy - BUSY_LOAD)
        used = max(1, min(threads, free))
    return PoolCheck(
        threads=threads,
        used=used,
        pooled_s=statistics.median(t for r in pooled for t in r),
        single_s=statistics.median(t for r in single for t in r),
        other_cores=None if busy is None else round(busy, 2),
    )


def _times(x: torch.Tensor) -> list[float]:
    torch.tanh(x)  # the first call after a change of threads wakes the pool
    found = []
    for _ in range(CALLS):
        start = time.perf_counter()
        torch.tanh(x)
        found.append(time.perf_counter() - start)
    return found
