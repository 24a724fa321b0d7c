"""The tuning's cache: one file of tunings keyed by machine (CPU model, torch version, threads).

``$JACBENCH_CACHE_DIR/tuning.json``, else under ``$XDG_CACHE_HOME`` or ``~/.cache``; one
entry per machine key, so that a home directory shared between machines (a cluster's) keeps
each machine's. ``save`` adds an entry under a lock beside the file (NOTE: [One writer of
the tuning cache]); reading takes no lock. ``JACBENCH_TUNING=defaults`` turns the cache off
(reproducible kernels on every machine).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import filelock
import torch

from jacbench.kernels import native
from jacbench.measure.machine import cpu_model
from jacbench.measure.tuning.record import VERSION, Tuning

# NOTE: [One writer of the tuning cache]
#     The cache holds every machine's entry in one file, and two processes may add theirs at
#     once: the shards of a sweep starting together on the nodes of a cluster that share a
#     home directory, or `jacbench tune` beside a run. Each reads the file, adds its entry and
#     writes it back; unlocked, the later writer drops the entry the earlier one added. So
#     ``save`` holds a file lock (``tuning.json.lock``, beside the file) from its read to its
#     write, and writes through a temporary file renamed over the old one: a reader, which
#     takes no lock, sees the old file or the new, never half of one. The operating system
#     releases the lock when its process dies.
LOCK_SUFFIX = ".lock"


def machine_key() -> str:
    """What a tuning is valid for: CPU model, torch version and intra-op threads."""
    return f"{cpu_model()} | torch {torch.__version__} | {torch.get_num_threads()} threads"


def cache_path() -> Path:
    """``$JACBENCH_CACHE_DIR/tuning.json``, else under ``$XDG_CACHE_HOME`` or ``~/.cache``."""
    return native.cache_dir() / "tuning.json"


def lock_path(path: Path | None = None) -> Path:
    """The lock ``save`` holds: ``tuning.json.lock`` beside the cache file."""
    path = path or cache_path()
    return path.with_name(path.name + LOCK_SUFFIX)


def disabled() -> bool:
    """Whether tuning is turned off (``JACBENCH_TUNING=defaults``, ``off`` or ``0``)."""
    return os.environ.get("JACBENCH_TUNING", "").lower() in ("defaults", "off", "0")


def _read_cache(path: Path | None = None) -> dict[str, Any]:
    try:
        data = json.loads((path or cache_path()).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def cached() -> Tuning | None:
    """This machine's cached tuning, if one was measured (None when tuning is off)."""
    if disabled():
        return None
    entry = _read_cache().get(machine_key())
    if not isinstance(entry, dict) or entry.get("version") != VERSION:
        return None  # never measured here, or measured before some classes existed
    return Tuning.from_dict(entry)


def save(tuning: Tuning) -> Path:
    """Add ``tuning`` to the cache under its machine key (other machines' entries kept),
    under the cache's lock (NOTE: [One writer of the tuning cache])."""
    path = cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(lock_path(path), is_singleton=False):
        data = _read_cache(path)
        data[tuning.machine] = tuning.as_dict()
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
        tmp.replace(path)  # atomic: a concurrent reader sees the old file or the new
    return path
