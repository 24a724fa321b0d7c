"""Timing with fewer threads where torch's pool stalls beside other work (NOTE: [A stalled
thread pool]): the rule on a probe whose clock and neighbours are made up here, and a sweep
whose routines then run on the free cores, saying so."""

import os
from pathlib import Path

import pytest
import torch

from jacbench import sweep
from jacbench.faces import text
from jacbench.measure import threads
from jacbench.measure.threads import PoolCheck
from jacbench.runs import results

ROUTINE = f"{Path(__file__).with_name('user_routines.py')}:right_on_one_thread"


def _probe(monkeypatch, *, pooled_ms: float, single_ms: float, other_cores: float) -> PoolCheck:
    """check_pool with the tanh's times per thread count and the other work made up."""

    def times(_):
        return [(pooled_ms if torch.get_num_threads() > 1 else single_ms) / 1e3] * threads.CALLS

    class Others:
        def cores(self):
            return other_cores

    monkeypatch.setattr(threads, "_times", times)
    monkeypatch.setattr(threads, "OtherWork", Others)
    found = threads.check_pool()
    assert found is not None
    return found


@pytest.mark.usefixtures("two_threads")
def test_the_pool_is_dropped_only_where_it_stalls_beside_other_work(monkeypatch):
    stalled = _probe(monkeypatch, pooled_ms=7.4, single_ms=3.7, other_cores=1.0)
    assert (stalled.threads, stalled.used, stalled.stalled) == (2, 1, True)
    assert stalled.pooled_s == pytest.approx(7.4e-3) and stalled.single_s == pytest.approx(3.7e-3)
    assert torch.get_num_threads() == 2  # the probe leaves torch's threads as it found them
    # a quiet machine keeps its pool even where the probe says it buys nothing
    assert not _probe(monkeypatch, pooled_ms=7.4, single_ms=3.7, other_cores=0.1).stalled
    # a busy machine whose pool still pays keeps it
    assert not _probe(monkeypatch, pooled_ms=1.9, single_ms=3.4, other_cores=1.0).stalled
    # equal times are no gain: busy, it goes
    assert _probe(monkeypatch, pooled_ms=3.5, single_ms=3.5, other_cores=1.0).used == 1


def test_one_thread_or_another_device_has_no_pool_to_check(two_threads):
    assert threads.check_pool("cuda") is None
    torch.set_num_threads(1)
    assert threads.check_pool() is None


def test_a_recorded_check_reads_back_and_says_what_was_measured():
    check = PoolCheck(threads=2, used=1, pooled_s=7.35e-3, single_s=3.7e-3, other_cores=0.8)
    assert PoolCheck.of_dict(check.as_dict()) == check
    assert PoolCheck.of_dict({"threads": "two"}) is None and PoolCheck.of_dict(None) is None
    assert text.pool_warning(check) == (
        "timed on 1 of 2 threads: torch's thread pool stalled beside other work (a parallel "
        "tanh took 7.35 ms on 2 threads, 3.70 ms on one, other work 0.8 cores); times are not "
        "those of a quiet machine with 2 threads."
    )
    kept = PoolCheck(threads=2, used=2, pooled_s=1.9e-3, single_s=3.4e-3, other_cores=0.0)
    assert text.pool_warning(kept) is None and text.pool_warning(None) is None


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="a sandbox's default: 2 threads")
@pytest.mark.usefixtures("two_threads")
def test_a_stalled_pool_times_every_routine_on_the_free_cores_and_says_so(monkeypatch, tmp_path):
    """The routine is right only on one thread: in its own sandbox it gets the sweep's."""
    options = dict(depths=[2], d_in=[4], width=[6], d_out=[3], min_time=0.01)
    options["methods"] = ["reverse", ROUTINE]
    stall = PoolCheck(threads=2, used=1, pooled_s=7e-3, single_s=4e-3, other_cores=1.0)
    monkeypatch.setattr(threads, "check_pool", lambda device: stall)
    frame = sweep(**options, out=tmp_path / "stalled")
    assert list(frame["status"]) == ["ok", "ok"]
    assert frame.attrs["thread_pool"] == stall
    meta = results.read_meta(tmp_path / "stalled")
    assert meta["thread_pool"]["used"] == 1
    summary = (tmp_path / "stalled" / "summary.md").read_text()
    assert "**Warning: timed on 1 of 2 threads" in summary
    # the pool kept: the routine's sandbox runs on two threads, and its answer is wrong
    monkeypatch.setattr(threads, "check_pool", lambda device: None)
    frame = sweep(**options, out=tmp_path / "kept")
    assert list(frame["status"]) == ["ok", "wrong"]
    assert "timed on" not in (tmp_path / "kept" / "summary.md").read_text()


def test_run_says_at_its_end_that_it_timed_on_fewer_threads(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from jacbench.faces.cli import app

    stall = PoolCheck(threads=2, used=1, pooled_s=7e-3, single_s=4e-3, other_cores=1.0)
    monkeypatch.setattr(threads, "check_pool", lambda device: stall)
    args = "run --depths 2 --d-in 4 --width 6 --d-out 3 --methods forward --min-time 0.01"
    done = CliRunner().invoke(app, [*args.split(), "--out", str(tmp_path / "run")])
    assert done.exit_code == 0, done.output
    assert "Warning: timed on 1 of 2 threads: torch's thread pool stalled" in done.output
