"""The sweep: a grid's tasks run in order, their rows yielded and written.

``sweep`` is the library call behind ``jacbench run``: options in, resolved once into
``Settings`` (``jacbench.runs.settings``), every task run through the one pipeline
(``jacbench.runs.tasks``), a results DataFrame out, optionally a run folder written row by
row. A run measures one operator (the Jacobian by default): every method's result is checked
against that operator's float64 reference. Nothing here prints: presentation belongs to
the faces.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import torch

from jacbench.ad import generic, ties
from jacbench.ad.jacobians import jacobian, jacobian_forward, jacobian_mixed, jacobian_reverse
from jacbench.ad.networks import MLP
from jacbench.measure import allocator, device_lock, threads, tuning
from jacbench.measure.peaks import measure_peaks
from jacbench.measure.rows import (
    FAILED_STATUSES,
    Row,
    RowKey,
    format_widths,
    samples_frame,
    typed_frame,
)
from jacbench.measure.threads import PoolCheck
from jacbench.runs import processes as pool_processes
from jacbench.runs import results, sandbox, shards
from jacbench.runs.grid import DTYPES, Point
from jacbench.runs.methods import Method
from jacbench.runs.options import MethodLike, SweepOptions
from jacbench.runs.settings import Build, Settings, options_of, resolve
from jacbench.runs.tasks import Instruments, PointTasks, run_point


def pending(settings: Settings, done: Iterable[RowKey] = ()) -> list[tuple[Point, Method]]:
    """The (point, method) tasks of ``settings`` not among the rows ``done``, in order."""
    skip = frozenset(done)
    return [
        (point, method)
        for point in settings.points
        for method in settings.methods
        if point.key(method.name) not in skip
    ]


def run_sweep(
    settings: Settings, instruments: Instruments | None = None, done: Iterable[RowKey] = ()
) -> Iterator[Row]:
    """Yield one row per task of ``settings`` not ``done``, in order, as each finishes."""
    tasks = pending(settings, done)
    for point, group in itertools.groupby(tasks, key=lambda task: task[0]):
        methods = [method for _, method in group]
        yield from run_point(point, methods, settings, instruments or Instruments())


class SweepObserver(Protocol):
    """What a caller of ``sweep`` is told as the run goes (a progress bar, say)."""

    def start(self, tasks: Sequence[tuple[Point, Method]], done: int) -> None:
        """The tasks still to run, and how many rows the run folder held already."""

    def finished(self, row: Row) -> None:
        """A row was measured (and written, when the run has a folder)."""

    def waiting(self, message: str) -> None:
        """The sweep waits for its device: another jacbench run is timing there
        (``jacbench.measure.device_lock``). Optional: an observer without it is not told."""


def sweep(
    methods: Sequence[MethodLike] | None = None,
    *,
    out: str | Path | None = None,
    resume: bool | str = False,
    shard: shards.Shard | str | None = None,
    shard_folder: bool = True,
    command: str | None = None,
    observer: SweepObserver | None = None,
    options: SweepOptions | None = None,
    **keywords: Any,
) -> pd.DataFrame:
    """Time ``methods`` over a grid of points; the rows as a DataFrame in results.csv's columns.

    ``keywords`` are ``SweepOptions``' fields, by the names of
    ``jacbench run``'s options (the grid, dtype, device, timing, network); or pass them made
    as ``options`` (then nothing else of theirs, ``methods`` included). ``methods`` are
    names from ``jacbench.runs.methods.METHODS``, user routines as ``"path/file.py:function"``
    / ``"module:function"`` strings or callables (``jacbench.runs.routines``); default: the
    preset's, else every installed method of the operator.

    Args:
        out: a run folder to write (results.csv, samples.csv, meta.json), locked while the
            run writes; ``resume`` continues one, skipping the rows it holds (``"if-present"``:
            where the folder holds one, else starts it); a finished run with no row left to
            do is returned as it is, its meta.json untouched.
        shard: run only this share of the grid, ``"i/n"`` or a ``shards.Shard`` (points
            dealt by estimated time, ``jacbench.runs.shards``); with ``out`` it writes
            ``out/shards/<i>-of-<n>/`` (or ``out`` itself when ``shard_folder`` is False),
            and ``jacbench.cluster.merging.merge_shards(out)`` joins the shards.
        command: the command line to record in meta.json.
        observer: told the tasks at the start and each row as it finishes.

    Returns:
        Every row of the run (with ``out`` and ``resume``: the folder's earlier rows too);
        ``attrs["samples"]`` holds their samples, ``attrs["run_dir"]`` the folder written.

    Raises:
        ValueError: a bad option, in one line.
        results.RunDirError: ``out`` is in use, holds another run, or is damaged.
    """
    if options is None and resume is True and out is not None and methods is None and not keywords:
        options = _resumed(Path(out))  # the folder's own run, exactly
    elif options is None:
        options = SweepOptions.from_keywords({"methods": methods, **keywords})
    elif methods is not None or keywords:
        raise ValueError("give the options as keywords or as options=, not both")
    with torch_state_kept(), sandbox.closing_all():
        return _sweep(options, out, resume, shard, shard_folder, command, observer)


def _resumed(out: Path) -> SweepOptions:
    """The options of the run in ``out``, as its meta.json records them.

    Raises:
        results.RunDirError: the folder holds no run.
    """
    try:
        recorded = results.read_settings(results.read_meta(out))
    except ValueError as error:
        raise results.RunDirError(f"{error}; refusing to touch this folder") from None
    if not recorded:
        raise results.RunDirError(f"nothing to resume in {out}: it holds no run")
    return options_of(recorded)


@contextlib.contextmanager
def torch_state_kept() -> Iterator[None]:
    """torch's global state (threads, default dtype, grad mode, the CPU's random generator)
    as the caller had it, after the block, whatever it or a routine run here changed."""
    threads, dtype, grad = (
        torch.get_num_threads(),
        torch.get_default_dtype(),
        torch.is_grad_enabled(),
    )
    generator = torch.get_rng_state()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.set_default_dtype(dtype)
        torch.set_grad_enabled(grad)
        torch.set_rng_state(generator)


def _sweep(
    options: SweepOptions,
    out: str | Path | None,
    resume: bool | str,
    shard: shards.Shard | str | None,
    shard_folder: bool,
    command: str | None,
    observer: SweepObserver | None,
) -> pd.DataFrame:
    settings = resolve(options)
    if isinstance(shard, str):
        shard = shards.parse_shard(shard)
    grid_index = {point: i for i, point in enumerate(settings.points)}  # a merge restores it
    if shard is not None:
        dealt = shards.deal(
            list(settings.points), list(settings.methods), shard.count, settings.timing.min_time
        )
        settings = replace(settings, points=tuple(dealt[shard.index]), shards=shard.count)
        if out is not None:
            out = _shard_out(Path(out), shard, shard_folder)
    elif out is not None and shards.is_sharded(out):
        raise results.RunDirError(
            f"{out} holds a sharded run: run its shards with --shard i/n, or join them with "
            f"`jacbench merge {out}`"
        )
    run = _Run(settings, shard, grid_index, command, observer)
    if settings.timing.processes > 1:
        return _sweep_in_processes(run, out, resume)
    if out is None:
        with _device(settings.device, observer):
            instruments = _prepare(settings)
            rows = _collect(settings, instruments, (), observer, None)
        frame = typed_frame([r.as_dict() for r in rows])
        frame.attrs["samples"] = samples_frame(rows)
        frame.attrs["thread_pool"] = instruments.pool
        frame.attrs["models"] = dict(settings.takes)
        return frame
    return _sweep_into(run, Path(out), resume)


class _Run:
    """One sweep under way: its settings, its shard, and who to tell."""

    def __init__(
        self,
        settings: Settings,
        shard: shards.Shard | None,
        grid_index: Mapping[Point, int],
        command: str | None,
        observer: SweepObserver | None,
    ) -> None:
        self.settings, self.shard, self.grid_index = settings, shard, grid_index
        self.command, self.observer = command, observer

    def writer(self, out: Path, resume: bool | str) -> results.RunWriter:
        """The run folder's writer, holding these settings."""
        return results.RunWriter(out, self.settings.to_meta(), resume=resume)

    def start_meta(self, writer: results.RunWriter, **fields: Any) -> None:
        """The run's meta.json before its first row, with ``fields`` (peaks, tuning, …). A
        resumed run keeps the command and start that made it, and adds its own to
        ``resumed``."""
        first: dict[str, Any] = {"command": self.command, "started": results.now_iso()}
        if writer.resume and writer.meta.get("started"):
            resumed = [*writer.meta.get("resumed", []), first]
            first = {"resumed": resumed}
        writer.write_meta(
            **first,
            finished=None,
            environment=results.environment(self.settings.device),
            machine_at_start=results.machine_state(),
            **fields,
            **_shard_fields(self.shard, self.settings, self.grid_index),
        )


