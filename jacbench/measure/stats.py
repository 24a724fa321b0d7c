"""Statistics of timings: intervals for a median and for a ratio of medians, and verdicts.

A timing is a set of samples: the per-call seconds of each timed block (one block is the
mean of its calls), tagged with the round and the process that measured it. Every verdict
jacbench prints rests on one of two intervals:

- ``median_interval``: the distribution-free 95% interval of one median from order
  statistics (the ``ci_low_s``/``ci_high_s`` columns). Exact for independent samples of
  any continuous distribution; no bootstrap, no normality.
- ``ratio_interval``: a percentile bootstrap of a ratio of medians. Between methods of
  one run it is paired by round (each round's ratio of medians, then their geometric mean,
  so drift that touches a whole round cancels); between two runs it is unpaired, and
  resamples processes first when a run pooled several (the spread between processes then
  counts, as it should: it is most of the run-to-run drift).

A difference is *significant* when the ratio's interval excludes 1. ``compare`` calls a
row a regression only when the whole interval lies above 1 + threshold (asv's rule: large
and significant). The bootstrap's generator is seeded: reading the same files twice gives
the same verdicts.

Samples from one process are not truly independent (a machine drifts); the intervals are
as good as that assumption, which is why ``--rounds`` (pairing) and ``--processes``
(between-process spread) exist.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from jacbench.measure.rows import KEY_COLUMNS, RowKey, row_key, with_key_columns

LEVEL = 0.95  # the confidence level of every interval
BOOTSTRAP_RESAMPLES = 2000
SEED = 0  # the bootstrap's fixed seed: verdicts are reproducible
# Fewer samples than this on either side and compare says "unsure" rather than a verdict:
# a bootstrap of one or two samples cannot see their noise.
MIN_SAMPLES = 5
# Below this many samples no order-statistic interval reaches 95% (5 samples: 93.75%);
# the interval is then the range (coverage 1 − 2^(1−n)).
_EXACT_FROM = 6


def _binomial_cdf(k: int, n: int) -> float:
    """P(Bin(n, 1/2) ≤ k)."""
    if n <= 1000:
        return sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    # Normal approximation with continuity correction: error < 1e-3 at these n.
    return 0.5 * (1 + math.erf((k + 0.5 - n / 2) / math.sqrt(n / 2)))


def median_ranks(n: int, level: float = LEVEL) -> tuple[int, int]:
    """0-based ranks (lo, hi) of the sorted samples that bound the median at ``level``.

    The interval [x_(lo), x_(hi)] covers the true median with probability
    1 − 2·P(Bin(n, ½) ≤ lo) ≥ level (the narrowest symmetric pair that does).
    """
    if n < 1:
        raise ValueError("a median interval needs at least one sample")
    if n < _EXACT_FROM:
        return 0, n - 1
    alpha = (1 - level) / 2
    lo = 0
    while _binomial_cdf(lo + 1, n) <= alpha:  # the largest lo with P(Bin ≤ lo) ≤ α
        lo += 1
    return lo, n - 1 - lo


def median_interval(samples: Sequence[float], level: float = LEVEL) -> tuple[float, float]:
    """The distribution-free ``level`` interval of the median of ``samples``."""
    ordered = sorted(samples)
    lo, hi = median_ranks(len(ordered), level)
    return ordered[lo], ordered[hi]


def _resampled_medians(values: np.ndarray, rng: np.random.Generator, resamples: int):
    picks = rng.integers(0, len(values), size=(resamples, len(values)))
    return np.median(values[picks], axis=1)


def _resampled_pooled_medians(
    groups: Sequence[np.ndarray], rng: np.random.Generator, resamples: int
) -> np.ndarray:
    """Medians of bootstrap replicates: processes resampled, then samples within each."""
    if len(groups) == 1:
        return _resampled_medians(groups[0], rng, resamples)
    medians = np.empty(resamples)
    for r in range(resamples):
        chosen = rng.integers(0, len(groups), size=len(groups))
        pooled = [groups[g][rng.integers(0, len(groups[g]), size=len(groups[g]))] for g in chosen]
        medians[r] = np.median(np.concatenate(pooled))
    return medians


def _as_groups(groups: Sequence[Sequence[float] | np.ndarray]) -> list[np.ndarray]:
    arrays = [np.asarray(g, dtype=float) for g in groups if len(g)]
    if not arrays:
        raise ValueError("a ratio interval needs samples on both sides")
    return arrays


def ratio_interval(
    baseline: Sequence[Sequence[float] | np.ndarray],
    other: Sequence[Sequence[float] | np.ndarray],
    *,
    paired: bool,
    level: float = LEVEL,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = SEED,
) -> tuple[float, float, float]:
    """(ratio, low, high): median(other) / median(baseline) with its bootstrap interval.

    Args:
        baseline, other: samples in groups. Paired: one group per round, the same rounds
            on both sides (groups i of both were timed in the same round). Unpaired: one
            group per process (a run of one process is one group).
        paired: the ratio is the geometric mean of the rounds' ratios; else the ratio of
            the pooled medians.
    """
    a, b = _as_groups(baseline), _as_groups(other)
    rng = np.random.default_rng(seed)
    if paired:
        if len(a) != len(b):
            raise ValueError("paired samples need the same rounds on both sides")
        log_ratio = np.mean([np.log(np.median(y) / np.median(x)) for x, y in zip(a, b)])
        replicates = np.zeros(resamples)
        for x, y in zip(a, b):
            ratios = _resampled_medians(y, rng, resamples) / _resampled_medians(x, rng, resamples)
            replicates += np.log(ratios)
        replicates /= len(a)
    else:
        log_ratio = math.log(np.median(np.concatenate(b)) / np.median(np.concatenate(a)))
        replicates = np.log(
            _resampled_pooled_medians(b, rng, resamples)
            / _resampled_pooled_medians(a, rng, resamples)
        )
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return math.exp(log_ratio), math.exp(low), math.exp(high)


def verdict(low: float, high: float) -> str:
    """``faster``, ``slower`` or ``same`` for a ratio interval (other / baseline)."""
    if high < 1:
        return "faster"
    if low > 1:
        return "slower"
    return "same"


# --------------------------------------------------------------- over results frames
def samples_by_key(samples: pd.DataFrame) -> dict[RowKey, pd.DataFrame]:
    if samples is None or samples.empty:
        return {}
    samples = with_key_columns(samples)
    return {RowKey(*k): g for k, g in samples.groupby(list(KEY_COLUMNS), sort=False)}


def _strata(group: pd.DataFrame, by: list[str]) -> dict[tuple, np.ndarray]:
    return {k: g["seconds"].to_numpy() for k, g in group.groupby(by, sort=True)}


def methods_interval(fast: pd.DataFrame, slow: pd.DataFrame) -> tuple[float, float, float]:
    """Ratio slow/fast of two methods' samples from one run, paired by round where it can."""
    a, b = _strata(fast, ["process", "round"]), _strata(slow, ["process", "round"])
    if len(a) > 1 and a.keys() == b.keys():
        return ratio_interval(list(a.values()), [b[k] for k in a], paired=True)
    return runs_interval(fast, slow)


