"""Sweeps on a real Slurm cluster (`pytest -m slurm`; `.ci/slurm up` starts one on this machine).

Skipped where no `sinfo` answers. Each test submits real jobs: the clusters guide's sbatch
script (docs/clusters.md, examples/slurm/sweep.sh) and `jacbench submit --executor slurm`,
killed, cancelled and run past their time limits, and checks the merged rows against the
unsharded run's.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "slurm" / "sweep.sh"
SHARDS = 4  # the script's array
GRID = ["--depths", "1", "2", "3", "4", "--d-in", "3", "--width", "8", "--d-out", "2"]
GRID += ["--methods", "forward,reverse"]
KEY = ["widths", "batch", "dtype", "device", "method"]
# The jobs run jacbench from this Python's environment, with the default kernels: the
# tuning is measured elsewhere, and each job would measure it again for its thread count.
ENV = {
    **os.environ,
    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    "JACBENCH_TUNING": "defaults",
}


def _slurm_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(
        not _slurm_answers(), reason="needs a Slurm cluster (sinfo); `bash .ci/slurm up` starts one"
    ),
]


def command(*args, cwd, timeout=600, check=True):
    done = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, cwd=cwd, env=ENV, timeout=timeout
    )
    if check and done.returncode != 0:
        raise AssertionError(f"{args} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def jacbench(*args, cwd, **keywords):
    return command(sys.executable, "-m", "jacbench", *args, cwd=cwd, **keywords)


SUBMIT = ["submit", "--executor", "slurm", "--shards"]


def started(args, cwd) -> subprocess.Popen:
    """`jacbench <args>` started, not waited for (its output piped)."""
    return subprocess.Popen(
        [sys.executable, "-m", "jacbench", *map(str, args)],
        cwd=cwd,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def sbatch(*args, cwd) -> str:
    """Submit and return the job id."""
    return command("sbatch", "--parsable", *args, cwd=cwd).stdout.strip().split(";")[0]


def gone(job: str) -> bool:
    done = subprocess.run(
        ["squeue", "--noheader", "--array", "--jobs", job], capture_output=True, text=True
    )
    return done.returncode != 0 or not done.stdout.strip()


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:.0f} s for {what}")
        time.sleep(0.5)


def rows_in(folder: Path) -> int:
    path = folder / "results.csv"
    return max(0, len(path.read_text().splitlines()) - 1) if path.exists() else 0


def keys(folder: Path) -> set[tuple]:
    frame = pd.read_csv(folder / "results.csv")
    assert (frame["status"] == "ok").all(), frame[["method", "status", "problem"]]
    assert not frame.duplicated(KEY).any()
    return set(frame[KEY].itertuples(index=False, name=None))


@pytest.fixture(scope="module")
def unsharded(tmp_path_factory) -> set[tuple]:
    """The keys of the grid's unsharded run, made here."""
    folder = tmp_path_factory.mktemp("whole")
    jacbench("run", *GRID, "--min-time", "0.02", "--out", folder / "run", "--quiet", cwd=folder)
    return keys(folder / "run")


def metas(run: Path) -> dict[str, str]:
    return {p.parent.name: p.read_text() for p in sorted(run.glob("shards/*/meta.json"))}


# ------------------------------------------------------------------ the sbatch script
def test_the_array_script_merges_to_the_unsharded_run_and_reruns_only_what_is_missing(
    tmp_path, unsharded
):
    shutil.copy(SCRIPT, tmp_path / "sweep.sh")
    run = tmp_path / "run"
    timing = ["--min-time", "2"]  # a shard runs a few seconds: time to kill one
    job = sbatch("sweep.sh", *GRID, *timing, "--out", run, cwd=tmp_path)
    killed = run / "shards" / f"1-of-{SHARDS}"
    wait_until(lambda: rows_in(killed) >= 1, 300, "shard 1's first row")
    command("scancel", "--signal=KILL", "--full", f"{job}_1", cwd=tmp_path)
    wait_until(lambda: gone(job), 300, "the array to end")

    merged = jacbench("merge", run, cwd=tmp_path, check=False)
    assert merged.returncode == 1
    assert f"Shard 1/{SHARDS} (Slurm job {job}_1) was interrupted" in merged.stderr
    before = metas(run)
    assert len(before) == SHARDS

    # The clusters guide's re-run advice, as written: the one task again.
    command("sbatch", "--wait", "--array=1", "sweep.sh", *GRID, *timing, "--out", run, cwd=tmp_path)
    after = metas(run)
    assert {k: v for k, v in after.items() if k != killed.name} == {
        k: v for k, v in before.items() if k != killed.name
    }
    assert json.loads(after[killed.name])["finished"]
    jacbench("merge", run, cwd=tmp_path)
    assert keys(run) == unsharded

    # The whole array again: every shard is finished, nothing is measured or rewritten.
    command("sbatch", "--wait", "sweep.sh", *GRID, *timing, "--out", run, cwd=tmp_path)
    assert metas(run) == after


