"""The harness: build each point's network, check every method once, time it, yield rows.

A run measures one operator (``jacbench.runs.operators``: the Jacobian by default): every
method's result is checked against that operator's float64 reference.

A task is one (point, method) pair. ``run_sweep`` yields one ``Row``
per task as it finishes; ``sweep`` is the library call behind ``jacbench run``: options
in, a results DataFrame out, optionally writing a run folder. Nothing here prints:
presentation belongs to ``report.py`` and ``cli.py``.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import torch

from jacbench.ad import ties
from jacbench.ad.jacobians import (
    jacobian,
    jacobian_forward,
    jacobian_mixed,
    jacobian_reverse,
    relative_error,
)
from jacbench.ad.networks import INITS, MLP
from jacbench.kernels.activations import ACTIVATIONS
from jacbench.measure import device_lock, tuning
from jacbench.measure.peaks import measure_peaks
from jacbench.measure.rows import (
    FAILED_STATUSES,
    Row,
    format_widths,
    samples_frame,
    typed_frame,
)
from jacbench.runs import models, results, routines, shards
from jacbench.runs import processes as pool_processes
from jacbench.runs.grid import DTYPES, Point, expand_grid, expand_models, get_preset
from jacbench.runs.methods import METHODS, Method, model_methods
from jacbench.runs.operators import get_operator
from jacbench.runs.options import (
    DEFAULT_MIN_TIME,
    MethodLike,
    SweepOptions,
)
from jacbench.runs.tasks import (
    SweepConfig,
    build_input,
    build_network,
    point_reference,
    run_point,
)


def run_sweep(config: SweepConfig) -> Iterator[Row]:
    """Yield one row per (point, method) task of ``config``, in order, as each finishes."""
    tasks = config.tasks()
    for point, group in itertools.groupby(tasks, key=lambda task: task[0]):
        yield from run_point(point, [method for _, method in group], config)


class SweepObserver(Protocol):
    """What a caller of ``sweep`` is told as the run goes (a progress bar, say)."""

    def start(self, tasks: Sequence[tuple[Point, Method]], done: int) -> None:
        """The tasks still to run, and how many rows the run folder held already."""

    def finished(self, row: Row) -> None:
        """A row was measured (and written, when the run has a folder)."""

    def waiting(self, message: str) -> None:
        """The sweep waits for its device: another jacbench run is timing there
        (``jacbench.measure.device_lock``). Optional: an observer without it is not told."""


def _check_options(options: SweepOptions, planned: _Planned) -> None:
    for method in planned.methods:
        if not method.available():
            raise ValueError(f"method {method.name} is not available here: {method.requirement}")
    if options.init not in INITS:
        raise ValueError(f"unknown init {options.init!r}; expected one of: {', '.join(INITS)}")
    if options.activation not in ACTIVATIONS:
        known = ", ".join(ACTIVATIONS)
        raise ValueError(f"unknown activation {options.activation!r}; expected one of: {known}")
    if not (planned.min_time > 0 and options.max_call_time > 0):
        raise ValueError("min_time and max_call_time must be > 0")
    if options.rounds < 1:
        raise ValueError(f"rounds must be ≥ 1, got {options.rounds}")
    if options.threads is not None and options.threads < 1:
        raise ValueError(f"threads must be ≥ 1, got {options.threads}")
    for method in planned.methods:
        if method.needs_cuda and torch.device(options.device).type != "cuda":
            raise ValueError(f"method {method.name} needs a CUDA device (--device cuda)")
    if options.processes < 1:
        raise ValueError(f"processes must be ≥ 1, got {options.processes}")
    if not options.call_timeout > 0:
        raise ValueError(f"call_timeout must be > 0, got {options.call_timeout}")


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
    if options is None:
        options = SweepOptions.from_keywords({"methods": methods, **keywords})
    elif methods is not None or keywords:
        raise ValueError("give the options as keywords or as options=, not both")
    with _callers_state():
        return _sweep(options, out, resume, shard, shard_folder, command, observer)


@contextlib.contextmanager
def _callers_state() -> Iterator[None]:
    """torch's global state (threads, default dtype, grad mode) as the caller had it, after
    the sweep, whatever it or a routine run here changed."""
    threads, dtype, grad = (
        torch.get_num_threads(),
        torch.get_default_dtype(),
        torch.is_grad_enabled(),
    )
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.set_default_dtype(dtype)
        torch.set_grad_enabled(grad)


def _sweep(
    options: SweepOptions,
    out: str | Path | None,
    resume: bool | str,
    shard: shards.Shard | str | None,
    shard_folder: bool,
    command: str | None,
    observer: SweepObserver | None,
) -> pd.DataFrame:
    planned = plan(options)
    if isinstance(shard, str):
        shard = shards.parse_shard(shard)
    grid_index = {point: i for i, point in enumerate(planned.points)}  # a merge restores it
    points = planned.points
    if shard is not None:
        points = shards.deal(points, planned.methods, shard.count, planned.min_time)[shard.index]
        if out is not None:
            out = _shard_out(Path(out), shard, shard_folder)
    elif out is not None and shards.is_sharded(out):
        raise results.RunDirError(
            f"{out} holds a sharded run: run its shards with --shard i/n, or join them with "
            f"`jacbench merge {out}`"
        )
    _check_options(options, planned)
    config = SweepConfig(
        points=tuple(points),
        methods=tuple(planned.methods),
        seed=options.seed,
        init=options.init,
        activation=options.activation,
        min_time=planned.min_time,
        max_call_time=options.max_call_time,
        threads=options.threads,
        validate=options.validate,
        rounds=options.rounds,
        operator=planned.operator,
        call_timeout=options.call_timeout,
    )
    run = _Run(options, planned, config, shard, grid_index, command, observer)
    if options.processes > 1:
        return _sweep_in_processes(run, out, resume)
    if out is None:
        with _device(options.device, observer):
            rows = _collect(_prepare(config, options), observer, None)
        frame = typed_frame([r.as_dict() for r in rows])
        frame.attrs["samples"] = samples_frame(rows)
        return frame
    return _sweep_into(run, Path(out), resume)


@dataclass(frozen=True)
class _Planned:
    """A sweep's options resolved: its points, methods (as asked and as resolved),
    min_time and operator."""

    points: list[Point]
    asked: list[MethodLike]
    methods: list[Method]
    min_time: float
    operator: str


def plan(options: SweepOptions) -> _Planned:
    """The points, methods, min_time and operator that ``options`` ask for (checked)."""
    chosen = get_preset(options.preset)
    operator = get_operator(options.operator or chosen.operator).name
    if options.model is not None:
        points = _model_points(options)
    elif options.params is not None:
        raise ValueError("params are a model's: give them with --model")
    elif options.shapes is not None:
        if any(v is not None for v in options.grid.values()):
            raise ValueError("give shapes or grid options (depths, d_in, …), not both")
        points = expand_grid(shapes=options.shapes, dtype=options.dtypes, device=options.device)
    else:
        points = chosen.points(options.dtypes, options.device, options.grid)
    if options.methods is not None:
        asked: list[MethodLike] = list(dict.fromkeys(options.methods))
    elif options.model is not None:
        asked = list(model_methods(operator))
    else:
        asked = list(chosen.installed_methods(operator))
    found = routines.resolve_all(asked, timeout=options.call_timeout)
    resolved = [method_of(operator, m) for m in found]
    min_time = options.min_time
    if min_time is None:
        min_time = chosen.min_time or DEFAULT_MIN_TIME
    return _Planned(points, asked, resolved, min_time, operator)


def _model_points(options: SweepOptions) -> list[Point]:
    """The points of a run of models: each model with every combination of its params, at
    every d_in × d_out × batch; each checked first (built and called in a worker where it
    is the user's code).

    Raises:
        ValueError: a grid option of the MLP's, no d_in or d_out, or a model that cannot
            be loaded, built or called (one line).
    """
    if options.depths is not None or options.width is not None or options.shapes is not None:
        raise ValueError(
            "depths, width and shapes are the MLP's; give a model's own as params "
            "(--param width=64)"
        )
    if options.d_in is None or options.d_out is None:
        raise ValueError("a model needs d_in and d_out (--d-in 8 256 --d-out 1)")
    grid = models.params_grid(dict(options.params or ()))
    chosen = [models.resolve_model(m).with_params(p) for m in options.model or () for p in grid]
    for model in dict.fromkeys(chosen):
        models.check_model(model, options.d_in[0], options.d_out[0], timeout=options.call_timeout)
    return expand_models(
        chosen,
        d_in=options.d_in,
        d_out=options.d_out,
        batch=options.batch or (1,),
        dtype=options.dtypes,
        device=options.device,
    )


@dataclass(frozen=True)
class _Run:
    """One sweep under way: its options, what they resolved to, and who to tell."""

    options: SweepOptions
    planned: _Planned
    config: SweepConfig
    shard: shards.Shard | None
    grid_index: Mapping[Point, int]
    command: str | None
    observer: SweepObserver | None

    def params(self) -> dict[str, Any]:
        """meta.json's ``params``: what a resumed run must repeat (JSON's own types)."""
        options = self.options
        return {
            "preset": options.preset,
            **{k: list(v) for k, v in options.grid.items() if v is not None},
            **self._model_params(),
            **(
                {"shapes": [[list(w), b] for w, b in options.shapes]}
                if options.shapes is not None
                else {}
            ),
            # Recorded where it is not the Jacobian, so runs made before operators resume.
            **({"operator": self.planned.operator} if self.planned.operator != "jacobian" else {}),
            "dtype": options.dtypes,
            "device": options.device,
            "methods": [m.name for m in self.planned.methods],
            "seed": options.seed,
            "init": options.init,
            "activation": options.activation,
            "validate": options.validate,
            **({"shards": self.shard.count} if self.shard is not None else {}),
        }

    def _model_params(self) -> dict[str, Any]:
        """meta.json's record of the models: their names and params (none for the MLP)."""
        options = self.options
        if options.model is None:
            return {}
        return {
            "model": [models.resolve_model(m).name for m in options.model],
            "params": {k: list(v) for k, v in options.params or ()},
        }

    def pooled_params(self) -> dict[str, Any]:
        """meta.json's ``params`` of a run pooled from processes: every option given."""
        options = self.options
        params = {
            "methods": list(self.planned.asked),
            **{k: (None if v is None else list(v)) for k, v in options.grid.items()},
            **self._model_params(),
            "shapes": (
                None if options.shapes is None else [[list(w), b] for w, b in options.shapes]
            ),
            "preset": options.preset,
            "operator": self.planned.operator,
            "dtype": options.dtypes,
            "device": options.device,
            "min_time": self.planned.min_time,
            "max_call_time": options.max_call_time,
            "rounds": options.rounds,
            "threads": options.threads,
            "seed": options.seed,
            "init": options.init,
            "activation": options.activation,
            "validate": options.validate,
            "processes": options.processes,
        }
        if self.shard is not None:
            params["shards"] = self.shard.count
        return params

    def start_meta(self, writer: results.RunWriter, **fields: Any) -> None:
        """The run's meta.json before its first row, with ``fields`` (peaks, tuning, …)."""
        writer.write_meta(
            command=self.command,
            started=results.now_iso(),
            finished=None,
            environment=results.environment(self.options.device),
            machine_at_start=results.machine_state(),
            **fields,
            **_shard_fields(self.shard, self.config, self.grid_index),
        )


