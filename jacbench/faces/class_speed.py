"""A class's speed: each student against jacbench's peers timed beside them, with an
interval, the ranks, and what else the machine was doing meanwhile.

NOTE: [A leaderboard that means something]
    Only a student whose routine is right at every case and was timed at every shape is
    ranked; a shape without a time (timing failed, timed out, wrong when timed) or one whose
    samples are too few for the one rule to test (``stats.decide``) leaves the student
    ``not ranked``, with the reason, rather than out of a geometric mean.

    jacbench's peers (``PEERS``) are timed beside each student, the same way for everyone:
    in ``PASSES`` passes over the class's shapes, each pass timing the peers (in jacbench's
    own process, as ``jacbench.sweep`` times built-in methods, the student's sandbox paused
    meanwhile: nothing a student leaves running can slow them) and the student (in their
    sandbox), in turn, the order alternating from pass to pass (peers first, then the
    student first, …), the minimum time shared out between the passes. The machine's speed
    drifts (±30% within minutes on a shared VM, a frequency step, another process): a drift
    then falls on the student and the peers alike and cancels in their ratio, and a moment
    when the machine ran slow shows as spread between passes rather than as a student's
    speed. Timed once for the class at its start instead, two copies of one routine were
    ranked apart (1.15× and 1.70× reverse, intervals 1.07–1.19 and 1.52–2.02; AMD EPYC, two
    cores, torch 2.13, ``--quick``).

    At each shape the student's samples are compared with the peer's by ``stats.decide``
    (unpaired: they were timed apart; grouped by the samples' process, as
    ``stats.runs_decision`` does, and by pass, groups its bootstrap resamples first): the
    ratio of the pooled medians with its 95% interval. A student's ratio is the geometric
    mean of the shapes' ratios; its interval runs from the geometric mean of the shapes'
    lows to that of their highs. Whenever every shape's interval covers its true ratio, this
    one covers the true geometric mean; it is wider than an interval of the mean itself
    would be, so it calls students tied rather than ordered when in doubt.

    One student is ahead of another by the one rule (``stats.Decision.outcome``) applied to
    the ratio of their ratios: their intervals apart, and the faster ``MIN_GAIN`` (5%)
    faster, a drift allowance, since two students are timed at different moments in
    different processes. Students not told apart share a rank; that relation is not
    transitive (a ties b, b ties c, a ahead of c), so a chain of ties is one tie: every two
    students whose intervals overlap then share a rank. Ranks count the students ahead
    (competition ranking: 1, 1, 3).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from jacbench.faces.text import compact_label
from jacbench.measure import machine
from jacbench.measure.rows import TIMED_STATUSES
from jacbench.measure.stats import Decision, Outcome, decide
from jacbench.runs.harness import sweep
from jacbench.runs.methods import Method

# A passing routine is timed against these, at the exercise's shapes; each ratio's column.
PEERS = ("reverse", "naive-reverse")
RATIO_COLUMNS = {"reverse": "time_vs_reverse", "naive-reverse": "time_vs_textbook"}
RANKED_BY = "reverse"  # the leaderboard's peer
# A student's routine and the peers are timed in turn in this many passes over the shapes:
# a drift of the machine's speed falls on both alike, and a moment when it ran slow shows as
# a spread between passes, which the interval sees, not as a student's own speed.
PASSES = 3
# Two students are ranked apart only when one is this much faster too (and their intervals
# do not overlap): they were timed at different moments, in different processes, which
# drift the intervals do not see.
MIN_GAIN = 0.05
# A span shorter than this says nothing of other work (/proc/stat counts 10 ms ticks): the
# load is recorded only for longer ones.
MIN_SPAN_S = 1.0


# The class's shapes: (widths, batch) pairs, as a sweep's ``shapes``.
Grid = tuple[tuple[tuple[int, ...], int], ...]


@dataclass(frozen=True)
class PeerTimings:
    """The peers' rows and samples, timed beside one student at ``grid``; ``shapes``: its
    widths as results.csv spells them, in order."""

    rows: pd.DataFrame
    samples: pd.DataFrame
    grid: Grid

    @property
    def shapes(self) -> tuple[str, ...]:
        """The widths of ``grid``, as results.csv spells them."""
        return tuple(dict.fromkeys("-".join(map(str, widths)) for widths, _ in self.grid))


@dataclass(frozen=True)
class Speed:
    """A student's time over one peer's: the geometric mean over the shapes and its 95%
    interval, or why there is none (``missing``)."""

    ratio: float = math.nan
    low: float = math.nan
    high: float = math.nan
    missing: str = ""
    mistake: str = ""  # the student's own mistake at the shape without a time, if any


@dataclass(frozen=True)
class StudentTimings:
    """A student's rows and samples, and the peers' timed beside them, each with its
    ``pass``."""

    rows: pd.DataFrame
    samples: pd.DataFrame
    peers: PeerTimings


def time_student(
    method: Method,
    grid: Grid,
    *,
    min_time: float,
    call_timeout: float,
    pause: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext,
) -> StudentTimings:
    """A student's routine and jacbench's peers timed in turn at ``grid``, in ``PASSES``
    passes (``min_time`` shared out), the order alternating from pass to pass, the student's
    code paused (``pause``) while the peers are timed (NOTE: [A leaderboard that means
    something]); stops after a pass where the student lacks a time at a shape."""
    mine: list[tuple[pd.DataFrame, pd.DataFrame]] = []
    theirs: list[tuple[pd.DataFrame, pd.DataFrame]] = []
    share = min_time / PASSES
    for number in range(PASSES):
        for peers_now in (True, False) if number % 2 == 0 else (False, True):
            if peers_now:
                with pause():
                    frame = sweep(
                        list(PEERS), shapes=grid, min_time=share, call_timeout=call_timeout
                    )
                theirs.append(_in_pass(frame, number))
            else:
                frame = sweep([method], shapes=grid, min_time=share, call_timeout=call_timeout)
                mine.append(_in_pass(frame, number))
        if not all(_timed(row) for _, row in mine[-1][0].iterrows()):
            break
    peer_rows, peer_samples = _joined(theirs)
    rows, samples = _joined(mine)
    return StudentTimings(rows, samples, PeerTimings(peer_rows, peer_samples, grid))


def _in_pass(frame: pd.DataFrame, number: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A sweep's rows and samples, each marked with its pass."""
    samples = frame.attrs["samples"].assign(**{"pass": number})
    frame = frame.assign(**{"pass": number})
    frame.attrs = {}  # a frame in attrs: pandas' concat would compare them
    return frame, samples


