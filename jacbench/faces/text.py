"""The words and numbers people read, shared by the terminal and the Markdown: one value's
format (seconds, counts, bytes, ratios), shape labels, a verdict's wording, and the
sentences both print (the prediction's accuracy, a busy machine).

Each function takes data (``jacbench.runs.analysis``' frames and dataclasses, rows, points)
and returns text.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd

from jacbench.measure import stats
from jacbench.measure.rows import format_widths
from jacbench.measure.threads import PoolCheck
from jacbench.runs import analysis
from jacbench.runs.grid import Point


# ---------------------------------------------------------------- one value
def format_seconds(seconds: float) -> str:
    """``1.23 ms``: three significant digits in s, ms, µs or ns; ``—`` for none."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    scaled = _in_unit(seconds, (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)))
    return scaled or f"{seconds / 1e-9:.3g} ns"


def _in_unit(value: float, units: tuple[tuple[str, float], ...]) -> str | None:
    """``value`` to three significant digits in the first of ``units`` (largest first) where
    it reads at least 1 once rounded: 999.6 µs is ``1 ms``, never ``1e+03 µs``. None where
    it reads less than 1 in every one: the caller's smallest unit takes it."""
    for unit, scale in units:
        if abs(float(f"{value / scale:.3g}")) >= 1:
            return f"{value / scale:.3g} {unit}"
    return None


def format_count(n: float) -> str:
    """``8.01 G``: three significant digits with a k, M, G or T prefix."""
    if n is None or not math.isfinite(n):
        return "—"
    return _in_unit(n, (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3))) or f"{n:.0f}"


def format_bytes(n: float) -> str:
    """``1.5 MiB``: three significant digits in B, KiB, MiB or GiB."""
    if n is None or not math.isfinite(n):
        return "—"
    return _in_unit(n, (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))) or f"{n:.0f} B"


def format_ratio(ratio: float | None) -> str:
    """A ratio to three significant digits; ``—`` for none."""
    return f"{ratio:.3g}" if ratio is not None and pd.notna(ratio) else "—"


def format_percent(share: float | None) -> str:
    """A share as a whole percentage, under 1% with two figures (a model's FLOPs-only
    efficiency); ``—`` for none."""
    if share is None or not pd.notna(share):
        return "—"
    return f"{share:.0%}" if share >= 0.01 or share == 0 else f"{share * 100:.2g}%"


def is_missing(value: object) -> bool:
    """Whether a cell holds nothing: None, or a float nan (a column some rows lack)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


# -------------------------------------------------------------------- shapes
def _dimensions(row: Mapping | pd.Series) -> tuple[int, int, int, int]:
    """A row's (L, D, K, P) from its own columns."""
    return int(row["depth"]), int(row["d_in"]), int(row["width"]), int(row["d_out"])


def _hidden_widths(row: Mapping | pd.Series) -> str | None:
    """A row's widths where its hidden widths differ (``8-64-4-64-8``); None where they are
    all its ``width`` (the widths read D-K-…-K-P)."""
    depth, d_in, width, d_out = _dimensions(row)
    widths = str(row["widths"])
    return None if widths == format_widths((d_in, *[width] * depth, d_out)) else widths


def _row_of(point: Point) -> dict:
    """A point's shape in a row's columns."""
    return {
        "depth": point.depth,
        "d_in": point.d_in,
        "width": point.width,
        "d_out": point.d_out,
        "widths": format_widths(point.widths),
        "batch": point.batch,
        "dtype": point.dtype,
        "device": point.device,
        "model": point.label,
    }


def shape_label(point: Point | pd.Series | Mapping) -> str:
    """``L=5 D=1000 K=1000 P=1 B=1 float32 cpu`` for a point or a results row's shape.

    Widths are spelled out (``widths=8-64-4-64-8``) where the hidden widths differ; a
    model's shape is its label and D, P: ``residual(width=64) D=8 P=1 B=4 float32 cpu``.
    A row is labelled from its own columns (depth, d_in, width, d_out, batch, dtype,
    device, model), its ``widths`` only shown, never read.
    """
    row = _row_of(point) if isinstance(point, Point) else point
    depth, d_in, width, d_out = _dimensions(row)
    where = f"B={int(row['batch'])} {row['dtype']} {row['device']}"
    if analysis.is_model_row(row):  # a model: its label says the rest
        return f"{row.get('model', 'mlp')} D={d_in} P={d_out} {where}"
    hidden = _hidden_widths(row)
    k = f"K={width}" if hidden is None else f"widths={hidden}"
    return f"L={depth} D={d_in} {k} P={d_out} {where}"


def compact_label(row: pd.Series | Mapping) -> str:
    """``L=3 D=4 K=256 P=4`` (with B, dtype and device only where they are not the defaults);
    a model's ``residual(width=64) D=8 P=1``."""
    depth, d_in, width, d_out = _dimensions(row)
    if analysis.is_model_row(row):
        label = f"{row.get('model', 'mlp')} D={d_in} P={d_out}"
    else:
        hidden = _hidden_widths(row)
        k = f"K={width}" if hidden is None else f"[{hidden}]"
        label = f"L={depth} D={d_in} {k} P={d_out}"
    if int(row["batch"]) != 1:
        label += f" B={int(row['batch'])}"
    if row["dtype"] != "float32":
        label += f" {row['dtype']}"
    if row["device"] != "cpu":
        label += f" {row['device']}"
    return label