def _sweep_into(run: _Run, out: Path, resume: bool | str) -> pd.DataFrame:
    """The sweep, written row by row into the run folder ``out``."""
    options = run.options
    with results.RunWriter(out, run.params(), resume=resume) as writer:
        pending = replace(run.config, skip=frozenset(writer.done))
        if writer.finished and not pending.tasks():
            return _finished_frame(writer)  # nothing to do: the folder stays as it was
        with _device(options.device, run.observer):
            config = _prepare(pending, options)
            run.start_meta(
                writer,
                peaks={name: p.as_dict() for name, p in config.peaks.items()},
                tuning=config.tuning.as_dict() if config.tuning is not None else None,
                allocator=tuning.allocator_settings(),
                routines={m.name: m.description for m in config.methods if m.source},
            )
            try:
                _collect(config, run.observer, writer)
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
    return frame


def method_of(operator: str, method: Method) -> Method:
    """``method`` as a method of ``operator``: a user routine is taken to compute it, a
    registered method of another operator is refused."""
    if method.source:
        return replace(method, operator=operator)
    if method.operator != operator:
        of_operator = ", ".join(m for m, known in METHODS.items() if known.operator == operator)
        raise ValueError(
            f"method {method.name} computes the {method.operator}, not the {operator}; "
            f"the {operator}'s methods: {of_operator}"
        )
    return method