def _sweep_into(run: _Run, out: Path, resume: bool | str) -> pd.DataFrame:
    """The sweep, written row by row into the run folder ``out``."""
    settings = run.settings
    with run.writer(out, resume) as writer:
        if writer.finished and not pending(settings, writer.done):
            return _finished_frame(writer)  # nothing to do: the folder stays as it was
        with _device(settings.device, run.observer):
            instruments = _prepare(settings)
            run.start_meta(
                writer,
                peaks={name: p.as_dict() for name, p in instruments.peaks.items()},
                tuning=instruments.tuning.as_dict() if instruments.tuning is not None else None,
                thread_pool=instruments.pool.as_dict() if instruments.pool is not None else None,
                allocator=allocator.allocator_settings(),
                routines={m.name: m.description for m in settings.methods if m.source},
                models=dict(settings.takes),
            )
            try:
                _collect(settings, instruments, writer.done, run.observer, writer)
            except KeyboardInterrupt:
                writer.write_meta(
                    finished=None,
                    interrupted=results.now_iso(),
                    machine_at_end=results.machine_state(),
                )
                raise
            writer.write_meta(finished=results.now_iso(), machine_at_end=results.machine_state())
        writer.ensure_header()  # a shard may be dealt no point: its results.csv is a header
        return _finished_frame(writer)


