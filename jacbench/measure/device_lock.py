"""One timing process per device: machine-wide locks on the CPU cores or the GPU a sweep times on.

Two runs timing at once on the same cores (or the same GPU) slow each other down and both
publish the damage. So a sweep holds, while it measures, a lock per CPU core it may run on
(its affinity set: under Slurm or ``taskset`` only the cores it was given) or one per GPU
(by the GPU's UUID, which survives ``CUDA_VISIBLE_DEVICES`` renumbering). Shards given
disjoint cores run side by side; shards on the same cores take turns. Locks are taken in
one order (so two sweeps never wait on each other in a cycle) and released by the
operating system when a process dies.

The lock files live in the machine's temporary folder (node-local on clusters), or in
``$JACBENCH_LOCK_DIR``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import filelock
import torch

LOCK_DIR_VARIABLE = "JACBENCH_LOCK_DIR"


def lock_dir() -> Path:
    """Where the device locks live."""
    return Path(os.environ.get(LOCK_DIR_VARIABLE) or tempfile.gettempdir())


def _cores() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux: every core
        return list(range(os.cpu_count() or 1))


def _gpu_name(device: torch.device) -> str:
    index = device.index if device.index is not None else torch.cuda.current_device()
    uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    return f"gpu-{uuid}" if uuid is not None else f"gpu-{index}"


def lock_names(device: str) -> list[str]:
    """The locks a sweep on ``device`` holds: ``cpu-<core>`` per core, or ``gpu-<uuid>``."""
    parsed = torch.device(device)
    if parsed.type == "cuda":
        return [_gpu_name(parsed)]
    return [f"cpu-{core}" for core in _cores()]


def describe(device: str) -> str:
    """The device's cores or GPU in words, for a waiting message."""
    if torch.device(device).type == "cuda":
        return f"GPU {device}"
    cores = _cores()
    if len(cores) == 1:
        return f"CPU core {cores[0]}"
    if cores == list(range(cores[0], cores[-1] + 1)):
        return f"CPU cores {cores[0]}–{cores[-1]}"
    return f"CPU cores {', '.join(map(str, cores))}"


@contextlib.contextmanager
def hold(device: str, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold ``device``'s locks for the block; wait (telling ``on_wait`` once) while another
    jacbench process holds any of them."""
    folder = lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    locks = [
        filelock.FileLock(folder / f"jacbench-{name}.lock", mode=0o666, is_singleton=False)
        for name in lock_names(device)
    ]
    with contextlib.ExitStack() as held:
        told = False
        for lock in locks:
            try:
                lock.acquire(timeout=0)
            except filelock.Timeout:
                if on_wait is not None and not told:
                    on_wait(f"waiting for {describe(device)}: another jacbench run is timing there")
                    told = True
                lock.acquire()
            held.callback(lock.release)
        yield