def shard_plan(options: SweepOptions, shards_count: int = 1) -> pd.DataFrame:
    """What a sweep with these options would run, dealt into ``shards_count`` shards: per
    shard its points, tasks and estimated seconds (``jacbench run --dry-run``). Nothing is
    built or timed; the options are checked as ``sweep`` checks them.
    """
    planned = plan(options)
    if shards_count < 1:
        raise ValueError(f"a run has at least 1 shard, got {shards_count}")
    count = len(planned.methods)
    parts = shards.deal(planned.points, planned.methods, shards_count, planned.min_time)
    return pd.DataFrame(
        {
            "shard": range(shards_count),
            "points": [len(part) for part in parts],
            "tasks": [len(part) * count for part in parts],
            "estimated_s": [shards.estimated_total(p, count, planned.min_time) for p in parts],
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
    if "params" in meta and "merged" not in meta:
        raise results.RunDirError(f"{out} holds an unsharded run; give the shards another --out")
    return shards.shard_dir(out, shard)


def _shard_fields(
    shard: shards.Shard | None, config: SweepConfig, grid_index: Mapping[Point, int]
) -> dict[str, Any]:
    """meta.json's ``shard`` (none for an unsharded run): which part this is, what it was
    dealt, and where each of its points stands in the whole grid (the order a merge puts
    the rows back in)."""
    if shard is None:
        return {}
    estimate = shards.estimated_total(config.points, len(config.methods), config.min_time)
    record = {
        "index": shard.index,
        "count": shard.count,
        "points": len(config.points),
        "tasks": len(config.points) * len(config.methods),
        "estimated_s": round(estimate, 3),
        "grid": [
            [format_widths(p.widths), p.batch, p.dtype, p.device, grid_index[p]]
            for p in config.points
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
    options = run.options
    if any(not isinstance(m, str) for m in (*run.planned.asked, *(options.model or ()))):
        raise ValueError(
            "processes > 1 takes methods and models by name or file.py:function, not as callables"
        )
    # Each process sweeps the same grid with every option resolved, as its own run.
    child = replace(
        options,
        methods=tuple(run.planned.asked),
        operator=run.planned.operator,
        min_time=run.planned.min_time,
        processes=1,
    )
    if run.observer is not None:
        run.observer.start(run.config.tasks(), 0)
    with contextlib.ExitStack() as stack:
        if out is None:
            run_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="jacbench-")))
            writer = None
        else:
            writer = stack.enter_context(
                results.RunWriter(Path(out), run.pooled_params(), resume=resume)
            )
            run_dir = writer.run_dir
            run.start_meta(writer)
        runs = pool_processes.measure_in_processes(
            functools.partial(_child_sweep, child, None if run.shard is None else str(run.shard)),
            options.processes,
            run_dir,
            bool(writer.resume) if writer is not None else False,
        )
        rows = pool_processes.pool(runs)
        for row in rows:
            if writer is not None:
                writer.append(row)
            if run.observer is not None:
                run.observer.finished(row)
        frame = typed_frame([r.as_dict() for r in rows])
        frame.attrs["samples"] = samples_frame(rows)
        if writer is not None:
            writer.write_meta(
                finished=results.now_iso(),
                machine_at_end=results.machine_state(),
                processes=[
                    {k: r.meta.get(k) for k in ("started", "finished", "machine_at_start")}
                    for r in runs
                ],
                peaks=runs[0].meta.get("peaks", {}),
                tuning=runs[0].meta.get("tuning"),
                allocator=runs[0].meta.get("allocator"),
                routines=runs[0].meta.get("routines", {}),
            )
            frame.attrs["run_dir"] = run_dir
        return frame


def _prepare(config: SweepConfig, options: SweepOptions) -> SweepConfig:
    """Set the threads, the allocator and this CPU's kernels (measured once per machine),
    and measure the device's peaks where asked: just before timing."""
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    device = options.device
    # Also keeps freed memory (NOTE: [Freed memory kept for reuse]); measures the ties too.
    tuned = tuning.ensure(device, ties=ties.candidates)
    measured = (
        {n: measure_peaks(device, DTYPES[n], activation=config.activation) for n in options.dtype}
        if options.peaks
        else {}
    )
    return replace(config, threads=torch.get_num_threads(), peaks=measured, tuning=tuned)


def _collect(
    config: SweepConfig, observer: SweepObserver | None, writer: results.RunWriter | None
) -> list[Row]:
    """Run the sweep; write each row (with a writer) and tell the observer."""
    if observer is not None:
        observer.start(config.tasks(), len(config.skip))
    rows = []
    for row in run_sweep(config):
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
Routine = Callable[[MLP, torch.Tensor], torch.Tensor]


def validation_routines(chunk_sizes: Iterable[int] = ()) -> dict[str, Routine]:
    """jacbench's routines by label, with forward/reverse at each ``chunk_size`` too."""
    routines: dict[str, Routine] = {
        "forward": jacobian_forward,
        "reverse": jacobian_reverse,
        "mixed": jacobian_mixed,
        "auto": jacobian,
    }
    for size in chunk_sizes:
        for label, routine in (("forward", jacobian_forward), ("reverse", jacobian_reverse)):
            routines[f"{label} chunk_size={size}"] = _chunked(routine, size)
    return routines


def _chunked(routine: Callable[..., torch.Tensor], size: int) -> Routine:
    def call(net: MLP, x: torch.Tensor) -> torch.Tensor:
        return routine(net, x, chunk_size=size)

    return call


def validate_points(
    points: Iterable[Point],
    routines: Mapping[str, Routine],
    *,
    seed: int = 0,
    init: str = "lecun",
    activations: Sequence[str] = ("tanh",),
) -> list[dict]:
    """For each point, activation and routine: the relative error against float64 jacrev.

    Returns dicts ``{"point", "activation", "routine", "max_rel_err"}``.
    """
    checks = []
    for activation, point in itertools.product(activations, points):
        net = build_network(point, seed=seed, init=init, activation=activation)
        x = build_input(point, seed=seed)
        reference = point_reference(point, net, x)
        for label, routine in routines.items():
            error = relative_error(routine(net, x), reference)
            checks.append(
                {"point": point, "activation": activation, "routine": label, "max_rel_err": error}
            )
    return checks
