"""Run folders: ``results/<run>/results.csv`` and ``meta.json``, written safely, read strictly.

Rows are appended, flushed and fsynced one by one, so a run killed at any moment (even by
SIGKILL) keeps every row it finished. While a run writes, it holds an exclusive lock on
``<run>/.lock``: a second run into the same folder is refused, never interleaved. Reading
checks every file against the schema of ``jacbench.measure.rows``; a damaged file is refused in one
line that names it and is left as it is. The one repair: a torn last line (a writer killed
mid-row) is cut off when the run is resumed, and samples.csv keeps only the samples of rows
that reached results.csv. ``meta.json`` is replaced atomically.

``samples.csv`` holds every timed block of every row (row key, process, round, seconds),
written before the row itself: the raw data behind each median and interval.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

import filelock
import pandas as pd

# What meta.json records of the machine, read where run folders are written.
from jacbench.measure.machine import environment, machine_state, now_iso  # noqa: F401
from jacbench.measure.rows import (
    COLUMNS,
    KEY_COLUMNS,
    KEY_DEFAULTS,
    SAMPLE_COLUMNS,
    ResultsFileError,
    Row,
    RowKey,
    Status,
    check_frame,
    keys_of,
    parse_widths,
    samples_frame,
    typed_frame,
)
from jacbench.measure.stats import median_interval

LOCK_NAME = ".lock"
SAMPLES_NAME = "samples.csv"
SHARDS_FOLDER = "shards"  # a sharded run's parts: shards/<i>-of-<n>/ (jacbench.runs.shards)


class RunDirError(ValueError):
    """The output folder cannot hold this run: in use, another run's, or damaged."""


def _parse_csv(text: str, source: str) -> pd.DataFrame:
    """A results file's text as a typed frame (ResultsFileError if it is not one)."""
    if not text.strip():
        raise ResultsFileError(f"{source} is empty")
    try:
        header, *lines = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as error:
        raise ResultsFileError(f"{source} is damaged: {error}") from None
    for number, line in enumerate(lines, start=2):
        if len(line) != len(header):
            raise ResultsFileError(
                f"{source} is damaged: line {number} has {len(line)} "
                f"field{'' if len(line) == 1 else 's'}, expected {len(header)}"
            )
    return check_frame(pd.DataFrame(lines, columns=header, dtype=object), source)


def _torn_tail(data: bytes) -> int:
    """Bytes of a partial last line (0 when the file ends with a full line)."""
    return 0 if not data or data.endswith(b"\n") else len(data) - (data.rfind(b"\n") + 1)


IF_PRESENT = "if-present"  # RunWriter's resume: continue a run where there is one