def _finished_frame(writer: results.RunWriter) -> pd.DataFrame:
    """The rows of the run folder ``writer`` writes, with its samples and folder as attrs."""
    frame = results.read_results(writer.run_dir)
    frame.attrs["samples"] = results.read_samples(writer.run_dir)
    frame.attrs["run_dir"] = writer.run_dir
    frame.attrs["thread_pool"] = PoolCheck.of_dict(writer.meta.get("thread_pool"))
    frame.attrs["models"] = writer.meta.get("models") or {}
    return frame


def shard_estimates(options: SweepOptions, shards_count: int = 1) -> pd.DataFrame:
    """What a sweep with these options would run, dealt into ``shards_count`` shards: per
    shard its points, tasks and estimated seconds (``jacbench run --dry-run``). Nothing is
    built or timed; the options are checked as ``sweep`` checks them.
    """
    settings = resolve(options)
    if shards_count < 1:
        raise ValueError(f"a run has at least 1 shard, got {shards_count}")
    count, min_time = len(settings.methods), settings.timing.min_time
    parts = shards.deal(list(settings.points), list(settings.methods), shards_count, min_time)
    return pd.DataFrame(
        {
            "shard": range(shards_count),
            "points": [len(part) for part in parts],
            "tasks": [len(part) * count for part in parts],
            "estimated_s": [shards.estimated_total(p, count, min_time) for p in parts],
        }
    )


def _shard_out(out: Path, shard: shards.Shard, shard_folder: bool) -> Path:
    """The folder a shard writes: ``out/shards/<i>-of-<n>/`` (refusing an unsharded run's
    folder), or ``out`` itself when the caller already chose the shard's folder."""
    if not shard_folder:
        return out
    try:
        meta = results.read_meta(out)
    except ValueError:
        meta = {}
    if results.read_settings(meta) and "merged" not in meta:  # a merge's shards may run again
        raise results.RunDirError(f"{out} holds an unsharded run; give the shards another --out")
    return shards.shard_dir(out, shard)


