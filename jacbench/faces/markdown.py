"""Markdown: a run folder's summary.md and compare's ``--markdown``, drawn from the tables of
``tables`` (the same the terminal shows) and the sentences of ``text``."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from jacbench.faces import tables
from jacbench.faces.tables import TextTable
from jacbench.faces.text import accuracy_sentence, busy_warning, pool_warning
from jacbench.measure.threads import PoolCheck
from jacbench.runs import analysis
from jacbench.runs.operators import OPERATORS


def markdown_lines(table: TextTable) -> list[str]:
    """A table as Markdown lines: its header, the separator (the first ``table.left``
    columns aligned left, the rest right), then one line per row."""
    marks = ["---"] * table.left + ["---:"] * (len(table.header) - table.left)
    lines = ["| " + " | ".join(table.header) + " |", "|" + "|".join(marks) + "|"]
    return lines + ["| " + " | ".join(cells) + " |" for cells in table.rows]


# ------------------------------------------------------------------- summary
def summary_markdown(
    frame: pd.DataFrame,
    meta: dict | None = None,
    methods: Sequence[str] | None = None,
    samples: pd.DataFrame | None = None,
) -> str:
    """summary.md: per shape, median per method, forward/reverse ratio, predicted vs measured;
    jacbench against its peers; for a run over several devices, the devices side by side."""
    lines = ["# jacbench run summary", "", *_run_header(meta or {}, frame)]
    parts = analysis.split_operators(frame)
    for operator, rows in parts:
        lines.append("")
        if len(parts) > 1 or operator != "jacobian":
            lines += [f"## The {operator}: {OPERATORS[operator].description}", ""]
        summary = analysis.summary_frame(rows, samples)
        if summary.empty:
            lines.append("No timed rows.")
            continue
        lines += markdown_lines(tables.summary_table(summary, methods, operator, wide=True))
        lines += ["", accuracy_sentence(summary, operator)]
        sections = (
            _peer_lines(rows),
            _devices_lines(rows, methods, samples),
            _evals_lines(rows, methods),
            _payback_lines(rows),
        )
        for section in sections:
            if section:
                lines += ["", *section]
    lines += _untimed_lines(frame)
    return "\n".join(lines) + "\n"


def _machine_text(env: dict) -> str:
    device = env.get("device_name") or env.get("cpu_model")
    host = f" on {env['host']}" if env.get("host") else ""
    return (
        f"{device}{host}, {env.get('threads')} threads; torch {env.get('torch')}, "
        f"jacbench {env.get('jacbench')}"
    )


def _run_header(meta: dict, frame: pd.DataFrame | None = None) -> list[str]:
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
    warning = busy_warning(meta, frame)
    if warning:
        lines += ["", f"**{warning}**"]
    stalled = pool_warning(PoolCheck.of_dict(meta.get("thread_pool")))
    if stalled:
        lines += ["", f"**Warning: {stalled}**"]
    return lines


def _peer_lines(rows: pd.DataFrame) -> list[str]:
    """The section on jacbench's best method against the best of each peer family."""
    operator = analysis.operator_of(rows)
    table = tables.peers_table(analysis.peer_comparison(rows), operator)
    if table is None:
        return []
    best = OPERATORS[operator].best_method
    each = (
        "its forward or reverse mode, whichever was faster"
        if operator == "jacobian"
        else "the fastest of its methods"
    )
    return [
        f"## {best} against its peers",
        "",
        f"Best median of each family ({each}) and how many times slower than `{best}` that "
        f"is (× > 1: {best} is faster).",
        "",
        *markdown_lines(table),
    ]


def _devices_lines(
    rows: pd.DataFrame, methods: Sequence[str] | None, samples: pd.DataFrame | None
) -> list[str]:
    """The section on a run over several devices: medians side by side, and each device's
    time ratio to the first with its 95% interval and verdict (none for one device)."""
    side_by_side = analysis.devices_side_by_side(rows, samples)
    if side_by_side.empty:
        return []
    table = tables.devices_table(side_by_side, analysis.devices_of(rows), methods)
    return ["## Devices side by side", "", *markdown_lines(table)]


def _evals_lines(rows: pd.DataFrame, methods: Sequence[str] | None) -> list[str]:
    """The section on each Jacobian's cost in evaluations of the function (none where no
    row was timed against it)."""
    table = tables.evals_table(rows, methods)
    if table is None:
        return []
    return [
        "## What a Jacobian costs in evaluations of the function",
        "",
        "Each median over the function's own median at the same input (`evals`; ADBench's "
        "presentation): how many evaluations of f one Jacobian costs.",
        "",
        *markdown_lines(table),
    ]


def _payback_lines(rows: pd.DataFrame) -> list[str]:
    """The section on when compiling pays (none where nothing was compiled)."""
    found = analysis.compile_payback(rows)
    if found.empty:
        return []
    table = tables.payback_table(found)
    never = int((found["saved_s"] <= 0).sum())
    lines = ["## When compiling pays", ""]
    if table.rows:
        lines += [
            "A compiled method's compile time (`compile_s`) over what each call saves against "
            "the fastest method at its point that compiles nothing: the calls after which "
            "compiling has paid.",
            "",
            *markdown_lines(table),
            "",
        ]
    if never:
        lines.append(
            f"At {never} of {len(found)} compiled rows the compiled method was no faster than "
            "the fastest that compiles nothing: there compiling never pays."
        )
    return lines


def _untimed_lines(frame: pd.DataFrame) -> list[str]:
    """Markdown lines on slow, untimed and noisy rows (none where there are none)."""
    lines = []
    slow = frame[frame["status"] == "slow"]
    if not slow.empty:
        lines += [
            "",
            f"{len(slow)} rows were timed once only (`slow`: one call > --max-call-time).",
        ]
    untimed = tables.untimed_table(frame)
    if untimed.rows:
        lines += ["", "## Rows not timed", "", *markdown_lines(untimed)]
    noisy = frame[frame["noisy"].fillna(False).astype(bool)]
    if not noisy.empty:
        lines += ["", f"{len(noisy)} timed rows are noisy (IQR > 10% of the median)."]
    return lines + _unbound_lines(frame)


def _unbound_lines(frame: pd.DataFrame) -> list[str]:
    """Why efficiency is empty at rows that have no roofline bound (older peaks)."""
    if "bound_note" not in frame.columns:
        return []
    noted = frame[frame["bound_note"].fillna("").astype(str) != ""]
    if noted.empty:
        return []
    return [
        "",
        f"No efficiency at {len(noted)} rows: their weights may stay in a cache whose read "
        "rate this run's peaks do not hold (measured before jacbench read the cache; a new "
        "run measures it).",
    ]


# ------------------------------------------------------------------- compare
def compare_markdown(merged: pd.DataFrame, threshold: float, label_a: str, label_b: str) -> str:
    """The comparison as a Markdown table, with the same columns as the terminal's, under
    the same caption."""
    table = tables.compare_table(merged, threshold, label_a, label_b)
    caption = table.caption[:1].upper() + table.caption[1:] + "."
    return "\n".join([caption, "", *markdown_lines(table)]) + "\n"
