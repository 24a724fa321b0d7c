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

Every "is B faster than A?" jacbench answers, the tuning's choices and tie classes, a
run's winner at a point and compare's verdicts, goes through one rule, ``decide`` (NOTE:
[One decision rule]). The bootstrap's generator is seeded: reading the same files twice
gives the same verdicts.

Samples from one process are not truly independent (a machine drifts); the intervals are
as good as that assumption, which is why ``--rounds`` (pairing) and ``--processes``
(between-process spread) exist.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from jacbench.measure.machine import BUSY_LOAD
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


# NOTE: [One decision rule]
#     B is faster than A when the 95% interval of the ratio B/A lies wholly below 1
#     (significant) and the ratio itself is below 1 / (1 + min_gain) (large enough): asv's
#     rule, a change claimed only when it is both. Slower likewise, above 1 and 1 + min_gain;
#     anything else is the same (a tie). The interval is ``ratio_interval``'s: paired by
#     round where both sides were timed in the same interleaved rounds, else unpaired by
#     process. It needs MIN_SAMPLES samples a side; where each round holds one sample (the
#     tuning times a candidate once per round), the rounds are the samples and their own
#     ratios bound it: B is faster only if faster in every one of at least MIN_ROUNDS rounds.
#     With neither there is no test (``tested`` False) and no claim either way.
#     min_gain is 0 for a run's winner and compare's faster/slower, the tuning's MIN_GAIN for
#     a kernel or a tie class, compare's threshold for regressed/improved.
MIN_ROUNDS = 3


class Outcome(enum.Enum):
    """How B compares with A under ``decide``: ``unsure`` when there was nothing to test."""

    FASTER = "faster"
    SLOWER = "slower"
    SAME = "same"
    UNSURE = "unsure"


@dataclass(frozen=True)
class Decision:
    """The ratio B/A of two timings with its 95% interval, and whether it could be tested."""

    ratio: float
    low: float
    high: float
    tested: bool

    def outcome(self, min_gain: float = 0.0) -> Outcome:
        """B against A by the one rule (NOTE: [One decision rule])."""
        if not self.tested:
            return Outcome.UNSURE
        if self.high < 1 and self.ratio <= 1 / (1 + min_gain):
            return Outcome.FASTER
        if self.low > 1 and self.ratio >= 1 + min_gain:
            return Outcome.SLOWER
        return Outcome.SAME


def decide(
    baseline: Sequence[Sequence[float] | np.ndarray],
    other: Sequence[Sequence[float] | np.ndarray],
    *,
    paired: bool,
) -> Decision:
    """The ratio other/baseline and its interval, for ``Decision.outcome``.

    ``baseline`` and ``other`` are samples in groups as ``ratio_interval`` takes them: one group
    per round when ``paired`` (the same rounds on both sides), else one per process.
    """
    a, b = _as_groups(baseline), _as_groups(other)
    if paired and all(len(g) == 1 for g in (*a, *b)):  # one sample a round: the rounds decide
        ratios = [float(y[0] / x[0]) for x, y in zip(a, b)]
        ratio = math.exp(float(np.mean(np.log(ratios))))
        return Decision(ratio, min(ratios), max(ratios), len(ratios) >= MIN_ROUNDS)
    if min(sum(map(len, a)), sum(map(len, b))) < MIN_SAMPLES:
        pooled = float(np.median(np.concatenate(b)) / np.median(np.concatenate(a)))
        return Decision(pooled, math.nan, math.nan, False)
    return Decision(*ratio_interval(a, b, paired=paired), True)


# --------------------------------------------------------------- over results frames
def samples_by_key(samples: pd.DataFrame) -> dict[RowKey, pd.DataFrame]:
    if samples is None or samples.empty:
        return {}
    samples = with_key_columns(samples)
    return {RowKey.of_cells(k): g for k, g in samples.groupby(list(KEY_COLUMNS), sort=False)}


def _strata(group: pd.DataFrame, by: list[str]) -> dict[tuple, np.ndarray]:
    return {k: g["seconds"].to_numpy() for k, g in group.groupby(by, sort=True)}


