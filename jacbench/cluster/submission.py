"""Submitting a sharded run with submitit: one job per shard, then the merge.

``submit`` hands n jobs to submitit's ``AutoExecutor``: a Slurm job array
(``executor="slurm"``) or processes on this machine (``"local"``). Each job runs
``python -m jacbench run <run options> --shard i/n --out OUT`` in a fresh interpreter; a
job whose shard folder exists already resumes it, so a requeued or re-submitted job never
measures a row twice. Jobs that land on one machine take turns on its cores or GPU
(``jacbench.measure.device_lock``): never two shards timing on the same hardware at once.

submitit is an optional extra: ``pip install 'jacbench[cluster]'``.
"""

from __future__ import annotations

import importlib.util
import math
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jacbench.runs import shards

EXECUTORS = ("slurm", "local")
LOGS_FOLDER = "submitit"  # inside the run folder: submitit's scripts, pickles and job logs
# A job that runs past its limit is killed: the default leaves room over the estimate.
TIME_MARGIN = 3.0
TIME_FLOOR_MIN = 10


class SubmitError(ValueError):
    """The jobs cannot be submitted as asked."""


def available() -> bool:
    """Whether submitit is installed."""
    return importlib.util.find_spec("submitit") is not None


def run_shard(run_args: Sequence[str], shard: str, out: str) -> int:
    """One job: ``jacbench run <run_args> --shard <shard> --out <out>`` in a fresh process,
    resuming the shard's folder when it holds a run. Returns run's exit code (0, or 1
    when some rows failed: the shard still finished).

    Raises:
        RuntimeError: the run stopped (bad options, killed, out of time).
    """
    folder = shards.shard_dir(out, shards.parse_shard(shard))
    resume = ["--resume"] if (folder / "meta.json").exists() else []
    command = [sys.executable, "-m", "jacbench", "run", *run_args]
    command += ["--shard", shard, "--out", out, "--quiet", *resume]
    code = subprocess.run(command, check=False).returncode
    if code not in (0, 1):
        raise RuntimeError(f"jacbench run --shard {shard} stopped with exit code {code}")
    return code


def default_timeout_min(estimated_s: float) -> int:
    """A job's time limit from its shard's estimated seconds: TIME_MARGIN × the estimate,
    at least TIME_FLOOR_MIN minutes."""
    return max(TIME_FLOOR_MIN, math.ceil(TIME_MARGIN * estimated_s / 60))


def executor_parameters(
    *,
    timeout_min: int,
    partition: str | None = None,
    gpus_per_task: int | None = None,
    cpus_per_task: int | None = None,
    mem_gb: float | None = None,
    parallel: int | None = None,
    slurm_options: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """submitit's ``update_parameters`` keywords for these options (Slurm ones prefixed
    ``slurm_``: the local executor ignores them)."""
    parameters: dict[str, Any] = {"name": "jacbench", "timeout_min": timeout_min}
    for key, value in (
        ("slurm_partition", partition),
        ("slurm_gpus_per_task", gpus_per_task),
        ("cpus_per_task", cpus_per_task),
        ("mem_gb", mem_gb),
        ("slurm_array_parallelism", parallel),
    ):
        if value is not None:
            parameters[key] = value
    if slurm_options:
        parameters["slurm_additional_parameters"] = dict(slurm_options)
    return parameters


def submit(
    run_args: Sequence[str],
    count: int,
    out: Path | str,
    *,
    executor: str = "local",
    parameters: Mapping[str, Any] | None = None,
) -> list[Any]:
    """Submit ``count`` shard jobs of ``jacbench run <run_args>`` into ``out``; returns
    submitit's jobs (``job.job_id``, ``job.done()``, ``job.result()``).

    Raises:
        SubmitError: submitit is not installed, or Slurm is not here.
    """
    if executor not in EXECUTORS:
        raise SubmitError(f"unknown executor {executor!r}; expected one of: slurm, local")
    if not available():
        raise SubmitError("jacbench submit needs submitit: pip install 'jacbench[cluster]'")
    if executor == "slurm" and shutil.which("sbatch") is None:
        raise SubmitError("--executor slurm needs Slurm's sbatch on PATH (none here)")
    import submitit

    out = Path(out)
    runner = submitit.AutoExecutor(folder=out / LOGS_FOLDER, cluster=executor)
    runner.update_parameters(**dict(parameters or {}))
    shard_names = [str(shards.Shard(i, count)) for i in range(count)]
    return runner.map_array(run_shard, [list(run_args)] * count, shard_names, [str(out)] * count)
