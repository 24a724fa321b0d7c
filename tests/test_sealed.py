"""Verdicts a routine cannot fool: its result judged apart, every timed call checked."""

from pathlib import Path

import pandas as pd
import pytest

from .test_cli import invoke

HOSTILE = str(Path(__file__).with_name("hostile_routines.py"))
GRID = ["--depths", "2", "--d-in", "4", "--width", "8", "--d-out", "2"]
TIMING = ["--min-time", "0.05", "--no-peak", "--call-timeout", "20"]
TRICKS = {  # each routine's status and mistake in a run
    "patches_jacrev": ("wrong", "wrong values"),
    "right_twice_then_empty": ("wrong", "wrong when timed"),
    # each timed call a new input: one remembered by an id that was freed and used again
    "memo_by_id": ("wrong", "wrong when timed"),
    "lying_subclass": ("wrong", "not a tensor"),
    "complex_result": ("wrong", "wrong dtype or device"),
    "float64_answer": ("wrong", "wrong dtype or device"),
    "reads_the_callers_reference": ("wrong", "wrong values"),
    "forges_its_timing": ("ok", ""),  # timed by jacbench's own clock: 2 ms a call, not 1 µs
    "commits_then_swaps": ("wrong", "wrong when timed"),
    "stalls_when_asked_for_picks": ("timeout", "timeout"),  # within PICKS_S, not 60 s
}


@pytest.mark.slow  # over 5 s on two cores: run by .ci/run, not by plain pytest
def test_no_trick_passes_a_run_nor_touches_jacbench_s_own_rows(tmp_path):
    out = tmp_path / "run"
    tricks = [f"{HOSTILE}:{name}" for name in TRICKS]
    methods = " ".join(["reverse", *tricks, "naive-reverse"])
    result = invoke("run", *GRID, *TIMING, "--methods", methods, "--out", out, "--quiet")
    assert result.exit_code == 1, result.output
    rows = pd.read_csv(out / "results.csv", keep_default_na=False).set_index("method")
    assert rows.loc["reverse", "status"] == rows.loc["naive-reverse", "status"] == "ok"
    for name, (status, mistake) in TRICKS.items():
        row = rows.loc[f"{HOSTILE}:{name}"]
        assert (row["status"], row["mistake"]) == (status, mistake), (name, row["message"])
        if status == "wrong":
            assert row["median_s"] in ("", "nan"), name  # a wrong routine is never a timing
    assert float(rows.loc[f"{HOSTILE}:forges_its_timing", "median_s"]) > 0.002


@pytest.mark.slow
def test_the_call_timeout_is_per_call_not_per_measurement(tmp_path):
    """Each call takes 0.3 s, under a 1 s timeout; the measurement makes a dozen of them."""
    out = tmp_path / "run"
    slow = ["--min-time", "0.5", "--no-peak", "--call-timeout", "1"]
    result = invoke("run", *GRID, *slow, "--methods", f"{HOSTILE}:slow_calls", "--out", out)
    assert result.exit_code == 0, result.output
    row = pd.read_csv(out / "results.csv").iloc[0]
    assert row["status"] == "ok" and row["runs"] >= 2
