"""Presentation: rich tables, Markdown summaries, matplotlib plots, run-to-run comparison.

Only this module and ``cli.py`` render anything. Every function takes data (a Plan, rows,
a results DataFrame) and returns a table, a string or the paths it wrote.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd
from rich import box
from rich.markup import escape
from rich.table import Table

from jacbench.ad.cost import MODES, Plan, SecondOrderPlan
from jacbench.ad.generic import GenericPlan
from jacbench.measure import machine, stats
from jacbench.measure.peaks import Peaks
from jacbench.measure.rows import KEY_COLUMNS, TIMED_STATUSES, parse_widths
from jacbench.measure.tuning import (
    BATCHED_KERNELS,
    NARROW_KERNELS,
    PRIMAL_KERNELS,
    SMALL_ROUTES,
    TANH_KERNELS,
    Tuning,
)
from jacbench.runs.grid import Point
from jacbench.runs.methods import METHODS
from jacbench.runs.operators import OPERATORS

SHAPE_COLUMNS = ["depth", "d_in", "width", "d_out", "widths", "batch", "dtype", "device", "model"]
# A model's modes as torch.func runs them: its prediction is judged against these.
MODEL_FIXED_MODES = {"func-jacfwd": "forward", "func-jacrev": "reverse"}


def _shaped(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with a ``model`` in every row (``mlp`` for rows made before the column)."""
    if "model" not in frame.columns:
        return frame.assign(model="mlp")
    models = frame["model"]
    missing = models.isna() | (models.astype(str) == "")
    return frame.assign(model=models.where(~missing, "mlp")) if missing.any() else frame


def is_model_shape(widths: object) -> bool:
    """Whether a ``widths`` cell is a model's (D-P) rather than an MLP's (D-K…-P)."""
    return str(widths).count("-") == 1


# ---------------------------------------------------------------- formatting
def format_seconds(seconds: float) -> str:
    """``1.23 ms``: three significant digits in s, ms, µs or ns; ``—`` for none."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def format_count(n: float) -> str:
    """``8.01 G``: three significant digits with a k, M, G or T prefix."""
    if n is None or not math.isfinite(n):
        return "—"
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f}"


def format_bytes(n: float) -> str:
    """``1.5 MiB``: three significant digits in B, KiB, MiB or GiB."""
    if n is None or not math.isfinite(n):
        return "—"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"


def format_ratio(ratio: float | None) -> str:
    """A ratio to three significant digits; ``—`` for none."""
    return f"{ratio:.3g}" if ratio is not None and pd.notna(ratio) else "—"


def format_percent(share: float | None) -> str:
    """A share as a whole percentage; ``—`` for none."""
    return f"{share:.0%}" if share is not None and pd.notna(share) else "—"


def _markdown_header(header: Sequence[str]) -> list[str]:
    """A Markdown table's header row and its separator (first column left, the rest right)."""
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]


def shape_label(point: Point | pd.Series | dict) -> str:
    """``L=5 D=1000 K=1000 P=1 B=1 float32 cpu`` for a point or a results row's shape.

    Widths are spelled out (``widths=8-64-4-64-8``) where the hidden widths differ; a
    model's shape is its label and D, P: ``residual(width=64) D=8 P=1 B=4 float32 cpu``.
    """
    if not isinstance(point, Point):
        widths = parse_widths(point["widths"])
        if len(widths) == 2:  # a model: its label says the rest
            return (
                f"{point.get('model', 'mlp')} D={widths[0]} P={widths[1]} B={point['batch']} "
                f"{point['dtype']} {point['device']}"
            )
        point = Point(widths, int(point["batch"]), str(point["dtype"]), str(point["device"]))
    elif point.model is not None:
        return (
            f"{point.label} D={point.d_in} P={point.d_out} B={point.batch} "
            f"{point.dtype} {point.device}"
        )
    hidden = set(point.widths[1:-1])
    k = f"K={point.width}" if len(hidden) == 1 else "widths=" + "-".join(map(str, point.widths))
    return (
        f"L={point.depth} D={point.d_in} {k} P={point.d_out} B={point.batch} "
        f"{point.dtype} {point.device}"
    )


# ------------------------------------------------------------------- predict
def predict_table(plan: Plan) -> Table:
    """FLOPs, elementwise work and memory per mode, with the recommended mode marked."""
    widths = "-".join(map(str, plan.widths))
    table = Table(title=f"widths {widths}, batch {plan.batch}", caption=f"mixed: {plan.bracketing}")
    table.add_column("mode")
    for name in ("matmul FLOP", "elementwise ops", "model memory", "× best"):
        table.add_column(name, justify="right")
    table.add_column("pick")
    best = min(plan.flops.values())
    for mode in MODES:
        table.add_row(
            mode,
            format_count(plan.flops[mode]),
            format_count(plan.elementwise_flops[mode]),
            format_bytes(plan.memory_bytes[mode]),
            f"{plan.flops[mode] / best:.3g}",
            "✓" if mode == plan.mode else "",
            style="bold green" if mode == plan.mode else None,
        )
    return table


def model_predict_table(plan: GenericPlan, label: str) -> Table:
    """A model's counted FLOPs, operations, memory and predicted time per mode
    (``generic.plan_of``), with the recommended mode marked."""
    table = Table(
        title=f"{label}: D={plan.d_in}, P={plan.d_out}, batch {plan.batch}",
        caption=(
            f"predicted time = operations × {format_seconds(plan.calibration.op_seconds)} + "
            f"FLOP ÷ {plan.calibration.flop_rate / 1e9:.0f} GFLOP/s (measured here)"
        ),
    )
    table.add_column("mode")
    for name in ("matmul FLOP", "operations", "memory", "predicted", "× best"):
        table.add_column(name, justify="right")
    table.add_column("pick")
    best = min(plan.seconds.values())
    for mode in ("forward", "reverse"):
        if mode not in plan.seconds:
            table.add_row(mode, "—", "—", "—", "not supported", "—", "")
            continue
        table.add_row(
            mode,
            format_count(plan.flops[mode]),
            str(plan.operations[mode]),
            format_bytes(plan.memory_bytes[mode]),
            format_seconds(plan.seconds[mode]),
            f"{plan.seconds[mode] / best:.3g}",
            "✓" if mode == plan.mode else "",
            style="bold green" if mode == plan.mode else None,
        )
    return table


