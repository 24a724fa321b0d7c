"""The terminal's presentation: rich tables and the lines the CLI prints; summary.md and the
plots written into a run folder (``write_report``).

Every function takes data (a Plan, rows, ``jacbench.runs.analysis``' frames) and returns a
table, a string or the paths it wrote. The tables a run's analysis is shown in are built once,
as text, in ``tables`` and drawn here by ``rich_table``, in ``markdown`` as Markdown; the
Markdown's functions are importable from here too (``summary_markdown``, ``compare_markdown``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from rich import box
from rich.box import Box
from rich.markup import escape
from rich.table import Table

from jacbench.ad.cost import MODES, Plan, SecondOrderPlan
from jacbench.ad.generic import GenericPlan
from jacbench.faces import tables
from jacbench.faces.markdown import compare_markdown, summary_markdown
from jacbench.faces.plots import plot_models, plot_ratio_map, plot_time_vs_depth
from jacbench.faces.tables import TextTable
from jacbench.faces.text import (
    accuracy_sentence,
    busy_warning,
    compact_label,
    format_bytes,
    format_count,
    format_seconds,
    pool_warning,
    shape_label,
)
from jacbench.measure import stats
from jacbench.measure.peaks import Peaks
from jacbench.measure.rows import parse_widths
from jacbench.measure.tuning import (
    BATCHED_KERNELS,
    FEW_COLUMNS,
    FEW_COLUMNS_KERNELS,
    NARROW_KERNELS,
    PRIMAL_KERNELS,
    SMALL_ROUTES,
    TANH_KERNELS,
    Tuning,
)
from jacbench.runs import results
from jacbench.runs.analysis import (
    compare_records,
    split_operators,
    summary_frame,
    verdict_counts,
)
from jacbench.runs.grid import Point

# What the CLI calls here (some of it made in markdown, text and runs.analysis).
__all__ = [
    "accuracy_sentence",
    "busy_warning",
    "pool_warning",
    "check_table",
    "check_timing_table",
    "compare_markdown",
    "compare_records",
    "compare_sentence",
    "compare_table",
    "environment_table",
    "failure_line",
    "format_bytes",
    "format_count",
    "format_seconds",
    "grades_table",
    "model_predict_table",
    "model_recommendation",
    "peaks_table",
    "predict_table",
    "recommendation",
    "rich_table",
    "second_order_table",
    "shape_label",
    "shard_estimates_table",
    "shards_table",
    "summary_markdown",
    "summary_tables",
    "ties_table",
    "tuning_line",
    "tuning_table",
    "validate_table",
    "write_report",
]


def rich_table(built: TextTable, table_box: Box = box.HEAVY_HEAD) -> Table:
    """A ``tables.TextTable`` for the terminal: its text shown as it is (no markup), its first
    ``left`` columns aligned left, the rest right, each row in its style."""
    title, caption = escape(built.title) or None, escape(built.caption) or None
    table = Table(title=title, caption=caption, box=table_box)
    for i, name in enumerate(built.header):
        table.add_column(escape(name), justify="left" if i < built.left else "right")
    styles = built.styles or [None] * len(built.rows)
    for cells, style in zip(built.rows, styles):
        table.add_row(*map(escape, cells), style=style)
    return table


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
            "predicted time = operations × "
            f"{format_seconds(plan.calibration.forward_op_s)} forward, "
            f"{format_seconds(plan.calibration.reverse_op_s)} reverse + FLOP ÷ "
            f"{plan.calibration.flop_rate / 1e9:.0f} GFLOP/s + memory ÷ "
            f"{plan.calibration.byte_rate / 1e9:.1f} GB/s (measured {plan.calibration.measured})"
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
    if plan.tie:  # either mode; the one with fewer FLOPs named
        text = f"Recommended: either mode ({plan.reason})"
        return text + f"; auto runs {plan.mode} mode."
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
    numbers = ("GEMM", "read bandwidth", "from cache", "σ", "σ' scaling", "launch")
    for name in ("device", "dtype", *numbers):
        table.add_column(name, justify="right" if name in numbers else "left")
    for p in peaks:
        table.add_row(
            p.device,
            p.dtype,
            f"{p.flops_per_s / 1e9:,.1f} GFLOP/s (n={p.gemm_size})",
            f"{p.bytes_per_s / 1e9:,.1f} GB/s",
            f"{p.cache_bytes_per_s / 1e9:,.1f} GB/s ({p.cache_bytes / 2**20:g} MiB)"
            if p.cache_bytes_per_s > 0
            else "—",
            f"{p.activation} {1e9 / p.activation_per_s:.3f} ns/element",
            f"{1e9 / p.scaling_per_s:.3f} ns/element" if p.scaling_per_s > 0 else "—",
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
    candidates = tuple(dict.fromkeys(  # "native" is one column: C++ in every class
        (*NARROW_KERNELS, *PRIMAL_KERNELS, *BATCHED_KERNELS, *FEW_COLUMNS_KERNELS, *SMALL_ROUTES,
         *TANH_KERNELS)
    ))  # fmt: skip
    for name in ("class", "kernel", *candidates):
        table.add_column(name, justify="left" if name in ("class", "kernel") else "right")
    choices = [
        *tuned.narrow.items(),
        *tuned.primal.items(),
        *tuned.batched.items(),
        (FEW_COLUMNS, tuned.few_columns),
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
    for name in ("class", "choice", "candidates' medians", "earlier tunings' fastest"):
        table.add_column(name)
    for name, choice in tuned.ties.items():
        seconds = tuned.measured_s.get(name, {})
        times = ", ".join(f"{k} {format_seconds(s)}" for k, s in seconds.items())
        earlier = "; ".join(_fastest_by(m) for m in tuned.ties_before.get(name, ()))
        table.add_row(
            name, f"[bold]{choice}[/]", times or "not measured: the fixed rule", earlier or "—"
        )
    return table


def _fastest_by(seconds: Mapping[str, float]) -> str:
    """``forward-laplacian by 24%``: the fastest of one tuning's medians and its lead."""
    ordered = sorted(seconds, key=seconds.__getitem__)
    if len(ordered) < 2:
        return ordered[0] if ordered else ""
    lead = seconds[ordered[1]] / seconds[ordered[0]] - 1
    return f"{ordered[0]} by {lead:.0%}"


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
def summary_tables(
    frame: pd.DataFrame,
    samples: pd.DataFrame | None = None,
    methods: Sequence[str] | None = None,
    *,
    accuracy: bool = False,
) -> list[Table | str]:
    """A run's summary for a terminal: per operator its table (jacbench's methods, the best of
    each peer family, the verdict) and, with ``accuracy``, the prediction accuracy sentence."""
    shown: list[Table | str] = []
    for operator, rows in split_operators(frame):
        summary = summary_frame(rows, samples)
        built = tables.summary_table(summary, methods, operator)
        shown.append(rich_table(built, box.SIMPLE_HEAD))
        if accuracy:
            shown.append(accuracy_sentence(summary, operator))
    return shown


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
def shard_estimates_table(estimates: pd.DataFrame, shard: object | None = None) -> Table:
    """``jacbench run --dry-run``: per shard its points, tasks and estimated time."""
    table = Table(
        title=(
            "what would run"
            if len(estimates) == 1
            else f"the grid dealt into {len(estimates)} shards"
        ),
        caption="estimated time: min_time per task and the FLOP model at a nominal rate",
        box=box.SIMPLE_HEAD,
    )
    for name in ("shard", "points", "tasks", "estimated time"):
        table.add_column(name, justify="right")
    mine = getattr(shard, "index", None)
    for row in estimates.itertuples(index=False):
        label = f"{row.shard}/{len(estimates)}" if len(estimates) > 1 else "all"
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


