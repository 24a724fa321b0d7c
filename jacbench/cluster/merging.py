"""Merging: the shards of one run joined into it, or separate runs joined into one.

``merge_shards(run)`` reads ``<run>/shards/<i>-of-<n>/`` and says which shards are
missing, still running or were interrupted; the rows of those that exist are joined in
the grid's order. ``merge_runs`` joins separate runs (different devices, say) whose rows
do not collide: a row key held by two runs is refused unless ``keep`` says which run wins.
``write_merged`` writes the result as a run folder (results.csv, samples.csv, meta.json;
the command line adds summary.md and plots); its meta.json keeps every part's environment
and times under ``parts`` and marks the folder ``merged`` (``"shards"`` or ``"runs"``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import filelock
import pandas as pd

from jacbench.measure.rows import KEY_COLUMNS, ResultsFileError, RowKey, format_widths, typed_frame
from jacbench.runs import results, shards
from jacbench.runs.results import RunData

KEEP_CHOICES = ("first", "last")


class MergeError(ValueError):
    """The runs cannot be merged as asked: no shards, mixed splits, colliding rows."""


# What a part of a merged run contributes to its meta.json: where and when it ran.
_PART_FIELDS = (
    "command",
    "started",
    "finished",
    "interrupted",
    "environment",
    "machine_at_start",
    "machine_at_end",
    "peaks",
    "tuning",
    "allocator",
)


@dataclass
class ShardedRun:
    """A sharded run's shards joined: the run so far, and what is not finished."""

    run: RunData
    count: int
    finished: list[int]
    unfinished: dict[int, str] = field(default_factory=dict)  # index → running / interrupted
    missing: list[int] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every shard is there and finished."""
        return len(self.finished) == self.count


def _state(folder: Path, meta: dict) -> str:
    if meta.get("finished"):
        return "finished"
    lock = filelock.FileLock(folder / results.LOCK_NAME, is_singleton=False)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        return "running"
    lock.release()
    return "interrupted"


def _read_part(folder: Path) -> RunData:
    meta = results.read_meta(folder)
    try:
        rows = results.read_results(folder)
    except FileNotFoundError:  # killed before its first row
        rows = typed_frame([])
    return RunData(rows, results.read_samples(folder), meta)


def merge_shards(run_dir: Path | str) -> ShardedRun:
    """The shards under ``run_dir/shards/`` joined in the grid's order.

    Raises:
        MergeError: there are no shards, or shards of different splits or parameters.
        ResultsFileError: a shard's file is damaged (the message names it).
    """
    run_dir = Path(run_dir)
    folders = shards.shard_folders(run_dir)
    if not folders:
        raise MergeError(
            f"{run_dir} holds no shards (no {results.SHARDS_FOLDER}/<i>-of-<n>/ run folder)"
        )
    counts = sorted({s.count for s in folders})
    if len(counts) > 1:
        splits = " and ".join(f"{n} shards" for n in counts)
        raise MergeError(
            f"{run_dir}/{results.SHARDS_FOLDER} mixes splits of {splits}; "
            "keep one split's folders (or merge each split into its own --out)"
        )
    count = counts[0]
    parts = {s: _read_part(folder) for s, folder in folders.items()}
    first_shard, first = next(iter(parts.items()))
    for shard, part in parts.items():
        differ = results.settings_differences(
            results.read_settings(first.meta), results.read_settings(part.meta)
        )
        if differ:
            raise MergeError(
                f"shard {shard} was run with other settings than shard {first_shard} "
                f"({'; '.join(differ)}): they are not parts of one run"
            )
    states = {s: _state(folders[s], part.meta) for s, part in parts.items()}
    rows, samples = _concat(list(parts.values()))
    _refuse_collisions([(f"shard {s}", p.rows) for s, p in parts.items()])
    rows = _in_grid_order(rows, list(parts.values()), results.read_settings(first.meta))
    present = {s.index for s in parts}
    missing = [i for i in range(count) if i not in present]
    unfinished = {s.index: state for s, state in states.items() if state != "finished"}
    finished = [s.index for s, state in states.items() if state == "finished"]
    meta = _merged_meta(
        base=first.meta,
        kind="shards",
        parts=[
            {"shard": str(s), "state": states[s], "rows": len(p.rows), **_part(p.meta)}
            for s, p in parts.items()
        ],
        complete=not missing and not unfinished,
    )
    meta["merged"].update(count=count, missing=missing, unfinished=sorted(unfinished))
    meta.pop("shard", None)
    return ShardedRun(RunData(rows, samples, meta), count, finished, unfinished, missing)


def merge_runs(runs: Sequence[tuple[str, RunData]], keep: str | None = None) -> RunData:
    """Join separate runs, named for messages; ``keep`` ("first"/"last") picks the run whose
    row wins where two hold the same row key.

    Raises:
        MergeError: two runs hold rows with the same key and ``keep`` is None.
    """
    if len(runs) < 2:
        raise MergeError("merging separate runs needs at least two")
    if keep is not None and keep not in KEEP_CHOICES:
        raise MergeError(f"keep must be one of {', '.join(KEEP_CHOICES)}, got {keep!r}")
    if keep is None:
        _refuse_collisions([(name, run.rows) for name, run in runs])
    ordered = list(runs) if keep != "last" else list(reversed(runs))
    seen: set[RowKey] = set()
    kept_rows, kept_samples = [], []
    for _, run in ordered:
        keys = [RowKey.of_cells(k) for k in run.rows[list(KEY_COLUMNS)].itertuples(index=False)]
        fresh = [k not in seen for k in keys]
        kept_rows.append(run.rows[fresh])
        wanted = {k for k, f in zip(keys, fresh) if f}
        sample_keys = run.samples[list(KEY_COLUMNS)].itertuples(index=False)
        kept_samples.append(run.samples[[RowKey.of_cells(k) in wanted for k in sample_keys]])
        seen.update(wanted)
    if keep == "last":  # back in the order the runs were given
        kept_rows.reverse()
        kept_samples.reverse()
    rows, samples = _concat([RunData(r, s, {}) for r, s in zip(kept_rows, kept_samples)])
    methods = list(dict.fromkeys(m for _, run in runs for m in run.rows["method"]))
    meta = _merged_meta(
        base={"environment": runs[0][1].meta.get("environment", {})},
        kind="runs",
        parts=[
            {"run": name, "settings": results.read_settings(run.meta), **_part(run.meta)}
            for name, run in runs
        ],
        complete=all(run.meta.get("finished") for _, run in runs),
    )
    meta["settings"] = {"merged": [name for name, _ in runs], "methods": methods}
    meta["merged"]["keep"] = keep
    return RunData(rows, samples, meta)


def write_merged(out: Path | str, run: RunData) -> list[Path]:
    """Write a merged run into ``out`` (replacing an earlier merge there); returns the files.

    Raises:
        results.RunDirError: ``out`` holds a run that is not a merge, or is in use.
    """
    out = Path(out)
    try:
        existing = results.read_meta(out)
    except ResultsFileError as error:
        raise results.RunDirError(f"{error}; refusing to touch this folder") from None
    if existing and "merged" not in existing:
        raise results.RunDirError(f"{out} holds a run of its own; merge into another --out")
    if existing and existing["merged"].get("kind") != run.meta["merged"]["kind"]:
        raise results.RunDirError(f"{out} holds another kind of merge; use another --out")
    results.write_run(out, run.rows, run.samples, run.meta)
    return [out / "results.csv", out / results.SAMPLES_NAME, out / "meta.json"]


def _part(meta: dict) -> dict[str, Any]:
    return {k: meta[k] for k in _PART_FIELDS if k in meta}


def _shards_command(command: str | None) -> str | None:
    """A shard's command as every shard's: its ``--shard i/n`` with i as a letter.

    >>> _shards_command("jacbench run --preset peers --shard 0/4 --out r")
    'jacbench run --preset peers --shard i/4 --out r'
    """
    if command is None:
        return None
    return re.sub(r"--shard(\s+|=)\S+/(\d+)", r"--shard\1i/\2", command)


def _merged_meta(base: dict, kind: str, parts: list[dict], complete: bool) -> dict[str, Any]:
    starts = [p["started"] for p in parts if p.get("started")]
    ends = [p["finished"] for p in parts if p.get("finished")]
    environments = [p.get("environment") or {} for p in parts]
    kept = {k: v for k, v in base.items() if k not in (*_PART_FIELDS, "params")}
    if "settings" in base or "params" in base:  # a shard's settings, in this version's layout
        kept["settings"] = results.read_settings(base)
    return {
        **kept,
        "command": _shards_command(parts[0].get("command")) if kind == "shards" else None,
        "environment": base.get("environment") or environments[0],
        "started": min(starts) if starts else None,
        "finished": max(ends) if complete and ends else None,
        "machine_at_start": parts[0].get("machine_at_start"),
        "machine_at_end": parts[-1].get("machine_at_end"),
        "merged": {"kind": kind, "at": results.now_iso(), "parts": len(parts)},
        "parts": parts,
    }


def _concat(runs: list[RunData]) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = [r.rows for r in runs if not r.rows.empty]
    samples = [r.samples for r in runs if not r.samples.empty]
    frame = pd.concat(rows, ignore_index=True) if rows else typed_frame([])
    blocks = pd.concat(samples, ignore_index=True) if samples else results.empty_samples()
    return frame, blocks


def _refuse_collisions(named: list[tuple[str, pd.DataFrame]]) -> None:
    owner: dict[RowKey, str] = {}
    for name, rows in named:
        for key in rows[list(KEY_COLUMNS)].itertuples(index=False):
            key = RowKey.of_cells(key)
            if key in owner:
                clashes = _clash_count(named, owner[key], name)
                shape = f"{format_widths(key.widths)} batch {key.batch} {key.dtype} {key.device}"
                raise MergeError(
                    f"{owner[key]} and {name} both hold {clashes} row"
                    f"{'s' if clashes != 1 else ''} with the same key (e.g. {key.method} at "
                    f"{shape}): they measure "
                    "the same thing; pass --keep first or --keep last to choose which wins"
                )
            owner[key] = name


def _clash_count(named: list[tuple[str, pd.DataFrame]], a: str, b: str) -> int:
    frames = dict(named)
    keys = [set(frames[n][list(KEY_COLUMNS)].itertuples(index=False)) for n in (a, b)]
    return len(keys[0] & keys[1])


def _in_grid_order(rows: pd.DataFrame, parts: list[RunData], settings: dict) -> pd.DataFrame:
    """Rows sorted as the unsharded run writes them: by the point's place in the grid
    (each shard's meta.json records it), then by method in the run's order."""
    position: dict[tuple, int] = {}
    for part in parts:
        for widths, batch, dtype, device, index in part.meta.get("shard", {}).get("grid", []):
            position[(widths, int(batch), dtype, device)] = int(index)
    if rows.empty or not position:
        return rows
    method_rank = {m: i for i, m in enumerate(settings.get("methods") or [])}
    point = zip(rows["widths"], rows["batch"], rows["dtype"], rows["device"])
    order = pd.DataFrame(
        {
            "point": [position.get((w, int(b), d, v), len(position)) for w, b, d, v in point],
            "method": [method_rank.get(m, len(method_rank)) for m in rows["method"]],
        }
    )
    return rows.iloc[order.sort_values(["point", "method"], kind="stable").index].reset_index(
        drop=True
    )
