"""Runs over machines: ``submit`` (a sweep as shard jobs with submitit, waited for and
merged) and ``merge`` (a sharded run's shards, or separate runs, joined into one)."""

from __future__ import annotations

import logging
import time as time_module
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from typer.core import TyperGroup

from jacbench.cluster import merging, submission
from jacbench.faces import report
from jacbench.faces.cli import sweep
from jacbench.faces.cli.common import OneOf, console, err_console, fail
from jacbench.runs import harness, results, shards

commands = typer.Typer()

KEEP_NAMES = OneOf(tuple(merging.KEEP_CHOICES))


# ----------------------------------------------------------------------------- merge
@commands.command(short_help="Join a sharded run's shards, or separate runs.")
def merge(
    runs: Annotated[
        list[Path],
        typer.Argument(
            help="A sharded run's folder, or two or more runs to join (folders, sharded or not).",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            help="Where the merged run goes.",
            show_default="a sharded run's own folder; needed for two or more runs",
        ),
    ] = None,
    keep: Annotated[
        str | None,
        typer.Option(
            parser=KEEP_NAMES,
            metavar=KEEP_NAMES.metavar,
            help="Where two runs hold a row with the same key: keep the 'first' or the 'last' "
            "run's row (else the merge is refused).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Join a sharded run's shards into results.csv, meta.json, summary.md and plots, or join
    separate runs (other devices, say) into --out; exit 1 while shards are missing or
    unfinished."""
    if len(runs) == 1:
        _merge_shards(runs[0], out)
        return
    if out is None:
        fail("joining two or more runs needs --out (the folder the merged run goes to)")
    parts = [_run_to_merge(path) for path in runs]
    try:
        merged = merging.merge_runs(parts, keep)
        merging.write_merged(out, merged)
        report.write_report(out, merged.rows, merged.meta, merged.samples)
    except ValueError as error:
        fail(str(error))
    devices = sorted(set(merged.rows["device"]))
    console.print(
        f"Merged {len(merged.rows)} rows of {len(runs)} runs ({', '.join(devices)}) into {out}/",
        highlight=False,
    )


def _run_to_merge(path: Path) -> tuple[str, results.RunData]:
    """One run of several to join: a run folder, or a sharded run's shards merged (with a
    warning where some are missing or unfinished)."""
    try:
        sharded = merging.merge_shards(path) if shards.is_sharded(path) else None
        run = sharded.run if sharded else results.read_run(path)
    except (FileNotFoundError, ValueError) as error:
        fail(str(error))
    if sharded is not None and not sharded.complete:
        err_console.print(
            f"[yellow]Warning:[/] {escape(str(path))}: {sharded.count - len(sharded.finished)} "
            f"of {sharded.count} shards missing or unfinished; merging what is there",
            highlight=False,
        )
    return str(path), run


def _merge_shards(run_dir: Path, out: Path | None) -> None:
    """Join a sharded run's shards; exit 1 while some are missing or unfinished, saying how
    to finish each."""
    if not shards.is_sharded(run_dir):
        fail(
            f"{run_dir} holds no shards (no shards/<i>-of-<n>/); to join separate runs "
            "give two or more and --out"
        )
    try:
        sharded = merging.merge_shards(run_dir)
        merging.write_merged(out or run_dir, sharded.run)
        report.write_report(out or run_dir, sharded.run.rows, sharded.run.meta, sharded.run.samples)
    except ValueError as error:
        fail(str(error))
    parts = sharded.run.meta["parts"]
    console.print(report.shards_table(parts, sharded.count, sharded.missing))
    console.print(
        f"Merged {len(sharded.run.rows)} rows of {len(parts)} shard folders into "
        f"{out or run_dir}/ ({len(sharded.finished)} of {sharded.count} shards finished)",
        highlight=False,
    )
    if sharded.complete:
        return
    for index in sharded.missing:
        err_console.print(
            f"Shard {index}/{sharded.count} is missing: run the same `jacbench run` with "
            f"--shard {index}/{sharded.count} --out {run_dir}",
            highlight=False,
        )
    jobs = {part.get("shard"): (part.get("environment") or {}).get("slurm_job") for part in parts}
    for index, state in sharded.unfinished.items():
        shard = f"{index}/{sharded.count}"
        job = f" (Slurm job {jobs[shard]})" if jobs.get(shard) else ""
        what = "is still running" if state == "running" else "was interrupted"
        todo = "" if state == "running" else f": run it again with --shard {shard} --resume"
        err_console.print(f"Shard {shard}{job} {what}{todo}", highlight=False)
    raise typer.Exit(1)


# ---------------------------------------------------------------------------- submit
# Run options submit sets for each job itself.
_SUBMIT_OWNS = ("--shard", "--out", "--resume", "--resume-if-present", "--dry-run", "--quiet")

Shards = Annotated[
    int, typer.Option("--shards", help="How many shards (jobs) to deal the grid into.", min=1)
]
SubmitOut = Annotated[Path, typer.Option(help="The run folder every shard writes into.")]
Executor = Annotated[
    str, typer.Option(help="slurm (a job array) or local (processes on this machine).")
]
Wait = Annotated[
    bool, typer.Option(help="Wait for the jobs, then merge (--no-wait: submit and return).")
]
TimeLimit = Annotated[
    int | None,
    typer.Option(
        help="Time limit per job, minutes.", show_default="3× the largest shard's estimate"
    ),
]
Partition = Annotated[str | None, typer.Option(help="Slurm partition.")]
GpusPerTask = Annotated[int | None, typer.Option(help="Slurm GPUs per job.", min=0)]
CpusPerTask = Annotated[int | None, typer.Option(help="CPUs per job.", min=1)]
MemGb = Annotated[float | None, typer.Option(help="Memory per job, GB.")]
Parallel = Annotated[
    int | None, typer.Option(help="At most this many Slurm array tasks at once.", min=1)
]
Slurm = Annotated[
    list[str] | None,
    typer.Option(help="Any other sbatch option as KEY=VALUE (repeatable): account=abc."),
]


@commands.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    short_help="Run a sweep as shard jobs with submitit.",
)
def submit(
    ctx: typer.Context,
    shards_count: Shards,
    out: SubmitOut,
    executor: Executor = "local",
    wait: Wait = True,
    time: TimeLimit = None,
    partition: Partition = None,
    gpus_per_task: GpusPerTask = None,
    cpus_per_task: CpusPerTask = None,
    mem_gb: MemGb = None,
    parallel: Parallel = None,
    slurm: Slurm = None,
) -> None:
    """Run a sweep as n shard jobs with submitit (Slurm array or local), wait, and merge.
    Every other option is `jacbench run`'s: `jacbench submit --shards 4 --out R --preset peers`."""
    run_args = list(ctx.args)
    owned = [a.split("=")[0] for a in run_args if a.split("=")[0] in _SUBMIT_OWNS]
    if owned:
        fail(f"submit sets {', '.join(owned)} for each job itself; leave it out")
    slurm_options = _slurm_options(slurm)
    if time is not None and executor == "slurm" and time < submission.MIN_TIMEOUT_MIN:
        fail(
            f"--time {time}: a Slurm job is told to stop up to a minute before its limit; "
            f"give at least {submission.MIN_TIMEOUT_MIN} minutes"
        )
    estimates = _shard_estimates(ctx, run_args, shards_count)
    parameters = submission.executor_parameters(
        timeout_min=time or submission.default_timeout_min(float(estimates["estimated_s"].max())),
        partition=partition,
        gpus_per_task=gpus_per_task,
        cpus_per_task=cpus_per_task,
        mem_gb=mem_gb,
        parallel=parallel,
        slurm_options=slurm_options,
    )
    jobs = _submit_jobs(run_args, shards_count, out, executor, parameters)
    if not wait:
        console.print(f"When they have finished: jacbench merge {out}", highlight=False)
        return
    failed = _wait_for(jobs, executor)
    if not failed:
        _merge_shards(out, None)
        return
    for index, problem in failed:
        job = jobs[index]
        err_console.print(
            f"[bold red]Shard {index}/{shards_count} (job {job.job_id}) failed:[/] "
            f"{escape(problem)} (log: {job.paths.stderr})",
            highlight=False,
        )
    err_console.print(
        f"What finished is in {out}; the same `jacbench submit` again runs only what is "
        f"missing (`jacbench merge {out}` shows it)."
    )
    raise typer.Exit(1)


def _slurm_options(items: list[str] | None) -> dict[str, str]:
    """--slurm KEY=VALUE …, as sbatch options by key."""
    chosen = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--slurm takes KEY=VALUE, got {item!r}")
        chosen[key.strip()] = value.strip()
    return chosen


def _shard_estimates(ctx: typer.Context, run_args: list[str], count: int) -> pd.DataFrame:
    """The run options read as each job's ``jacbench run`` will read them (by run's own
    parser: nothing of run's runs), checked, and dealt into ``count`` shards; the dealing
    printed."""
    root = ctx.find_root()
    assert isinstance(root.command, TyperGroup)  # the jacbench app, whose command run is
    run_command = root.command.get_command(root, "run")
    assert run_command is not None
    parsed = run_command.make_context("run", run_args, parent=root)
    options = sweep.options(parsed.params)
    sweep.note_missing_methods(options)
    try:
        estimates = harness.shard_estimates(options, count)
    except ValueError as error:
        fail(str(error))
    console.print(report.shard_estimates_table(estimates))
    return estimates


def _submit_jobs(
    run_args: list[str], count: int, out: Path, executor: str, parameters: dict[str, Any]
) -> list[Any]:
    """One submitted job per shard, said in one line; a refusal in one line, exit 2."""
    try:
        jobs = submission.submit(run_args, count, out, executor=executor, parameters=parameters)
    except ValueError as error:
        fail(str(error))
    except Exception as error:  # sbatch refused, say: its message in one line
        fail(f"submitting failed: {submission.failure_line(str(error))}")
    console.print(
        f"Submitted {len(jobs)} {executor} jobs: {', '.join(str(j.job_id) for j in jobs)}; "
        f"logs in {out / submission.LOGS_FOLDER}/",
        highlight=False,
    )
    return jobs


def _wait_for(jobs: list, executor: str) -> list[tuple[int, str]]:
    """Wait for every job with a progress bar (submitit's own polling kept quiet); the
    failed ones' indices with why, in one line each."""
    watcher = submission.JobWatcher(jobs, executor)
    progress = Progress(
        SpinnerColumn(),
        TextColumn("shards"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
    )
    quiet = logging.getLogger("submitit")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "Bypassing sacct error …" at every poll without accounting
    try:
        with progress:
            bar = progress.add_task("", total=len(jobs))
            while True:
                done = len(watcher.ended())
                progress.update(bar, completed=done)
                if done == len(jobs):
                    break
                time_module.sleep(1.0)
        failures = [(i, watcher.failure(i)) for i in range(len(jobs))]
    finally:
        quiet.setLevel(level)
    return [(i, problem) for i, problem in failures if problem is not None]
