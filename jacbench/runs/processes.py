"""The same sweep measured in N fresh processes, one after another, and pooled (pyperf's way).

One process sees one draw of the things that drift between runs: memory layout, which
core the scheduler picked, clock state, allocator caches. Its samples describe only the
noise within that draw, so a comparison of two single-process runs can call drift a
difference. Measuring in several fresh processes and pooling their samples puts the
spread between processes into the numbers (and into the intervals, which resample
processes first: ``stats.ratio_interval``).

Each process writes its own run folder, ``<run>/processes/<i>/``, so a killed
``--processes`` run keeps every process that finished and every row of the one that did
not; ``--resume`` finishes them. The pooled rows go to ``<run>/results.csv`` and
``<run>/samples.csv`` (with each block's ``process``) once all have finished.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from pathlib import Path

from jacbench.measure import timing
from jacbench.measure.rows import KEY_COLUMNS, TIMED_STATUSES, Row
from jacbench.runs import results

PROCESSES_FOLDER = "processes"


def process_dir(run_dir: Path, index: int) -> Path:
    """Where process ``index`` of a pooled run writes its own run folder."""
    return Path(run_dir) / PROCESSES_FOLDER / str(index)


def measure_in_processes(
    sweep: Callable[[Path, bool], object], processes: int, run_dir: Path, resume: bool
) -> list[results.RunData]:
    """Run ``sweep(folder, resume)`` in ``processes`` fresh interpreters, one at a time.

    ``sweep`` (picklable: a module's function, or a partial of one) writes a run into
    ``folder``, ``process_dir(run_dir, i)`` for process i; a folder that holds rows is resumed
    when ``resume`` is set. Returns every process's run as read back.

    Raises:
        results.RunDirError: a process failed (its folder keeps what it finished).
    """
    context = multiprocessing.get_context("spawn")  # fresh interpreters, not forks
    for index in range(processes):
        folder = process_dir(run_dir, index)
        again = resume and (folder / "meta.json").exists()
        child = context.Process(target=sweep, args=(folder, again))
        child.start()
        try:
            child.join()
        except BaseException:
            child.terminate()
            child.join()
            raise
        if child.exitcode != 0:
            raise results.RunDirError(
                f"process {index + 1} of {processes} failed (exit code {child.exitcode}); "
                f"what it finished is in {folder}"
            )
    return [results.read_run(process_dir(run_dir, i)) for i in range(processes)]


def pool(runs: list[results.RunData]) -> list[Row]:
    """One row per key: every process's samples pooled, statistics computed from them.

    A row that any process did not time (wrong, error, oom, …) is that process's row:
    a method wrong once is wrong.
    """
    keys = list(KEY_COLUMNS)
    frames = [run.rows.set_index(keys, drop=False) for run in runs]
    samples = [run.samples.groupby(keys, sort=False) for run in runs]
    pooled = []
    for key in frames[0].index:
        records = [f.loc[key].to_dict() for f in frames if key in f.index]
        failed = [r for r in records if r["status"] not in TIMED_STATUSES]
        row = Row.from_record(failed[0] if failed else records[0])
        if failed or len(records) < len(runs):
            pooled.append(row)
            continue
        blocks = []
        for index, grouped in enumerate(samples):
            if key in grouped.groups:
                part = grouped.get_group(key)
                blocks += [
                    (index, int(r), float(t)) for r, t in zip(part["round"], part["seconds"])
                ]
        if not blocks:  # a run without samples: nothing to pool
            pooled.append(row)
            continue
        row.set_timing(timing.Measurement(tuple(t for _, _, t in blocks)))
        row.samples = tuple(blocks)
        pooled.append(row)
    return pooled
