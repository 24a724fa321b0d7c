import time

import pytest
import torch

from jacbench.measure import timing
from jacbench.measure.timing import Measurement

from .conftest import requires_cuda


def test_measurement_statistics_are_derived_from_raw_times():
    m = Measurement((1.0, 2.0, 3.0, 4.0, 100.0))
    assert m.runs == 5
    assert m.median == 3.0
    assert m.mean == pytest.approx(22.0)
    assert m.iqr == pytest.approx(2.0)  # inclusive quartiles 2.0 and 4.0
    assert m.noisy


def test_quiet_measurement_is_not_noisy():
    m = Measurement((1.00, 1.01, 0.99, 1.00))
    assert not m.noisy
    assert Measurement((0.5,)).iqr == 0.0


def test_measure_times_a_sleep_and_warms_up():
    calls = []

    def fn():
        calls.append(1)
        time.sleep(0.002)

    start = time.perf_counter()
    m = timing.measure(fn, min_time=0.05, warmup=3, threads=1)
    elapsed = time.perf_counter() - start
    assert m.runs >= 2
    # A sleep can only overshoot, and every timed block ran inside the call.
    assert 0.002 <= m.median and sum(m.times) <= elapsed
    assert len(calls) >= 3 + m.runs


def test_time_once():
    start = time.perf_counter()
    once = timing.time_once(lambda: time.sleep(0.01))
    assert 0.01 <= once <= time.perf_counter() - start


def test_blocked_autorange_makes_one_block_when_its_timer_synchronises():
    # NOTE: [Blocks of one size], a reason for sized blocks: a timer that costs 2 ms a reading,
    # as a GPU synchronisation costs tens of microseconds, makes one block fill min_time.
    from torch.utils import benchmark

    def synchronising_timer() -> float:
        time.sleep(0.002)
        return time.perf_counter()

    timer = benchmark.Timer("x + 1", globals={"x": 1}, timer=synchronising_timer)
    assert len(timer.blocked_autorange(min_run_time=0.05).times) == 1


class _FakeTimer:
    """torch's Timer on a clock of its own: every call takes ``per_call`` seconds."""

    per_call = 0.001

    def __init__(self, *args, **kwargs):
        pass

    def timeit(self, number):
        return type("Measured", (), {"times": [self.per_call]})()


def test_sized_blocks_make_about_twenty_blocks(monkeypatch):
    monkeypatch.setattr(timing.benchmark, "Timer", _FakeTimer)
    monkeypatch.setattr(timing, "time_once", lambda fn, device="cpu": _FakeTimer.per_call)
    # 1 ms calls, blocks of 0.1 / BLOCKS = 5 ms: five calls a block, twenty blocks
    times = timing.sized_blocks(lambda: None, device="cpu", min_time=0.1, threads=1)
    assert len(times) == timing.BLOCKS == 20
    monkeypatch.setattr(_FakeTimer, "per_call", 0.03)
    slow = timing.sized_blocks(lambda: None, device="cpu", min_time=0.01, threads=1)
    assert len(slow) == 5  # a call longer than min_time still gives enough for a verdict


def test_every_round_of_a_row_gets_about_as_many_blocks():
    """NOTE: [Blocks of one size]: a call near 3 ms, where blocked_autorange's rule flips
    between blocks of 1 and 10 calls, gets blocks of one size in every measurement."""
    counts = [
        timing.measure(lambda: time.sleep(0.003), min_time=0.06, warmup=0).runs for _ in range(3)
    ]
    # min_time / BLOCKS = 3 ms: one call a block, 20 blocks, fewer where sleeps overshoot
    assert all(10 <= c <= 20 for c in counts), counts


@requires_cuda
def test_measure_on_cuda_keeps_many_blocks():
    x = torch.ones(1000, device="cuda")
    m = timing.measure(lambda: x.mul(2), device="cuda", min_time=0.1)
    assert m.runs >= timing.BLOCKS / 2


def test_a_measurement_has_enough_blocks_for_a_verdict():
    """A slow call fills a short min_time with two or three blocks; a few more follow so
    that no row is left under stats.MIN_SAMPLES."""
    from jacbench.measure import stats

    measured = timing.measure(lambda: time.sleep(0.004), min_time=0.02, warmup=0)
    assert len(measured.times) >= stats.MIN_SAMPLES
    assert all(0.004 <= t for t in measured.times)  # a sleep can only overshoot