def methods_decision(fast: pd.DataFrame, slow: pd.DataFrame) -> Decision:
    """Ratio slow/fast of two methods' samples from one run, paired by round where it can."""
    a, b = _strata(fast, ["process", "round"]), _strata(slow, ["process", "round"])
    if len(a) > 1 and a.keys() == b.keys():
        return decide(list(a.values()), [b[k] for k in a], paired=True)
    return runs_decision(fast, slow)


def runs_decision(before: pd.DataFrame, after: pd.DataFrame) -> Decision:
    """Ratio after/before of one row's samples from two runs (unpaired, by process)."""
    a, b = _strata(before, ["process"]), _strata(after, ["process"])
    return decide(list(a.values()), list(b.values()), paired=False)


@dataclass(frozen=True)
class PointVerdict:
    """Which method won at one point: the fastest by its median, the methods not
    significantly slower than it (itself first: more than one is a tie), whether a test
    decided that, and the runner-up's ratio to the winner with its interval (nan where none)."""

    winner: str
    tied: tuple[str, ...]
    tested: bool
    runner_up: str = ""
    ratio: float = math.nan
    low: float = math.nan
    high: float = math.nan

    @property
    def decided(self) -> bool:
        """Whether one method won alone."""
        return len(self.tied) == 1


def point_verdict(rows: pd.DataFrame, samples: dict[RowKey, pd.DataFrame]) -> PointVerdict:
    """The verdict at one point, whose timed rows are ``rows``.

    A method ties with the fastest unless ``decide`` finds it slower (NOTE: [One decision
    rule]). Where it cannot test (runs made before samples.csv, too few samples) the
    medians' intervals decide, tied when they overlap, and ``tested`` is False: no verdict
    from two samples is called significant. Without intervals either only equal medians tie.
    """
    ordered = rows.sort_values("median_s", kind="stable")
    fastest = ordered.iloc[0]
    key = row_key(fastest)
    tied = [fastest["method"]]
    tested = True
    second: tuple[str, Decision | None] | None = None
    for _, other in ordered.iloc[1:].iterrows():
        decision = None
        if key in samples and row_key(other) in samples:
            decision = methods_decision(samples[key], samples[row_key(other)])
        if decision is not None and decision.tested:
            same = decision.outcome() is not Outcome.SLOWER
        elif pd.notna(other["ci_low_s"]) and pd.notna(fastest["ci_high_s"]):
            same = bool(other["ci_low_s"] <= fastest["ci_high_s"])
            tested = False
        else:
            same = bool(other["median_s"] == fastest["median_s"])
            tested = False
        if same:
            tied.append(other["method"])
        if second is None:
            second = (other["method"], decision)
    verdict = PointVerdict(fastest["method"], tuple(tied), tested)
    if second is not None and second[1] is not None:
        found = second[1]
        return replace(
            verdict, runner_up=second[0], ratio=found.ratio, low=found.low, high=found.high
        )
    return verdict


