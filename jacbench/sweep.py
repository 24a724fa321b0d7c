"""Sweeps: expand a grid into points, validate every method once, time it, yield rows.

A point is one network shape, batch, dtype and device; a task is a (point, method) pair.
``run_sweep`` yields one row (a flat dict, the CSV's columns) per task as it finishes and
prints nothing: presentation belongs to ``report.py`` and ``cli.py``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from jacbench import cost, timing
from jacbench.jacobians import reference_jacobian, relative_error
from jacbench.methods import JacobianCall, Method, get_method
from jacbench.networks import MLP
from jacbench.peaks import Peaks, bound_seconds

DTYPES: dict[str, torch.dtype] = {
    "float64": torch.float64,
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
}

# Largest relative error (max |J − J_ref| / max |J_ref|, against float64) a method may show.
# Wrong Jacobians are off by O(1); these bounds only absorb the dtype's rounding over deep chains.
TOLERANCES: dict[str, float] = {"float64": 1e-10, "float32": 1e-4, "bfloat16": 5e-2}


@dataclass(frozen=True)
class Point:
    """One network shape, batch, dtype and device."""

    widths: tuple[int, ...]
    batch: int = 1
    dtype: str = "float32"
    device: str = "cpu"

    @property
    def depth(self) -> int:
        return len(self.widths) - 2

    @property
    def d_in(self) -> int:
        return self.widths[0]

    @property
    def width(self) -> int:
        return max(self.widths[1:-1])

    @property
    def d_out(self) -> int:
        return self.widths[-1]

    @property
    def shape_label(self) -> str:
        """E.g. ``L=5 D=1000 K=1000 P=1 B=1 float32 cpu`` (widths spelled out when not uniform)."""
        hidden = set(self.widths[1:-1])
        k = f"K={self.width}" if len(hidden) == 1 else "widths=" + "-".join(map(str, self.widths))
        return (
            f"L={self.depth} D={self.d_in} {k} P={self.d_out} B={self.batch} "
            f"{self.dtype} {self.device}"
        )


def expand_grid(
    *,
    depths: Sequence[int],
    d_ins: Sequence[int],
    widths: Sequence[int],
    d_outs: Sequence[int],
    batches: Sequence[int] = (1,),
    dtypes: Sequence[str] = ("float32",),
    device: str = "cpu",
    explicit_widths: Sequence[Sequence[int]] = (),
) -> list[Point]:
    """Every combination of the grid's values and each of ``explicit_widths``, per batch, dtype."""
    shapes = [
        (d, *([k] * depth), p)
        for depth, d, k, p in itertools.product(depths, d_ins, widths, d_outs)
    ]
    shapes += [tuple(int(w) for w in ws) for ws in explicit_widths]
    points = [
        Point(shape, batch, dtype, device)
        for shape, batch, dtype in itertools.product(shapes, batches, dtypes)
    ]
    return list(dict.fromkeys(points))  # drop repeats, keep order


@dataclass(frozen=True)
class SweepConfig:
    """What to run: points × methods, and how to build and time them."""

    points: tuple[Point, ...]
    methods: tuple[str, ...]
    seed: int = 0
    init: str = "lecun"
    activation: str = "tanh"
    min_time: float = 0.2
    max_call_time: float = 5.0
    threads: int | None = None
    validate: bool = True
    skip: frozenset = field(default_factory=frozenset)
    peaks: Mapping[str, Peaks] = field(default_factory=dict)  # dtype name → measured limits
    rounds: int = 1  # > 1: a point's methods are timed in interleaved rounds

    def tasks(self) -> list[tuple[Point, str]]:
        """The (point, method) pairs still to run, in order."""
        return [
            (point, method)
            for point in self.points
            for method in self.methods
            if task_key(point, method) not in self.skip
        ]


def task_key(point: Point, method: str) -> tuple[str, ...]:
    """The identity of a task, as ``results.row_key`` reads it back from a CSV row."""
    widths = "-".join(map(str, point.widths))
    return (widths, str(point.batch), point.dtype, point.device, method)


def build_network(point: Point, *, seed: int, init: str, activation: str) -> MLP:
    return MLP.from_widths(
        point.widths,
        activation=activation,
        init=init,
        seed=seed,
        dtype=DTYPES[point.dtype],
        device=point.device,
    )


