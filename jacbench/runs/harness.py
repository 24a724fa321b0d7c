"""The harness: build each point's network, check every method once, time it, yield rows.

A run measures one operator (``jacbench.runs.operators``: the Jacobian by default): every
method's result is checked against that operator's float64 reference.

A task is one (point, method) pair. ``run_sweep`` yields one :class:`~jacbench.measure.rows.Row`
per task as it finishes; ``sweep`` is the library call behind ``jacbench run``: options
in, a results DataFrame out, optionally writing a run folder. Nothing here prints:
presentation belongs to ``report.py`` and ``cli.py``.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import torch

from jacbench.ad import cost
from jacbench.ad.jacobians import (
    jacobian,
    jacobian_forward,
    jacobian_mixed,
    jacobian_reverse,
    relative_error,
)
from jacbench.ad.networks import INITS, MLP, UnsupportedNetwork
from jacbench.kernels.activations import ACTIVATIONS
from jacbench.measure import device_lock, timing, tuning
from jacbench.measure.peaks import Peaks, bound_seconds, measure_peaks
from jacbench.measure.rows import (
    FAILED_STATUSES,
    Row,
    RowKey,
    Status,
    format_widths,
    samples_frame,
    typed_frame,
)
from jacbench.measure.tuning import Tuning
from jacbench.runs import processes as pool_processes
from jacbench.runs import results, routines, shards
from jacbench.runs.grid import DTYPES, Point, expand_grid, get_preset
from jacbench.runs.methods import METHODS, JacobianCall, Method
from jacbench.runs.operators import OPERATORS, Costs, get_operator
from jacbench.runs.options import (
    DEFAULT_MAX_CALL_TIME,
    DEFAULT_MIN_TIME,
    MethodLike,
    SweepOptions,
)

# Largest relative error (max |J − J_ref| / max |J_ref|, against float64) a method may show.
# Wrong Jacobians are off by O(1); these bounds only absorb the dtype's rounding over deep chains.
TOLERANCES: dict[str, float] = {"float64": 1e-10, "float32": 1e-4, "bfloat16": 5e-2}

# A task is skipped as `oom` when its estimated memory passes this share of what is free.
MEMORY_HEADROOM = 0.8


@dataclass(frozen=True)
class SweepConfig:
    """What to run: points × methods, and how to build and time them."""

    points: tuple[Point, ...]
    methods: tuple[Method, ...]
    seed: int = 0
    init: str = "lecun"
    activation: str = "tanh"
    min_time: float = DEFAULT_MIN_TIME
    max_call_time: float = DEFAULT_MAX_CALL_TIME
    threads: int | None = None
    validate: bool = True
    skip: frozenset[RowKey] = field(default_factory=frozenset)  # rows already done
    peaks: Mapping[str, Peaks] = field(default_factory=dict)  # dtype name → measured limits
    rounds: int = 1  # > 1: a point's methods are timed in interleaved rounds
    tuning: Tuning | None = None  # the kernel choices in force (``_prepare`` sets them)
    operator: str = "jacobian"  # what every method computes (jacbench.runs.operators)

    def tasks(self) -> list[tuple[Point, Method]]:
        """The (point, method) pairs still to run, in order."""
        return [
            (point, method)
            for point in self.points
            for method in self.methods
            if point.key(method.name) not in self.skip
        ]


def build_network(point: Point, *, seed: int, init: str, activation: str) -> MLP:
    """The point's seeded network (the same on every device and dtype for one seed)."""
    return MLP.from_widths(
        point.widths,
        activation=activation,
        init=init,
        seed=seed,
        dtype=point.torch_dtype,
        device=point.device,
    )


def build_input(point: Point, *, seed: int) -> torch.Tensor:
    """A seeded input, drawn on the CPU in float64 like the weights: the same on every device."""
    generator = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(point.batch, point.d_in, generator=generator, dtype=torch.float64)
    x = x if point.batch > 1 else x[0]
    return x.to(device=point.device, dtype=point.torch_dtype)


def point_reference(
    point: Point, net: MLP, x: torch.Tensor, operator: str = "jacobian"
) -> torch.Tensor:
    """The operator's float64 reference at (net, x), on the point's device: for the Jacobian
    ``torch.func.jacrev``, for the second order ``torch.func.hessian`` (jacbench.runs.operators)."""
    return get_operator(operator).reference(net.to(dtype=torch.float64), x.to(torch.float64))