def model_recommendation(plan: GenericPlan) -> str:
    """One sentence: a model's recommended mode, why, and what the other would cost."""
    rival = "forward" if plan.mode == "reverse" else "reverse"
    text = f"Recommended: {plan.mode} mode ({plan.reason})"
    if rival in plan.seconds:
        factor = plan.seconds[rival] / plan.seconds[plan.mode]
        text += f"; {rival} mode is predicted to take {factor:.3g}× as long"
    if plan.chunk_size is not None:
        text += f"; reverse mode in chunks of {plan.chunk_size} cotangents (memory)"
    return text + "."


def second_order_table(plan: SecondOrderPlan) -> Table:
    """``predict --order 2``: FLOPs and memory of each Hessian mode, FLOPs of each exact
    Laplacian method, the picks marked."""
    widths = "-".join(map(str, plan.widths))
    caption = (
        "Laplacian rows: the exact methods (hutchinson, an estimate, is not shown: its cost "
        "is per sample)"
    )
    if plan.laplacian_reason != "fewest FLOPs":  # the tuning measured the pick
        caption += f"; picked: {plan.laplacian_method}, {plan.laplacian_reason}"
    table = Table(title=f"second order: widths {widths}, batch {plan.batch}", caption=caption)
    for name in ("operator", "mode", "matmul FLOP", "model memory", "× best", "pick"):
        table.add_column(name, justify="left" if name in ("operator", "mode") else "right")
    for operator, flops, memory, pick in (
        ("hessian", plan.hessian_flops, plan.hessian_memory_bytes, plan.hessian_mode),
        ("laplacian", plan.laplacian_flops, {}, plan.laplacian_method),
    ):
        best = min(flops.values())
        for mode, count in flops.items():
            table.add_row(
                operator,
                mode,
                format_count(count),
                format_bytes(memory[mode]) if mode in memory else "—",
                f"{count / best:.3g}",
                "✓" if mode == pick else "",
                style="bold green" if mode == pick else None,
            )
    return table


def recommendation(plan: Plan) -> str:
    """One sentence: the recommended mode and what the alternative would cost."""
    rival = "forward" if plan.mode == "reverse" else "reverse"
    if plan.mode == "mixed":
        rival = min(("forward", "reverse"), key=plan.flops.__getitem__)
    factor = plan.flops[rival] / plan.flops[plan.mode]
    return (
        f"Recommended: {plan.mode} mode ({plan.reason}), "
        f"{format_count(plan.flops[plan.mode])}FLOP ({rival} mode needs {factor:.3g}× that)."
    )


def peaks_table(peaks: Iterable[Peaks]) -> Table:
    """Measured limits per device and dtype."""
    table = Table(title="measured peaks")
    numbers = ("GEMM", "read bandwidth", "σ", "g ⊙ σ'", "launch")
    for name in ("device", "dtype", *numbers):
        table.add_column(name, justify="right" if name in numbers else "left")
    for p in peaks:
        table.add_row(
            p.device,
            p.dtype,
            f"{p.flops_per_s / 1e9:,.1f} GFLOP/s (n={p.gemm_size})",
            f"{p.bytes_per_s / 1e9:,.1f} GB/s",
            f"{p.activation} {1e9 / p.activation_per_s:.3f} ns/element",
            f"{1e9 / p.derivative_per_s:.3f} ns/element",
            f"{p.launch_s * 1e6:.2f} µs/kernel" if p.launch_s > 0 else "—",
        )
    return table


def tuning_table(tuned: Tuning) -> Table:
    """Each class's kernel and every candidate's time per product."""
    where = tuned.machine or "built-in defaults (not measured)"
    table = Table(title=f"kernels for {where}")
    if tuned.unsettled:  # NOTE: [A tuning measured on a busy machine]
        table.caption = (
            "kept at the default, its rounds disagreeing in every attempt: "
            + ", ".join(tuned.unsettled)
        )
    candidates = (
        *NARROW_KERNELS, *PRIMAL_KERNELS, *BATCHED_KERNELS, *SMALL_ROUTES, *TANH_KERNELS
    )  # fmt: skip
    for name in ("class", "kernel", *candidates):
        table.add_column(name, justify="left" if name in ("class", "kernel") else "right")
    choices = [
        *tuned.narrow.items(),
        *tuned.primal.items(),
        *tuned.batched.items(),
        *tuned.small.items(),
        ("tanh (4096×64)", tuned.tanh),
    ]
    for name, kernel in choices:
        seconds = tuned.measured_s.get("tanh" if name.startswith("tanh") else name, {})
        cells = [format_seconds(seconds[k]) if k in seconds else "" for k in candidates]
        table.add_row(name, f"[bold]{kernel}[/]", *cells)
    return table


def ties_table(tuned: Tuning) -> Table:
    """Each tie class's choice and its candidates' times (NOTE: [Ties measured, not assumed]
    in jacbench.ad.ties)."""
    table = Table(title="ties between routines, timed whole on one shape each")
    for name in ("class", "choice", "candidates' medians"):
        table.add_column(name)
    for name, choice in tuned.ties.items():
        seconds = tuned.measured_s.get(name, {})
        times = ", ".join(f"{k} {format_seconds(s)}" for k, s in seconds.items())
        table.add_row(name, f"[bold]{choice}[/]", times or "not measured: the fixed rule")
    return table


def tuning_line(tuned: Tuning, classes: Iterable[str]) -> str:
    """One line: the kernels a shape's Jacobian uses on this machine, and where they came from."""
    used = [f"{name}: {tuned.kernel(name)}" for name in classes]
    source = f"measured on {tuned.machine}" if tuned.machine else "the defaults, not measured"
    kernels = "; ".join(used) if used else "plain BLAS calls only (no narrow product to tune)"
    return f"Kernels ({source}): {kernels}; tanh by {tuned.tanh}."


def failure_line(row: dict) -> str:
    """One rich-markup line for a row that failed its check or raised."""
    return (
        f"[bold red]{row['status'].upper()}[/] {row['method']} at "
        f"{shape_label(row)}: {escape(str(row['message']))}"
    )