# --------------------------------------------------------------------- files
def write_report(
    run_dir: Path,
    frame: pd.DataFrame,
    meta: dict | None = None,
    samples: pd.DataFrame | None = None,
) -> list[Path]:
    """(Re)write summary.md and the plots of a run from its rows; returns the paths written."""
    run_dir = Path(run_dir)
    methods = results.read_settings(meta or {}).get("methods")  # the order they were asked in
    summary_path = run_dir / "summary.md"
    summary_path.write_text(summary_markdown(frame, meta, methods, samples))
    written = [summary_path]
    for plot, name in (
        (plot_time_vs_depth, "time_vs_depth.png"),
        (plot_ratio_map, "fwd_rev_ratio.png"),
        (plot_models, "models.png"),
    ):
        path = plot(frame, run_dir / name)
        if path is not None:
            written.append(path)
    return written


# ------------------------------------------------------------------- compare
def compare_table(merged: pd.DataFrame, threshold: float, label_a: str, label_b: str) -> Table:
    """Rows of two runs side by side: ratio B/A, its 95% interval and the verdict."""
    built = tables.compare_table(merged, threshold, label_a, label_b, compact_label)
    return rich_table(built, box.SIMPLE_HEAD)


def compare_sentence(merged: pd.DataFrame, threshold: float) -> str:
    """``12 rows compared: 1 regressed, 2 faster, …``, and what faster, slower and unsure
    mean where there are any."""
    counts = verdict_counts(merged)
    parts = [f"{n} {verdict}" for verdict, n in counts.items() if n]
    text = f"{len(merged)} rows compared: {', '.join(parts)}."
    if counts["faster"] or counts["slower"]:
        text += (
            " faster/slower: significant (the 95% interval wholly on one side of 1) but not "
            f"beyond the {threshold:.0%} threshold (a ratio below 1/{1 + threshold:g} or above "
            f"{1 + threshold:g}), which regressed/improved are."
        )
    if counts["unsure"]:
        text += f" unsure: {'; '.join(_unsure_reasons(merged, counts['unsure']))}."
    return text