def build_input(point: Point, *, seed: int) -> torch.Tensor:
    """A seeded input, drawn on the CPU in float64 like the weights: the same on every device."""
    generator = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(point.batch, point.d_in, generator=generator, dtype=torch.float64)
    x = x if point.batch > 1 else x[0]
    return x.to(device=point.device, dtype=DTYPES[point.dtype])


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
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def estimated_memory_bytes(point: Point, method: Method, plan: cost.Plan) -> int:
    """A rough upper estimate of a method's peak memory at a point.

    jacbench's modes use the cost model. The peers carry one tangent (forward mode) or one
    cotangent (reverse mode) per Jacobian column or row through every layer, a few copies
    live at once; autograd.functional in forward mode differentiates the whole batch's sum,
    so each of its B·D tangents spans all B samples.
    """
    item = torch.empty((), dtype=DTYPES[point.dtype]).element_size()
    mode = method.mode_for(plan.mode)
    if method.family == "jacbench":
        return plan.memory_bytes[mode]
    carried = point.d_in if mode == "forward" else point.d_out
    per_sample = carried * sum(point.widths[1:-1]) * item * 4
    if method.family == "autograd" and mode == "forward":
        return point.batch * point.batch * per_sample
    return point.batch * per_sample


def _point_row(point: Point, method: Method, plan: cost.Plan) -> dict:
    # FLOPs of the AD mode the method uses, as jacbench's routine for that mode executes them:
    # for peers this is the useful work, so their GFLOP/s compare with jacbench's directly.
    mode = method.mode_for(plan.mode)
    return {
        "depth": point.depth,
        "d_in": point.d_in,
        "width": point.width,
        "d_out": point.d_out,
        "widths": "-".join(map(str, point.widths)),
        "batch": point.batch,
        "dtype": point.dtype,
        "device": point.device,
        "method": method.name,
        "family": method.family,
        "mode": mode,
        "predicted_mode": plan.mode,
        "flops": plan.flops[mode],
        "elementwise_flops": plan.elementwise_flops[mode],
        "memory_bytes": plan.memory_bytes[mode],
    }


def _failed(row: dict, point: Point, error: Exception) -> dict:
    _free_memory(point.device)
    first_line = (str(error).splitlines() or [type(error).__name__])[0]
    status = "oom" if _is_oom(error) else "error"
    row.update(status=status, message=f"{type(error).__name__}: {first_line}"[:300])
    return row


def prepare_task(
    point: Point, method: Method, config: SweepConfig, net: MLP, x, reference
) -> tuple[dict, JacobianCall | None]:
    """Build, call once and validate one method at one point.

    Returns the row so far and the call still to be timed (None when the row is final: out
    of memory, an error, or ``slow``, timed by its one call).
    """
    plan = cost.plan(point.widths, point.batch, DTYPES[point.dtype])
    row = _point_row(point, method, plan)
    row.update(
        status="ok",
        median_s=math.nan,
        iqr_s=math.nan,
        mean_s=math.nan,
        runs=0,
        noisy=False,
        gflops=math.nan,
        max_rel_err=math.nan,
        peak_memory_bytes=math.nan,
        bound_s=math.nan,
        efficiency=math.nan,
        compile_s=math.nan,
        message="",
    )
    on_cuda = torch.device(point.device).type == "cuda"
    available = None if on_cuda else _available_memory_bytes()
    needed = estimated_memory_bytes(point, method, plan)
    if available is not None and needed > 0.8 * available:
        # On the CPU running out of memory is not an exception but the kernel's OOM killer,
        # which would end the whole sweep: such a task is skipped and reported instead.
        row.update(
            status="oom",
            message=f"skipped: needs about {needed / 2**30:.1f} GiB, "
            f"{available / 2**30:.1f} GiB available",
        )
        return row, None
    try:
        call = method.build(net, x)
        row["compile_s"] = getattr(call, "compile_s", math.nan)
        if on_cuda:
            torch.cuda.reset_peak_memory_stats(point.device)
            baseline = torch.cuda.memory_allocated(point.device)
        first = timing.time_once(call, point.device)
        if on_cuda:
            row["peak_memory_bytes"] = torch.cuda.max_memory_allocated(point.device) - baseline
        if reference is not None:
            row["max_rel_err"] = relative_error(call(), reference)
            if not row["max_rel_err"] <= TOLERANCES[point.dtype]:
                row["status"] = "invalid"
                row["message"] = (
                    f"relative error {row['max_rel_err']:.3g} > {TOLERANCES[point.dtype]:g}"
                )
    except Exception as error:  # noqa: BLE001 - one failing method must not end the sweep
        return _failed(row, point, error), None
    if first > config.max_call_time:
        row["status"] = "slow" if row["status"] == "ok" else row["status"]
        finish_task(row, point, config, timing.Measurement((first,)))
        return row, None
    return row, call


