"""A run's results read back: ``report`` (its summary.md and plots re-rendered) and
``compare`` (two runs' times, row by row, with verdicts)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from jacbench.faces import report
from jacbench.faces.cli.common import console, err_console, fail
from jacbench.measure import stats
from jacbench.measure.rows import ResultsFileError
from jacbench.runs import results

commands = typer.Typer()


# ---------------------------------------------------------------------------- report
@commands.command("report", short_help="Re-render a run's summary.md and plots.")
def report_command(
    run_dir: Annotated[
        Path | None, typer.Argument(help="A run folder holding results.csv.", show_default=False)
    ] = None,
    pytest_benchmark: Annotated[
        Path | None,
        typer.Option(help="A pytest-benchmark JSON (from `pytest benchmarks/ --benchmark-json`)."),
    ] = None,
) -> None:
    """Re-render a run's summary.md and plots, or summarise a pytest-benchmark JSON."""
    if pytest_benchmark is not None and run_dir is None:
        run = _read_run(pytest_benchmark)
        for shown in report.summary_tables(run.rows, run.samples):
            console.print(shown)
        meta = {**run.meta, "command": str(pytest_benchmark)}
        console.print(report.summary_markdown(run.rows, meta, samples=run.samples))
        return
    if run_dir is None or pytest_benchmark is not None:
        fail("give a RUN_DIR or --pytest-benchmark FILE.json (one of them)")
    run = _read_run(run_dir)
    folder = run_dir if run_dir.is_dir() else run_dir.parent
    written = report.write_report(folder, run.rows, run.meta, run.samples)
    methods = run.meta.get("params", {}).get("methods")
    for shown in report.summary_tables(run.rows, run.samples, methods):
        console.print(shown)
    console.print(f"Wrote {', '.join(str(p) for p in written)}")


def _read_run(path: Path) -> results.RunData:
    """A run folder, its results.csv or a pytest-benchmark JSON; one line where it cannot."""
    try:
        return results.read_run(path)
    except (FileNotFoundError, ResultsFileError) as error:
        fail(str(error))


# --------------------------------------------------------------------------- compare
def parse_threshold(text: str) -> float:
    """A share from ``10%`` or ``0.1``."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        fail(f"--threshold takes a share like 10% or 0.1, got {text!r}")
    if not value >= 0 or math.isinf(value):
        fail(f"--threshold must be ≥ 0, got {text!r}")
    return value


@commands.command(short_help="Time ratios of two runs, with verdicts.")
def compare(
    run_a: Annotated[
        Path,
        typer.Argument(
            help="The baseline: a run folder, its results.csv, or a pytest-benchmark JSON."
        ),
    ],
    run_b: Annotated[Path, typer.Argument(help="The run to compare with it (the same kinds).")],
    threshold: Annotated[
        str,
        typer.Option(
            help="A row regressed when its whole 95% interval of B/A lies above 1 + this "
            "(e.g. 10% or 0.1)."
        ),
    ] = "10%",
    force: Annotated[
        bool, typer.Option("--force", help="Compare even when device, dtype or torch differ.")
    ] = False,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Print a Markdown table instead of a rich one.")
    ] = False,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the comparison to this JSON file.")
    ] = None,
) -> None:
    """Per-row time ratio RUN_B/RUN_A with a 95% bootstrap interval and a verdict (faster, slower,
    same); exit 1 only when a row regressed significantly past --threshold."""
    share = parse_threshold(threshold)
    runs = [_read_run(run_a), _read_run(run_b)]
    refusals, warnings = results.run_differences(*runs)
    if refusals and not force:
        fail(
            f"the runs differ in {'; '.join(refusals)}: their times do not compare "
            "(--force to compare anyway)"
        )
    for warning in [*refusals, *warnings]:
        err_console.print(
            f"[yellow]Warning:[/] the runs differ in {escape(warning)}", highlight=False
        )
    merged = stats.compare_runs(runs[0].rows, runs[0].samples, runs[1].rows, runs[1].samples, share)
    if merged.empty:
        fail(f"{run_a} and {run_b} have no timed rows in common")
    label_a, label_b = _run_label(run_a), _run_label(run_b)
    if label_a == label_b:
        label_a, label_b = "A", "B"
    if markdown:
        print(report.compare_markdown(merged, share, label_a, label_b), end="")
    else:
        console.print(report.compare_table(merged, share, label_a, label_b))
    console.print(report.compare_sentence(merged, share), highlight=False)
    if json_path is not None:
        document = {
            "a": str(run_a),
            "b": str(run_b),
            "threshold": share,
            "level": stats.LEVEL,
            "rows": report.compare_records(merged),
        }
        try:
            results.write_json_atomic(json_path, document)
        except OSError as error:
            fail(f"cannot write {json_path}: {error.strerror}")
    if merged["regressed"].any():
        raise typer.Exit(1)


def _run_label(path: Path) -> str:
    """A run's name for table headers: its folder's name."""
    path = path.resolve()
    return path.parent.name if path.name == "results.csv" else path.name
