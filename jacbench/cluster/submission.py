"""Submitting a sharded run with submitit: one job per shard, then the merge.

``submit`` hands n jobs to submitit's ``AutoExecutor``: a Slurm job array
(``executor="slurm"``) or processes on this machine (``"local"``). Each job runs
``python -m jacbench run <run options> --shard i/n --out OUT --resume-if-present`` in a
fresh interpreter: a requeued or re-submitted job resumes its shard and never measures a
row twice, and a finished shard is left as it is. A job near its time limit stops its run
and is requeued (``ShardJob.checkpoint``). Jobs that land on one machine take turns on its
cores or GPU (``jacbench.measure.device_lock``): never two shards timing on the same
hardware at once.

submitit is an optional extra: ``pip install 'jacbench[cluster]'``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jacbench.measure.machine import install_hint
from jacbench.runs import shards

EXECUTORS = ("slurm", "local")
LOGS_FOLDER = "submitit"  # inside the run folder: submitit's scripts, pickles and job logs
# A job that runs past its limit is killed: the default leaves room over the estimate.
TIME_MARGIN = 3.0
TIME_FLOOR_MIN = 10
# Slurm may send the signal up to a minute before it was asked to (its events' resolution):
# a limit of one or two minutes could stop a job before it measured anything, every time.
MIN_TIMEOUT_MIN = 3
STOP_WAIT_S = 30  # a stopped run's time to write meta.json before it is killed
# Slurm signals a job this long before its time limit (submitit's default is 90 s): at most
# a fifth of the limit, so that a short job runs a while before it is requeued.
SIGNAL_DELAY_S = 90


class SubmitError(ValueError):
    """The jobs cannot be submitted as asked."""


def available() -> bool:
    """Whether submitit is installed."""
    return importlib.util.find_spec("submitit") is not None


class ShardJob:
    """One job: ``jacbench run <run_args> --shard <shard> --out <out> --resume-if-present`` in
    a fresh process (a requeued or re-submitted job resumes its shard; a finished shard is
    left as it is).

    Checkpointable (submitit calls ``checkpoint`` on the signal Slurm sends before the time
    limit, ``SIGNAL_DELAY_S``): the run is stopped as Ctrl-C stops it (rows kept, meta.json
    marked interrupted) and the job requeued, to resume where it stopped; submitit gives up
    after ``max_num_timeout`` requeues (3).
    """

    def __init__(self) -> None:
        self._child: subprocess.Popen | None = None

    def __call__(self, run_args: Sequence[str], shard: str, out: str) -> int:
        """Returns run's exit code (0, or 1 when some rows failed: the shard still finished).

        Raises:
            RuntimeError: the run stopped (bad options, killed, out of time), in one line.
        """
        command = [sys.executable, "-m", "jacbench", "run", *run_args]
        command += ["--shard", shard, "--out", out, "--quiet", "--resume-if-present"]
        # Its own session: the time-out signal Slurm sends to the job step is this process's
        # to handle (``checkpoint``), not a default-fatal SIGUSR2 in the run.
        self._child = subprocess.Popen(command, start_new_session=True)
        code = self._child.wait()
        if code not in (0, 1):
            raise RuntimeError(f"jacbench run --shard {shard} {stopped_how(code)}")
        return code

    def checkpoint(self, run_args: Sequence[str], shard: str, out: str) -> Any:
        """Stop the run (SIGTERM: it keeps its rows) and hand submitit a fresh job to requeue."""
        from submitit.helpers import DelayedSubmission

        child = self._child
        if child is not None and child.returncode is None:
            child.terminate()
            if not _exits_within(child.pid, STOP_WAIT_S):
                child.kill()
        return DelayedSubmission(ShardJob(), run_args, shard, out)


def _exits_within(pid: int, seconds: float) -> bool:
    """Whether the child ``pid`` exits within ``seconds``, leaving it to be reaped.

    ``checkpoint`` runs in a signal handler while ``__call__`` is inside ``Popen.wait``,
    which holds the lock a second ``wait`` needs: that one would never see the exit. waitid
    with WNOWAIT looks without reaping."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
        except ChildProcessError:
            return True
        time.sleep(0.1)
    return False


def stopped_how(code: int) -> str:
    """How a ``jacbench run`` with exit code ``code`` stopped, in words.

    >>> stopped_how(-9)
    'was killed by SIGKILL'
    >>> stopped_how(143)
    'was stopped by SIGTERM (scancel or a time limit); its rows are kept'
    """
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    if code == 128 + signal.SIGTERM:
        return "was stopped by SIGTERM (scancel or a time limit); its rows are kept"
    if code == 130:
        return "was interrupted (SIGINT); its rows are kept"
    if code == 2:
        return "refused its options (exit code 2; the job's log says why)"
    return f"stopped with exit code {code}"


def default_timeout_min(estimated_s: float) -> int:
    """A job's time limit from its shard's estimated seconds: TIME_MARGIN × the estimate,
    at least TIME_FLOOR_MIN minutes."""
    return max(TIME_FLOOR_MIN, math.ceil(TIME_MARGIN * estimated_s / 60))