def finish_task(row: dict, point: Point, config: SweepConfig, measurement) -> dict:
    """Fill a row's timing columns from its measurement."""
    peaks = config.peaks.get(point.dtype)
    if peaks is not None:
        row["bound_s"] = bound_seconds(row["flops"], point.widths, DTYPES[point.dtype], peaks)
        row["efficiency"] = row["bound_s"] / measurement.median
    row.update(
        median_s=measurement.median,
        iqr_s=measurement.iqr,
        mean_s=measurement.mean,
        runs=measurement.runs,
        noisy=measurement.noisy,
        gflops=row["flops"] / measurement.median / 1e9 if row["flops"] else math.nan,
    )
    return row


def _measure(call: JacobianCall, point: Point, config: SweepConfig, min_time: float):
    return timing.measure(call, device=point.device, min_time=min_time, threads=config.threads)


def run_task(point: Point, method: Method, config: SweepConfig, net: MLP, x, reference) -> dict:
    """Validate and time one method at one point; always returns a row (status says how it went)."""
    row, call = prepare_task(point, method, config, net, x, reference)
    if call is None:
        return row
    try:
        return finish_task(row, point, config, _measure(call, point, config, config.min_time))
    except Exception as error:  # noqa: BLE001
        return _failed(row, point, error)


def _run_point_in_rounds(
    point: Point, methods: list[Method], config: SweepConfig, net: MLP, x, reference
) -> list[dict]:
    """Every method at one point, timed in ``config.rounds`` interleaved rounds.

    Each round times every method for min_time / rounds; a method's times from all rounds
    make one measurement. Drift on a shared machine then touches every method alike.
    """
    prepared = [prepare_task(point, m, config, net, x, reference) for m in methods]
    times: list[list[float]] = [[] for _ in prepared]
    for _ in range(config.rounds):
        for (row, call), collected in zip(prepared, times):
            if call is None or row["status"] in ("oom", "error"):
                continue
            try:
                collected.extend(
                    _measure(call, point, config, config.min_time / config.rounds).times
                )
            except Exception as error:  # noqa: BLE001
                _failed(row, point, error)
    rows = []
    for (row, call), collected in zip(prepared, times):
        if call is not None and row["status"] not in ("oom", "error"):
            finish_task(row, point, config, timing.Measurement(tuple(collected)))
        rows.append(row)
    return rows


def point_reference(point: Point, net: MLP, x: torch.Tensor) -> torch.Tensor:
    """The float64 ``torch.func.jacrev`` Jacobian at (net, x), on the point's device."""
    return reference_jacobian(net.to(dtype=torch.float64), x.to(torch.float64), "jacrev")


def run_sweep(config: SweepConfig) -> Iterator[dict]:
    """Yield one row per (point, method) task of ``config``, in order, as each finishes."""
    tasks = config.tasks()
    for point, group in itertools.groupby(tasks, key=lambda task: task[0]):
        methods = [get_method(name) for _, name in group]
        net = build_network(point, seed=config.seed, init=config.init, activation=config.activation)
        x = build_input(point, seed=config.seed)
        try:
            reference = point_reference(point, net, x) if config.validate else None
        except Exception as error:  # noqa: BLE001
            if not _is_oom(error):
                raise
            _free_memory(point.device)
            reference = None
        if config.rounds > 1:
            yield from _run_point_in_rounds(point, methods, config, net, x, reference)
        else:
            for method in methods:
                yield run_task(point, method, config, net, x, reference)
        del net, x, reference
        _free_memory(point.device)


def validate_points(
    points: Iterable[Point],
    routines: dict[str, Callable[[MLP, torch.Tensor], torch.Tensor]],
    *,
    seed: int = 0,
    init: str = "lecun",
    activation: str = "tanh",
) -> Iterator[dict]:
    """For each point and routine, the relative error against float64 ``torch.func.jacrev``.

    ``routines`` maps a label to a function (net, x) → J. Yields
    ``{"point": Point, "routine": label, "max_rel_err": float}``.
    """
    for point in points:
        net = build_network(point, seed=seed, init=init, activation=activation)
        x = build_input(point, seed=seed)
        reference = point_reference(point, net, x)
        for label, routine in routines.items():
            yield {
                "point": point,
                "routine": label,
                "max_rel_err": relative_error(routine(net, x), reference),
            }
