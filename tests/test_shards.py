"""Sharded sweeps: dealing, Slurm variables, shard folders, merging, submit, device locks."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import types

import pandas as pd
import pytest
from typer.testing import CliRunner

from jacbench.cluster import merging, submission
from jacbench.faces.cli import app
from jacbench.measure import device_lock
from jacbench.runs import harness, shards
from jacbench.runs.grid import expand_grid
from jacbench.runs.shards import Shard

KEY = ["widths", "batch", "dtype", "device", "method"]
GRID = ["--depths", "1", "2", "3", "--d-in", "4", "16", "--width", "8", "--d-out", "2"]
METHODS = ["--methods", "forward", "reverse", "--min-time", "0.02", "--quiet"]
POINTS = 3 * 2  # depths × d_in
ROWS = POINTS * 2  # × methods

runner = CliRunner()


def jacbench(*args, env=None):
    """A real `jacbench` process (shards run as separate processes)."""
    return subprocess.run(
        [sys.executable, "-m", "jacbench", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def rows(folder):
    return pd.read_csv(folder / "results.csv")


# ----------------------------------------------------------------------- shards
def test_parse_shard():
    assert shards.parse_shard("2/5") == Shard(2, 5)
    assert str(Shard(2, 5)) == "2/5" and Shard(2, 5).folder_name == "2-of-5"
    for bad in ("5/5", "-1/3", "1", "a/b", "1/0"):
        with pytest.raises(ValueError):
            shards.parse_shard(bad)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"SLURM_ARRAY_TASK_ID": "3"}, None),  # a job, but not an array
        ({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "2"}, Shard(0, 2)),
        (  # --array=1-4: ids 1…4
            {
                "SLURM_ARRAY_TASK_ID": "4",
                "SLURM_ARRAY_TASK_COUNT": "4",
                "SLURM_ARRAY_TASK_MIN": "1",
            },
            Shard(3, 4),
        ),
        (  # --array=0-8:4: ids 0, 4, 8
            {
                "SLURM_ARRAY_TASK_ID": "4",
                "SLURM_ARRAY_TASK_COUNT": "3",
                "SLURM_ARRAY_TASK_MIN": "0",
                "SLURM_ARRAY_TASK_STEP": "4",
            },
            Shard(1, 3),
        ),
    ],
)
def test_shard_from_slurm_variables(env, expected):
    assert shards.from_environment(env) == expected


@pytest.mark.parametrize(
    "env",
    [
        {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_COUNT": "3"},  # --array=1,5,7
        {"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "3"},
    ],
)
def test_irregular_slurm_array_is_refused(env):
    with pytest.raises(ValueError, match="SLURM"):
        shards.from_environment(env)


# What Slurm 22.05 set for --array=0,2 (each task) and --array=3 (the re-run of one task).
_ARRAY_0_2 = {"SLURM_ARRAY_TASK_COUNT": "2", "SLURM_ARRAY_TASK_MIN": "0"}
_ARRAY_0_2 |= {"SLURM_ARRAY_TASK_MAX": "2", "SLURM_ARRAY_TASK_STEP": "1"}


@pytest.mark.parametrize("task", ["0", "2"])
def test_every_task_of_an_irregular_array_refuses_it(task):
    with pytest.raises(ValueError, match="irregular array .2 tasks from 0 to 2"):
        shards.from_environment({**_ARRAY_0_2, "SLURM_ARRAY_TASK_ID": task})


def test_a_one_task_array_is_refused_with_the_shard_to_give():
    env = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "1", "SLURM_ARRAY_TASK_MIN": "3"}
    with pytest.raises(ValueError, match="give --shard 3/N"):
        shards.from_environment({**env, "SLURM_ARRAY_TASK_MAX": "3", "SLURM_ARRAY_TASK_STEP": "1"})


@pytest.mark.parametrize("count", [1, 2, 3, 7, 40])
def test_deal_is_a_partition_in_grid_order(count):
    points = expand_grid(depths=[1, 4, 8], d_in=[2, 64, 512], width=[32, 256], d_out=[1, 30])
    parts = shards.deal(points, 4, count, 0.1)
    assert len(parts) == count
    dealt = [p for part in parts for p in part]
    assert sorted(dealt, key=points.index) == points  # every point exactly once
    for part in parts:
        assert part == sorted(part, key=points.index)
    assert parts == shards.deal(points, 4, count, 0.1)  # every shard deals alike


def test_deal_balances_estimated_time_not_positions():
    # One heavy point (one call > min_time) and many light ones: slicing by position
    # would give the heavy point's shard far more work.
    heavy = expand_grid(depths=[8], d_in=[4096], width=[4096], d_out=[4096])
    light = expand_grid(depths=[1, 2, 3, 4, 5, 6, 7], d_in=[4], width=[8], d_out=[1, 2])
    points = heavy + light
    parts = shards.deal(points, 2, 2, 0.05)
    est = [sum(shards.estimated_seconds(p, 2, 0.05) for p in part) for part in parts]
    assert heavy[0] in parts[0] and parts[0] == heavy  # the heavy point alone
    assert len(parts[1]) == len(light)
    assert est[0] > est[1]  # and still the larger one: it cannot be split
    # Equal points split evenly.
    even = shards.deal(light, 2, 3, 0.05)
    assert sorted(len(p) for p in even) == [4, 5, 5]


def test_estimated_seconds_follows_min_time_and_flops():
    (small,) = expand_grid(depths=[2], d_in=[4], width=[64], d_out=[1])
    (big,) = expand_grid(depths=[2], d_in=[2048], width=[2048], d_out=[2048])
    # two tasks of min_time each, and each task's fixed cost
    expected = 2 * (0.2 + shards.TASK_OVERHEAD_S)
    assert shards.estimated_seconds(small, 2, 0.2) == pytest.approx(expected, rel=0.05)
    assert shards.estimated_total([small], 2, 0.2) == pytest.approx(
        shards.RUN_OVERHEAD_S + expected, rel=0.05
    )
    assert shards.estimated_seconds(big, 2, 0.2) > shards.estimated_seconds(small, 2, 0.2)
    assert shards.estimated_seconds(small, 4, 0.2) > shards.estimated_seconds(small, 2, 0.2)


# -------------------------------------------------------------- sharded runs
@pytest.mark.slow  # over 5 s on two cores: run by .ci/run, not by plain pytest
def test_three_shards_at_once_merge_to_the_unsharded_rows(tmp_path):
    whole = jacbench("run", *GRID, *METHODS, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "sharded"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "jacbench", "run", *GRID, *METHODS]
            + ["--shard", f"{i}/3", "--out", str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    parts = [rows(out / "shards" / f"{i}-of-3") for i in range(3)]
    assert all(len(p) > 0 for p in parts)
    merged = jacbench("merge", str(out))
    assert merged.returncode == 0, merged.stderr
    assert "Merged 12 rows of 3 shard folders" in merged.stdout
    assert "(3 of 3 shards finished)" in merged.stdout
    expected, got = rows(tmp_path / "whole"), rows(out)
    assert len(got) == ROWS and not got.duplicated(KEY).any()
    # The very rows of the unsharded run, in its order.
    pd.testing.assert_frame_equal(got[KEY], expected[KEY])
    assert set(got["status"]) == {"ok"}
    samples = pd.read_csv(out / "samples.csv")
    assert set(map(tuple, samples[KEY].values)) == set(map(tuple, got[KEY].values))
    meta = json.loads((out / "meta.json").read_text())
    assert meta["merged"]["kind"] == "shards" and meta["merged"]["count"] == 3
    assert [p["shard"] for p in meta["parts"]] == ["0/3", "1/3", "2/3"]
    assert "--shard 1/3" in meta["parts"][1]["command"]
    assert "--shard i/3" in meta["command"]  # every shard's, not shard 0's
    assert all(p["environment"]["cpu_model"] for p in meta["parts"])
    assert meta["finished"] is not None
    summary = (out / "summary.md").read_text()
    first_table = summary.split("\n## ", 1)[0]  # the evaluations section lists the shapes too
    assert first_table.count("| L=") == POINTS


@pytest.mark.slow  # over 5 s on two cores: run by .ci/run, not by plain pytest
def test_slurm_variables_run_a_strict_part(tmp_path):
    out = tmp_path / "run"
    env = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2"}
    done = jacbench("run", *GRID, *METHODS, "--out", str(out), env=env)
    assert done.returncode == 0, done.stderr
    part = rows(out / "shards" / "1-of-2")
    assert 0 < len(part) < ROWS
    assert (part.groupby("widths")["method"].count() == 2).all()  # a point keeps its methods
    meta = json.loads((out / "shards" / "1-of-2" / "meta.json").read_text())
    assert meta["shard"]["index"] == 1 and meta["shard"]["count"] == 2
    assert meta["settings"]["shards"] == 2
    # --shard all ignores the array; the sharded folder refuses an unsharded run.
    whole = jacbench("run", *GRID, *METHODS, "--out", str(out), "--shard", "all", env=env)
    assert whole.returncode == 2
    assert "holds a sharded run" in whole.stderr and "Traceback" not in whole.stderr


@pytest.mark.slow  # over 5 s on two cores: run by .ci/run, not by plain pytest
def test_missing_shard_is_named_and_the_rest_merged(tmp_path):
    out = tmp_path / "run"
    done = jacbench("run", *GRID, *METHODS, "--shard", "0/2", "--out", str(out))
    assert done.returncode == 0, done.stderr
    result = runner.invoke(app, ["merge", str(out)])
    assert result.exit_code == 1
    assert "Shard 1/2 is missing" in result.output
    assert len(rows(out)) == len(rows(out / "shards" / "0-of-2"))
    assert json.loads((out / "meta.json").read_text())["merged"]["missing"] == [1]
    # Running the missing shard, then merging again, completes the run.
    again = jacbench("run", *GRID, *METHODS, "--shard", "1/2", "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert runner.invoke(app, ["merge", str(out)]).exit_code == 0
    assert len(rows(out)) == ROWS


@pytest.mark.slow  # over 5 s on two cores: run by .ci/run, not by plain pytest
def test_more_shards_than_points(tmp_path):
    out = tmp_path / "run"
    grid = ["--depths", "1", "--d-in", "4", "--width", "8", "--d-out", "1", "2"]
    for i in range(4):  # two points, four shards: two shards are dealt nothing
        done = jacbench("run", *grid, *METHODS, "--shard", f"{i}/4", "--out", str(out))
        assert done.returncode == 0, done.stderr
    sizes = sorted(len(rows(out / "shards" / f"{i}-of-4")) for i in range(4))
    assert sizes == [0, 0, 2, 2]
    assert runner.invoke(app, ["merge", str(out)]).exit_code == 0
    assert len(rows(out)) == 4


@pytest.mark.slow  # over 5 s on two cores: run by .ci/run, not by plain pytest
def test_killed_shard_resumes_and_merges(tmp_path):
    out = tmp_path / "run"
    slow = [*GRID[:-1], "2", *METHODS[:-2], "0.3", "--quiet"]
    args = [sys.executable, "-m", "jacbench", "run", *slow, "--shard", "0/2", "--out", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    csv = out / "shards" / "0-of-2" / "results.csv"
    deadline = time.monotonic() + 120
    while not (csv.exists() and csv.read_text().count("\n") >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = rows(out / "shards" / "0-of-2")
    other = jacbench("run", *slow, "--shard", "1/2", "--out", str(out))
    assert other.returncode == 0, other.stderr
    result = runner.invoke(app, ["merge", str(out)])
    assert result.exit_code == 1 and "Shard 0/2 was interrupted" in result.output
    resumed = jacbench("run", *slow, "--shard", "0/2", "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    final = rows(out / "shards" / "0-of-2")
    pd.testing.assert_frame_equal(final.iloc[: len(kept)], kept)  # kept rows untouched
    assert runner.invoke(app, ["merge", str(out)]).exit_code == 0
    assert len(rows(out)) == ROWS and not rows(out).duplicated(KEY).any()


def test_merge_refuses_mixed_splits_and_other_parameters(tmp_path):
    options = dict(depths=[1, 2], d_in=[4], width=[8], d_out=[1], min_time=0.01)
    out = tmp_path / "run"
    harness.sweep(["forward"], **options, out=out, shard="0/2")
    harness.sweep(["forward"], **options, out=out, shard="0/3")
    with pytest.raises(merging.MergeError, match="mixes splits of 2 shards and 3 shards"):
        merging.merge_shards(out)
    other = tmp_path / "other"
    harness.sweep(["forward"], **options, out=other, shard="0/2")
    harness.sweep(["reverse"], **options, out=other, shard="1/2")
    with pytest.raises(merging.MergeError, match=r"other settings .*methods"):
        merging.merge_shards(other)


def test_shards_refuse_an_unsharded_runs_folder(tmp_path):
    options = dict(depths=[1], d_in=[4], width=[8], d_out=[1], min_time=0.01)
    harness.sweep(["forward"], **options, out=tmp_path / "run")
    with pytest.raises(ValueError, match="holds an unsharded run"):
        harness.sweep(["forward"], **options, out=tmp_path / "run", shard="0/2")


def test_run_dry_run_and_shard_option_errors(tmp_path):
    result = runner.invoke(app, ["run", *GRID, "--shard", "1/3", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "← this one" in result.output and "2/3" in result.output
    assert not (tmp_path / "x").exists()
    for shard, message in (("3/3", "shard index must be 0 … 2"), ("x", "--shard takes i/n")):
        result = runner.invoke(app, ["run", "--shard", shard, "--out", str(tmp_path / "x")])
        assert result.exit_code == 2 and message in result.output
    result = runner.invoke(app, ["run", "--shard", "0/2"])
    assert result.exit_code == 2 and "a shard needs --out" in result.output


# ------------------------------------------------------------- merging runs
def _write_run(out, device):
    frame = harness.sweep(
        ["forward", "reverse"], depths=[1, 2], d_in=[4], width=[8], d_out=[1], min_time=0.05,
        out=out,
    )  # fmt: skip
    if device != "cpu":  # the same run as if measured on another device
        for name in ("results.csv", "samples.csv"):
            path = out / name
            path.write_text(path.read_text().replace(",cpu,", f",{device},"))
    return frame


def test_merging_two_runs_of_one_grid_is_refused_unless_told(tmp_path):
    _write_run(tmp_path / "a", "cpu")
    _write_run(tmp_path / "b", "cpu")
    m = str(tmp_path / "m")
    result = runner.invoke(app, ["merge", str(tmp_path / "a"), str(tmp_path / "b"), "--out", m])
    assert result.exit_code == 2
    assert "both hold 4 rows with the same key" in result.output
    assert not (tmp_path / "m").exists()
    for keep, source in (("first", "a"), ("last", "b")):
        result = runner.invoke(
            app, ["merge", str(tmp_path / "a"), str(tmp_path / "b"), "--out", m, "--keep", keep]
        )
        assert result.exit_code == 0, result.output
        pd.testing.assert_frame_equal(rows(tmp_path / "m"), rows(tmp_path / source))


def test_merging_runs_of_two_devices_shows_them_side_by_side(tmp_path):
    _write_run(tmp_path / "a", "cpu")
    _write_run(tmp_path / "b", "cuda:0")
    m = tmp_path / "m"
    result = runner.invoke(
        app, ["merge", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(m)]
    )
    assert result.exit_code == 0, result.output
    merged = rows(m)
    assert len(merged) == 8 and set(merged["device"]) == {"cpu", "cuda:0"}
    summary = (m / "summary.md").read_text()
    assert "## Devices side by side" in summary
    assert "| shape | method | cpu | cuda:0 | cuda:0 / cpu |" in summary
    side = [s for s in summary.splitlines() if s.startswith("| L=1 D=4 K=8 P=1 B=1 float32 | ")]
    assert len(side) == 2  # forward and reverse, one line each, both devices in it
    # Each ratio comes with its interval and a verdict.
    verdict = r"\| [\d.]+( \([\d.]+–[\d.]+\))? (faster|slower|same|unsure) \|$"
    assert all(re.search(verdict, line) for line in side)
    meta = json.loads((m / "meta.json").read_text())
    assert meta["merged"]["kind"] == "runs" and len(meta["parts"]) == 2
    # A folder that holds a run of its own is never overwritten by a merge.
    result = runner.invoke(
        app, ["merge", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "a")]
    )
    assert result.exit_code == 2 and "holds a run of its own" in result.output


def test_merge_of_one_unsharded_run_is_one_line(tmp_path):
    _write_run(tmp_path / "a", "cpu")
    result = runner.invoke(app, ["merge", str(tmp_path / "a")])
    assert result.exit_code == 2 and "holds no shards" in result.output


# ------------------------------------------------------------------- submit
def test_submit_parameters():
    params = submission.executor_parameters(
        timeout_min=30, partition="gpu", gpus_per_task=1, parallel=4, slurm_options={"qos": "low"}
    )
    assert params == {
        "name": "jacbench",
        "timeout_min": 30,
        "slurm_signal_delay_s": 90,
        "slurm_partition": "gpu",
        "slurm_gpus_per_task": 1,
        "slurm_array_parallelism": 4,
        "slurm_additional_parameters": {"qos": "low"},
    }
    assert submission.default_timeout_min(10) == 10
    assert submission.default_timeout_min(3600) == 180


@pytest.mark.skipif(not submission.available(), reason="needs submitit (jacbench[cluster])")
@pytest.mark.slow  # over 5 s on two cores: run by .ci/run, not by plain pytest
def test_submit_local_produces_the_merged_run(tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        ["submit", "--executor", "local", "--shards", "2", "--out", str(out), *GRID, *METHODS[:-1]],
    )
    assert result.exit_code == 0, result.output
    assert "Submitted 2 local jobs" in result.output
    merged = rows(out)
    assert len(merged) == ROWS and not merged.duplicated(KEY).any()
    assert json.loads((out / "meta.json").read_text())["merged"]["count"] == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shard", "0/2"], "submit sets --shard"),
        (["--depths", "x"], "--depths takes whole numbers"),
        (["--executor", "pbs"], "unknown executor"),
        (["--slurm", "qos"], "--slurm takes KEY=VALUE"),
        (["--executor", "slurm", "--time", "1"], "give at least 3 minutes"),
    ],
)
def test_submit_bad_input_is_one_line(tmp_path, args, message):
    result = runner.invoke(app, ["submit", "--shards", "2", "--out", str(tmp_path / "r"), *args])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_submit_slurm_without_slurm(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    result = runner.invoke(
        app, ["submit", "--executor", "slurm", "--shards", "2", "--out", str(tmp_path / "r"), *GRID]
    )
    assert result.exit_code == 2
    assert "sbatch" in result.output or "submitit" in result.output


# -------------------------------------------------------------- device lock
def test_device_lock_makes_a_second_sweep_wait():
    told, waiting, entered = [], threading.Event(), threading.Event()

    def tell(message):
        told.append(message)
        waiting.set()

    def second():
        with device_lock.hold("cpu", tell):
            entered.set()

    with device_lock.hold("cpu"):
        thread = threading.Thread(target=second)
        thread.start()
        assert waiting.wait(timeout=60)  # the second sweep was told it waits …
        assert not entered.is_set()  # … and has not entered while the first holds the lock
        assert "another jacbench run is timing there" in told[0]
    thread.join(timeout=10)
    assert entered.is_set()
    assert device_lock.lock_names("cpu") == [f"cpu-{c}" for c in sorted(os.sched_getaffinity(0))]


@pytest.mark.slow  # over 5 s on two cores: run by .ci/run, not by plain pytest
def test_a_shard_measured_in_several_processes(tmp_path):
    out = tmp_path / "run"
    options = dict(depths=[1, 2], d_in=[4], width=[8], d_out=[1], min_time=0.02)
    frame = harness.sweep(["forward"], **options, out=out, shard="1/2", processes=2)
    folder = out / "shards" / "1-of-2"
    assert len(frame) == 1 and (folder / "processes" / "1" / "results.csv").exists()
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["settings"]["shards"] == 2 and "shard" not in meta["settings"]
    assert meta["shard"]["index"] == 1 and len(meta["shard"]["grid"]) == 1


def test_a_job_gone_from_the_queue_without_a_result_is_lost_without_accounting(
    tmp_path, monkeypatch
):
    """NOTE: [Watching jobs without accounting]: squeue no longer lists the job, no result
    file came, and sacct answers nothing (accounting off)."""
    for name, text in (("squeue", "exit 0"), ("sacct", "echo 'accounting disabled' >&2; exit 1")):
        tool = tmp_path / name
        tool.write_text(f"#!/bin/sh\n{text}\n")
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(submission, "GONE_GRACE_S", 0.0)
    done = tmp_path / "7_0_result.pkl"
    done.write_bytes(b"")
    jobs = [
        types.SimpleNamespace(job_id="7_0", paths=types.SimpleNamespace(result_pickle=done)),
        types.SimpleNamespace(
            job_id="7_1", paths=types.SimpleNamespace(result_pickle=tmp_path / "none.pkl")
        ),
    ]
    watcher = submission.JobWatcher(jobs, "slurm")
    assert watcher.ended() == {0, 1}
    assert watcher.failure(1) == (
        "ended without a result (killed, or its node lost; no accounting here to say which)"
    )


def test_a_queued_job_is_not_lost(tmp_path, monkeypatch):
    tool = tmp_path / "squeue"
    tool.write_text("#!/bin/sh\necho 7_1\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(submission, "GONE_GRACE_S", 0.0)
    job = types.SimpleNamespace(
        job_id="7_1", paths=types.SimpleNamespace(result_pickle=tmp_path / "none.pkl")
    )
    assert submission.JobWatcher([job], "slurm").ended() == set()


@pytest.mark.parametrize(
    ("message", "line"),
    [
        (  # submitit's message for a job whose function raised (the traceback, then logs)
            "Job (task=1) failed during processing with trace:\n---\nTraceback (most recent "
            'call last):\n  File "x.py", line 3, in f\nRuntimeError: jacbench run --shard 1/2 '
            "was killed by SIGKILL\n\nYou can check full logs with 'job.stderr(0)' at paths:\n"
            "  - /r/submitit/9_1_0_log.err\n  - /r/submitit/9_1_0_log.out",
            "jacbench run --shard 1/2 was killed by SIGKILL",
        ),
        (
            "sbatch: unrecognized option '--bogus=1'\nTry \"sbatch --help\" for more information",
            "unrecognized option '--bogus=1'",
        ),
        ("sbatch: error: invalid partition specified: gpu", "invalid partition specified: gpu"),
    ],
)
def test_a_failed_jobs_line_is_its_cause(message, line):
    assert submission.failure_line(message) == line


@pytest.mark.parametrize(
    ("code", "words"),
    [(-9, "killed by SIGKILL"), (-11, "killed by SIGSEGV"), (143, "stopped by SIGTERM")],
)
def test_how_a_shard_stopped(code, words):
    assert words in submission.stopped_how(code)


def test_a_finished_run_resumed_with_nothing_to_do_is_left_as_it_is(tmp_path):
    out = tmp_path / "run"
    options = dict(depths=[1], d_in=[3], width=[4], d_out=[2], min_time=0.01)
    harness.sweep(["reverse"], **options, out=out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    again = harness.sweep(["reverse"], **options, out=out, resume="if-present")
    assert len(again) == 1
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_resume_if_present_starts_a_run_where_there_is_none(tmp_path):
    out = tmp_path / "run"
    args = ["run", "--depths", "1", "--d-in", "3", "--width", "4", "--d-out", "2"]
    args += ["--methods", "reverse", "--min-time", "0.01", "--quiet", "--out", str(out)]
    first = runner.invoke(app, [*args, "--resume-if-present"])
    assert first.exit_code == 0, first.output
    assert len(rows(out)) == 1
    both = runner.invoke(app, [*args, "--resume", "--resume-if-present"])
    assert both.exit_code == 2 and "not both" in both.output