def signal_delay_s(timeout_min: int) -> int:
    """Seconds before the time limit at which a job is told to stop and requeue.

    >>> signal_delay_s(60), signal_delay_s(1)
    (90, 12)
    """
    return max(5, min(SIGNAL_DELAY_S, timeout_min * 60 // 5))


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
    parameters: dict[str, Any] = {
        "name": "jacbench",
        "timeout_min": timeout_min,
        "slurm_signal_delay_s": signal_delay_s(timeout_min),
    }
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
        raise SubmitError(f"jacbench submit needs submitit: {install_hint('cluster')}")
    if executor == "slurm" and shutil.which("sbatch") is None:
        raise SubmitError("--executor slurm needs Slurm's sbatch on PATH (none here)")
    import submitit

    out = Path(out)
    logs = out / LOGS_FOLDER
    before = set(logs.iterdir()) if logs.is_dir() else set()
    runner = submitit.AutoExecutor(folder=logs, cluster=executor)
    runner.update_parameters(**dict(parameters or {}))
    shard_names = [str(shards.Shard(i, count)) for i in range(count)]
    try:
        # submitit prints a refusing sbatch's stderr; the error raised carries it
        with contextlib.redirect_stderr(io.StringIO()):
            return runner.map_array(
                ShardJob(), [list(run_args)] * count, shard_names, [str(out)] * count
            )
    except BaseException:  # refused (sbatch said why): leave no pickles of jobs never made
        for made in set(logs.iterdir()) - before if logs.is_dir() else ():
            made.unlink(missing_ok=True) if made.is_file() else shutil.rmtree(made, True)
        if logs.is_dir() and not any(logs.iterdir()):
            logs.rmdir()
        raise


# NOTE: [Watching jobs without accounting]
#     submitit learns that a Slurm job ended from its result file, written by the job before
#     it exits, or from `sacct`. A job killed outright (SIGKILL, the OOM killer, a lost node,
#     `scancel`) writes no result, and on a cluster without accounting sacct answers nothing
#     (an error on every poll, printed into the terminal): submitit then waits forever.
#     So jobs are watched here from their result files and `squeue` (captured, never
#     printed): a job that has left the queue with no result file, and is still gone
#     GONE_GRACE_S later, has ended without a result; sacct, where it answers, says how.
GONE_GRACE_S = 5.0
SQUEUE_TIMEOUT_S = 30


class JobWatcher:
    """Which of a submission's jobs have ended, and how the ones without a result ended."""

    def __init__(self, jobs: Sequence[Any], executor: str) -> None:
        self.jobs = list(jobs)
        self.executor = executor
        self._gone_since: dict[int, float] = {}
        self.lost: dict[int, str] = {}  # job index → how it ended without a result

    def ended(self) -> set[int]:
        """The indices of the jobs that have ended (with a result or not), polling once."""
        if self.executor != "slurm":
            return {i for i, job in enumerate(self.jobs) if job.done()}
        with_result = {i for i, job in enumerate(self.jobs) if job.paths.result_pickle.exists()}
        queued = _queued_ids(self.jobs)
        now = time.monotonic()
        for i, job in enumerate(self.jobs):
            if i in with_result or i in self.lost or queued is None or str(job.job_id) in queued:
                self._gone_since.pop(i, None)
                continue
            since = self._gone_since.setdefault(i, now)
            if now - since >= GONE_GRACE_S and not job.paths.result_pickle.exists():
                self.lost[i] = f"ended without a result ({_accounted_state(job.job_id)})"
        return with_result | set(self.lost)

    def failure(self, index: int) -> str | None:
        """Why job ``index`` failed, in one line; None where it succeeded (call once it ended)."""
        if index in self.lost:
            return self.lost[index]
        error = self.jobs[index].exception()
        return None if error is None else failure_line(str(error))


def _queued_ids(jobs: Sequence[Any]) -> set[str] | None:
    """The ids (``12_3`` for array tasks) of ``jobs`` that Slurm still holds (pending,
    running, completing, requeued), or None when squeue did not answer."""
    arrays = sorted({str(job.job_id).split("_")[0] for job in jobs})
    try:
        done = subprocess.run(
            ["squeue", "--noheader", "--array", "--format=%i", "--jobs", ",".join(arrays)],
            capture_output=True,
            text=True,
            timeout=SQUEUE_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:  # a job id Slurm has forgotten: none of them is queued
        return set() if "Invalid job id" in done.stderr else None
    return set(done.stdout.split())


def _accounted_state(job_id: str) -> str:
    """The job's state as sacct records it, or what to do where accounting is off."""
    try:
        done = subprocess.run(
            ["sacct", "--noheader", "--allocations", "--parsable2", "--format=State", "-j", job_id],
            capture_output=True,
            text=True,
            timeout=SQUEUE_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        done = None
    states = done.stdout.split() if done is not None and done.returncode == 0 else []
    if states:
        return " ".join(states[:3])
    return "killed, or its node lost; no accounting here to say which"


# The line of a failed job's message that says why: submitit's message holds the job's
# traceback, then paths to its logs; sbatch's ends with "Try sbatch --help".
_ERROR_LINE = re.compile(r"^\s*(?:[\w.]+(?:Error|Exception)|KeyboardInterrupt|SystemExit): (.+)")
_TOOL_LINE = re.compile(r"^\s*(?:sbatch|srun|slurmstepd|submitit)\S*: (?:error: )?(.+)")


def failure_line(message: str) -> str:
    """The line of a failed job's (or a refused submission's) message that names the cause.

    >>> failure_line("Traceback …\\nRuntimeError: jacbench run --shard 1/2 was killed\\n"
    ...              "You can check full logs with … at paths:\\n - 9_1_0_log.out")
    'jacbench run --shard 1/2 was killed'
    >>> failure_line("sbatch: unrecognized option '--bogus=1'\\nTry \\"sbatch --help\\" for more")
    "unrecognized option '--bogus=1'"
    """
    lines = [line for line in message.strip().splitlines() if line.strip()]
    for pattern in (_ERROR_LINE, _TOOL_LINE):
        found = [m[1] for m in map(pattern.match, lines) if m and "--help" not in m[1]]
        if found:
            return found[-1].strip()[:300]
    return (lines or ["failed"])[0].strip()[:300]
