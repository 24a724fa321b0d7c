"""User code in worker processes (NOTE: [Workers]): whatever a routine does, the run, the
check and the grade go on, and say what happened."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import jacbench
from jacbench.runs import sandbox, workers
from jacbench.runs.routines import load

from . import hostile_routines
from .test_cli import invoke

HOSTILE = str(Path(__file__).with_name("hostile_routines.py"))
GRID = ["--depths", "2", "--d-in", "4", "--width", "8", "--d-out", "2"]
TIMING = ["--min-time", "0.02", "--no-peak", "--call-timeout", "3"]
# Each hostile routine, and what its row says.
EXPECTED = {
    "forever": ("timeout", "did not return within 3 s"),
    "exits": ("error", "raised SystemExit: 0"),
    "hard_exit": ("error", "exited with code 3"),
    "segfault": ("error", "killed by SIGSEGV"),
    "interrupts": ("error", "raised KeyboardInterrupt"),
    "mutates_and_sets_threads": ("wrong", "changes x in place"),
    "returns_a_list": ("wrong", "returned a list, not a tensor"),
}


def _spec(name: str) -> str:
    return f"{HOSTILE}:{name}"


# ------------------------------------------------------------------ the worker itself
def _raise() -> None:
    raise ValueError("first line\nsecond line")


OWNER = sandbox.Owner("tests:test_workers")


def test_a_worker_answers_and_names_what_went_wrong():
    try:
        assert sandbox.run(OWNER, sum, [1, 2, 3], deadline=60) == 6
        with pytest.raises(workers.WorkerFailed, match="raised ValueError: first line$"):
            sandbox.run(OWNER, _raise, deadline=30)
        assert sandbox.run(OWNER, max, [1, 5], deadline=30) == 5  # still serving after a raise
        with pytest.raises(workers.WorkerFailed, match="exited with code 7") as died:
            sandbox.run(OWNER, os._exit, 7, deadline=30)
        assert not died.value.timed_out
    finally:
        sandbox.close(OWNER)


def test_a_worker_past_its_deadline_is_killed():
    try:
        sandbox.run(OWNER, sum, [1], deadline=60)  # started
        started = time.monotonic()
        with pytest.raises(workers.WorkerFailed, match="did not return within 1 s") as late:
            sandbox.run(OWNER, time.sleep, 60, deadline=1)
        assert late.value.timed_out
        assert time.monotonic() - started < 30
    finally:
        sandbox.close(OWNER)


def _crash() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)  # in the worker: its own pid


def test_a_sandbox_is_replaced_after_a_death_and_its_replies_are_not_trusted():
    try:
        with pytest.raises(workers.WorkerFailed, match="killed by SIGSEGV"):
            sandbox.run(OWNER, _crash, deadline=60)
        assert sandbox.run(OWNER, sum, [2, 2], deadline=60) == 4
        # a reply that would run code when unpickled is refused, never unpickled
        with pytest.raises(workers.WorkerFailed, match="does not read"):
            sandbox.run(OWNER, hostile_routines.forged_reply, deadline=60)
        assert not Path("/tmp/jacbench-forged").exists()
    finally:
        sandbox.close(OWNER)


def test_a_reply_cut_short_or_too_many_objects_is_refused_in_time(monkeypatch):
    """A header and then nothing held the reading forever (the deadline covered only the
    wait for a first byte); a reply of a million empty lists would be built in full."""
    monkeypatch.setattr(workers, "REPLY_GRACE_S", 1.0)
    try:
        started = time.monotonic()
        with pytest.raises(workers.WorkerFailed, match="cut short"):
            sandbox.run(OWNER, hostile_routines.half_a_reply, deadline=60)
        assert time.monotonic() - started < 30
        with pytest.raises(workers.WorkerFailed, match="over 262144 objects"):
            sandbox.run(OWNER, hostile_routines.a_million_lists, deadline=60)
        assert sandbox.run(OWNER, sum, [2, 2], deadline=60) == 4  # a fresh worker
    finally:
        sandbox.close(OWNER)


def test_loading_a_routine_never_calls_it_here():
    routine = load(_spec("forever"), timeout=3)  # the probe hangs in the worker, not here
    assert routine.fn is None and routine.batched is False


# ------------------------------------------------------------------ run
@pytest.mark.slow  # over 5 s on two cores: run by .ci/run, not by plain pytest
def test_a_run_survives_every_hostile_routine_between_built_ins(tmp_path):
    out = tmp_path / "run"
    methods = " ".join(["forward", *(_spec(name) for name in EXPECTED), "reverse"])
    result = invoke("run", *GRID, *TIMING, "--methods", methods, "--out", out, "--quiet")
    assert result.exit_code == 1, result.output
    rows = pd.read_csv(out / "results.csv").set_index("method")
    for name in ("forward", "reverse"):
        assert rows.loc[name, "status"] == "ok" and rows.loc[name, "median_s"] > 0
    for name, (status, message) in EXPECTED.items():
        assert rows.loc[_spec(name), "status"] == status, name
        assert message in rows.loc[_spec(name), "message"], name
    meta = json.loads((out / "meta.json").read_text())
    assert meta["finished"] is not None
    assert meta["environment"]["threads"] == torch.get_num_threads()
    summary = (out / "summary.md").read_text()
    assert "killed by SIGSEGV" in summary


def test_the_python_api_returns_the_callers_process_as_it_found_it():
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    rows = jacbench.sweep(
        ["forward", _spec("mutates_and_sets_threads"), "reverse"],
        depths=[1],
        d_in=[3],
        width=[4],
        d_out=[2],
        min_time=0.01,
    )
    assert list(rows["status"]) == ["ok", "wrong", "ok"]
    assert (torch.get_num_threads(), torch.get_default_dtype()) == (threads, dtype)


def test_a_routine_defined_in_place_still_runs_here():
    def reverse(net, x):  # a nested function cannot go to a worker
        return jacbench.jacobian_reverse(net, x)

    rows = jacbench.sweep([reverse], depths=[1], d_in=[3], width=[4], d_out=[2], min_time=0.01)
    assert rows["status"].tolist() == ["ok"]


# ------------------------------------------------------------------ check
@pytest.mark.parametrize("name", ["forever", "exits", "hard_exit", "segfault", "returns_a_list"])
@pytest.mark.slow  # over 5 s on two cores: run by .ci/run, not by plain pytest
def test_check_on_a_hostile_routine_exits_1_with_the_reason(name):
    result = invoke("check", _spec(name), "--no-time", "--call-timeout", "3")
    assert result.exit_code == 1, result.output
    assert EXPECTED[name][1].split(" 3 s")[0] in " ".join(result.output.split())


# ------------------------------------------------------------------ grade
RIGHT = """import torch
def my_backward_2a(x, L, param_dict):
    Ws = [param_dict[f"W{i}"] for i in range(1, L + 1)]
    h, slopes = x, []
    for W in Ws:
        h = torch.tanh(W @ h)
        slopes.append(1 - h**2)
    J = param_dict["WF"]
    for W, s in zip(reversed(Ws), reversed(slopes)):
        J = (J * s) @ W
    return J
