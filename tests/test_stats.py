"""Intervals and verdicts on synthetic samples of known distributions (no timing involved)."""

import numpy as np
import pandas as pd
import pytest

from jacbench.measure import stats
from jacbench.measure.rows import SAMPLE_COLUMNS


def test_median_ranks_are_the_binomial_order_statistics():
    # n = 10: P(Bin(10, ½) ≤ 1) = 11/1024 ≤ 2.5% < P(≤ 2) = 56/1024
    assert stats.median_ranks(10) == (1, 8)
    # n = 100: the textbook pair is the 40th and 61st values (1-based)
    assert stats.median_ranks(100) == (39, 60)
    assert stats.median_ranks(5) == (0, 4)  # below 6 samples: the range
    assert stats.median_ranks(1) == (0, 0)
    with pytest.raises(ValueError):
        stats.median_ranks(0)


def test_large_n_uses_the_normal_approximation_consistently():
    lo, hi = stats.median_ranks(5000)
    assert (lo, hi) == (5000 - 1 - hi, hi)
    assert 2430 <= lo <= 2432  # n/2 − 1.96·√n/2 ≈ 2430.7


@pytest.mark.parametrize("n", [6, 12, 40, 200])
@pytest.mark.parametrize(
    ("draw", "true_median"),
    [
        (lambda rng, n: rng.lognormal(0.0, 0.3, n), 1.0),
        (lambda rng, n: 1 + rng.exponential(1.0, n), 1 + np.log(2)),  # skewed, like timings
    ],
)
@pytest.mark.slow  # over 5 s on two cores: run by .ci/run, not by plain pytest
def test_the_median_interval_covers_the_true_median_95_percent_of_the_time(n, draw, true_median):
    rng = np.random.default_rng(n)
    trials = 2000
    covered = 0
    for _ in range(trials):
        low, high = stats.median_interval(draw(rng, n))
        covered += low <= true_median <= high
    # ≥ 95% by construction; the discrete ranks make it a little more (≤ 98.5% at these n)
    assert 0.94 <= covered / trials <= 0.99


def _flag_rates(shift, threshold, n=25, trials=400, spread=0.2):
    rng = np.random.default_rng(7)
    flagged = 0
    for i in range(trials):
        a = rng.lognormal(0.0, spread, n)
        b = shift * rng.lognormal(0.0, spread, n)
        _, low, _ = stats.ratio_interval([a], [b], paired=False, resamples=1000, seed=i)
        flagged += low > 1 + threshold
    return flagged / trials


def test_an_a_a_comparison_at_threshold_0_flags_at_most_5_percent():
    assert _flag_rates(shift=1.0, threshold=0.0) <= 0.05


def test_a_1_5x_slowdown_is_caught_95_percent_of_the_time():
    assert _flag_rates(shift=1.5, threshold=0.10) >= 0.95


def test_the_ratio_interval_holds_the_ratio_of_medians():
    a = np.array([1.0, 1.1, 0.9, 1.05, 0.95, 1.0, 1.02])
    ratio, low, high = stats.ratio_interval([a], [2 * a], paired=False)
    assert ratio == pytest.approx(2.0)
    assert 1.5 < low <= 2.0 <= high < 2.5  # b is exactly 2a; a's spread is ±10%
    assert stats.verdict(low, high) == "slower"
    assert stats.verdict(0.5, 0.9) == "faster"
    assert stats.verdict(0.9, 1.1) == "same"


def test_pairing_by_round_cancels_drift_that_hides_a_difference():
    rng = np.random.default_rng(3)
    # each round slows both methods alike by up to 2×; B is 5% slower than A in every round
    drift = [1.0, 1.4, 2.0, 1.2, 1.7]
    a = [d * rng.lognormal(0, 0.01, 20) for d in drift]
    b = [1.05 * d * rng.lognormal(0, 0.01, 20) for d in drift]
    ratio, low, high = stats.ratio_interval(a, b, paired=True)
    assert ratio == pytest.approx(1.05, rel=0.01)
    assert low > 1.0  # paired: significant
    _, low, high = stats.ratio_interval(a, b, paired=False)
    assert low < 1.0 < high  # pooled, the drift swamps it


def _samples(method, values, rounds=None):
    return pd.DataFrame(
        {
            "widths": "3-4-1",
            "batch": 1,
            "dtype": "float32",
            "device": "cpu",
            "method": method,
            "process": 0,
            "round": rounds if rounds is not None else 0,
            "seconds": values,
        },
        columns=list(SAMPLE_COLUMNS),
    )


def test_point_verdict_names_a_significant_winner_else_a_tie():
    rng = np.random.default_rng(0)
    fast, slow = rng.lognormal(0, 0.05, 30), 2 * rng.lognormal(0, 0.05, 30)
    twin = fast * rng.lognormal(0, 0.001, 30)
    samples = pd.concat([_samples("a", fast), _samples("b", slow), _samples("c", twin)])
    rows = pd.DataFrame(
        {
            "widths": "3-4-1",
            "batch": 1,
            "dtype": "float32",
            "device": "cpu",
            "method": ["a", "b", "c"],
            "median_s": [np.median(fast), np.median(slow), np.median(twin)],
        }
    )
    by_key = stats.samples_by_key(samples)
    assert stats.point_verdict(rows[rows["method"] != "c"], by_key) == ("a", ["a"], True)
    winner, tied, tested = stats.point_verdict(rows, by_key)
    assert sorted(tied) == ["a", "c"] and winner in ("a", "c") and tested
    # no samples and no intervals: only the medians, and the verdict says it was not tested
    untested = rows.assign(ci_low_s=float("nan"), ci_high_s=float("nan"))
    assert stats.point_verdict(untested[untested["method"] != "c"], {}) == ("a", ["a"], False)


def test_two_samples_a_side_are_never_a_significant_winner():
    """A bootstrap of two samples cannot see their noise: below MIN_SAMPLES the verdict
    falls back to the intervals and says it was not tested."""
    fast, slow = np.array([1.0, 1.01]), np.array([2.0, 2.02])
    samples = pd.concat([_samples("a", fast), _samples("b", slow)])
    rows = pd.DataFrame(
        {
            "widths": "3-4-1",
            "batch": 1,
            "dtype": "float32",
            "device": "cpu",
            "method": ["a", "b"],
            "median_s": [1.005, 2.01],
            "ci_low_s": [1.0, 2.0],
            "ci_high_s": [1.01, 2.02],
        }
    )
    by_key = stats.samples_by_key(samples)
    assert stats.point_verdict(rows, by_key) == ("a", ["a"], False)
    overlapping = rows.assign(ci_low_s=[1.0, 0.9], ci_high_s=[2.5, 2.6])
    assert stats.point_verdict(overlapping, by_key) == ("a", ["a", "b"], False)