class RunWriter:
    """Appends rows to ``results.csv`` in ``run_dir`` and keeps ``meta.json`` up to date.

    Use as a context manager: entering takes the folder's lock and checks what it holds,
    leaving releases the lock.
    """

    def __init__(self, run_dir: Path, settings: dict, *, resume: bool | str = False) -> None:
        """``settings``: the run's, as meta.json records them (``Settings.to_meta()``), which
        a folder it resumes must hold (``settings_differences``). ``resume``: True continues
        the run in ``run_dir`` (refusing a folder without one), ``"if-present"`` continues it
        where there is one and starts it where not (a job that may run again: a Slurm array
        task, a requeue), False starts it."""
        if resume not in (True, False, IF_PRESENT):
            raise ValueError(f"resume is True, False or {IF_PRESENT!r}, not {resume!r}")
        self.run_dir = Path(run_dir)
        self.csv_path = self.run_dir / "results.csv"
        self.samples_path = self.run_dir / SAMPLES_NAME
        self.meta_path = self.run_dir / "meta.json"
        self.settings = settings
        self.resume = resume
        self.done: set[RowKey] = set()
        self.meta: dict[str, Any] = {}
        self._lock = filelock.FileLock(self.run_dir / LOCK_NAME, is_singleton=False)

    def __enter__(self) -> RunWriter:
        holds_a_run = self.csv_path.exists() or self.meta_path.exists()
        if self.resume == IF_PRESENT:
            self.resume = holds_a_run
        if self.resume and not holds_a_run:
            raise RunDirError(f"nothing to resume in {self.run_dir}: it holds no run")
        _take(self._lock, self.run_dir)
        try:
            self._open()
        except BaseException:
            self._lock.release()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._lock.release()

    def _open(self) -> None:
        try:
            old_meta = read_meta(self.run_dir)
        except ResultsFileError as error:
            raise RunDirError(f"{error}; refusing to touch this folder") from None
        recorded = read_settings(old_meta)
        if self.meta_path.exists() and not recorded:
            raise RunDirError(f"{self.meta_path} was not written by jacbench; refusing to touch it")
        has_rows = self.csv_path.exists() and self.csv_path.stat().st_size > 0
        differ = settings_differences(recorded, self.settings) if recorded else []
        if differ:  # a resume continues that run as it was made, no other
            raise RunDirError(
                f"{self.run_dir} holds a run with other settings ({'; '.join(differ)}); "
                "choose another --out" + ("" if self.resume else ", or --resume it as it was made")
            )
        if has_rows and not self.resume:
            raise RunDirError(
                f"{self.run_dir} already holds this run; pass --resume to finish it, "
                "or choose another --out"
            )
        if has_rows:
            self.done = self._check_for_resume()
        self._keep_samples_of(self.done)
        self.meta = old_meta
        if not recorded:  # the settings are on disk before the first row
            self.write_meta()

    @property
    def finished(self) -> bool:
        """Whether the folder's run had finished when it was opened (a resume with nothing
        left to do leaves it as it is)."""
        return bool(self.meta.get("finished"))  # set None when a run is interrupted

    def _check_for_resume(self) -> set[RowKey]:
        """The keys of the rows already written, after cutting a torn last line."""
        data = self.csv_path.read_bytes()
        torn = _torn_tail(data)
        whole = data[: len(data) - torn]
        try:
            text = whole.decode()
            header = text.split("\n", 1)[0].strip().split(",")
            if header != list(COLUMNS):
                raise ResultsFileError(
                    f"{self.csv_path} was not written by this version of jacbench "
                    "(its columns differ)"
                )
            frame = _parse_csv(text, str(self.csv_path))
        except (ResultsFileError, UnicodeDecodeError) as error:
            reason = error if isinstance(error, ResultsFileError) else "not text"
            raise RunDirError(f"cannot resume: {reason}; the file is left as it is") from None
        if torn:
            with self.csv_path.open("r+b") as handle:
                handle.truncate(len(whole))
        return keys_of(frame)

    def _keep_samples_of(self, keys: set[RowKey]) -> None:
        """Drop samples of rows that never reached results.csv (a run killed in between)."""
        if not self.samples_path.exists():
            return
        try:
            samples = read_samples(self.run_dir)
        except ResultsFileError as error:
            raise RunDirError(f"cannot resume: {error}; the file is left as it is") from None
        cells = samples[list(KEY_COLUMNS)].itertuples(index=False)
        kept = samples[[RowKey.of_cells(k) in keys for k in cells]]
        if len(kept) < len(samples):
            tmp = self.samples_path.with_suffix(".csv.tmp")
            kept.to_csv(tmp, index=False)
            os.replace(tmp, self.samples_path)

    def append(self, row: Row) -> None:
        """Write one row (its samples first) and push both to disk before returning.

        A row already there is skipped.
        """
        if row.key in self.done:
            return
        if row.samples:
            header = not self.samples_path.exists()
            _append_records(self.samples_path, SAMPLE_COLUMNS, row.sample_records(), header)
        header = not self.csv_path.exists() or self.csv_path.stat().st_size == 0
        _append_records(self.csv_path, COLUMNS, [row.as_dict()], header)
        self.done.add(row.key)

    def ensure_header(self) -> None:
        """Give a run that wrote no row a results.csv all the same (its header alone)."""
        if not self.csv_path.exists():
            _append_records(self.csv_path, COLUMNS, [], header=True)

    def write_meta(self, **fields: Any) -> None:
        """Update meta.json with ``fields`` (and the run's settings), atomically."""
        self.meta.update(fields)
        self.meta.pop("params", None)  # an older folder's record: the settings replace it
        self.meta["settings"] = self.settings
        write_json_atomic(self.meta_path, self.meta)


