"""``jacbench run``: sweep methods over a grid of shapes, time them, write the run folder."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from jacbench.faces import library, report
from jacbench.faces.cli import sweep
from jacbench.faces.cli.common import (
    ListOptionsCommand,
    ProgressBar,
    SandboxUser,
    command_line,
    console,
    err_console,
    fail,
    interrupted_code,
    print_unsealed,
    seal_as,
    stopped_by,
    terminated_as_interrupt,
)
from jacbench.runs import harness, models, results, sandbox, shards
from jacbench.runs.options import DEFAULT_CALL_TIMEOUT, DEFAULT_MAX_CALL_TIME, SweepOptions
from jacbench.runs.settings import options_of

commands = typer.Typer()

# run's own options, beside the sweep's (sweep.py)
Out = Annotated[
    Path | None,
    typer.Option(help="Run folder.", show_default="jacbench-results/<date>-<device>"),
]
Resume = Annotated[bool, typer.Option(help="Continue the run in --out, skipping rows it holds.")]
ResumeIfPresent = Annotated[
    bool,
    typer.Option(
        help="Continue the run in --out where it holds one, else start it: for a job that "
        "may run again (a Slurm array task, a requeue). A finished run is left as it is."
    ),
]
Quiet = Annotated[bool, typer.Option("--quiet", help="No progress bar or table.")]
Shard = Annotated[
    str | None,
    typer.Option(
        help="Run only shard i of n (i/n, 0 ≤ i < n): points dealt by estimated time, "
        "written to OUT/shards/<i>-of-<n>/; join with `jacbench merge OUT`. 'all': the "
        "whole grid even inside a Slurm job array.",
        show_default="from SLURM_ARRAY_TASK_ID/_COUNT/_MIN, else the whole grid",
    ),
]
DryRun = Annotated[
    bool,
    typer.Option(
        "--dry-run", help="Print what would run (per shard: points, tasks, time) and stop."
    ),
]


@commands.command(
    cls=ListOptionsCommand, short_help="Sweep methods over a grid of shapes and time them."
)
def run(
    ctx: typer.Context,
    device: sweep.Device = "cpu",
    depths: sweep.Depths = None,
    d_in: sweep.DIn = None,
    width: sweep.Width = None,
    d_out: sweep.DOut = None,
    batch: sweep.Batch = None,
    dtype: sweep.Dtypes = sweep.DEFAULT_DTYPES,
    methods: sweep.Methods = None,
    model: sweep.Model = None,
    params: sweep.Params = None,
    preset: sweep.Preset = "quick",
    operator: sweep.Operator = None,
    min_time: sweep.MinTime = None,
    max_call_time: sweep.MaxCallTime = DEFAULT_MAX_CALL_TIME,
    call_timeout: sweep.CallTimeout = DEFAULT_CALL_TIMEOUT,
    rounds: sweep.Rounds = 1,
    processes: sweep.Processes = 1,
    threads: sweep.Threads = None,
    seed: sweep.Seed = 0,
    init: sweep.Init = "lecun",
    activation: sweep.Activation = "tanh",
    no_validate: sweep.NoValidate = False,
    peak: sweep.Peak = True,
    out: Out = None,
    resume: Resume = False,
    resume_if_present: ResumeIfPresent = False,
    quiet: Quiet = False,
    compile_: sweep.Compile = False,
    cuda_graphs: sweep.CudaGraphs = False,
    fused_: sweep.Fused = False,
    shard: Shard = None,
    dry_run: DryRun = False,
    sandbox_user: SandboxUser = sandbox.DEFAULT_USER,
) -> None:
    """Sweep methods over a grid of shapes; write results.csv, meta.json, summary.md and plots."""
    seal_as(sandbox_user)
    # The sweep's options are read from ctx.params (the values above, by name), as submit
    # reads them from the run options it passes on.
    options = sweep.options(ctx.params)
    if resume and resume_if_present:
        fail("give --resume or --resume-if-present, not both")
    if resume and out is not None:
        options = _resumed(ctx, options, out)
    if not quiet:
        sweep.note_missing_methods(options)
    part = _shard_option(shard)
    if dry_run:
        try:
            estimates = harness.shard_estimates(options, part.count if part else 1)
        except ValueError as error:
            fail(str(error))
        console.print(report.shard_estimates_table(estimates, part))
        return
    run_dir = out or _default_out(options.device, part)
    resuming = results.IF_PRESENT if resume_if_present else resume
    frame = _sweep(options, run_dir, resuming, part, command_line(ctx), quiet)
    _print_run(frame, run_dir, part, quiet)


# A sweep option's field, by the name of the run parameter that offers it (others: the same).
_FIELDS = {"no_validate": "validate", "peak": "peaks", "compile_": "methods",
           "cuda_graphs": "methods", "fused_": "methods"}  # fmt: skip


def _resumed(ctx: typer.Context, given: SweepOptions, out: Path) -> SweepOptions:
    """--resume: the run in OUT exactly as meta.json records it; an option typed that
    differs from it is refused, by name."""
    try:
        recorded = results.read_settings(results.read_meta(out))
        if not recorded:
            fail(f"nothing to resume in {out}: it holds no run")
        made = options_of(recorded)
    except ValueError as error:
        fail(str(error))
    typed = {
        _FIELDS.get(name, name)
        for name in ctx.params
        if (source := ctx.get_parameter_source(name)) is not None and source.name == "COMMANDLINE"
    }
    differ = [
        f"--{name.replace('_', '-')} {_shown(getattr(given, name))} (the run's: "
        f"{_shown(getattr(made, name))})"
        for name in sorted(typed & {f.name for f in dataclasses.fields(SweepOptions)})
        if getattr(given, name) != getattr(made, name)
    ]
    if differ:
        fail(
            f"--resume continues the run in {out} as it was made; not as asked: {'; '.join(differ)}"
        )
    return made


def _shown(value: object) -> str:
    if isinstance(value, tuple):
        return " ".join(_shown(v) for v in value) or "none"
    return "none" if value is None else str(value)


def _sweep(
    options: SweepOptions,
    run_dir: Path,
    resume: bool | str,
    part: shards.Shard | None,
    command: str,
    quiet: bool,
) -> pd.DataFrame:
    """The sweep, with a progress bar; an interrupt says what was kept and how to go on."""
    progress = ProgressBar(quiet)
    try:
        with progress.progress, terminated_as_interrupt():
            return library.sweep(
                options=options,
                out=run_dir,
                resume=resume,
                shard=part,
                command=command,
                observer=progress,
            )
    except ValueError as error:  # RunDirError and ResultsFileError are ValueErrors
        fail(str(error))
    except KeyboardInterrupt as stop:
        folder = shards.shard_dir(run_dir, part) if part else run_dir
        again = f" --shard {part}" if part else ""
        if (folder / "results.csv").exists():
            err_console.print(
                f"{stopped_by(stop)}: {progress.rows} new rows kept in "
                f"{folder / 'results.csv'}; continue with{again} --out {run_dir} --resume"
            )
        else:
            err_console.print(f"{stopped_by(stop)} before the run wrote anything")
        raise typer.Exit(interrupted_code(stop)) from None


def _print_run(frame: pd.DataFrame, run_dir: Path, part: shards.Shard | None, quiet: bool) -> None:
    """The run's tables, where its files are, and every failed row (then exit 1)."""
    if not quiet and not frame.empty:
        methods_run = list(dict.fromkeys(frame["method"]))
        samples = frame.attrs.get("samples")
        for shown in report.summary_tables(frame, samples, methods_run, accuracy=True):
            console.print(shown)
    for label, takes in (frame.attrs.get("models") or {}).items():
        if takes != models.TAKES["batch"]:  # said where jacbench batches the model
            console.print(f"{label} {takes}.", highlight=False)
    folder = shards.shard_dir(run_dir, part) if part else run_dir
    written = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    console.print(f"Results: {folder}/ ({', '.join(written)})")
    if part:
        console.print(
            f"Shard {part} finished ({len(frame)} rows). When every shard has: "
            f"jacbench merge {run_dir}",
            highlight=False,
        )
    busy = report.busy_warning({}, frame)
    if busy:  # said at the end, where it is read: the summary says it too
        err_console.print(busy, highlight=False, soft_wrap=True)
    stalled = report.pool_warning(frame.attrs.get("thread_pool"))
    if stalled:
        err_console.print(f"Warning: {stalled}", highlight=False, soft_wrap=True)
    print_unsealed()
    failures = harness.failed_rows(frame)
    if not failures.empty:
        for _, row in failures.iterrows():
            err_console.print(report.failure_line(row), highlight=False)
        raise typer.Exit(1)


def _shard_option(text: str | None) -> shards.Shard | None:
    """--shard i/n, else the Slurm array task's shard; None for the whole grid."""
    try:
        if text is None:
            return shards.from_environment()
        return None if text.strip() == "all" else shards.parse_shard(text)
    except ValueError as error:
        fail(str(error))


def _default_out(device: str, part: shards.Shard | None) -> Path:
    """jacbench-results/<date>-<device>; for a shard, one folder every shard agrees on."""
    if part is None:
        return results.default_run_dir(device)
    job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if job:  # every task of one array shares the array's job id
        return results.DEFAULT_ROOT / f"slurm-{job}-{device.replace(':', '')}"
    fail("a shard needs --out: every shard of a run writes into the same folder")