# ------------------------------------------------------------------ validate
def validate_table(rows: Iterable[dict], tolerance: float) -> Table:
    """Per routine: the worst relative error over the grid and where it occurred."""
    worst: dict[str, dict] = {}
    counts: dict[str, int] = {}
    for row in rows:
        label = row["routine"]
        counts[label] = counts.get(label, 0) + 1
        err = row["max_rel_err"]
        if label not in worst or not err <= worst[label]["max_rel_err"]:
            worst[label] = row
    table = Table(
        title=f"max relative error vs float64 torch.func.jacrev (tolerance {tolerance:g})"
    )
    for name in ("routine", "points", "max rel. error", "worst at", "ok"):
        table.add_column(name, justify="right" if name in ("points", "max rel. error") else "left")
    for label, row in worst.items():
        ok = row["max_rel_err"] <= tolerance
        table.add_row(
            label,
            str(counts[label]),
            f"{row['max_rel_err']:.2e}",
            f"{shape_label(row['point'])} {row.get('activation', '')}".strip(),
            "✓" if ok else "✗ FAIL",
            style=None if ok else "bold red",
        )
    return table


# ------------------------------------------------------------------- summary
def timed(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows that carry a median time (statuses ok, slow, unchecked)."""
    return frame[frame["status"].isin(TIMED_STATUSES)]


def operator_of(frame: pd.DataFrame) -> str:
    """The operator of a one-operator results frame (``jacobian`` for files that predate
    the column)."""
    if "operator" not in frame.columns or frame.empty:
        return "jacobian"
    operator = frame["operator"].iloc[0]
    return str(operator) if isinstance(operator, str) and operator else "jacobian"


def split_operators(frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The frame's rows by operator, in order of first appearance: the summaries compare
    methods of one operator at a time."""
    if "operator" not in frame.columns or frame["operator"].nunique(dropna=False) <= 1:
        return [(operator_of(frame), frame)]
    return [(str(op), rows) for op, rows in frame.groupby("operator", sort=False)]


def _fixed_modes(operator: str) -> dict[str, str]:
    """jacbench's methods of ``operator`` that each run one fixed, exact mode: method →
    mode. The predicted mode is judged against these (for the Jacobian: forward, reverse,
    mixed)."""

    return {
        name: m.mode
        for name, m in METHODS.items()
        if m.operator == operator and m.family == "jacbench" and m.mode != "auto" and m.exact
    }


def _estimates() -> list[str]:
    """The registered methods that estimate rather than compute (Hutchinson's Laplacian)."""

    return [name for name, m in METHODS.items() if not m.exact]


def _families(operator: str) -> dict[str, list[str]]:
    """The peer families of ``operator`` and their methods, in the registry's order."""

    families: dict[str, list[str]] = {}
    for name, m in METHODS.items():
        if m.operator == operator and m.family != "jacbench" and not m.opt_in:
            families.setdefault(m.family, []).append(name)
    return families


def summary_frame(frame: pd.DataFrame, samples: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per shape: median per method, forward/reverse ratio, predicted vs measured winner.

    ``measured`` names the fastest hand-written mode (forward, reverse, mixed; for the second order
    jacbench's fixed-mode methods; for a model torch.func's jacfwd and jacrev) only when it is
    significantly faster than the runner-up (``stats.point_verdict`` on the run's samples), else the
    tie (``tie: reverse ≈ mixed``); ``fastest`` does the same over every exact method.
    ``prediction_ok`` is true when the predicted mode won or tied, and missing (no verdict) where
    the run did not time the predicted mode and another. ``frame`` holds one operator's rows
    (``split_operators``).
    """
    ok = timed(_shaped(frame))
    if ok.empty:
        return pd.DataFrame()
    mlp_fixed = _fixed_modes(operator_of(frame))
    medians = ok.pivot_table(index=SHAPE_COLUMNS, columns="method", values="median_s")
    predicted = ok.groupby(SHAPE_COLUMNS)["predicted_mode"].first()
    summary = medians.copy()
    summary.columns.name = None
    summary["predicted"] = predicted
    if {"forward", "reverse"} <= set(medians.columns):
        summary["fwd/rev"] = medians["forward"] / medians["reverse"]
    by_key = stats.samples_by_key(samples)
    measured, decided, tested, prediction_ok, fastest = [], [], [], [], []
    estimates = _estimates()
    for shape, rows in ok.groupby(SHAPE_COLUMNS, sort=False):
        exact = rows[~rows["method"].isin(estimates)]  # an estimate is no rival of exact ones
        verdict = stats.point_verdict(exact if len(exact) else rows, by_key)
        fastest.append((shape, _verdict_text(verdict.winner, list(verdict.tied))))
        fixed = MODEL_FIXED_MODES if is_model_shape(rows["widths"].iloc[0]) else mlp_fixed
        ours = rows[rows["method"].isin(list(fixed))]
        if ours.empty:
            continue
        verdict = stats.point_verdict(ours, by_key)
        tied = list(verdict.tied)
        measured.append((shape, _verdict_text(verdict.winner, tied)))
        decided.append((shape, verdict.decided))
        tested.append((shape, verdict.tested))
        mode = predicted[shape]
        timed_modes = {fixed[m] for m in ours["method"]}
        tied_modes = {fixed[m] for m in tied}
        # One mode timed alone is fastest by default: no verdict on the prediction then.
        judged = mode in timed_modes and len(timed_modes) > 1
        prediction_ok.append((shape, (mode in tied_modes) if judged else None))
    for name, values in (
        ("measured", measured),
        ("decided", decided),
        ("tested", tested),
        ("prediction_ok", prediction_ok),
        ("fastest", fastest),
    ):
        if values:
            index = pd.MultiIndex.from_tuples([k for k, _ in values], names=SHAPE_COLUMNS)
            summary[name] = pd.Series([v for _, v in values], index=index, dtype=object)
    jacbench_rows = ok[ok["family"] == "jacbench"] if "family" in ok.columns else ok.iloc[0:0]
    if "efficiency" in jacbench_rows.columns and jacbench_rows["efficiency"].notna().any():
        # Efficiency of jacbench's fastest method at the shape: how close it is to the roofline.
        best = jacbench_rows.loc[jacbench_rows.groupby(SHAPE_COLUMNS)["median_s"].idxmin()]
        summary["efficiency"] = best.set_index(SHAPE_COLUMNS)["efficiency"]
    return summary.reset_index()


def _verdict_text(winner: str, tied: list[str]) -> str:
    """The winner's name, or ``tie: a ≈ b`` when it is not significantly ahead."""
    return winner if len(tied) == 1 else "tie: " + " ≈ ".join(tied)


def _method_order(columns: Iterable[str], methods: Sequence[str] | None) -> list[str]:

    order = list(methods) if methods else list(METHODS)
    present = set(columns)
    return [m for m in order if m in present] + sorted(present - set(order) - _NON_METHOD)


_NON_METHOD = set(SHAPE_COLUMNS) | {
    "predicted",
    "fwd/rev",
    "measured",
    "decided",
    "tested",
    "prediction_ok",
    "fastest",
    "efficiency",
}


def _user_methods(columns: Iterable[str]) -> list[str]:
    """The summary's columns that are methods outside the registry: user routines."""

    return [c for c in columns if c not in METHODS and c not in _NON_METHOD]


def prediction_accuracy(summary: pd.DataFrame) -> tuple[int, int, int]:
    """(shapes where the predicted mode won or tied, shapes with a verdict, shapes decided).

    A shape is decided when its fastest hand-written mode was significantly faster than
    the runner-up; a tie counts as right when the predicted mode is among the tied.
    """
    if summary.empty or "prediction_ok" not in summary:
        return 0, 0, 0
    judged = summary[summary["prediction_ok"].notna()]
    right = int(judged["prediction_ok"].astype(bool).sum())
    decided = judged["decided"].astype(bool) & judged["tested"].astype(bool)
    return right, len(judged), int(decided.sum())


def _prediction_cell(row: pd.Series) -> str:
    """The predicted mode, marked ✓ or ✗ where the run timed it (no mark where it did not)."""
    mark = {True: " ✓", False: " ✗"}.get(row.get("prediction_ok"), "")
    return f"{row.get('predicted')}{mark}"


def accuracy_sentence(summary: pd.DataFrame, operator: str = "jacobian") -> str:
    """How often the predicted mode was right, how many shapes were decided, or why no verdict."""
    right, total, decided = prediction_accuracy(summary)
    if total == 0:
        return (
            "Prediction accuracy: no verdict (the run timed the predicted mode nowhere"
            " beside another mode to beat)."
        )
    model = "cost.plan" if operator == "jacobian" else "cost.plan_second_order"
    fixed = "hand-written mode"
    if summary["widths"].map(is_model_shape).all():
        model, fixed = "generic.plan_of", "of torch.func's jacfwd and jacrev"
    text = (
        f"Prediction accuracy: the mode {model} predicted was the fastest {fixed}, "
        f"or tied with it, at {right} of {total} shapes"
    )
    judged = summary[summary["prediction_ok"].notna()]
    untested = int((~judged["tested"].astype(bool)).sum())
    if untested == total:
        return text + (
            f" (judged by the medians' intervals alone: fewer than {stats.MIN_SAMPLES}"
            " samples per method, or none kept, to test them)."
        )
    ties = total - decided - untested
    untested_text = (
        f", {untested} judged without a test (fewer than {stats.MIN_SAMPLES} samples)"
        if untested
        else ""
    )
    return (
        f"{text}; {decided} of {total} had a significant winner (95%), "
        f"{ties} {'was a tie' if ties == 1 else 'were ties'}{untested_text}."
    )


def compact_label(row: pd.Series | dict) -> str:
    """``L=3 D=4 K=256 P=4`` (with B, dtype and device only where they are not the defaults);
    a model's ``residual(width=64) D=8 P=1``."""
    hidden = set(str(row["widths"]).split("-")[1:-1])
    k = f"K={row['width']}" if len(hidden) == 1 else f"[{row['widths']}]"
    label = f"L={row['depth']} D={row['d_in']} {k} P={row['d_out']}"
    if is_model_shape(row["widths"]):
        label = f"{row.get('model', 'mlp')} D={row['d_in']} P={row['d_out']}"
    if int(row["batch"]) != 1:
        label += f" B={row['batch']}"
    if row["dtype"] != "float32":
        label += f" {row['dtype']}"
    if row["device"] != "cpu":
        label += f" {row['device']}"
    return label


def summary_table(
    summary: pd.DataFrame, methods: Sequence[str] | None = None, operator: str = "jacobian"
) -> Table:
    """The summary for a terminal: jacbench's methods, the best of each peer family, the verdict."""
    table = Table(
        title="median time per " + ("Jacobian" if operator == "jacobian" else operator),
        caption="peer columns: the fastest of the family's methods; "
        "✓: the predicted mode won or tied (not significantly slower, 95%)",
        box=box.SIMPLE_HEAD,
    )
    if summary.empty:
        return table

    ours = [
        name
        for name, m in METHODS.items()
        if m.operator == operator and m.family == "jacbench" and not m.opt_in and name in summary
    ]
    ours += _user_methods(summary.columns)
    families = {f: [m for m in ms if m in summary] for f, ms in _families(operator).items()}
    families = {f: ms for f, ms in families.items() if ms}
    ratio = ["fwd/rev"] if "fwd/rev" in summary else []
    table.add_column("shape")
    # The Hessian's modes share their prefix (hessian-fwd-over-rev, hessian-fwd-over-fwd): a
    # narrow terminal would cut both to "hessian-fwd-…", so the header drops it, and a
    # method's header breaks at its hyphens (fwd- / over- / rev) rather than being cut.
    prefix = "hessian-" if operator == "hessian" else ""
    if prefix:
        table.title = f"{table.title} (jacbench's methods: {prefix}<mode>)"
    for name in ours:
        table.add_column(name.removeprefix(prefix).replace("-", "-\n"), justify="right")
    for name in [*families, *ratio, "predicted", "measured"]:
        table.add_column(name, justify="right")
    for _, row in summary.iterrows():
        cells = [compact_label(row)] + [format_seconds(row[m]) for m in ours]
        cells += [format_seconds(row[ms].min()) for ms in families.values()]
        cells += [format_ratio(row.get("fwd/rev")) for _ in ratio] + [_prediction_cell(row)]
        measured = str(row.get("measured", "—"))
        cells.append(measured.replace(prefix, "") if prefix else measured)
        table.add_row(*cells)
    return table


def summary_tables(
    frame: pd.DataFrame,
    samples: pd.DataFrame | None = None,
    methods: Sequence[str] | None = None,
    *,
    accuracy: bool = False,
) -> list[Table | str]:
    """A run's summary for a terminal: per operator its table (and, with ``accuracy``, the
    prediction accuracy sentence)."""
    shown: list[Table | str] = []
    for operator, rows in split_operators(frame):
        summary = summary_frame(rows, samples)
        shown.append(summary_table(summary, methods, operator))
        if accuracy:
            shown.append(accuracy_sentence(summary, operator))
    return shown


def peer_comparison(frame: pd.DataFrame) -> pd.DataFrame:
    """Per shape: the median of jacbench's best method (``auto`` for the Jacobian; the
    operator's ``best_method``), the best median of each peer family, and its speed-up.

    ``× <family>`` is the family's best median over jacbench's: above 1, jacbench is faster.
    The column of jacbench's method is named ``auto`` whatever the operator.
    """

    operator = operator_of(frame)
    best = OPERATORS[operator].best_method
    ok = timed(_shaped(frame))
    if best not in set(ok["method"]):
        return pd.DataFrame()
    medians = ok.pivot_table(index=SHAPE_COLUMNS, columns="method", values="median_s")
    table = pd.DataFrame({"auto": medians[best]})
    for family, members in _families(operator).items():
        present = [m for m in members if m in medians.columns]
        if family == "naive" or not present:
            continue
        table[family] = medians[present].min(axis=1)
        table[f"× {family}"] = table[family] / table["auto"]
    if "efficiency" in ok.columns:
        auto_rows = ok[ok["method"] == best].set_index(SHAPE_COLUMNS)
        table["efficiency"] = auto_rows["efficiency"]
    return table.reset_index()


def _geomean(values: pd.Series) -> float:
    values = values.dropna()
    return float(math.exp(values.map(math.log).mean())) if len(values) else math.nan


def peer_markdown(frame: pd.DataFrame) -> list[str]:
    """Markdown lines: auto against the best of each peer family, with geometric means."""

    operator = operator_of(frame)
    best = OPERATORS[operator].best_method
    table = peer_comparison(frame)
    families = [f for f in _families(operator) if f in table.columns]
    if table.empty or not families:
        return []
    header = ["shape", best, *families, *(f"× {f}" for f in families)]
    has_efficiency = "efficiency" in table and table["efficiency"].notna().any()
    if has_efficiency:
        header.append(f"{best} efficiency")
    each = (
        "its forward or reverse mode, whichever was faster"
        if operator == "jacobian"
        else "the fastest of its methods"
    )
    lines = [
        f"## {best} against its peers",
        "",
        f"Best median of each family ({each}) and how many times slower than `{best}` that "
        f"is (× > 1: {best} is faster).",
        "",
        *_markdown_header(header),
    ]
    for _, row in table.iterrows():
        cells = [shape_label(row), format_seconds(row["auto"])]
        cells += [format_seconds(row[f]) for f in families]
        cells += [f"{row[f'× {f}']:.2f}" if pd.notna(row[f"× {f}"]) else "—" for f in families]
        if has_efficiency:
            cells.append(format_percent(row["efficiency"]))
        lines.append("| " + " | ".join(cells) + " |")
    means = [f"{_geomean(table[f'× {f}']):.2f}" for f in families]
    blank = [""] * (1 + len(families))
    lines.append(
        "| geometric mean | " + " | ".join(blank + means + ([""] if has_efficiency else [])) + " |"
    )
    return lines


def busy_warning(meta: dict) -> str | None:
    """A warning when other work shared the machine with the run.

    At the start: the cores other processes kept busy as the run began (``other_cores``;
    in older records the 1-minute load average, which still counts work that had ended).
    At the end: the 1-minute load average less the run's own threads, the run's last minute.
    """
    threads = meta.get("environment", {}).get("threads") or 0
    at_start = meta.get("machine_at_start") or {}
    end = (meta.get("machine_at_end") or {}).get("load_average")
    start_cores = at_start.get("other_cores")
    start_load = at_start.get("load_average")
    other = [start_cores] if start_cores is not None else [start_load[0]] if start_load else []
    other += [end[0] - threads] if end else []
    if not other or max(other) <= machine.BUSY_LOAD:
        return None
    at_end = f"{end[0] if end else '—'} at the end"
    if start_cores is not None:
        both = f"other processes kept {start_cores} cores busy at the start, 1-minute load "
        both += f"average {at_end}"
    else:  # an older record: the load average at both ends
        both = (
            f"1-minute load average {start_load[0] if start_load else '—'} at the start, {at_end}"
        )
    return (
        f"Warning: the machine was busy during this run ({both}, with {threads} threads of "
        "its own): timings may be slower and noisier than on an idle machine."
    )


def _machine_text(env: dict) -> str:
    device = env.get("device_name") or env.get("cpu_model")
    host = f" on {env['host']}" if env.get("host") else ""
    return (
        f"{device}{host}, {env.get('threads')} threads; torch {env.get('torch')}, "
        f"jacbench {env.get('jacbench')}"
    )


def _run_header(meta: dict) -> list[str]:
    """The command, machine(s) and times of a run, as Markdown lines."""
    lines = []
    env = meta.get("environment", {})
    if meta.get("command"):
        lines.append(f"Command: `{meta['command']}`  ")
    parts = meta.get("parts") or []
    machines = list(dict.fromkeys(_machine_text(p.get("environment") or {}) for p in parts))
    if len(machines) > 1:  # a merge of parts that ran on different machines
        merged = meta.get("merged", {})
        lines.append(f"Merged from {len(parts)} {merged.get('kind', 'parts')}:  ")
        for part in parts:
            name = part.get("run") or f"shard {part.get('shard')}"
            lines.append(f"- {name}: {_machine_text(part.get('environment') or {})}  ")
    elif env:
        lines.append(f"Machine: {_machine_text(env)}  ")
    if meta.get("started"):
        lines.append(f"Run: {meta.get('started')} → {meta.get('finished') or 'unfinished'}")
    warning = busy_warning(meta)
    if warning:
        lines += ["", f"**{warning}**"]
    return lines


def _summary_lines(
    summary: pd.DataFrame, methods: Sequence[str] | None, operator: str = "jacobian"
) -> list[str]:
    """The per-shape Markdown table and the prediction accuracy."""
    method_columns = _method_order(summary.columns, methods)
    # The Jacobian's forward/reverse ratio; a run of another operator, or of models, has no
    # such pair.
    models_only = summary["widths"].map(is_model_shape).all()
    ratio = ["fwd/rev"] if operator == "jacobian" and not models_only else []
    header = ["shape", *method_columns, *ratio, "predicted", "measured", "fastest"]
    if "efficiency" in summary:
        header.append("efficiency")
    lines = _markdown_header(header)
    for _, row in summary.iterrows():
        cells = [shape_label(row)] + [format_seconds(row[m]) for m in method_columns]
        cells += [format_ratio(row.get("fwd/rev")) for _ in ratio] + [_prediction_cell(row)]
        cells += [_text(row.get("measured")), _text(row.get("fastest"))]
        if "efficiency" in summary:
            cells.append(format_percent(row["efficiency"]))
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, "", accuracy_sentence(summary, operator)]


def _text(value: object) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _untimed_lines(frame: pd.DataFrame) -> list[str]:
    """Markdown lines on slow, untimed and noisy rows (none where there are none)."""
    lines = []
    slow = frame[frame["status"] == "slow"]
    if not slow.empty:
        lines += [
            "",
            f"{len(slow)} rows were timed once only (`slow`: one call > --max-call-time).",
        ]
    problems = frame[~frame["status"].isin(TIMED_STATUSES)]
    if not problems.empty:
        lines += [
            "",
            "## Rows not timed",
            "",
            "| shape | method | status | message |",
            "|---|---|---|---|",
        ]
        for _, row in problems.iterrows():
            lines.append(
                f"| {shape_label(row)} | {row['method']} | {row['status']} | {row['message']} |"
            )
    noisy = frame[frame["noisy"].fillna(False).astype(bool)]
    if not noisy.empty:
        lines += ["", f"{len(noisy)} timed rows are noisy (IQR > 10% of the median)."]
    return lines


def summary_markdown(
    frame: pd.DataFrame,
    meta: dict | None = None,
    methods: Sequence[str] | None = None,
    samples: pd.DataFrame | None = None,
) -> str:
    """summary.md: per shape, median per method, forward/reverse ratio, predicted vs measured;
    for a run over several devices, the devices side by side."""

    lines = ["# jacbench run summary", "", *_run_header(meta or {})]
    parts = split_operators(frame)
    for operator, rows in parts:
        lines.append("")
        if len(parts) > 1 or operator != "jacobian":
            lines += [f"## The {operator}: {OPERATORS[operator].description}", ""]
        summary = summary_frame(rows, samples)
        if summary.empty:
            lines.append("No timed rows.")
            continue
        lines += _summary_lines(summary, methods, operator)
        peers = peer_markdown(rows)
        if peers:
            lines += ["", *peers]
        devices = devices_markdown(rows, methods, samples)
        if devices:
            lines += ["", *devices]
    lines += _untimed_lines(frame)
    return "\n".join(lines) + "\n"


def devices_side_by_side(frame: pd.DataFrame, samples: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per shape (without its device) and method: the median on each device in its own
    column, and for each device after the first its time ratio to the first device with a
    95% interval and verdict (``stats.compare_runs``: faster, slower, same, unsure).

    Empty unless the timed rows span two or more devices.
    """
    ok = timed(_shaped(frame))
    devices = sorted(ok["device"].unique()) if not ok.empty else []
    if len(devices) < 2:
        return pd.DataFrame()
    samples = samples if samples is not None else pd.DataFrame(columns=list(KEY_COLUMNS))
    shape = [c for c in SHAPE_COLUMNS if c != "device"]
    table = ok.pivot_table(index=[*shape, "method"], columns="device", values="median_s")
    table.columns.name = None
    table = table.reset_index()
    key = [c for c in KEY_COLUMNS if c != "device"]

    def on(device: str, data: pd.DataFrame) -> pd.DataFrame:  # one device, device-free keys
        return data[data["device"] == device].assign(device="")

    first = devices[0]
    for device in devices[1:]:
        pair = stats.compare_runs(
            on(first, ok), on(first, samples), on(device, ok), on(device, samples), 0.0
        )
        pair = pair[[*key, "ratio", "ci_low", "ci_high", "verdict"]].rename(
            columns=lambda c, d=device: c if c in key else f"{c} {d}"
        )
        table = table.merge(pair, on=key, how="left")
    return table


def devices_markdown(
    frame: pd.DataFrame, methods: Sequence[str] | None = None, samples: pd.DataFrame | None = None
) -> list[str]:
    """summary.md's section on a run over several devices: medians side by side, and each
    device's time ratio to the first with its 95% interval and verdict."""
    table = devices_side_by_side(frame, samples)
    if table.empty:
        return []
    devices = sorted(timed(frame)["device"].unique())
    order = {m: i for i, m in enumerate(_method_order(table["method"].unique(), methods))}
    table = table.sort_values("method", key=lambda m: m.map(order), kind="stable")
    table = table.sort_values(["depth", "d_in", "width", "d_out", "batch", "dtype"], kind="stable")
    others = devices[1:]
    lines = ["## Devices side by side", ""]
    lines += _markdown_header(
        ["shape", "method", *devices, *(f"{d} / {devices[0]}" for d in others)]
    )
    for _, row in table.iterrows():
        shape = shape_label({**row.to_dict(), "device": ""}).rstrip()  # devices are columns
        cells = [shape, str(row["method"]), *[format_seconds(row[d]) for d in devices]]
        for d in others:
            ratio, verdict = row[f"ratio {d}"], row[f"verdict {d}"]
            if not isinstance(verdict, str):
                cells.append("—")
                continue
            low, high = row[f"ci_low {d}"], row[f"ci_high {d}"]
            interval = "" if math.isnan(low) else f" ({low:.3f}–{high:.3f})"
            cells.append(f"{format_ratio(ratio)}{interval} {verdict}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def environment_table(
    env: dict, available: Mapping[str, Sequence[str]], missing: Mapping[str, Sequence[str]]
) -> Table:
    """``jacbench info``: versions, device, threads, which methods of each operator are
    installed (``available``: operator → method names) and which are not (``missing``: what
    to install → method names), one row per thing to install."""
    table = Table(title="jacbench environment", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    for key, value in env.items():
        table.add_row(key, "—" if value is None else escape(str(value)))
    for operator, names in available.items():
        table.add_row(f"{operator} methods", ", ".join(names))
    for requirement, names in missing.items():
        table.add_row("missing", escape(f"{requirement}: {', '.join(names)}"))
    return table


# -------------------------------------------------------------------- shards
def shard_plan_table(plan: pd.DataFrame, shard: object | None = None) -> Table:
    """``jacbench run --dry-run``: per shard its points, tasks and estimated time."""
    table = Table(
        title="what would run" if len(plan) == 1 else f"the grid dealt into {len(plan)} shards",
        caption="estimated time: min_time per task and the FLOP model at a nominal rate",
        box=box.SIMPLE_HEAD,
    )
    for name in ("shard", "points", "tasks", "estimated time"):
        table.add_column(name, justify="right")
    mine = getattr(shard, "index", None)
    for row in plan.itertuples(index=False):
        label = f"{row.shard}/{len(plan)}" if len(plan) > 1 else "all"
        table.add_row(
            label + (" ← this one" if row.shard == mine else ""),
            str(row.points),
            str(row.tasks),
            format_seconds(float(row.estimated_s)),
            style="bold" if row.shard == mine else None,
        )
    return table


def shards_table(parts: Sequence[dict], count: int, missing: Sequence[int]) -> Table:
    """``jacbench merge``: each shard's state, rows, host and times."""
    table = Table(title=f"shards of the run ({count})", box=box.SIMPLE_HEAD)
    for name in ("shard", "state", "rows", "host", "started", "finished"):
        table.add_column(name)
    states = {"finished": "green", "running": "yellow", "interrupted": "red"}
    rows = [(int(p["shard"].split("/")[0]), p) for p in parts]
    rows += [(i, {"shard": f"{i}/{count}", "state": "missing"}) for i in missing]
    for _, part in sorted(rows, key=lambda r: r[0]):
        state = part.get("state", "")
        table.add_row(
            part["shard"],
            f"[{states.get(state, 'red')}]{state}[/]",
            str(part.get("rows", "—")),
            escape(str((part.get("environment") or {}).get("host") or "—")),
            str(part.get("started") or "—"),
            str(part.get("finished") or "—"),
        )
    return table


# --------------------------------------------------------------------- plots
def plot_time_vs_depth(frame: pd.DataFrame, path: Path) -> Path | None:
    """Median time against depth, one line per method, one panel per other-dimensions group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = timed(frame)
    groups = [
        (key, g)
        for key, g in ok.groupby(["d_in", "width", "d_out", "batch", "dtype", "device"])
        if g["depth"].nunique() > 1
    ]
    if not groups:
        return None
    groups = groups[:6]
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups) + 1.8, 4.2), squeeze=False)

    # Colour tells the method apart, the line style its family (solid: jacbench's own).
    styles = {
        "jacbench": "-",
        "torch.func": "--",
        "autograd": "-.",
        "naive": ":",
        "jax": (0, (5, 1)),
        "user": (0, (3, 1, 1, 1, 1, 1)),
    }
    tab20 = plt.get_cmap("tab20")
    colours = [tab20(i) for i in range(tab20.N)]
    for ax, (key, g) in zip(axes[0], groups):
        d, k, p, b, dtype, device = key
        for i, method in enumerate(_method_order(g["method"].unique(), None)):
            m = g[g["method"] == method].sort_values("depth")
            family = METHODS[method].family if method in METHODS else "user"
            ax.plot(
                m["depth"],
                m["median_s"] * 1e3,
                marker="o",
                label=method,
                color=colours[i % len(colours)],
                linestyle=styles.get(family, "-"),
            )
        ax.set_yscale("log")
        ax.set_xlabel("depth L")
        ax.set_ylabel("median time per Jacobian (ms)")
        ax.set_title(f"D={d} K={k} P={p} B={b} {dtype} {device}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_ratio_map(frame: pd.DataFrame, path: Path) -> Path | None:
    """forward/reverse time ratio over (D, P): red where reverse wins, blue where forward wins."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    ok = timed(frame)
    pivot_source = ok[ok["method"].isin(["forward", "reverse"])]
    groups = [
        (key, g)
        for key, g in pivot_source.groupby(["depth", "width", "batch", "dtype", "device"])
        if g["d_in"].nunique() > 1 and g["d_out"].nunique() > 1
    ]
    if not groups:
        return None
    groups = groups[:4]
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4.5), squeeze=False)
    for ax, (key, g) in zip(axes[0], groups):
        depth, k, b, dtype, device = key
        medians = g.pivot_table(index=["d_out", "d_in"], columns="method", values="median_s")
        ratio = (medians["forward"] / medians["reverse"]).unstack("d_in")
        values = np.log2(ratio.to_numpy(dtype=float))
        limit = max(1.0, float(np.nanmax(np.abs(values))))
        image = ax.imshow(values, cmap="coolwarm", vmin=-limit, vmax=limit, origin="lower")
        ax.set_xticks(range(len(ratio.columns)), [str(c) for c in ratio.columns])
        ax.set_yticks(range(len(ratio.index)), [str(i) for i in ratio.index])
        ax.set_xlabel("input dimension D")
        ax.set_ylabel("output dimension P")
        ax.set_title(f"forward / reverse time, L={depth} K={k} B={b} {dtype}", fontsize=10)
        for (i, j), r in np.ndenumerate(ratio.to_numpy(dtype=float)):
            if np.isfinite(r):
                ax.text(j, i, f"{r:.2g}", ha="center", va="center", fontsize=8)
        fig.colorbar(image, ax=ax, label="log2 ratio (>0: reverse faster)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(
    run_dir: Path,
    frame: pd.DataFrame,
    meta: dict | None = None,
    samples: pd.DataFrame | None = None,
) -> list[Path]:
    """(Re)write summary.md and the plots of a run from its rows; returns the paths written."""
    run_dir = Path(run_dir)
    methods = (meta or {}).get("params", {}).get("methods")
    summary_path = run_dir / "summary.md"
    summary_path.write_text(summary_markdown(frame, meta, methods, samples))
    written = [summary_path]
    for plot, name in (
        (plot_time_vs_depth, "time_vs_depth.png"),
        (plot_ratio_map, "fwd_rev_ratio.png"),
    ):
        path = plot(frame, run_dir / name)
        if path is not None:
            written.append(path)
    return written


# ------------------------------------------------------------------- compare
def _interval_text(row: pd.Series) -> str:
    if math.isnan(row["ci_low"]):
        return "—"
    return f"{row['ci_low']:.3f}–{row['ci_high']:.3f}"


def _compare_verdict(row: pd.Series) -> str:
    if row["regressed"]:
        return "regressed"
    if row["improved"]:
        return "improved"
    return str(row["verdict"])


def compare_table(merged: pd.DataFrame, threshold: float, label_a: str, label_b: str) -> Table:
    """Rows of two runs side by side: ratio B/A, its 95% interval and the verdict."""
    table = Table(
        title=f"{label_b} vs {label_a}",
        caption=f"ratio {label_b}/{label_a}, 95% bootstrap interval; regressed: the whole "
        f"interval above {1 + threshold:g}",
        box=box.SIMPLE_HEAD,
    )
    for name in ("shape", "method", label_a, label_b, "ratio", "95% interval", "verdict"):
        table.add_column(escape(name), justify="left" if name in ("shape", "method") else "right")
    styles = {"regressed": "bold red", "improved": "green", "slower": "yellow"}
    for _, row in merged.iterrows():
        verdict = _compare_verdict(row)
        table.add_row(
            compact_label(row),
            escape(row["method"]),
            format_seconds(row["median_s_a"]),
            format_seconds(row["median_s_b"]),
            f"{row['ratio']:.3f}",
            _interval_text(row),
            verdict,
            style=styles.get(verdict),
        )
    return table


def compare_markdown(merged: pd.DataFrame, threshold: float, label_a: str, label_b: str) -> str:
    """The comparison as a Markdown table, with the same columns as the terminal's."""
    lines = [
        f"Ratio {label_b}/{label_a} with its 95% bootstrap interval; a row regressed when the "
        f"whole interval lies above {1 + threshold:g}.",
        "",
        *_markdown_header(
            ["shape", "method", label_a, label_b, "ratio", "95% interval", "verdict"]
        ),
    ]
    for _, row in merged.iterrows():
        cells = [
            shape_label(row),
            row["method"],
            format_seconds(row["median_s_a"]),
            format_seconds(row["median_s_b"]),
            f"{row['ratio']:.3f}",
            _interval_text(row),
            _compare_verdict(row),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def compare_records(merged: pd.DataFrame) -> list[dict]:
    """The comparison's rows for ``--json``: key, medians, ratio, interval, verdict."""
    records = []
    for _, row in merged.iterrows():
        records.append(
            {
                **{c: row[c] for c in KEY_COLUMNS},
                "batch": int(row["batch"]),
                "median_s_a": float(row["median_s_a"]),
                "median_s_b": float(row["median_s_b"]),
                "ratio": float(row["ratio"]),
                "ci_low": None if math.isnan(row["ci_low"]) else float(row["ci_low"]),
                "ci_high": None if math.isnan(row["ci_high"]) else float(row["ci_high"]),
                "samples_a": int(row["n_a"]),
                "samples_b": int(row["n_b"]),
                "verdict": _compare_verdict(row),
            }
        )
    return records


def compare_sentence(merged: pd.DataFrame, threshold: float) -> str:
    """``12 rows compared: 1 regressed (whole interval above 1.1), 2 faster, …``."""
    verdicts = merged.apply(_compare_verdict, axis=1).value_counts()
    parts = [
        f"{verdicts.get(v, 0)} {v}"
        for v in ("regressed", "slower", "same", "faster", "improved", "unsure")
        if verdicts.get(v, 0)
    ]
    text = f"{len(merged)} rows compared: {', '.join(parts)}."
    if verdicts.get("faster", 0) or verdicts.get("slower", 0):
        text += (
            f" faster/slower: significant, but by less than the {threshold:.0%} threshold "
            "(differences between runs of this size are common: --processes measures them)."
        )
    if verdicts.get("unsure", 0):
        text += (
            f" unsure: fewer than {stats.MIN_SAMPLES} samples on a side (slow rows, or a run "
            "without samples.csv)."
        )
    return text


# --------------------------------------------------------------------- check
def check_table(cases: pd.DataFrame, routine: str) -> Table:
    """Per grading case: the shape, the relative error against float64 jacrev, pass or fail."""
    table = Table(title=f"{routine} against float64 torch.func.jacrev", box=box.SIMPLE_HEAD)
    for name in ("case", "widths", "B", "dtype", "max rel. error", "", "problem"):
        table.add_column(name, justify="right" if name in ("B", "max rel. error") else "left")
    for row in cases.itertuples():
        error = "—" if pd.isna(row.max_rel_err) else f"{row.max_rel_err:.2e}"
        table.add_row(
            row.case,
            row.widths,
            str(row.batch),
            row.dtype,
            error,
            "✓" if row.passed else "✗ FAIL",
            escape(row.problem),
            style=None if row.passed else "bold red",
        )
    return table


def check_timing_table(summary: pd.DataFrame, routine: str) -> Table:
    """The routine's median beside jacbench's modes and torch.func, and the ratios."""
    table = Table(title=f"median time per Jacobian (float32): {routine}", box=box.SIMPLE_HEAD)
    table.add_column("shape")
    methods = [c for c in summary.columns if c != "widths" and not c.startswith("×")]
    ratios = [c for c in summary.columns if c.startswith("×")]
    for name in ["yours" if m == routine else m for m in methods] + ratios:
        table.add_column(name, justify="right")
    for _, row in summary.iterrows():
        point = Point(parse_widths(row["widths"]))
        label = shape_label(point).removesuffix(" B=1 float32 cpu")
        cells = [format_seconds(row[m]) for m in methods]
        table.add_row(label, *cells, *(f"{row[r]:.3g}×" for r in ratios))
    return table


# --------------------------------------------------------------------- grade
def grades_table(grades: pd.DataFrame) -> Table:
    """A class's grades: per student, pass or fail, the cases passed, the mistake, the speed."""
    table = Table(title="grades", box=box.SIMPLE_HEAD)
    for name in ("student", "", "cases", "mistake", "× reverse", "problem"):
        table.add_column(name, justify="right" if name in ("cases", "× reverse") else "left")
    for row in grades.itertuples():
        speed = "—" if pd.isna(row.time_vs_reverse) else f"{row.time_vs_reverse:.2f}"
        table.add_row(
            escape(str(row.student)),
            "✓" if row.passed else "✗",
            f"{row.cases_passed}/{row.cases}",
            escape(str(row.mistake)),
            speed,
            escape(str(row.problem)),
            style=None if row.passed else "red",
        )
    return table
