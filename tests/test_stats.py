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
    assert stats.Decision(ratio, low, high, True).outcome() is stats.Outcome.SLOWER
    assert stats.Decision(0.7, 0.5, 0.9, True).outcome() is stats.Outcome.FASTER
    assert stats.Decision(1.0, 0.9, 1.1, True).outcome() is stats.Outcome.SAME
    assert stats.Decision(0.5, 0.4, 0.6, False).outcome() is stats.Outcome.UNSURE


def test_a_change_is_claimed_only_when_significant_and_larger_than_the_gain():
    """asv's rule: 8% faster and significant is 'faster' with no minimum gain, 'same'
    with a minimum gain of 10%; 20% slower but not significant is 'same' either way."""
    faster = stats.Decision(0.92, 0.90, 0.94, True)
    assert faster.outcome() is stats.Outcome.FASTER
    assert faster.outcome(0.10) is stats.Outcome.SAME
    assert stats.Decision(1 / 0.92, 1 / 0.94, 1 / 0.9, True).outcome(0.05) is stats.Outcome.SLOWER
    assert stats.Decision(1.2, 0.95, 1.5, True).outcome() is stats.Outcome.SAME


def test_one_sample_a_round_is_faster_only_when_faster_in_every_round():
    default = [[10.0], [11.0], [10.5]]
    assert stats.decide(default, [[8.0], [9.0], [8.5]], paired=True).outcome(0.05) is (
        stats.Outcome.FASTER
    )
    # faster by the medians, but not in the second round: the same
    mixed = stats.decide(default, [[8.0], [11.5], [8.5]], paired=True)
    assert mixed.ratio < 0.95 and mixed.outcome(0.05) is stats.Outcome.SAME
    # two rounds are too few to test
    assert stats.decide(default[:2], [[5.0], [5.0]], paired=True).outcome() is (
        stats.Outcome.UNSURE
    )


def test_bootstrap_and_rounds_give_the_same_ratio_as_the_interval():
    rng = np.random.default_rng(1)
    a = [rng.lognormal(0, 0.02, 10) for _ in range(3)]
    b = [1.5 * x for x in a]
    decision = stats.decide(a, b, paired=True)
    assert decision.tested and decision.ratio == pytest.approx(1.5)
    assert decision.low <= 1.5 <= decision.high
    assert decision.outcome(0.2) is stats.Outcome.SLOWER
    assert decision.outcome(0.6) is stats.Outcome.SAME


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
    alone = stats.point_verdict(rows[rows["method"] != "c"], by_key)
    assert (alone.winner, alone.tied, alone.tested, alone.decided) == ("a", ("a",), True, True)
    assert alone.runner_up == "b" and 1.8 < alone.low <= alone.ratio <= alone.high < 2.2
    both = stats.point_verdict(rows, by_key)
    assert sorted(both.tied) == ["a", "c"] and both.winner in ("a", "c") and both.tested
    assert not both.decided
    # no samples and no intervals: only the medians, and the verdict says it was not tested
    untested = rows.assign(ci_low_s=float("nan"), ci_high_s=float("nan"))
    verdict = stats.point_verdict(untested[untested["method"] != "c"], {})
    assert (verdict.winner, verdict.tied, verdict.tested) == ("a", ("a",), False)


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
    verdict = stats.point_verdict(rows, by_key)
    assert (verdict.tied, verdict.tested) == (("a",), False)
    overlapping = rows.assign(ci_low_s=[1.0, 0.9], ci_high_s=[2.5, 2.6])
    verdict = stats.point_verdict(overlapping, by_key)
    assert (verdict.tied, verdict.tested) == (("a", "b"), False)


def _one_row_run(seconds, other_cores):
    rows = pd.DataFrame(
        {
            "widths": ["3-4-1"], "batch": [1], "dtype": ["float32"], "device": ["cpu"],
            "method": ["a"], "model": ["mlp"], "status": ["ok"], "depth": [1], "d_in": [3],
            "width": [4], "d_out": [1], "median_s": [float(np.median(seconds))],
            "other_cores": [other_cores],
        }
    )  # fmt: skip
    samples = _samples("a", seconds).assign(model="mlp")
    return rows, samples


def test_compare_calls_no_change_on_a_row_timed_on_a_busy_machine():
    rng = np.random.default_rng(4)
    quick, slow = rng.lognormal(0, 0.01, 30), 2 * rng.lognormal(0, 0.01, 30)
    before = _one_row_run(quick, 0.0)
    quiet = stats.compare_runs(*before, *_one_row_run(slow, 0.1), 0.1)
    assert quiet["verdict"].tolist() == ["slower"] and quiet["regressed"].tolist() == [True]
    busy = stats.compare_runs(*before, *_one_row_run(slow, 1.2), 0.1)
    assert busy["verdict"].tolist() == ["unsure"] and busy["busy"].tolist() == [True]
    assert busy["regressed"].tolist() == [False]