"""
CLASS = {
    "ada.py": RIGHT,
    "ben.py": RIGHT.replace("J = (J * s) @ W", "J = J @ W"),  # σ' forgotten
    "cy.py": RIGHT.replace("    return J\n", "    return J.T\n"),  # transposed
    "dee.py": "def my_backward_2a(x, L, param_dict):\n    while True:\n        pass\n",
    "eve.py": "def my_backward_2a(x, L, param_dict)\n    return x\n",  # syntax error
    "fay.py": "def my_backward(x, L, param_dict):\n    return x\n",  # no such function
    "gus.py": "import sys\nsys.exit(1)\n",  # exits at import
}
MISTAKES = {
    "ben": "σ' left out",
    "cy": "transposed",
    "dee": "timeout",
    "eve": "syntax error",
    "fay": "missing function",
    "gus": "fails when loaded",
}


@pytest.mark.slow  # over 5 s on two cores: run by .ci/run, not by plain pytest
def test_grading_a_class_passes_exactly_the_right_one(tmp_path):
    folder = tmp_path / "class"
    folder.mkdir()
    for name, text in CLASS.items():
        (folder / name).write_text(text)
    out = tmp_path / "grades"
    result = invoke(
        "grade", folder, "--function", "my_backward_2a", "--quick", "--call-timeout", "3",
        "--out", out, "--min-time", "0.01",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    grades = pd.read_csv(out / "grades.csv").set_index("student")
    assert grades.index.tolist() == ["ada", "ben", "cy", "dee", "eve", "fay", "gus"]
    assert grades.index[grades["passed"]].tolist() == ["ada"]
    assert grades.index[grades["ranked"]].tolist() == ["ada"]
    ada = grades.loc["ada"]
    assert 0 < ada["time_vs_reverse_low"] <= ada["time_vs_reverse"] <= ada["time_vs_reverse_high"]
    assert grades.drop("ada")["mistake"].to_dict() == MISTAKES
    summary = (out / "summary.md").read_text()
    assert "1 of 7 students pass every case; 1 is ranked by speed." in summary
    assert "| 1 | ada |" in summary
    outputs = sorted(p.name for p in (out / "output").iterdir())
    assert outputs == [f"{name}.txt" for name in grades.index]  # what each one printed


def test_gradescope_results_for_one_submission(tmp_path):
    submission = tmp_path / "submission"
    submission.mkdir()
    (submission / "mine.py").write_text(CLASS["ben.py"])
    results = tmp_path / "results" / "results.json"
    result = invoke(
        "grade", submission, "--function", "my_backward_2a", "--quick",
        "--out", tmp_path / "grades", "--gradescope", results,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(results.read_text())
    assert {t["status"] for t in data["tests"]} == {"failed"}
    assert all(t["max_score"] == 1.0 for t in data["tests"])
    assert "σ' left out" in data["tests"][0]["output"]
    assert "leaderboard" not in data
    grades = pd.read_csv(tmp_path / "grades" / "grades.csv")
    assert grades["student"].tolist() == ["submission"] and not grades["ranked"].any()


def test_grade_refuses_a_folder_that_is_not_there(tmp_path):
    result = invoke("grade", tmp_path / "nope", "--function", "f")
    assert result.exit_code == 2
    assert "is not a folder of submissions" in result.output


# ------------------------------------------------------------------ SIGTERM
@pytest.mark.slow  # over 5 s on two cores: run by .ci/run, not by plain pytest
def test_sigterm_ends_a_run_like_ctrl_c(tmp_path):
    out = tmp_path / "run"
    args = ["run", "--depths", "1", "2", "3", "4", "5", "6", "--d-in", "4", "--width", "8",
            "--d-out", "2", "--methods", "forward", "reverse", "--min-time", "0.3", "--quiet",
            "--no-peak", "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "jacbench", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    csv = out / "results.csv"
    while not (csv.exists() and csv.read_text().count("\n") >= 3):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Terminated (SIGTERM)" in err and "--resume" in err
    meta = json.loads((out / "meta.json").read_text())
    assert meta["interrupted"] and meta["finished"] is None
    assert len(pd.read_csv(csv)) >= 2