def runs_interval(before: pd.DataFrame, after: pd.DataFrame) -> tuple[float, float, float]:
    """Ratio after/before of one row's samples from two runs (unpaired, by process)."""
    a, b = _strata(before, ["process"]), _strata(after, ["process"])
    return ratio_interval(list(a.values()), list(b.values()), paired=False)


def _enough(samples: pd.DataFrame | None) -> bool:
    return samples is not None and len(samples) >= MIN_SAMPLES


def point_verdict(
    rows: pd.DataFrame, samples: dict[RowKey, pd.DataFrame]
) -> tuple[str, list[str], bool]:
    """(fastest method, the methods not significantly slower than it, itself first, tested).

    ``rows`` are one point's timed rows. A method is tied with the fastest when the
    interval of its ratio to the fastest reaches down to 1. With fewer than ``MIN_SAMPLES``
    samples on either side (or none: runs made before samples.csv) the medians' intervals
    decide, tied when they overlap, and ``tested`` is False: no verdict from two samples is
    called significant. Without intervals either only equal medians tie.
    """
    ordered = rows.sort_values("median_s", kind="stable")
    fastest = ordered.iloc[0]
    key = row_key(fastest)
    tied = [fastest["method"]]
    tested = True
    for _, other in ordered.iloc[1:].iterrows():
        other_key = row_key(other)
        if _enough(samples.get(key)) and _enough(samples.get(other_key)):
            _, low, _ = methods_interval(samples[key], samples[other_key])
            same = low <= 1
        elif pd.notna(other["ci_low_s"]) and pd.notna(fastest["ci_high_s"]):
            same = bool(other["ci_low_s"] <= fastest["ci_high_s"])
            tested = False
        else:
            same = bool(other["median_s"] == fastest["median_s"])
            tested = False
        if same:
            tied.append(other["method"])
    return fastest["method"], tied, tested


def compare_runs(
    before: pd.DataFrame,
    before_samples: pd.DataFrame,
    after: pd.DataFrame,
    after_samples: pd.DataFrame,
    threshold: float,
) -> pd.DataFrame:
    """Rows timed in both runs: ratio after/before with its interval, verdict, regression.

    ``verdict`` is faster, slower or same (the interval excludes 1, or not), or unsure when
    either side has fewer than ``MIN_SAMPLES`` samples. ``regressed`` only when the whole
    interval lies above 1 + threshold; ``improved`` when it lies below 1 / (1 + threshold).
    """
    keys = list(KEY_COLUMNS)
    timed_statuses = ["ok", "slow", "unchecked"]
    a = with_key_columns(before[before["status"].isin(timed_statuses)])
    b = with_key_columns(after[after["status"].isin(timed_statuses)])
    merged = a[[*keys, "depth", "d_in", "width", "d_out", "median_s"]].merge(
        b[[*keys, "median_s"]], on=keys, suffixes=("_a", "_b")
    )
    samples_a, samples_b = samples_by_key(before_samples), samples_by_key(after_samples)
    columns: dict[str, list] = {c: [] for c in ("ratio", "ci_low", "ci_high", "n_a", "n_b")}
    for values in merged[keys].itertuples(index=False):
        key = RowKey(*values)
        sa, sb = samples_a.get(key), samples_b.get(key)
        n_a = 0 if sa is None else len(sa)
        n_b = 0 if sb is None else len(sb)
        ratio = low = high = math.nan
        if n_a >= MIN_SAMPLES and n_b >= MIN_SAMPLES:
            ratio, low, high = runs_interval(sa, sb)
        for name, value in zip(columns, (ratio, low, high, n_a, n_b)):
            columns[name].append(value)
    for name, values in columns.items():
        merged[name] = values
    plain = merged["median_s_b"] / merged["median_s_a"]
    merged["ratio"] = merged["ratio"].fillna(plain)
    decided = merged["ci_low"].notna()
    merged["verdict"] = [
        verdict(lo, hi) if ok else "unsure"
        for lo, hi, ok in zip(merged["ci_low"], merged["ci_high"], decided)
    ]
    merged["regressed"] = decided & (merged["ci_low"] > 1 + threshold)
    merged["improved"] = decided & (merged["ci_high"] < 1 / (1 + threshold))
    return merged
