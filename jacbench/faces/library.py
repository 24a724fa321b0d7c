"""The sweep as a library call: ``jacbench.sweep``, a run folder complete with its summary.

``jacbench.runs.harness`` measures and writes rows; here the folder also gets its summary.md
and plots (``report.write_report``), as ``jacbench run`` writes them.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

import pandas as pd

from jacbench.faces.report import write_report
from jacbench.runs import harness, results
from jacbench.runs.options import SweepOptions


def sweep(methods: Any = None, **keywords: Any) -> pd.DataFrame:
    """Time ``methods`` over a grid of points; the rows as a DataFrame in results.csv's columns.

    Takes ``jacbench.runs.harness.sweep``'s arguments: ``methods`` (names, routine specs or
    callables), the options of ``SweepOptions`` by the names of
    ``jacbench run``'s options (or made, as ``options=``), and ``out``, ``resume``,
    ``shard``, ``command``, ``observer``. With ``out``, the run folder also gets summary.md
    and plots.

    Raises:
        ValueError: a bad option, in one line.
        jacbench.runs.results.RunDirError: ``out`` is in use, holds another run, or is damaged.

    >>> rows = sweep(["forward", "reverse"], depths=[2], d_in=[3], width=[8], d_out=[2],
    ...              min_time=0.01)
    >>> list(rows["method"])
    ['forward', 'reverse']
    """
    frame = harness.sweep(methods, **keywords)
    summarise(frame)
    return frame


def summarise(frame: pd.DataFrame) -> list[Path]:
    """Write summary.md and plots into the run folder a sweep wrote (none: nothing)."""
    run_dir = frame.attrs.get("run_dir")
    if run_dir is None:
        return []
    return write_report(run_dir, frame, results.read_meta(run_dir), frame.attrs.get("samples"))


def _signature() -> inspect.Signature:
    """``sweep``'s signature spelled out, for help() and editors: methods, the run folder's
    keywords, then every option."""
    run = inspect.signature(harness.sweep).parameters
    options = [
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default)
        for f in dataclasses.fields(SweepOptions)
        if f.name != "methods"
    ]
    named = [p for name, p in run.items() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    return inspect.Signature([*named, *options], return_annotation=pd.DataFrame)


sweep.__signature__ = _signature()  # type: ignore[attr-defined]