def test_a_shard_past_its_time_limit_keeps_its_rows_and_is_named(tmp_path):
    shutil.copy(SCRIPT, tmp_path / "sweep.sh")
    run = tmp_path / "run"
    # Shard 0 alone, 8 rows of ~15 s each: Slurm stops it at its one-minute limit (enforced
    # 60-90 s in), after a row or more, however slow the start. (Two rows of 50 s each left
    # no room: the first row ended ~57 s in, after the limit on a busy CI machine.)
    depths = ["--depths", *map(str, range(1, 17))]
    grid = [*GRID, *depths, "--min-time", "15"]  # the last --depths counts
    job = sbatch("--array=0", "--time=1", "sweep.sh", *grid, "--out", run, cwd=tmp_path)
    wait_until(lambda: gone(job), 240, "the time limit")
    folder = run / "shards" / f"0-of-{SHARDS}"
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["interrupted"] and not meta["finished"]
    assert rows_in(folder) >= 1  # the row it finished is kept
    log = (tmp_path / f"jacbench-sweep-{job}_0.out").read_text()
    assert "Terminated (SIGTERM)" in log and "kept" in log
    merged = jacbench("merge", run, cwd=tmp_path, check=False)
    assert merged.returncode == 1
    assert f"Shard 0/{SHARDS} (Slurm job {job}_0) was interrupted" in merged.stderr


def test_every_task_of_an_irregular_array_refuses_before_any_row(tmp_path):
    script = tmp_path / "irregular.sh"
    script.write_text(f"#!/bin/bash\nexec jacbench run {' '.join(GRID)} --out run --quiet\n")
    job = sbatch("--array=0,2", "--output=task-%a.out", script.name, cwd=tmp_path)
    wait_until(lambda: gone(job), 240, "the array to end")
    for task in (0, 2):
        log = (tmp_path / f"task-{task}.out").read_text()
        assert "irregular array" in log, log
    assert not list((tmp_path / "run").glob("**/results.csv"))


# ------------------------------------------------------------------ jacbench submit
def test_submit_gives_the_unsharded_runs_rows(tmp_path, unsharded):
    run = tmp_path / "run"
    done = jacbench(*SUBMIT, "2", "--out", run, *GRID, "--min-time", "0.02", cwd=tmp_path)
    assert "Submitted 2 slurm jobs" in done.stdout
    assert "sacct" not in done.stderr  # polling is quiet
    assert keys(run) == unsharded


def test_submit_names_a_killed_and_a_cancelled_shard_and_a_resubmit_finishes_them(
    tmp_path, unsharded
):
    run = tmp_path / "run"
    submit = [*SUBMIT, "2", "--out", run, *GRID, "--min-time", "2"]
    waiting = started(submit, tmp_path)
    try:
        for i in (0, 1):
            wait_until(lambda i=i: rows_in(run / "shards" / f"{i}-of-2") >= 1, 300, f"shard {i}")
        # Shard 1 as the OOM killer would end it; shard 0 cancelled.
        child = command("pgrep", "-f", "jacbench run .*--shard 1/2", cwd=tmp_path)
        os.kill(int(child.stdout.split()[0]), signal.SIGKILL)
        jobs = command(
            "squeue", "--noheader", "--array", "--format=%i", "--name=jacbench", cwd=tmp_path
        ).stdout.split()
        first = next(j for j in jobs if j.endswith("_0"))
        command("scancel", first, cwd=tmp_path)
        out, err = waiting.communicate(timeout=300)
    finally:
        waiting.kill()
    assert waiting.returncode == 1, out + err
    lines = " ".join(err.split())  # rich wraps long lines at the terminal's width
    assert "Shard 1/2 (job" in lines and "--shard 1/2 was killed by SIGKILL (log: " in lines
    assert "Shard 0/2 (job" in lines and "--shard 0/2 was stopped by SIGTERM" in lines
    assert "_log.err)" in lines
    # Again: both shards resume and finish.
    jacbench(*submit, cwd=tmp_path)
    assert keys(run) == unsharded


def test_a_submitted_shard_told_its_time_is_up_is_requeued_and_resumes(tmp_path, unsharded):
    """Slurm tells a job its time is nearly up with SIGUSR2 (submitit's --signal), up to a
    minute early; here scancel sends it, so that the test need not wait for a limit."""
    run = tmp_path / "run"
    waiting = started([*SUBMIT, "1", "--out", run, *GRID, "--min-time", "3"], tmp_path)
    try:
        wait_until(lambda: rows_in(run / "shards" / "0-of-1") >= 1, 300, "the first row")
        command("scancel", "--signal=USR2", "--name=jacbench", cwd=tmp_path)
        out, err = waiting.communicate(timeout=600)
    finally:
        waiting.kill()
    assert waiting.returncode == 0, out + err
    log = "".join(p.read_text() for p in (run / "submitit").glob("*_log.out"))
    assert "Requeued job" in log
    assert keys(run) == unsharded


def test_a_bad_sbatch_option_is_named_and_leaves_nothing(tmp_path):
    run = tmp_path / "run"
    bogus = ["--slurm", "bogus=1"]
    done = jacbench(*SUBMIT, "2", "--out", run, *GRID, *bogus, cwd=tmp_path, check=False)
    assert done.returncode == 2
    assert "unrecognized option '--bogus=1'" in done.stderr
    assert "Try" not in done.stderr + done.stdout
    assert not (run / "submitit").exists()
