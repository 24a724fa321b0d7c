"""A real `jacbench run` process killed mid-sweep keeps its finished rows and resumes cleanly."""

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

# Each kills and resumes real runs (8–36 s on two cores): run by .ci/run, not by plain pytest.
pytestmark = pytest.mark.slow

ARGS = [
    "run",
    "--depths",
    "1",
    "2",
    "3",
    "4",
    "--d-in",
    "4",
    "16",
    "--width",
    "8",
    "--d-out",
    "2",
    "--methods",
    "forward",
    "reverse",
    "--min-time",
    "0.2",
    "--quiet",
]
TOTAL = 4 * 2 * 2


def _start(out, min_time="0.2"):
    args = [min_time if a == "0.2" else a for a in ARGS]
    return subprocess.Popen(
        [sys.executable, "-m", "jacbench", *args, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A suite started in the background of a shell inherits SIGINT ignored, and so would
        # the run: give it the default disposition, as a terminal's foreground job has.
        preexec_fn=_default_sigint,
    )


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for_rows(csv_path, n, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if csv_path.exists() and csv_path.read_text().count("\n") >= n + 1:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError("the run wrote too few rows in time")


def _resume(out):
    # As the interrupted run says to: the folder's own settings, nothing typed beside them.
    return subprocess.run(
        [sys.executable, "-m", "jacbench", "run", "--quiet", "--out", str(out), "--resume"],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_sigkill_keeps_finished_rows_and_resume_completes(tmp_path):
    out = tmp_path / "run"
    proc = _start(out)
    _wait_for_rows(out / "results.csv", 3, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = pd.read_csv(out / "results.csv")
    assert 3 <= len(kept) < TOTAL
    assert set(kept["status"]) == {"ok"}
    done = _resume(out)
    assert done.returncode == 0, done.stderr
    final = pd.read_csv(out / "results.csv")
    assert len(final) == TOTAL
    assert not final.duplicated(["widths", "batch", "dtype", "device", "method"]).any()
    # The rows written before the kill are untouched.
    pd.testing.assert_frame_equal(final.iloc[: len(kept)], kept)


def test_ctrl_c_exits_130_and_says_where(tmp_path):
    out = tmp_path / "run"
    proc = _start(out)
    _wait_for_rows(out / "results.csv", 2, proc)
    os.kill(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, (stdout, stderr)
    assert "Interrupted" in stderr and "--resume" in stderr
    assert "Traceback" not in stderr
    assert len(pd.read_csv(out / "results.csv")) >= 2


def test_two_runs_into_one_folder_never_interleave(tmp_path):
    out = tmp_path / "run"
    first, second = _start(out), _start(out)
    outcomes = sorted((proc.wait(timeout=300), proc.communicate()[1]) for proc in (first, second))
    (ok, _), (refused, message) = outcomes
    assert (ok, refused) == (0, 2)
    assert "Traceback" not in message
    assert "in use by another jacbench run" in message or "already holds this run" in message
    final = pd.read_csv(out / "results.csv")
    assert len(final) == TOTAL
    assert not final.duplicated(["widths", "batch", "dtype", "device", "method"]).any()


def test_resume_while_the_run_is_writing_is_refused(tmp_path):
    out = tmp_path / "run"
    # Slow enough that the resume (a new interpreter importing torch) starts while it writes,
    # on a busy machine too.
    proc = _start(out, min_time="1")
    _wait_for_rows(out / "results.csv", 1, proc)
    clash = _resume(out)
    assert clash.returncode == 2
    assert "is in use by another jacbench run" in clash.stderr
    assert len(clash.stderr.strip().splitlines()) == 1
    assert proc.wait(timeout=300) == 0
    final = pd.read_csv(out / "results.csv")
    assert len(final) == TOTAL and not final.duplicated(["widths", "method"]).any()