def _shard_fields(
    shard: shards.Shard | None, settings: Settings, grid_index: Mapping[Point, int]
) -> dict[str, Any]:
    """meta.json's ``shard`` (none for an unsharded run): which part this is, what it was
    dealt, and where each of its points stands in the whole grid (the order a merge puts
    the rows back in)."""
    if shard is None:
        return {}
    points, count = settings.points, len(settings.methods)
    estimate = shards.estimated_total(points, count, settings.timing.min_time)
    record = {
        "index": shard.index,
        "count": shard.count,
        "points": len(points),
        "tasks": len(points) * count,
        "estimated_s": round(estimate, 3),
        "grid": [
            [format_widths(p.widths), p.batch, p.dtype, p.device, grid_index[p]] for p in points
        ],
    }
    return {"shard": record}


def _device(device: str, observer: SweepObserver | None) -> contextlib.AbstractContextManager:
    """The device's timing locks (``jacbench.measure.device_lock``), telling the observer of a
    wait."""
    return device_lock.hold(device, getattr(observer, "waiting", None))


def _child_sweep(options: SweepOptions, shard: str | None, out: Path, resume: bool) -> None:
    """One process of a pooled run (``jacbench.runs.processes``), in a fresh interpreter: the
    same grid, or the same shard of it, into the process's own folder."""
    try:
        sweep(options=options, out=out, resume=resume, shard=shard, shard_folder=False)
    except ValueError as error:  # one line, as the command line would print it
        print(f"Error: {error}", file=sys.stderr)
        sys.exit(2)


def _sweep_in_processes(run: _Run, out: str | Path | None, resume: bool | str) -> pd.DataFrame:
    """``sweep`` in ``processes`` fresh processes, pooled (see ``jacbench.runs.processes``)."""
    settings = run.settings
    asked = settings.asked_methods()
    if any(not isinstance(m, str) for m in (*asked, *(settings.options.model or ()))):
        raise ValueError(
            "processes > 1 takes methods and models by name or file.py:function, not as callables"
        )
    # Each process sweeps the same grid with every option resolved, as its own run.
    child = functools.partial(
        _child_sweep, settings.for_processes(), None if run.shard is None else str(run.shard)
    )
    if run.observer is not None:
        run.observer.start(pending(settings), 0)
    with contextlib.ExitStack() as stack:
        writer = None
        if out is None:
            run_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="jacbench-")))
        else:
            writer = stack.enter_context(run.writer(Path(out), resume))
            run_dir = writer.run_dir
            run.start_meta(writer)
        again = bool(writer.resume) if writer is not None else False
        runs = pool_processes.measure_in_processes(child, settings.timing.processes, run_dir, again)
        rows = pool_processes.pool(runs)
        for row in rows:
            if writer is not None:
                writer.append(row)
            if run.observer is not None:
                run.observer.finished(row)
        frame = typed_frame([r.as_dict() for r in rows])
        frame.attrs["samples"] = samples_frame(rows)
        frame.attrs["thread_pool"] = PoolCheck.of_dict(runs[0].meta.get("thread_pool"))
        if writer is not None:
            _finish_pooled(writer, runs)
            frame.attrs["run_dir"] = run_dir
        return frame


def _finish_pooled(writer: results.RunWriter, runs: list[results.RunData]) -> None:
    """A pooled run's meta.json at its end: each process's times and the first's records."""
    first = runs[0].meta
    writer.write_meta(
        finished=results.now_iso(),
        machine_at_end=results.machine_state(),
        processes=[
            {k: r.meta.get(k) for k in ("started", "finished", "machine_at_start")} for r in runs
        ],
        peaks=first.get("peaks", {}),
        tuning=first.get("tuning"),
        thread_pool=first.get("thread_pool"),
        allocator=first.get("allocator"),
        routines=first.get("routines", {}),
    )


