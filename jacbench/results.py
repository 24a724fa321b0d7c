"""Result files of a run: ``results/<run>/results.csv`` and ``meta.json``.

Rows are appended, flushed and fsynced one by one, so a run killed at any moment (even by
SIGKILL) keeps every row it finished; a torn last line is cut off when the run is resumed.
``meta.json`` is replaced atomically (write a temporary file, then rename).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import platform
import subprocess
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import torch

import jacbench

COLUMNS = (
    "depth",
    "d_in",
    "width",
    "d_out",
    "widths",
    "batch",
    "dtype",
    "device",
    "method",
    "family",
    "mode",
    "status",
    "median_s",
    "iqr_s",
    "mean_s",
    "runs",
    "noisy",
    "flops",
    "elementwise_flops",
    "gflops",
    "predicted_mode",
    "max_rel_err",
    "memory_bytes",
    "peak_memory_bytes",
    "bound_s",
    "efficiency",
    "compile_s",
    "message",
)

KEY_COLUMNS = ("widths", "batch", "dtype", "device", "method")


class RunDirError(ValueError):
    """The output folder cannot hold this run."""


def _repair_torn_tail(path: Path) -> None:
    """Cut a partial last line left by a killed writer."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)


def row_key(row: dict) -> tuple:
    return tuple(str(row[c]) for c in KEY_COLUMNS)


class RunWriter:
    """Appends rows to ``results.csv`` in ``run_dir`` and keeps ``meta.json`` up to date."""

    def __init__(self, run_dir: Path, params: dict, *, resume: bool = False) -> None:
        self.run_dir = Path(run_dir)
        self.csv_path = self.run_dir / "results.csv"
        self.meta_path = self.run_dir / "meta.json"
        self.params = params
        old_meta = read_meta(self.run_dir) if self.meta_path.exists() else None
        if self.csv_path.exists() and not resume:
            if old_meta is not None and old_meta.get("params") != params:
                raise RunDirError(
                    f"{self.run_dir} holds a run with other parameters; "
                    "choose another --out, or pass --resume to extend it"
                )
            raise RunDirError(
                f"{self.run_dir} already holds this run; pass --resume to finish it, "
                "or choose another --out"
            )
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            probe = self.run_dir / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as error:
            raise RunDirError(f"cannot write to {self.run_dir}: {error.strerror}") from None
        if self.csv_path.exists():
            _repair_torn_tail(self.csv_path)
        self.done = {row_key(r) for r in _read_rows(self.csv_path)}
        self.meta = old_meta or {}
        self.write_meta()  # the parameters are on disk before the first row

    def append(self, row: dict) -> None:
        """Write one row and push it to disk before returning; a row already there is skipped."""
        key = row_key(row)
        if key in self.done:
            return
        new_file = not self.csv_path.exists() or self.csv_path.stat().st_size == 0
        with self.csv_path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerow({c: row.get(c, "") for c in COLUMNS})
            handle.flush()
            os.fsync(handle.fileno())
        self.done.add(key)

    def write_meta(self, **fields) -> None:
        self.meta.update(fields)
        self.meta["params"] = self.params
        write_json_atomic(self.meta_path, self.meta)


def _read_rows(path: Path) -> Iterable[dict]:
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def read_meta(run_dir: Path) -> dict:
    path = Path(run_dir) / "meta.json"
    return json.loads(path.read_text()) if path.exists() else {}


def read_results(run_dir_or_csv: Path | str) -> pd.DataFrame:
    """The rows of a run as a DataFrame (a run folder or a results.csv path).

    Raises:
        FileNotFoundError: no results.csv there.
    """
    path = Path(run_dir_or_csv)
    if path.is_dir():
        path = path / "results.csv"
    if not path.exists():
        raise FileNotFoundError(f"no results.csv at {path}")
    frame = pd.read_csv(path, keep_default_na=True)
    missing = [c for c in KEY_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path} is not a jacbench results file (missing {', '.join(missing)})")
    return frame


def read_pytest_benchmark(path: Path | str) -> pd.DataFrame:
    """Rows in results.csv's columns from a pytest-benchmark JSON saved from ``benchmarks/``.

    Each benchmark's ``extra_info`` carries the shape, method and FLOPs; its stats the times.

    Raises:
        FileNotFoundError, ValueError: no such file, or not a jacbench benchmark file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no pytest-benchmark file at {path}")
    try:
        data = json.loads(path.read_text())
        benchmarks = data["benchmarks"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ValueError(f"{path} is not a pytest-benchmark JSON file") from None
    rows = []
    for bench in benchmarks:
        info, stats = bench.get("extra_info", {}), bench["stats"]
        if "widths" not in info or "method" not in info:
            continue
        widths = [int(w) for w in info["widths"]]
        rows.append(
            {
                "depth": len(widths) - 2,
                "d_in": widths[0],
                "width": max(widths[1:-1]),
                "d_out": widths[-1],
                "widths": "-".join(map(str, widths)),
                "batch": info["batch"],
                "dtype": info["dtype"],
                "device": info["device"],
                "method": info["method"],
                "family": info.get("family", ""),
                "status": "ok",
                "median_s": stats["median"],
                "iqr_s": stats["iqr"],
                "mean_s": stats["mean"],
                "runs": stats["rounds"],
                "flops": info.get("flops"),
                "gflops": info["flops"] / stats["median"] / 1e9 if info.get("flops") else None,
                "predicted_mode": info.get("predicted_mode"),
                "max_rel_err": info.get("max_rel_err"),
            }
        )
    if not rows:
        raise ValueError(f"{path} holds no jacbench benchmarks (run `pytest benchmarks/`)")
    return pd.DataFrame(rows).reindex(columns=COLUMNS)


def default_run_dir(device: str, root: Path = Path("results")) -> Path:
    """``results/<date>-<device>``, with ``-2``, ``-3``, … when that folder holds a run already."""
    base = f"{dt.date.today().isoformat()}-{device.replace(':', '')}"
    candidate, n = root / base, 1
    while (candidate / "results.csv").exists():
        n += 1
        candidate = root / f"{base}-{n}"
    return candidate


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment(device: str = "cpu") -> dict:
    """Versions, device, CPU model, threads and git commit: what meta.json and ``info`` report."""
    dev = torch.device(device)
    cuda = torch.cuda.is_available()
    return {
        "jacbench": jacbench.__version__,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" and cuda else None,
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "git_commit": _git_commit(),
    }


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
