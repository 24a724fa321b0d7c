"""Shards: one run's grid dealt into n parts that run apart (a Slurm array, say).

A shard is ``index/count`` (0 ≤ index < count). Every shard of a run deals the same grid
the same way and keeps its own part: points go to shards by estimated time, not by
position (NOTE: [Dealing by estimated time]), and every method of a point stays with the
point, so a point's rows are always timed side by side in one process. Each shard writes
its own run folder, ``<run>/shards/<index>-of-<count>/``, with its own lock: n shards
on a shared filesystem never write the same file, and each resumes on its own.
``jacbench merge <run>`` joins them (``jacbench.cluster.merging``).

Inside a Slurm job array, ``jacbench run`` without ``--shard`` shards itself from
``SLURM_ARRAY_TASK_ID``, ``SLURM_ARRAY_TASK_COUNT`` and ``SLURM_ARRAY_TASK_MIN``
(``from_environment``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from jacbench.ad import cost
from jacbench.runs.grid import Point
from jacbench.runs.methods import Method
from jacbench.runs.results import SHARDS_FOLDER

_FOLDER_NAME = re.compile(r"^(\d+)-of-(\d+)$")


@dataclass(frozen=True, order=True)
class Shard:
    """Part ``index`` of ``count`` (0 ≤ index < count)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"a run has at least 1 shard, got {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard index must be 0 … {self.count - 1}, got {self.index}")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def folder_name(self) -> str:
        """The shard's folder under ``<run>/shards/``: ``1-of-3``."""
        return f"{self.index}-of-{self.count}"


def parse_shard(text: str) -> Shard:
    """``"1/3"`` as ``Shard(1, 3)``.

    >>> parse_shard("1/3")
    Shard(index=1, count=3)
    """
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if match is None:
        raise ValueError(f"--shard takes i/n with 0 ≤ i < n (e.g. 0/4), got {text!r}")
    return Shard(int(match[1]), int(match[2]))


def from_environment(environ: Mapping[str, str] | None = None) -> Shard | None:
    """The shard of this Slurm array task, or None outside a job array.

    The task's index is ``(SLURM_ARRAY_TASK_ID − SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP``
    and the count ``SLURM_ARRAY_TASK_COUNT``: ``--array=1-4`` gives shards 0/4 … 3/4.

    >>> from_environment({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2"})
    Shard(index=1, count=2)

    Every task sees the whole array (``SLURM_ARRAY_TASK_MAX`` too), so every task of an
    irregular one (``--array=0,2``) refuses before it runs anything, and a one-task array
    (``--array=3``, the re-run of one task) is refused: it cannot say how many shards the
    run has. A script that names its shard (``--shard "$SLURM_ARRAY_TASK_ID/8"``) re-runs
    one task as that shard.

    Raises:
        ValueError: the variables do not describe a regular array of two or more tasks.
    """
    env = os.environ if environ is None else environ
    if "SLURM_ARRAY_TASK_ID" not in env or "SLURM_ARRAY_TASK_COUNT" not in env:
        return None
    try:
        task = int(env["SLURM_ARRAY_TASK_ID"])
        count = int(env["SLURM_ARRAY_TASK_COUNT"])
        first = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
        step = int(env.get("SLURM_ARRAY_TASK_STEP", "1") or "1")
        last = int(env.get("SLURM_ARRAY_TASK_MAX", str(first + (count - 1) * max(step, 1))))
    except ValueError:
        raise ValueError("the SLURM_ARRAY_TASK_* variables are not whole numbers") from None
    if count == 1:
        raise ValueError(
            f"a one-task array (SLURM_ARRAY_TASK_ID={task}) does not say how many shards the "
            f'run has: give --shard {task}/N (a script can pass --shard "$SLURM_ARRAY_TASK_ID/N"), '
            "or --shard all for the whole grid"
        )
    index, rest = divmod(task - first, max(step, 1))
    if rest or not 0 <= index < count or last - first != (count - 1) * max(step, 1):
        raise ValueError(
            f"cannot shard from SLURM_ARRAY_TASK_ID={task} of an irregular array ({count} tasks "
            f"from {first} to {last}, step {step}): use a regular --array=0-{count - 1}, "
            "or give --shard i/n"
        )
    return Shard(index, count)


def shard_dir(run_dir: Path | str, shard: Shard) -> Path:
    """Where ``shard`` of the run in ``run_dir`` writes: ``<run>/shards/<i>-of-<n>/``."""
    return Path(run_dir) / SHARDS_FOLDER / shard.folder_name