def _is_oom(error: BaseException) -> bool:
    if isinstance(error, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def _free_memory(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def _available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _first_line(error: BaseException) -> str:
    first = (str(error).splitlines() or [""])[0]
    return f"{type(error).__name__}: {first}"[:300]


def estimated_memory_bytes(point: Point, method: Method, costs: Costs) -> int | None:
    """The cost model's memory estimate for ``method`` at ``point`` (jacbench's or a peer's;
    None for a user routine, whose workings the model does not know, and where the
    operator's model has no memory estimate). A second-order peer gets jacbench's estimate
    for the same composition: a floor (vmap'd peers keep more), enough to skip a
    fwd-over-fwd at D = 1000 before the OOM killer does."""
    if method.source:
        return None
    mode = method.mode_for(costs.predicted)
    if method.family == "jacbench" or method.operator != "jacobian":
        return costs.memory_bytes.get(mode)
    if mode not in cost.MODES:  # a Method of the caller's own, mode unknown
        return None
    # autograd.functional's forward mode differentiates the batch's sum (methods.py).
    coupled = method.family == "autograd" and mode == "forward"
    return cost.peer_memory_bytes(
        point.widths, mode, point.batch, point.torch_dtype, batch_coupled=coupled
    )


def _memory_shortfall(point: Point, method: Method, costs: Costs) -> str | None:
    # On the CPU running out of memory is not an exception but the kernel's OOM killer,
    # which would end the whole sweep: a task that would not fit is skipped and reported.
    if torch.device(point.device).type == "cuda":
        return None
    available = _available_memory_bytes()
    needed = estimated_memory_bytes(point, method, costs)
    if available is None or needed is None or needed <= MEMORY_HEADROOM * available:
        return None
    return f"skipped: needs about {needed / 2**30:.1f} GiB, {available / 2**30:.1f} GiB available"


def _start_row(point: Point, method: Method, costs: Costs) -> Row:
    # FLOPs of the mode the method uses, as jacbench's routine for that mode executes them:
    # for peers this is the useful work, so their GFLOP/s compare with jacbench's directly.
    # A user routine's mode is unknown: its FLOPs stay empty.
    mode = method.mode_for(costs.predicted)
    return Row(
        depth=point.depth,
        d_in=point.d_in,
        width=point.width,
        d_out=point.d_out,
        widths=format_widths(point.widths),
        batch=point.batch,
        dtype=point.dtype,
        device=point.device,
        method=method.name,
        family=method.family,
        mode=mode,
        predicted_mode=costs.predicted,
        flops=costs.flops.get(mode),
        elementwise_flops=costs.elementwise_flops.get(mode),
        memory_bytes=costs.memory_bytes.get(mode),
        source=method.source,
        operator=method.operator,
    )


def _fail(row: Row, point: Point, error: Exception) -> Row:
    _free_memory(point.device)
    if isinstance(error, UnsupportedNetwork):
        row.status = Status.SKIPPED
    else:
        row.status = Status.OOM if _is_oom(error) else Status.ERROR
    row.message = _first_line(error)
    return row


@dataclass(frozen=True)
class Reference:
    """The operator's float64 reference result at a point, or why there is none."""

    value: torch.Tensor | None  # the exact result: a Jacobian, a Hessian, … as the operator says
    missing: str = ""  # why value is None: the message of unchecked rows


def _reference(point: Point, net: MLP, x: torch.Tensor, validate: bool, operator: str) -> Reference:
    if not validate:
        return Reference(None, "not checked: validation is off")
    try:
        return Reference(point_reference(point, net, x, operator))
    except Exception as error:  # the reference failing must not end the sweep
        _free_memory(point.device)
        what = "ran out of memory" if _is_oom(error) else f"failed ({_first_line(error)})"
        return Reference(None, f"not checked: the float64 reference {what}")


def _check(
    row: Row, result: torch.Tensor, reference: Reference, dtype: str, exact: bool = True
) -> None:
    """Set the row's error and status from the method's result. A stochastic estimate
    (``exact`` false) gets its error measured and the status ``unchecked``: its error is
    what it shows, not a fault."""
    if reference.value is None:
        row.status, row.message = Status.UNCHECKED, reference.missing
        return
    expected = tuple(reference.value.shape)
    got = tuple(getattr(result, "shape", ()))
    if got != expected:
        row.status = Status.WRONG
        row.message = f"result has shape {got}, expected {expected}"
        return
    row.max_rel_err = relative_error(result, reference.value)
    if not exact:
        row.status = Status.UNCHECKED
        row.message = "a stochastic estimate, not exact: max_rel_err is its error here"
    elif not row.max_rel_err <= TOLERANCES[dtype]:
        row.status = Status.WRONG
        row.message = f"relative error {row.max_rel_err:.3g} > {TOLERANCES[dtype]:g}"


def prepare_task(
    point: Point, method: Method, config: SweepConfig, net: MLP, x, reference: Reference
) -> tuple[Row, JacobianCall | None]:
    """Build, call once and check one method at one point.

    Returns the row so far and the call still to be timed (None when the row is final:
    out of memory, an error, a wrong result, or ``slow``, timed by its one call).
    """
    costs = OPERATORS[method.operator].costs(point.widths, point.batch, point.torch_dtype)
    row = _start_row(point, method, costs)
    shortfall = _memory_shortfall(point, method, costs)
    if shortfall is not None:
        row.status, row.message = Status.OOM, shortfall
        return row, None
    on_cuda = torch.device(point.device).type == "cuda"
    try:
        call = method.build(net, x)
        row.compile_s = getattr(call, "compile_s", math.nan)
        if on_cuda:
            torch.cuda.reset_peak_memory_stats(point.device)
            baseline = torch.cuda.memory_allocated(point.device)
        first = timing.time_once(call, point.device)
        if on_cuda:
            row.peak_memory_bytes = torch.cuda.max_memory_allocated(point.device) - baseline
        _check(row, call(), reference, point.dtype, method.exact)
    except Exception as error:  # one failing method must not end the sweep
        return _fail(row, point, error), None
    if row.status == Status.WRONG:
        return row, None
    if first > config.max_call_time:
        if row.status == Status.OK:
            row.status = Status.SLOW
        return finish_task(row, point, config, timing.Measurement((first,))), None
    return row, call


def finish_task(row: Row, point: Point, config: SweepConfig, measurement) -> Row:
    """Fill a row's timing columns from its measurement."""
    peaks = config.peaks.get(point.dtype)
    if peaks is not None and row.flops is not None:
        row.bound_s = bound_seconds(
            row.flops,
            point.widths,
            point.torch_dtype,
            peaks,
            elementwise=row.elementwise_flops,
            batch=point.batch,
        )
    return row.set_timing(measurement)


def _measure(call: JacobianCall, point: Point, config: SweepConfig, min_time: float):
    return timing.measure(call, device=point.device, min_time=min_time, threads=config.threads)


def _run_point(
    point: Point, methods: list[Method], config: SweepConfig, net: MLP, x, reference: Reference
) -> Iterator[Row]:
    """Every method at one point, timed in ``config.rounds`` interleaved rounds.

    Each round times every method for min_time / rounds; a method's times from all rounds
    make one measurement. Drift on a shared machine then touches every method alike. With
    one round each row is yielded as soon as it is timed.
    """
    if config.rounds == 1:
        for method in methods:
            row, call = prepare_task(point, method, config, net, x, reference)
            if call is not None:
                try:
                    measurement = _measure(call, point, config, config.min_time)
                    row = finish_task(row, point, config, measurement)
                except Exception as error:  # one failing method must not end the sweep
                    row = _fail(row, point, error)
            yield row
        return
    prepared = [prepare_task(point, m, config, net, x, reference) for m in methods]
    times: list[list[float]] = [[] for _ in prepared]
    rounds: list[list[int]] = [[] for _ in prepared]
    for round_ in range(config.rounds):
        for (row, call), collected, tags in zip(prepared, times, rounds):
            if call is None or row.status in (Status.OOM, Status.ERROR):
                continue
            try:
                share = config.min_time / config.rounds
                blocks = _measure(call, point, config, share).times
            except Exception as error:  # one failing method must not end the sweep
                _fail(row, point, error)
                continue
            collected.extend(blocks)
            tags.extend([round_] * len(blocks))
    for (row, call), collected, tags in zip(prepared, times, rounds):
        if call is not None and row.status not in (Status.OOM, Status.ERROR):
            measurement = timing.Measurement(tuple(collected), tuple(tags))
            finish_task(row, point, config, measurement)
        yield row


def run_sweep(config: SweepConfig) -> Iterator[Row]:
    """Yield one row per (point, method) task of ``config``, in order, as each finishes."""
    tasks = config.tasks()
    for point, group in itertools.groupby(tasks, key=lambda task: task[0]):
        methods = [method for _, method in group]
        net = build_network(point, seed=config.seed, init=config.init, activation=config.activation)
        x = build_input(point, seed=config.seed)
        reference = _reference(point, net, x, config.validate, config.operator)
        yield from _run_point(point, methods, config, net, x, reference)
        del net, x, reference
        _free_memory(point.device)


class SweepObserver(Protocol):
    """What a caller of :func:`sweep` is told as the run goes (a progress bar, say)."""

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


def sweep(
    methods: Sequence[MethodLike] | None = None,
    *,
    out: str | Path | None = None,
    resume: bool = False,
    shard: shards.Shard | str | None = None,
    shard_folder: bool = True,
    command: str | None = None,
    observer: SweepObserver | None = None,
    options: SweepOptions | None = None,
    **keywords: Any,
) -> pd.DataFrame:
    """Time ``methods`` over a grid of points; the rows as a DataFrame in results.csv's columns.

    ``keywords`` are :class:`~jacbench.runs.options.SweepOptions`' fields, by the names of
    ``jacbench run``'s options (the grid, dtype, device, timing, network); or pass them made
    as ``options`` (then nothing else of theirs, ``methods`` included). ``methods`` are
    names from ``jacbench.runs.methods.METHODS``, user routines as ``"path/file.py:function"``
    / ``"module:function"`` strings or callables (``jacbench.runs.routines``); default: the
    preset's, else every installed method of the operator.

    Args:
        out: a run folder to write (results.csv, samples.csv, meta.json), locked while the
            run writes; ``resume`` continues one, skipping the rows it holds.
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
    if options.shapes is not None:
        if any(v is not None for v in options.grid.values()):
            raise ValueError("give shapes or grid options (depths, d_in, …), not both")
        points = expand_grid(shapes=options.shapes, dtype=options.dtypes, device=options.device)
    else:
        points = chosen.points(options.dtypes, options.device, options.grid)
    asked: list[MethodLike] = [
        *(
            chosen.installed_methods(operator)
            if options.methods is None
            else dict.fromkeys(options.methods)
        )
    ]
    resolved = [method_of(operator, m) for m in routines.resolve_all(asked)]
    min_time = options.min_time
    if min_time is None:
        min_time = chosen.min_time or DEFAULT_MIN_TIME
    return _Planned(points, asked, resolved, min_time, operator)


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

    def pooled_params(self) -> dict[str, Any]:
        """meta.json's ``params`` of a run pooled from processes: every option given."""
        options = self.options
        params = {
            "methods": list(self.planned.asked),
            **{k: (None if v is None else list(v)) for k, v in options.grid.items()},
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


def _sweep_into(run: _Run, out: Path, resume: bool) -> pd.DataFrame:
    """The sweep, written row by row into the run folder ``out``."""
    options = run.options
    with results.RunWriter(out, run.params(), resume=resume) as writer:
        with _device(options.device, run.observer):
            config = _prepare(replace(run.config, skip=frozenset(writer.done)), options)
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


def _sweep_in_processes(run: _Run, out: str | Path | None, resume: bool) -> pd.DataFrame:
    """``sweep`` in ``processes`` fresh processes, pooled (see ``jacbench.runs.processes``)."""
    options = run.options
    if any(not isinstance(m, str) for m in run.planned.asked):
        raise ValueError(
            "processes > 1 takes methods by name or file.py:function, not as callables"
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
            resume,
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
    tuned = tuning.ensure(device)  # also keeps freed memory: NOTE: [Freed memory kept for reuse]
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
