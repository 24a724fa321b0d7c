"""The tables a run's analysis is shown in, as text: each table's header and rows built once,
here, and drawn by either renderer, rich in the terminal (``report.rich_table``) or Markdown
(``markdown.markdown_lines``).

A ``TextTable`` holds plain text (no rich markup); its styles and title are the terminal's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pandas as pd

from jacbench.faces.text import (
    compact_label,
    format_percent,
    format_ratio,
    format_seconds,
    prediction_cell,
    shape_label,
    verdict_cell,
)
from jacbench.measure.rows import TIMED_STATUSES
from jacbench.runs import analysis
from jacbench.runs.operators import OPERATORS

Label = Callable[[pd.Series], str]


@dataclass
class TextTable:
    """A table as text: its header and its rows' cells. The first ``left`` columns are
    aligned left (names), the rest right (numbers); ``styles`` (one per row, or none),
    ``title`` and ``caption`` are for the terminal."""

    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    left: int = 1
    styles: list[str | None] = field(default_factory=list)
    title: str = ""
    caption: str = ""


# ------------------------------------------------------------------- summary
def summary_table(
    summary: pd.DataFrame,
    methods: Sequence[str] | None = None,
    operator: str = "jacobian",
    *,
    wide: bool = False,
) -> TextTable:
    """A run's summary (``analysis.summary_frame``), one row per shape.

    ``wide`` (summary.md): every method timed, in the order of ``methods``, full shape labels,
    the forward/reverse ratio for an MLP's Jacobian, the predicted mode, the ``measured`` and
    ``fastest`` verdicts and jacbench's efficiency. Else (a terminal): jacbench's methods and
    user routines, the best of each peer family, the ratio where timed, predicted and
    measured, the Hessian's ``hessian-`` prefix dropped from its methods' names.
    """
    title = "median time per " + ("Jacobian" if operator == "jacobian" else operator)
    caption = (
        "peer columns: the fastest of the family's methods; "
        "✓: the predicted mode won or tied (not significantly slower, 95%)"
    )
    if summary.empty:
        return TextTable([], title=title, caption=caption)
    if wide:
        ours = analysis.method_order(summary.columns, methods)
        families: dict[str, list[str]] = {}
        ratio = operator == "jacobian" and not analysis.all_models(summary)
        label: Label = shape_label
        prefix = ""
    else:
        ours = [m for m in analysis.own_methods(operator) if m in summary]
        ours += analysis.user_methods(summary.columns)
        families = {
            f: [m for m in ms if m in summary] for f, ms in analysis.families(operator).items()
        }
        families = {f: ms for f, ms in families.items() if ms}
        ratio = "fwd/rev" in summary
        label = compact_label
        # The Hessian's modes share their prefix (hessian-fwd-over-rev, hessian-fwd-over-fwd):
        # a narrow terminal would cut both to "hessian-fwd-…", so the header drops it, and a
        # method's header breaks at its hyphens (fwd- / over- / rev) rather than being cut.
        prefix = "hessian-" if operator == "hessian" else ""
        if prefix:
            title = f"{title} (jacbench's methods: {prefix}<mode>)"
    efficiency = wide and "efficiency" in summary
    names = ours if wide else [m.removeprefix(prefix).replace("-", "-\n") for m in ours]
    header = ["shape", *names, *families, *(["fwd/rev"] if ratio else []), "predicted", "measured"]
    header += ["fastest"] if wide else []
    header += ["efficiency"] if efficiency else []
    table = TextTable(header, title=title, caption=caption)
    for _, row in summary.iterrows():
        cells = [label(row)] + [format_seconds(row[m]) for m in ours]
        cells += [format_seconds(row[ms].min()) for ms in families.values()]
        cells += [format_ratio(row.get("fwd/rev"))] if ratio else []
        cells += [prediction_cell(row), verdict_cell(row, "measured", prefix)]
        cells += [verdict_cell(row, "fastest")] if wide else []
        cells += [format_percent(row["efficiency"])] if efficiency else []
        table.rows.append(cells)
    return table


# --------------------------------------------------------------------- peers
def peers_table(comparison: pd.DataFrame, operator: str) -> TextTable | None:
    """jacbench's best method against the best of each peer family
    (``analysis.peer_comparison``), with the geometric mean of each speed-up; None where
    there is no peer to compare with."""
    best = OPERATORS[operator].best_method
    families = [f for f in analysis.families(operator) if f in comparison.columns]
    if comparison.empty or not families:
        return None
    header = ["shape", best, *families, *(f"× {f}" for f in families)]
    efficiency = "efficiency" in comparison and comparison["efficiency"].notna().any()
    if efficiency:
        header.append(f"{best} efficiency")
    table = TextTable(header, title=f"{best} against its peers")
    for _, row in comparison.iterrows():
        cells = [shape_label(row), format_seconds(row["auto"])]
        cells += [format_seconds(row[f]) for f in families]
        cells += [_speedup(row[f"× {f}"]) for f in families]
        if efficiency:
            cells.append(format_percent(row["efficiency"]))
        table.rows.append(cells)
    means = [_speedup(analysis.geometric_mean(comparison[f"× {f}"])) for f in families]
    blank = [""] * (1 + len(families))
    table.rows.append(["geometric mean", *blank, *means, *([""] if efficiency else [])])
    return table


def _speedup(ratio: float) -> str:
    return "—" if pd.isna(ratio) else f"{ratio:.2f}"


# ------------------------------------------------------------------- devices
def devices_table(
    side_by_side: pd.DataFrame, devices: Sequence[str], methods: Sequence[str] | None = None
) -> TextTable:
    """Medians on each device (``analysis.devices_side_by_side``) and each device's time ratio
    to the first with its 95% interval and verdict; ordered by shape, then method."""
    order = {
        m: i for i, m in enumerate(analysis.method_order(side_by_side["method"].unique(), methods))
    }
    rows = side_by_side.sort_values("method", key=lambda m: m.map(order), kind="stable")
    rows = rows.sort_values(["depth", "d_in", "width", "d_out", "batch", "dtype"], kind="stable")
    first, others = devices[0], devices[1:]
    header = ["shape", "method", *devices, *(f"{d} / {first}" for d in others)]
    table = TextTable(header, title="devices side by side")
    for _, row in rows.iterrows():
        shape = shape_label({**row.to_dict(), "device": ""}).rstrip()  # devices are columns
        cells = [shape, str(row["method"]), *[format_seconds(row[d]) for d in devices]]
        for d in others:
            verdict = row[f"verdict {d}"]
            if not isinstance(verdict, str):
                cells.append("—")
                continue
            low, high = row[f"ci_low {d}"], row[f"ci_high {d}"]
            interval = "" if math.isnan(low) else f" ({low:.3f}–{high:.3f})"
            cells.append(f"{format_ratio(row[f'ratio {d}'])}{interval} {verdict}")
        table.rows.append(cells)
    return table


# ------------------------------------------------------------------- evaluations
def evals_table(rows: pd.DataFrame, methods: Sequence[str] | None = None) -> TextTable | None:
    """What each timed row's Jacobian cost in evaluations of the function itself
    (``evals``, ADBench's presentation), shape by method; None where no row says."""
    if "evals" not in rows.columns:
        return None
    timed = rows[pd.to_numeric(rows["evals"], errors="coerce").notna()]
    if timed.empty:
        return None
    present = set(timed["method"])
    order = [m for m in (methods or dict.fromkeys(timed["method"])) if m in present]
    table = TextTable(["shape", *order])
    labels = timed.apply(compact_label, axis=1)
    for label, group in timed.groupby(labels, sort=False):
        by = dict(zip(group["method"], group["evals"]))
        table.rows.append([str(label), *(f"{by[m]:.3g}" if m in by else "—" for m in order)])
    return table


# ------------------------------------------------------------------- compiling
def payback_table(found: pd.DataFrame) -> TextTable:
    """After how many calls each compiled method that is faster (``found``: rows of
    ``analysis.compile_payback``) repays its compile time against the fastest method at its
    point that compiles nothing."""
    columns = ["shape", "compiled", "against", "compile", "saves a call", "repaid after"]
    table = TextTable(columns, left=3)
    for _, row in found[found["saved_s"] > 0].iterrows():
        table.rows.append(
            [compact_label(row), str(row["method"]), str(row["eager"]),
             format_seconds(row["compile_s"]), format_seconds(row["saved_s"]),
             f"{math.ceil(row['calls']):,} calls"]
        )  # fmt: skip
    return table


# ------------------------------------------------------------------- untimed
def untimed_table(frame: pd.DataFrame) -> TextTable:
    """The rows that were not timed (failed, skipped, out of memory) and why."""
    problems = frame[~frame["status"].isin(TIMED_STATUSES)]
    table = TextTable(["shape", "method", "status", "message"], left=4, title="rows not timed")
    for _, row in problems.iterrows():
        cells = [shape_label(row), str(row["method"]), str(row["status"]), str(row["message"])]
        table.rows.append(cells)
    return table


# ------------------------------------------------------------------- compare
# A terminal's style for the verdicts worth seeing at a glance.
VERDICT_STYLES = {"regressed": "bold red", "improved": "green", "slower": "yellow"}


def compare_caption(threshold: float, label_a: str, label_b: str) -> str:
    """What compare's columns and its regressed and improved mean: significant, and the ratio
    past the threshold (NOTE: [One decision rule] in jacbench.measure.stats)."""
    return (
        f"ratio {label_b}/{label_a}, 95% bootstrap interval; regressed or improved: "
        f"significantly slower or faster, by {1 + threshold:g}× or more"
    )


def compare_table(
    merged: pd.DataFrame,
    threshold: float,
    label_a: str,
    label_b: str,
    label: Label = shape_label,
) -> TextTable:
    """Rows of two runs side by side (``stats.compare_runs``): each median, the ratio B/A,
    its 95% interval and the verdict; shapes labelled by ``label``."""
    header = ["shape", "method", label_a, label_b, "ratio", "95% interval", "verdict"]
    table = TextTable(
        header,
        left=2,
        title=f"{label_b} vs {label_a}",
        caption=compare_caption(threshold, label_a, label_b),
    )
    for _, row in merged.iterrows():
        verdict = analysis.compare_verdict(row)
        interval = "—" if math.isnan(row["ci_low"]) else f"{row['ci_low']:.3f}–{row['ci_high']:.3f}"
        table.rows.append(
            [
                label(row),
                str(row["method"]),
                format_seconds(row["median_s_a"]),
                format_seconds(row["median_s_b"]),
                f"{row['ratio']:.3f}",
                interval,
                verdict,
            ]
        )
        table.styles.append(VERDICT_STYLES.get(verdict))
    return table