def shard_folders(run_dir: Path | str) -> dict[Shard, Path]:
    """The shard folders under ``<run>/shards/`` that hold a run (a meta.json), by shard."""
    root = Path(run_dir) / SHARDS_FOLDER
    found = {}
    if root.is_dir():
        for child in sorted(root.iterdir()):
            match = _FOLDER_NAME.match(child.name)
            if match and (child / "meta.json").exists():
                try:
                    found[Shard(int(match[1]), int(match[2]))] = child
                except ValueError:
                    continue  # not a shard's name after all (e.g. 3-of-3)
    return dict(sorted(found.items()))


def is_sharded(run_dir: Path | str) -> bool:
    """Whether ``run_dir`` holds shards of a run."""
    return bool(shard_folders(run_dir))


# NOTE: [Dealing by estimated time]
#     A shard's wall time is the sum of its tasks' times, and a task's time is mostly fixed
#     by the measurement rule, not by its FLOPs: every method is timed for at least
#     min_time, after two warm-up calls and one checked call, and its point once builds a
#     float64 reference (about two calls in float64). Only where one call takes longer than
#     min_time do the FLOPs decide. So a point's estimate is, per method,
#     max(min_time, call) + 3·call, plus 4·call for the reference, with a call's time taken
#     from the cost model's FLOPs at a nominal rate per device type (good enough to rank
#     points; nothing is measured, so every shard deals the same grid the same way
#     wherever it runs). The points are dealt largest first, each to the shard with the
#     least estimated time so far (longest-processing-time-first, within 4/3 of the best
#     split), and each shard keeps its points in grid order. Each task also costs a fixed
#     ``TASK_OVERHEAD_S`` (building the method, its checked call, a compile for JAX) and
#     a run ``RUN_OVERHEAD_S`` (starting Python and torch, the peaks, the report): the
#     quick preset (108 tasks, min_time 0.05) took 28 s on a quiet 2-core AMD EPYC, where
#     min_time and the calls alone came to 11 s.
TASK_OVERHEAD_S = 0.08
RUN_OVERHEAD_S = 6.0
NOMINAL_FLOP_RATE = {"cpu": 5e10, "cuda": 5e12}  # FLOP/s: ranks points, predicts nothing
CALL_OVERHEAD_S = {"cpu": 5e-6, "cuda": 2e-5}  # per layer: kernel launches and Python


# One Jacobian of a model (torch.func's overhead over a few hundred operations: milliseconds).
MODEL_CALL_S = 5e-3


def estimated_call_seconds(point: Point) -> float:
    """A nominal time for one Jacobian of ``point`` in its predicted mode (ranks points); a
    model, not built to count its costs, gets ``MODEL_CALL_S``."""
    if point.model is not None:
        return MODEL_CALL_S
    plan = cost.plan(point.widths, point.batch, point.torch_dtype)
    kind = torch.device(point.device).type
    rate = NOMINAL_FLOP_RATE.get(kind, NOMINAL_FLOP_RATE["cpu"])
    overhead = CALL_OVERHEAD_S.get(kind, CALL_OVERHEAD_S["cpu"]) * (len(point.widths) - 1)
    work = plan.flops[plan.mode] + plan.elementwise_flops[plan.mode]
    return work / rate + overhead


def estimated_seconds(point: Point, methods: int, min_time: float) -> float:
    """The estimated wall time of ``methods`` methods at ``point``: NOTE: [Dealing by
    estimated time]."""
    call = estimated_call_seconds(point)
    return methods * (max(min_time, call) + 3 * call + TASK_OVERHEAD_S) + 4 * call


def estimated_total(points: Sequence[Point], methods: int, min_time: float) -> float:
    """The estimated wall time of a run of ``methods`` methods at every one of ``points``,
    its start and report included."""
    return RUN_OVERHEAD_S + sum(estimated_seconds(p, methods, min_time) for p in points)


def deal(
    points: Sequence[Point], methods: Sequence[Method] | int, count: int, min_time: float
) -> list[list[Point]]:
    """``points`` dealt into ``count`` shards of similar estimated time, each in grid order.

    Three points of about equal time into two shards: the largest alone, the two others
    together.

    >>> from jacbench.runs.grid import expand_grid
    >>> parts = deal(expand_grid(depths=[1, 2, 3], d_in=[4], width=[8], d_out=[1]), 2, 2, 0.1)
    >>> [[p.depth for p in part] for part in parts]
    [[3], [1, 2]]
    """
    n_methods = methods if isinstance(methods, int) else len(methods)
    estimates = [estimated_seconds(p, n_methods, min_time) for p in points]
    totals = [0.0] * count
    owner = [0] * len(points)
    for i in sorted(range(len(points)), key=lambda i: (-estimates[i], i)):
        shard = min(range(count), key=lambda s: (totals[s], s))
        owner[i] = shard
        totals[shard] += estimates[i]
    return [[p for p, o in zip(points, owner) if o == s] for s in range(count)]