def _prepare(settings: Settings) -> Instruments:
    """Set the threads (fewer where torch's pool stalls beside other work: NOTE: [A stalled
    thread pool]), the allocator and this CPU's kernels (measured once per machine), and
    measure the device's peaks where asked: just before timing."""
    device = settings.device
    pool = None
    if settings.timing.threads is not None:
        torch.set_num_threads(settings.timing.threads)
    else:
        pool = threads.check_pool(device)
        if pool is not None and pool.stalled:
            torch.set_num_threads(pool.used)
    # Also keeps freed memory (NOTE: [Freed memory kept for reuse]); measures the ties too.
    tuned = tuning.ensure(device, ties=ties.candidates, calibrate=generic.calibrated)
    measured = {}
    if settings.timing.peaks:
        activation = settings.build.activation
        measured = {
            n: measure_peaks(device, DTYPES[n], activation=activation)
            for n in settings.options.dtype
        }
    return Instruments(peaks=measured, tuning=tuned, pool=pool)


def _collect(
    settings: Settings,
    instruments: Instruments,
    done: Iterable[RowKey],
    observer: SweepObserver | None,
    writer: results.RunWriter | None,
) -> list[Row]:
    """Run the sweep; write each row (with a writer) and tell the observer."""
    done = frozenset(done)
    if observer is not None:
        observer.start(pending(settings, done), len(done))
    rows = []
    for row in run_sweep(settings, instruments, done):
        if writer is not None:
            writer.append(row)
        rows.append(row)
        if observer is not None:
            observer.finished(row)
    return rows


def failed_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows whose method was wrong or raised."""
    return frame[frame["status"].isin(FAILED_STATUSES)]


# ---------------------------------------------------------------------------- validate
JacobianFunction = Callable[[MLP, torch.Tensor], torch.Tensor]


def validation_routines(chunk_sizes: Iterable[int] = ()) -> dict[str, JacobianFunction]:
    """jacbench's routines by label, with forward/reverse at each ``chunk_size`` too."""
    found: dict[str, JacobianFunction] = {
        "forward": jacobian_forward,
        "reverse": jacobian_reverse,
        "mixed": jacobian_mixed,
        "auto": jacobian,
    }
    for size in chunk_sizes:
        for label, routine in (("forward", jacobian_forward), ("reverse", jacobian_reverse)):
            found[f"{label} chunk_size={size}"] = _chunked(routine, size)
    return found


def _chunked(routine: Callable[..., torch.Tensor], size: int) -> JacobianFunction:
    def call(net: MLP, x: torch.Tensor) -> torch.Tensor:
        return routine(net, x, chunk_size=size)

    return call


def validate_points(
    points: Iterable[Point],
    routines: Mapping[str, JacobianFunction],
    *,
    seed: int = 0,
    init: str = "lecun",
    activations: Sequence[str] = ("tanh",),
) -> list[dict]:
    """For each point, activation and routine: the relative error against float64 jacrev,
    each routine checked through the task pipeline (``jacbench.runs.tasks``).

    Returns dicts ``{"point", "activation", "routine", "max_rel_err"}``.
    """
    methods = [_validated(label, fn) for label, fn in routines.items()]
    checks = []
    for activation, point in itertools.product(activations, points):
        build = Build(seed=seed, init=init, activation=activation)
        settings = Settings(SweepOptions(), (point,), tuple(methods), build=build)
        tasks = PointTasks(point, settings)
        try:
            rows = [tasks.prepare(method) for method in methods]
        finally:
            tasks.close()
        checks += [
            {
                "point": point,
                "activation": activation,
                "routine": r.method,
                "max_rel_err": r.max_rel_err,
            }
            for r in rows
        ]
    return checks


def _validated(label: str, fn: JacobianFunction) -> Method:
    """A routine under validation as a method (of jacbench's: its convention is the library's)."""
    return Method(label, "jacbench", "", label, functools.partial(_bound, fn))


def _bound(fn: JacobianFunction, net: MLP, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    return functools.partial(fn, net, x)