def _take(lock: filelock.FileLock, run_dir: Path) -> None:
    """Create ``run_dir`` and take its lock at once, or say in one line why not."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock.acquire(timeout=0)
    except filelock.Timeout:
        raise RunDirError(
            f"{run_dir} is in use by another jacbench run; wait for it to finish, "
            "or choose another --out"
        ) from None
    except OSError as error:
        raise RunDirError(f"cannot write to {run_dir}: {error.strerror}") from None


def _append_records(
    path: Path, columns: Sequence[str], records: Iterable[dict], header: bool
) -> None:
    """Append CSV records (after a header line if ``header``) and push them to disk."""
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        if header:
            writer.writeheader()
        writer.writerows(records)
        handle.flush()
        os.fsync(handle.fileno())


def _replace_csv(path: Path, columns: Sequence[str], records: Iterable[dict]) -> None:
    """``records`` as ``path``, written beside it and renamed over it."""
    tmp = path.with_suffix(".csv.tmp")
    tmp.unlink(missing_ok=True)
    _append_records(tmp, columns, records, header=True)
    os.replace(tmp, path)


def write_run(run_dir: Path, rows: pd.DataFrame, samples: pd.DataFrame, meta: dict) -> None:
    """Write a whole run folder's results.csv, samples.csv and meta.json at once (a merge),
    each file replaced atomically, under the folder's lock.

    Raises:
        RunDirError: another jacbench process holds the folder, or it cannot be written.
    """
    run_dir = Path(run_dir)
    lock = filelock.FileLock(run_dir / LOCK_NAME, is_singleton=False)
    _take(lock, run_dir)
    try:
        records = [Row.from_record(r).as_dict() for r in rows.to_dict("records")]
        _replace_csv(run_dir / "results.csv", COLUMNS, records)
        _replace_csv(run_dir / SAMPLES_NAME, SAMPLE_COLUMNS, samples.to_dict("records"))
        write_json_atomic(run_dir / "meta.json", meta)
    finally:
        lock.release()


def rebound(run_dir: Path | str) -> pd.DataFrame:
    """Recompute the roofline bound, efficiency and bound_note of a run's MLP rows from the
    peaks its meta.json holds, by the bound as it is now (NOTE: [Three ceilings] in
    jacbench.measure.peaks), and write the run back; its rows. Nothing is timed again.

    Raises:
        RunDirError: another jacbench process holds the folder.
    """
    import torch

    from jacbench.measure.peaks import Peaks, bound_seconds, model_bound_seconds

    run_dir = Path(run_dir)
    rows, meta = read_results(run_dir), read_meta(run_dir)
    measured = {name: Peaks(**fields) for name, fields in (meta.get("peaks") or {}).items()}
    bounds, notes = [], []
    for row in rows.to_dict("records"):
        peaks = measured.get(str(row["dtype"]))
        if peaks is None or pd.isna(row["flops"]):
            bounds.append(row["bound_s"] if peaks is None else math.nan)
            notes.append(row.get("bound_note") or "")
            continue
        if str(row.get("model") or "mlp") != "mlp":  # a user's model: its FLOPs' ceiling
            flops = int(row["flops"])
            bounds.append(model_bound_seconds(flops, peaks) if flops else math.nan)
            notes.append(row.get("bound_note") or "")
            continue
        elementwise = row["elementwise_flops"]
        bound = bound_seconds(
            int(row["flops"]),
            parse_widths(str(row["widths"])),
            getattr(torch, str(row["dtype"])),
            peaks,
            elementwise=None if pd.isna(elementwise) else int(elementwise),
            batch=int(row["batch"]),
        )
        bounds.append(math.nan if bound.seconds is None else bound.seconds)
        notes.append(bound.note)
    rows["bound_s"] = bounds
    rows["bound_note"] = notes
    rows["efficiency"] = rows["bound_s"] / rows["median_s"]
    lock = filelock.FileLock(run_dir / LOCK_NAME, is_singleton=False)
    _take(lock, run_dir)
    try:  # results.csv alone, replaced whole: the samples and meta.json stay as they are
        records = [Row.from_record(r).as_dict() for r in rows.to_dict("records")]
        _replace_csv(run_dir / "results.csv", COLUMNS, records)
    finally:
        lock.release()
    return rows


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON to a temporary file, then rename it over ``path``."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def read_meta(run_dir: Path | str) -> dict[str, Any]:
    """A run's meta.json ({} when there is none).

    Raises:
        ResultsFileError: the file is not JSON, or not a JSON object.
    """
    path = Path(run_dir) / "meta.json"
    if not path.exists():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        where = f" (line {error.lineno})" if isinstance(error, json.JSONDecodeError) else ""
        raise ResultsFileError(f"{path} is not valid JSON{where}") from None
    if not isinstance(meta, dict):
        raise ResultsFileError(f"{path} is not a jacbench meta.json (not a JSON object)")
    return meta


# An older meta.json's flat ``params``: which of them were timing settings.
_LEGACY_TIMING = ("min_time", "max_call_time", "call_timeout", "rounds", "processes", "threads")


def read_settings(meta: dict[str, Any]) -> dict[str, Any]:
    """A run's settings as its meta.json records them, in this version's layout
    (``Settings.to_meta()``: preset, grid, operator, methods, build, validate, timing,
    shards; a merged run's: merged, methods). An older folder's flat ``params`` is read into
    the same layout; {} for a meta.json with neither."""
    if "settings" in meta:
        return meta["settings"]
    params = meta.get("params")
    if not isinstance(params, dict):
        return {}
    if "merged" in params:
        return {"merged": params["merged"], "methods": params.get("methods", [])}
    grid = {k: params.get(k) for k in ("depths", "d_in", "width", "d_out", "batch", "shapes")}
    model = params.get("model")
    grid |= {"model": model, "model_params": params.get("params") if model else None}
    grid |= {"dtype": params.get("dtype"), "device": params.get("device")}
    return {
        "preset": params.get("preset"),
        "grid": grid,
        "operator": params.get("operator") or "jacobian",
        "methods": params.get("methods"),
        "build": {k: params.get(k) for k in ("seed", "init", "activation")},
        "validate": params.get("validate"),
        "timing": {k: params[k] for k in _LEGACY_TIMING if k in params},
        "shards": params.get("shards"),
    }


def settings_differences(
    recorded: dict[str, Any], asked: dict[str, Any], ignore: Sequence[str] = ()
) -> list[str]:
    """What differs between two runs' settings (``read_settings``' layout), each as
    ``name: recorded → asked`` with nested names dotted (``build.seed: 0 → 1``); the parts
    in ``ignore`` aside. A timing setting ``recorded`` does not hold (an older folder's) is
    not compared."""
    a, b = _flat(recorded, ignore), _flat(asked, ignore)
    keys = [k for k in a | b if k in a or not k.startswith("timing.")]
    return [f"{k}: {_shown(a.get(k))} → {_shown(b.get(k))}" for k in keys if a.get(k) != b.get(k)]


def _flat(settings: dict[str, Any], ignore: Sequence[str], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if key in ignore:
            continue
        if isinstance(value, dict) and key != "model_params":
            flat |= _flat(value, (), f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(_shown(v) for v in value) or "none"
    return "none" if value is None else str(value)


def read_results(run_dir_or_csv: Path | str) -> pd.DataFrame:
    """The rows of a run as a typed DataFrame (a run folder or a results.csv path).

    Raises:
        FileNotFoundError: no results.csv there.
        ResultsFileError: the file is empty, damaged or not a jacbench results file; the
            message names the file (and the line, where there is one).
    """
    path = Path(run_dir_or_csv)
    if path.is_dir():
        path = path / "results.csv"
    if not path.is_file():
        if (path.parent / SHARDS_FOLDER).is_dir():
            raise FileNotFoundError(
                f"no results.csv at {path}: the run is sharded; join its shards with "
                f"`jacbench merge {path.parent}`"
            )
        raise FileNotFoundError(f"no results.csv at {path}")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ResultsFileError(f"{path} is not a jacbench results file (not text)") from None
    return _parse_csv(text, str(path))


def read_samples(run_dir: Path | str) -> pd.DataFrame:
    """Every timed block of a run (samples.csv), by row key; empty when the run kept none.

    Runs made before samples.csv existed have none: their rows carry no interval to compare.

    Raises:
        ResultsFileError: the file is damaged or not a jacbench samples file.
    """
    path = Path(run_dir) / SAMPLES_NAME
    if not path.exists():
        return empty_samples()
    try:
        text_columns = ("widths", "dtype", "device", "method", "model")
        frame = pd.read_csv(path, dtype={c: str for c in text_columns})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        raise ResultsFileError(f"{path} is not a jacbench samples file") from None
    for name, default in KEY_DEFAULTS.items():  # a file made before that key column
        if name not in frame.columns and tuple(frame.columns) == _without(name):
            frame.insert(SAMPLE_COLUMNS.index(name), name, default)
    if tuple(frame.columns) != SAMPLE_COLUMNS:
        raise ResultsFileError(
            f"{path} is not a jacbench samples file (columns {', '.join(SAMPLE_COLUMNS)})"
        )
    try:
        return frame.astype(_SAMPLE_DTYPES)
    except (TypeError, ValueError):
        raise ResultsFileError(f"{path} has a value of the wrong type") from None


def _without(name: str) -> tuple[str, ...]:
    return tuple(c for c in SAMPLE_COLUMNS if c != name)


def empty_samples() -> pd.DataFrame:
    """A samples frame with no blocks (a run that kept none)."""
    return pd.DataFrame({c: pd.Series(dtype=_SAMPLE_DTYPES[c]) for c in SAMPLE_COLUMNS})


_SAMPLE_DTYPES = {c: object for c in SAMPLE_COLUMNS} | {
    "batch": "int64",
    "process": "int64",
    "round": "int64",
    "seconds": "float64",
}


class RunData(NamedTuple):
    """A run as read back: its rows, its samples (maybe empty) and its meta.json."""

    rows: pd.DataFrame
    samples: pd.DataFrame
    meta: dict[str, Any]


def read_run(path: Path | str) -> RunData:
    """A run folder, its results.csv, or a pytest-benchmark JSON from ``benchmarks/``.

    A pytest-benchmark file's samples are its per-round times (``stats.data``: present in
    ``--benchmark-json`` files, and in saved runs made with ``--benchmark-save-data``); its
    meta is the ``machine_info`` that ``benchmarks/`` records.

    Raises:
        FileNotFoundError: nothing there.
        ResultsFileError: a file is damaged or foreign; the message names it.
    """
    path = Path(path)
    if path.suffix == ".json" and path.is_file():
        rows, samples, machine = _read_pytest_benchmark(path)
        return RunData(rows, samples, {"environment": machine.get("jacbench", {})})
    folder = path if path.is_dir() else path.parent
    return RunData(read_results(path), read_samples(folder), read_meta(folder))


def run_differences(a: RunData, b: RunData) -> tuple[list[str], list[str]]:
    """(what makes two runs incomparable, what only weakens the comparison), as phrases.

    Device, dtype and torch version must match for timings to compare; threads, CPU model
    and how the networks were built (their settings' ``build``) may differ (comparing them
    can be the point) but are worth a warning.
    """
    refusals: list[str] = []
    warnings: list[str] = []
    for column in ("device", "dtype"):
        left, right = sorted(set(a.rows[column])), sorted(set(b.rows[column]))
        if left != right:
            refusals.append(f"{column} {', '.join(left)} vs {', '.join(right)}")
    env_a, env_b = a.meta.get("environment", {}), b.meta.get("environment", {})
    for field, bucket in (("torch", refusals), ("threads", warnings), ("cpu_model", warnings)):
        left, right = env_a.get(field), env_b.get(field)
        if left is not None and right is not None and left != right:
            bucket.append(f"{field.replace('_', ' ')} {left} vs {right}")
    # Networks built another way (a seed, an init, an activation) time other arithmetic.
    built = [read_settings(run.meta).get("build") or {} for run in (a, b)]
    if all(built) and built[0] != built[1]:
        warnings += settings_differences({"build": built[0]}, {"build": built[1]})
    return refusals, warnings


def read_pytest_benchmark(path: Path | str) -> pd.DataFrame:
    """Rows in results.csv's columns from a pytest-benchmark JSON saved from ``benchmarks/``.

    Each benchmark's ``extra_info`` carries the shape, method and FLOPs; its stats the times.

    Raises:
        FileNotFoundError: no such file.
        ResultsFileError: not a pytest-benchmark file, or it holds no jacbench benchmarks.
    """
    return _read_pytest_benchmark(Path(path))[0]


def _read_pytest_benchmark(path: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    if not path.is_file():
        raise FileNotFoundError(f"no pytest-benchmark file at {path}")
    try:
        data = json.loads(path.read_text())
        benchmarks = data["benchmarks"]
        rows = [_benchmark_row(b) for b in benchmarks if _is_jacbench_benchmark(b)]
        machine = dict(data.get("machine_info") or {})
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError):
        raise ResultsFileError(f"{path} is not a pytest-benchmark JSON file") from None
    if not rows:
        raise ResultsFileError(f"{path} holds no jacbench benchmarks (run `pytest benchmarks/`)")
    return typed_frame([r.as_dict() for r in rows]), samples_frame(rows), machine


def _is_jacbench_benchmark(bench: dict) -> bool:
    info = bench.get("extra_info", {})
    return "widths" in info and "method" in info


def _benchmark_row(bench: dict) -> Row:
    info, stats = bench["extra_info"], bench["stats"]
    data = stats.get("data") or ()  # per-round times, when the file kept them
    interval = median_interval(data) if data else (math.nan, math.nan)
    widths = [int(w) for w in info["widths"]]
    flops = info.get("flops")  # None for a user routine: no mode, no FLOP model
    return Row(
        depth=max(len(widths) - 2, 0),
        d_in=widths[0],
        width=max(widths[1:-1], default=0),
        d_out=widths[-1],
        widths=tuple(widths),
        batch=int(info["batch"]),
        dtype=info["dtype"],
        device=info["device"],
        method=info["method"],
        family=info.get("family", ""),
        mode=info.get("mode") or "",
        status=Status.OK,
        median_s=stats["median"],
        ci_low_s=interval[0],
        ci_high_s=interval[1],
        samples=tuple((0, 0, float(t)) for t in data),
        iqr_s=stats["iqr"],
        mean_s=stats["mean"],
        runs=stats["rounds"],
        flops=flops,
        gflops=flops / stats["median"] / 1e9 if flops else float("nan"),
        predicted_mode=info.get("predicted_mode", ""),
        max_rel_err=info.get("max_rel_err", float("nan")),
        source=info.get("source", ""),
        operator=info.get("operator") or "jacobian",
        model=info.get("model") or "mlp",
        other_cores=_number(info.get("other_cores")),
    )


# A run without --out goes under ./jacbench-results/, apart from a checkout's committed results/.
DEFAULT_ROOT = Path("jacbench-results")


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else math.nan


def default_run_dir(device: str, root: Path = DEFAULT_ROOT) -> Path:
    """``jacbench-results/<date>-<device>``, with ``-2``, ``-3``, … when that folder holds a run
    already."""
    base = f"{dt.date.today().isoformat()}-{device.replace(':', '')}"
    candidate, n = root / base, 1
    while (candidate / "results.csv").exists():
        n += 1
        candidate = root / f"{base}-{n}"
    return candidate