def compare_runs(
    before: pd.DataFrame,
    before_samples: pd.DataFrame,
    after: pd.DataFrame,
    after_samples: pd.DataFrame,
    threshold: float,
    *,
    same_machine: bool = True,
) -> pd.DataFrame:
    """Rows timed in both runs: ratio after/before with its interval and verdicts.

    ``verdict`` is faster, slower or same by the one rule (NOTE: [One decision rule]), or
    unsure when either side has fewer than ``MIN_SAMPLES`` samples, was timed beside other
    work (``busy``: its ``other_cores`` above ``machine.BUSY_LOAD``), or changed no more
    than every row did (``moved``: within the run's ``common_shift``, in ``attrs``);
    ``regressed`` and ``improved`` by the same rule with the threshold as its minimum gain
    (a significant change larger than it). ``same_machine`` false (two devices side by
    side, where every row is expected to move): no common shift is taken out.
    """
    keys = list(KEY_COLUMNS)
    timed_statuses = ["ok", "slow", "unchecked"]
    a = with_key_columns(before[before["status"].isin(timed_statuses)])
    b = with_key_columns(after[after["status"].isin(timed_statuses)])
    for side in (a, b):  # runs made before the column: no word on other work
        if "other_cores" not in side.columns:
            side["other_cores"] = math.nan
    merged = a[[*keys, "depth", "d_in", "width", "d_out", "median_s", "other_cores"]].merge(
        b[[*keys, "median_s", "other_cores"]], on=keys, suffixes=("_a", "_b")
    )
    samples_a, samples_b = samples_by_key(before_samples), samples_by_key(after_samples)
    untested = Decision(math.nan, math.nan, math.nan, False)
    decisions, counts = [], []
    for values in merged[keys].itertuples(index=False):
        key = RowKey.of_cells(values)
        sa, sb = samples_a.get(key), samples_b.get(key)
        both = sa is not None and sb is not None
        decisions.append(runs_decision(sa, sb) if both else untested)
        counts.append((_count(sa), _count(sb)))
    plain = merged["median_s_b"] / merged["median_s_a"]
    merged["n_a"] = [n for n, _ in counts]
    merged["n_b"] = [n for _, n in counts]
    merged["ratio"] = [d.ratio if d.tested else p for d, p in zip(decisions, plain)]
    merged["ci_low"] = [d.low if d.tested else math.nan for d in decisions]
    merged["ci_high"] = [d.high if d.tested else math.nan for d in decisions]
    # A row timed beside other work on either side is no evidence of a change.
    merged["busy"] = (merged["other_cores_a"] > BUSY_LOAD) | (merged["other_cores_b"] > BUSY_LOAD)
    decisions = [untested if busy else d for d, busy in zip(decisions, merged["busy"])]
    shift = common_shift(decisions) if same_machine else None
    merged.attrs["shift"] = shift
    # A change every row shares is the machine's as likely as the code's: a row is claimed
    # changed only where it also differs from the run's common shift, in the same direction.
    moved = [_with_the_run(d, shift) for d in decisions]
    merged["moved"] = moved
    decisions = [untested if m else d for d, m in zip(decisions, moved)]
    merged["verdict"] = [d.outcome().value for d in decisions]
    merged["regressed"] = [d.outcome(threshold) is Outcome.SLOWER for d in decisions]
    merged["improved"] = [d.outcome(threshold) is Outcome.FASTER for d in decisions]
    return merged


# A run-wide shift is read from this many tested rows or more (fewer: none is).
MIN_SHIFT_ROWS = 4


def common_shift(decisions: Sequence[Decision]) -> float | None:
    """The change every compared row shares: the median ratio of the tested rows (None with
    fewer than ``MIN_SHIFT_ROWS``). Two runs of unchanged code made minutes apart on a
    shared VM differ by it (one A/A comparison: every row near 0.58×), a machine whose speed
    drifted; a change of the code that slows every method alike looks the same."""
    return common_ratio([d.ratio for d in decisions if d.tested])


def common_ratio(ratios: Sequence[float]) -> float | None:
    """The median of ``ratios`` (positive ones, on a log scale), or None with fewer than
    ``MIN_SHIFT_ROWS``: ``common_shift``'s, and pytest-benchmark's compare-fail's."""
    kept = [r for r in ratios if r > 0]
    if len(kept) < MIN_SHIFT_ROWS:
        return None
    return math.exp(float(np.median(np.log(kept))))


def _with_the_run(decision: Decision, shift: float | None) -> bool:
    """Whether the row's change, faster or slower by the one rule, is no more than the run's
    common shift: the same by the rule once divided by it, or the other way."""
    if shift is None or not decision.tested:
        return False
    alone = decision.outcome()
    if alone in (Outcome.SAME, Outcome.UNSURE):
        return False
    relative = Decision(
        decision.ratio / shift, decision.low / shift, decision.high / shift, tested=True
    )
    return relative.outcome() is not alone


def _count(samples: pd.DataFrame | None) -> int:
    return 0 if samples is None else len(samples)