def _joined(
    parts: Sequence[tuple[pd.DataFrame, pd.DataFrame]],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    return (
        pd.concat([rows for rows, _ in parts], ignore_index=True),
        pd.concat([samples for _, samples in parts], ignore_index=True),
    )


def _rows_at(rows: pd.DataFrame, method: str, widths: str) -> list[pd.Series]:
    found = rows[(rows["method"] == method) & (rows["widths"].astype(str) == widths)]
    return [row for _, row in found.iterrows()]


def _groups(samples: pd.DataFrame, method: str, widths: str) -> list[np.ndarray]:
    """The row's samples, one group per process (as ``stats.runs_decision`` groups them)
    and pass."""
    mine = samples[(samples["method"] == method) & (samples["widths"].astype(str) == widths)]
    by = ["process", "pass"] if "pass" in mine.columns else ["process"]
    return [g["seconds"].to_numpy(dtype=float) for _, g in mine.groupby(by, sort=True)]


def _timed(row: pd.Series) -> bool:
    return row["status"] in TIMED_STATUSES and pd.notna(row["median_s"])


def speed_against(
    rows: pd.DataFrame, samples: pd.DataFrame, method: str, peers: PeerTimings, peer: str
) -> Speed:
    """``method``'s time over ``peer``'s at every shape of the class (NOTE: [A leaderboard
    that means something]); ``rows`` and ``samples`` are the student's sweep's."""
    ratios, lows, highs = [], [], []
    for widths in peers.shapes:
        mine = _rows_at(rows, method, widths)
        theirs = _rows_at(peers.rows, peer, widths)
        untimed = next((row for row in mine if not _timed(row)), None)
        if not mine or untimed is not None:
            mistake = _text(untimed["mistake"]) if untimed is not None else ""
            return Speed(missing=_no_time(untimed, widths), mistake=mistake)
        if not theirs or not all(_timed(row) for row in theirs):
            return Speed(missing=f"jacbench {peer} has no time at {compact_label(mine[0])}")
        decision = decide(
            _groups(peers.samples, peer, widths), _groups(samples, method, widths), paired=False
        )
        if not decision.tested:
            return Speed(missing=f"too few timed calls at {compact_label(mine[0])} to compare")
        ratios.append(decision.ratio)
        lows.append(decision.low)
        highs.append(decision.high)
    if not ratios:
        return Speed(missing="no shape was timed")
    return Speed(_geometric_mean(ratios), _geometric_mean(lows), _geometric_mean(highs))


def _no_time(row: pd.Series | None, widths: str) -> str:
    if row is None:
        return f"no time at widths {widths}"
    return f"no time at {compact_label(row)}: {_text(row['message']) or row['status']}"


def _text(value: object) -> str:
    return "" if value is None or pd.isna(value) else str(value)


def _geometric_mean(values: Sequence[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def ahead(a: tuple[float, float, float], b: tuple[float, float, float]) -> bool:
    """Whether the student with (ratio, low, high) ``a`` is faster than ``b``, by the one
    rule (NOTE: [One decision rule]): a/b's interval, from a's and b's, wholly below 1 (the
    intervals do not overlap) and a more than ``MIN_GAIN`` faster."""
    (ratio_a, low_a, high_a), (ratio_b, low_b, high_b) = a, b
    between = Decision(ratio_a / ratio_b, low_a / high_b, high_a / low_b, tested=True)
    return between.outcome(MIN_GAIN) is Outcome.FASTER


def ranks(intervals: Mapping[str, tuple[float, float, float]]) -> dict[str, int]:
    """Each student's rank from their (ratio, low, high): two students not told apart by
    ``ahead`` (intervals that overlap, ratios within ``MIN_GAIN``), directly or through a
    chain of others, share a rank; a rank counts the students ahead (1, 1, 3).

    >>> ranks({"a": (1.0, 0.9, 1.1), "b": (1.05, 1.0, 1.2), "c": (2.0, 1.8, 2.2)})
    {'a': 1, 'b': 1, 'c': 3}
    """
    students = sorted(intervals, key=lambda s: intervals[s][0])
    tie = {s: s for s in students}

    def root(s: str) -> str:
        while tie[s] != s:
            s = tie[s]
        return s

    for i, first in enumerate(students):
        for second in students[i + 1 :]:
            if not ahead(intervals[first], intervals[second]):
                tie[root(second)] = root(first)
    groups: dict[str, list[str]] = {}
    for student in students:  # by ratio: each group in order of its fastest
        groups.setdefault(root(student), []).append(student)
    found: dict[str, int] = {}
    count = 0
    for group in groups.values():
        found.update(dict.fromkeys(group, count + 1))
        count += len(group)
    return found


# ------------------------------------------------------------------- the machine's load
@dataclass
class Watch:
    """Other work on the machine while one part of the class ran: ``machine.OtherWork``
    (the cores' busy time less jacbench's own), less the CPU time of the children reaped
    meanwhile (a student's sandbox, closed before ``cores`` is read). Busy time of a
    process started in the span and not yet reaped counts as other work."""

    during: str
    _others: machine.OtherWork = field(default_factory=machine.OtherWork)
    _start: float = field(default_factory=time.monotonic)
    _children: float = field(default_factory=lambda: _children_seconds())

    def cores(self) -> float | None:
        """Cores' worth of other work since the watch began (None: this system cannot say)."""
        others = self._others.cores()
        wall = time.monotonic() - self._start
        if others is None or wall <= 0:
            return None
        return max(0.0, others - (_children_seconds() - self._children) / wall)

    def record(self) -> dict[str, Any] | None:
        """What grading.json keeps of the span: what ran, when, and the other work (None:
        the span was too short to tell, ``MIN_SPAN_S``)."""
        if time.monotonic() - self._start < MIN_SPAN_S:
            return None
        cores = self.cores()
        return {
            "during": self.during,
            "time": machine.now_iso(),
            "other_cores": None if cores is None else round(cores, 2),
        }


def _children_seconds() -> float:
    times = os.times()
    return times.children_user + times.children_system


@dataclass(frozen=True)
class Load:
    """Other work over the class: the spans watched (each student) and their cores."""

    spans: tuple[Mapping[str, Any], ...] = ()

    @property
    def busy(self) -> tuple[Mapping[str, Any], ...]:
        """The spans with other work beyond ``machine.BUSY_LOAD``."""
        return tuple(
            s
            for s in self.spans
            if s.get("other_cores") is not None and s["other_cores"] > machine.BUSY_LOAD
        )

    def warning(self) -> str | None:
        """One sentence when other work shared the machine, else None."""
        busy = self.busy
        if not busy:
            return None
        most = max(s["other_cores"] for s in busy)
        return (
            f"The machine was busy: other work used up to {most:.1f} cores' worth while "
            f"{len(busy)} of {self._graded()} students were graded, so times may be slower "
            "and noisier than on an idle machine."
        )

    def _graded(self) -> int:
        return len({s["during"] for s in self.spans})