# ------------------------------------------------------------------ verdicts
def verdict_text(winner: object, tied: Sequence[str] | None, prefix: str = "") -> str:
    """The winner's name, or ``tie: a ≈ b`` when it is not significantly ahead (``—`` for no
    verdict); ``prefix`` is dropped from every name (``hessian-`` under a header that says it)."""
    if is_missing(winner):
        return "—"
    names = [str(m).removeprefix(prefix) for m in (tied or (str(winner),))]
    return names[0] if len(names) == 1 else "tie: " + " ≈ ".join(names)


def verdict_cell(row: pd.Series | Mapping, column: str, prefix: str = "") -> str:
    """A summary row's verdict in ``column`` (``measured`` or ``fastest``) as words."""
    tied = row.get(f"{column}_tied")
    return verdict_text(row.get(column), None if is_missing(tied) else tied, prefix)


def prediction_cell(row: pd.Series | Mapping) -> str:
    """The predicted mode, marked ✓ or ✗ where the run timed it (no mark where it did not)."""
    ok = row.get("prediction_ok")
    mark = "" if ok is None or pd.isna(ok) else " ✓" if ok else " ✗"
    return f"{row.get('predicted')}{mark}"


# ----------------------------------------------------------------- sentences
def accuracy_sentence(summary: pd.DataFrame, operator: str = "jacobian") -> str:
    """How often the predicted mode was right, how many shapes were decided, or why no verdict."""
    counts = analysis.prediction_accuracy(summary)
    if counts.judged == 0:
        return (
            "Prediction accuracy: no verdict (the run timed the predicted mode nowhere"
            " beside another mode to beat)."
        )
    model = "cost.plan" if operator == "jacobian" else "cost.plan_second_order"
    fixed = "hand-written mode"
    if analysis.all_models(summary):
        model, fixed = "generic.plan_of", "of torch.func's jacfwd and jacrev"
    text = (
        f"Prediction accuracy: the mode {model} predicted was the fastest {fixed}, "
        f"or tied with it, at {counts.right} of {counts.judged} shapes"
    )
    if counts.untested == counts.judged:
        return text + (
            f" (judged by the medians' intervals alone: fewer than {stats.MIN_SAMPLES}"
            " samples per method, or none kept, to test them)."
        )
    untested_text = (
        f", {counts.untested} judged without a test (fewer than {stats.MIN_SAMPLES} samples)"
        if counts.untested
        else ""
    )
    ties = counts.ties
    return (
        f"{text}; {counts.decided} of {counts.judged} had a significant winner (95%), "
        f"{ties} {'was a tie' if ties == 1 else 'were ties'}{untested_text}."
    )


def pool_warning(pool: PoolCheck | None) -> str | None:
    """Where torch's thread pool stalled beside other work and the run was timed with fewer
    threads (NOTE: [A stalled thread pool]): what was measured, and what it means (the
    caller says "Warning:")."""
    if pool is None or not pool.stalled:
        return None
    busy = f", other work {pool.other_cores:.1f} cores" if pool.other_cores is not None else ""
    return (
        f"timed on {pool.used} of {pool.threads} threads: torch's thread pool stalled "
        f"beside other work (a parallel tanh took {pool.pooled_s * 1e3:.2f} ms on "
        f"{pool.threads} threads, {pool.single_s * 1e3:.2f} ms on one{busy}); times are not "
        f"those of a quiet machine with {pool.threads} threads."
    )


def busy_warning(meta: dict, frame: pd.DataFrame | None = None) -> str | None:
    """A warning when other work shared the machine with the run.

    Where the rows say what other processes used while each was timed (``other_cores``),
    they decide (``analysis.busy_rows``). In older runs meta.json does
    (``analysis.MachineLoad``): at the start the cores other processes kept busy as the run
    began (older records: the 1-minute load average, which still counts work that had
    ended); at the end the 1-minute load average less the run's own threads.
    """
    rows = analysis.busy_rows(frame) if frame is not None else None
    if rows is not None:
        if not rows.busy:
            return None
        return (
            f"Warning: the machine was busy: other processes used up to {rows.most:.1f} cores "
            f"while {rows.busy} of {rows.measured} rows were timed; those timings may be "
            "slower and noisier than on an idle machine."
        )
    load = analysis.machine_load(meta)
    if not load.busy:
        return None
    at_end = f"{'—' if load.load_at_end is None else load.load_at_end} at the end"
    if load.other_cores is not None:
        both = f"other processes kept {load.other_cores} cores busy at the start, 1-minute load "
        both += f"average {at_end}"
    else:  # an older record: the load average at both ends
        start = "—" if load.load_at_start is None else load.load_at_start
        both = f"1-minute load average {start} at the start, {at_end}"
    return (
        f"Warning: the machine was busy during this run ({both}, with {load.threads} threads "
        "of its own): timings may be slower and noisier than on an idle machine."
    )