def _unsure_reasons(merged: pd.DataFrame, unsure: int) -> list[str]:
    """Why rows are unsure: a busy machine, a change the whole run shares, too few samples."""
    busy = int(merged["busy"].sum()) if "busy" in merged else 0
    moved = int((merged["moved"] & ~merged["busy"]).sum()) if "moved" in merged else 0
    few = unsure - busy - moved
    reasons = [f"{busy} timed on a busy machine (other work above 0.5 cores)"] if busy else []
    if moved:
        shift = merged.attrs.get("shift") or math.nan
        reasons.append(
            f"{moved} changed no more than every row did (the whole run moved by {shift:.2f}×: "
            "the machine's speed between the runs, or a change that moved every method alike; "
            "time both versions in one session to tell)"
        )
    if few:
        reasons.append(
            f"{few} with fewer than {stats.MIN_SAMPLES} samples on a side (slow rows, a "
            "run without samples.csv, or pytest-benchmark files saved without "
            "--benchmark-save-data)"
        )
    return reasons


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
def leaderboard_table(places: Iterable[tuple[str, Any]]) -> Table:
    """The ranked students in order (``class_grading.leaderboard``'s places: ties share
    one), each with their speed and its interval."""
    table = Table(title="speed (× jacbench reverse, 95% interval)", box=box.SIMPLE_HEAD)
    for name in ("rank", "student", "× reverse", "95% interval"):
        table.add_column(name, justify="left" if name == "student" else "right")
    for place, row in places:
        table.add_row(
            place,
            escape(str(row.student)),
            f"{row.time_vs_reverse:.2f}",
            f"{row.time_vs_reverse_low:.2f}–{row.time_vs_reverse_high:.2f}",
        )
    return table


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
