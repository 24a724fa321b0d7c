import time

import pytest

from jacbench import timing
from jacbench.timing import Measurement


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
