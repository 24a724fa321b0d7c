"""Grading a user routine: right on every edge case? what looks wrong? how fast is it?

``check(fn)`` runs the routine on a fixed set of cases (L = 1, D = 1, P = 1, D ≠ K ≠ P,
small and large K, deep, float32, a batch when the routine takes one) against float64
``torch.func.jacrev``, and says what looks wrong where it can tell: a transposed or
misshapen result, NaN or inf, its arguments changed in place, or the Jacobian of the
chain with one layer's σ' left out. A routine that passes is then timed against jacbench's
forward, reverse and auto modes and torch.func at the textbook's shapes, and its matmul
FLOPs, counted by ``torch.utils.flop_counter``, are set beside the cost model's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode

from jacbench.ad import cost
from jacbench.faces.text import pool_warning
from jacbench.measure import machine
from jacbench.measure.rows import Mistake, Status
from jacbench.runs import sandbox, workers
from jacbench.runs.bench import build_input, build_network
from jacbench.runs.grid import PRESETS, Point, uniform_widths
from jacbench.runs.harness import SweepObserver, sweep, torch_state_kept
from jacbench.runs.methods import Method
from jacbench.runs.options import DEFAULT_CALL_TIMEOUT, SweepOptions
from jacbench.runs.routines import Routine, from_callable, load, routine_here
from jacbench.runs.settings import Settings, Timing
from jacbench.runs.tasks import TOLERANCES, PointTasks

# The peers a passing routine is timed against.
TIMING_METHODS = ("forward", "reverse", "auto", "func-jacrev")
# --quick: the textbook's shapes, smaller.
QUICK_SHAPES = (
    (uniform_widths(3, 200, 200, 1), 1),
    (uniform_widths(5, 200, 200, 1), 1),
    (uniform_widths(10, 2, 30, 10), 1),
)
# Where the routine's matmul FLOPs are counted for the hints: P = 1, so the modes differ.
HINT_WIDTHS = uniform_widths(3, 64, 64, 1)


@dataclass(frozen=True)
class Case:
    """One shape the routine is checked at."""

    label: str
    widths: tuple[int, ...]
    batch: int = 1
    dtype: str = "float64"

    @property
    def point(self) -> Point:
        return Point(self.widths, self.batch, self.dtype)


def grading_cases(batched: bool) -> list[Case]:
    """The edge cases every routine is graded on (a batch only for one that takes batches)."""
    cases = [
        Case("L=1", (5, 7, 3)),
        Case("D=1", (1, 8, 8, 4)),
        Case("P=1", (6, 8, 8, 1)),
        Case("D, K, P all different", (5, 9, 9, 9, 3)),
        Case("small K", (6, 2, 2, 2, 4)),
        Case("large K", (8, 300, 300, 3)),
        Case("D = P", (4, 10, 10, 4)),
        Case("L=2", uniform_widths(2, 4, 6, 3)),
        Case("L=5", uniform_widths(5, 4, 6, 3)),
        Case("L=8", uniform_widths(8, 4, 6, 3)),
        Case("float32", (6, 12, 12, 12, 2), dtype="float32"),
    ]
    if batched:
        cases.append(Case("batch of 4", (5, 9, 9, 3), batch=4))
    return cases


@dataclass
class CheckReport:
    """What ``check`` found: per case the error and any problem; timings if it passed."""

    routine: Routine
    cases: pd.DataFrame  # case, shape, batch, dtype, max_rel_err, tolerance, passed, problem
    timings: pd.DataFrame | None = None  # the sweep's rows, when the routine was timed
    hints: list[str] = field(default_factory=list)
    # Why the timings may not be the routine's own: other work on the machine, noisy rows.
    warnings: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Whether every case passed, and every timed result checked was right."""
        return bool(self.cases["passed"].all()) and not self.wrong_when_timed

    @property
    def wrong_when_timed(self) -> str:
        """Why the routine was wrong on a timed call ("" where it was not, or not timed):
        right on the cases, wrong, idle or faked when timed is wrong all the same."""
        if self.timings is None:
            return ""
        mine = self.timings[self.timings["method"] == self.routine.name]
        wrong = mine[mine["status"] == "wrong"]
        return "" if wrong.empty else str(wrong["message"].iloc[0])


def check(
    fn: str | Callable[..., Any],
    *,
    time: bool = True,
    quick: bool = False,
    min_time: float | None = None,
    observer: SweepObserver | None = None,
    call_timeout: float = DEFAULT_CALL_TIMEOUT,
) -> CheckReport:
    """Grade a Jacobian routine, then (if it passes and ``time``) time it against jacbench.

    The routine is loaded, graded and timed in a worker process where it can be (NOTE:
    [Workers] in ``jacbench.runs.workers``): a case it hangs on (``call_timeout`` seconds), or
    whose process it ends, fails with that reason and the next case goes on.

    Args:
        fn: a callable, or a spec ``"path/file.py:function"`` / ``"module:function"``, in
            either calling convention (``jacbench.runs.routines``).
        quick: time at smaller shapes (D = K = 200) instead of D = K = 1000.
        min_time: least measured seconds per timed row (default 0.2, quick 0.05).
        observer: told the timing sweep's progress.

    Raises:
        RoutineError: the routine cannot be loaded, or takes neither convention's arguments.

    >>> def reverse(net, x):
    ...     from jacbench import jacobian_reverse
    ...     return jacobian_reverse(net, x)
    >>> check(reverse, time=False).passed
    True
    """
    with sandbox.closing_all():  # the routine's sandbox, and every process it started, gone
        return _checked(fn, time, quick, min_time, observer, call_timeout)


def _checked(
    fn: str | Callable[..., Any],
    time: bool,
    quick: bool,
    min_time: float | None,
    observer: SweepObserver | None,
    call_timeout: float,
) -> CheckReport:
    if isinstance(fn, str):
        routine = load(fn, timeout=call_timeout)
    else:
        routine = from_callable(fn, timeout=call_timeout)
    report = CheckReport(routine, pd.DataFrame(grade_cases(routine, call_timeout)))
    report.hints = _depth_hint(report.cases)
    if bool(report.cases["passed"].all()):
        hints = _in_worker_if_possible(routine, _flop_hints, call_timeout, default=[])
        report.hints += [str(h) for h in hints] if isinstance(hints, list) else []
        if time:
            shapes = QUICK_SHAPES if quick else PRESETS["textbook"].shapes
            other = machine.OtherWork()
            report.timings = sweep(
                [routine.as_method(), *TIMING_METHODS],
                shapes=shapes,
                min_time=min_time or (0.05 if quick else 0.2),
                observer=observer,
                call_timeout=call_timeout,
            )
            report.warnings = timing_warnings(report.timings, other.cores())
    return report


def timing_warnings(timings: pd.DataFrame, other_cores: float | None) -> list[str]:
    """What a reader of check's timings should know: other work that shared the machine
    while they were measured (in cores' worth), and rows whose samples spread widely."""
    warnings = []
    if other_cores is not None and other_cores > machine.BUSY_LOAD:
        warnings.append(
            f"The machine was busy: other work used {other_cores:.1f} cores' worth while the "
            "routine was timed, so the times may be slower and noisier than on an idle machine."
        )
    stalled = pool_warning(timings.attrs.get("thread_pool"))
    if stalled:
        warnings.append(stalled)
    noisy = int(timings["noisy"].fillna(False).astype(bool).sum()) if "noisy" in timings else 0
    if noisy:
        warnings.append(
            f"{noisy} of {len(timings)} timings are noisy (IQR over 10% of the median): "
            "compare them with care, or run again with a longer --min-time."
        )
    return warnings


def grade_cases(routine: Routine, call_timeout: float = DEFAULT_CALL_TIMEOUT) -> list[dict]:
    """Every case's row. After a case that does not return in time the rest are not run
    (each would cost the whole timeout): they say which case timed out."""
    rows: list[dict] = []
    stopped = ""
    for case in grading_cases(routine.batched):
        if stopped:
            row = _case_row(case)
            row.update(problem=f"not run: {stopped}", mistake=Mistake.TIMEOUT.value)
        else:
            row = grade_case(routine, case, call_timeout)
            if row["mistake"] == Mistake.TIMEOUT.value:
                stopped = f"case {case.label} {row['problem']}"
        rows.append(row)
    return rows


def grade_case(routine: Routine, case: Case, call_timeout: float = DEFAULT_CALL_TIMEOUT) -> dict:
    """One case's row (``check``'s columns): the routine built, called and checked through
    the task pipeline, in the routine's worker where it has one."""
    method = routine.as_method()
    timing = Timing(max_call_time=math.inf, call_timeout=call_timeout)
    settings = Settings(SweepOptions(), (case.point,), (method,), timing=timing)
    with torch_state_kept():
        tasks = PointTasks(case.point, settings)
        try:
            found = tasks.prepare(method)
        finally:
            tasks.close()
    row = _case_row(case)
    row.update(max_rel_err=found.max_rel_err, passed=found.status is Status.OK)
    row.update(problem=found.message, mistake=found.mistake)
    return row


def _in_worker_if_possible(
    routine: Routine, task: Callable[..., Any], timeout: float, *args: Any, **fallback: Any
) -> Any:
    """``task(routine, *args)``: in the worker for a routine that lives there, else here.
    With ``default=…``, a worker that fails answers that instead of raising."""
    if routine.owner is None:
        return task(routine, *args)
    try:
        return sandbox.run(
            routine.owner, _with_routine_here, task, routine.ref, *args, deadline=timeout
        )
    except workers.WorkerFailed:
        if "default" in fallback:
            return fallback["default"]
        raise


def _with_routine_here(task: Callable[..., Any], ref: str | bytes, *args: Any) -> Any:
    """In the worker: ``task`` with the routine loaded here."""
    routine = routine_here(ref)
    torch.set_default_dtype(torch.float32)  # what an earlier case's call may have changed
    torch.set_grad_enabled(True)
    return task(routine, *args)


def _case_row(case: Case) -> dict[str, Any]:
    return {
        "case": case.label,
        "widths": "-".join(map(str, case.widths)),
        "batch": case.batch,
        "dtype": case.dtype,
        "max_rel_err": math.nan,
        "tolerance": TOLERANCES[case.dtype],
        "passed": False,
        "problem": "",
        "mistake": "",
    }


def _depth_hint(cases: pd.DataFrame) -> list[str]:
    """A hint when the depth series (L = 1, 2, 5, 8) is right when shallow and wrong when
    deep, for no reason the other checks could name."""
    series = cases[cases["case"].isin(["L=1", "L=2", "L=5", "L=8"])]
    failing = series[~series["passed"]]
    generic = (failing["mistake"] == Mistake.WRONG_VALUES.value).all()
    if failing.empty or not generic or not series["passed"].iloc[0]:
        return []
    errors = ", ".join(f"{r.case}: {r.max_rel_err:.1g}" for r in series.itertuples())
    return [
        f"The error grows with depth ({errors}): look for a layer whose σ' is missing, "
        "applied twice or taken at the wrong z."
    ]


def _mv_flops(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    # FlopCounterMode has no formula for aten.mv; a matrix-vector product is 2·m·n.
    return 2 * a_shape[0] * a_shape[1]


def count_matmul_flops(call: Callable[[], Any]) -> int:
    """The matmul FLOPs (2·m·n·k per product) ``call()`` executes, by torch's FLOP counter.

    >>> count_matmul_flops(lambda: torch.ones(3, 4) @ torch.ones(4))
    24
    """
    with FlopCounterMode(display=False, custom_mapping={torch.ops.aten.mv: _mv_flops}) as counter:
        call()
    return counter.get_total_flops()


class _DiagonalCounter(TorchFunctionMode):
    """Counts calls that build a diagonal matrix (torch.diag and friends) under it."""

    NAMES = frozenset({"diag", "diag_embed", "diagflat"})

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in self.NAMES:
            self.calls += 1
        return func(*args, **(kwargs or {}))


def _flop_hints(routine: Routine) -> list[str]:
    """Set the routine's counted matmul FLOPs beside the cost model's, at ``HINT_WIDTHS``."""
    point = Point(HINT_WIDTHS, 1, "float64")
    net = build_network(point)
    call = routine.bind(net, build_input(point, seed=0))
    diagonals = _DiagonalCounter()
    with diagonals:
        used = count_matmul_flops(call)
    plan = cost.plan(HINT_WIDTHS)
    best = plan.flops[plan.mode]
    k = HINT_WIDTHS[1]
    shape = f"L={len(HINT_WIDTHS) - 2} D={HINT_WIDTHS[0]} K={k} P={HINT_WIDTHS[-1]}"
    hints = [
        f"Matmul FLOPs at {shape}: your routine {used:,}; jacbench forward "
        f"{plan.flops['forward']:,}, reverse {plan.flops['reverse']:,} (cost model)."
    ]
    if diagonals.calls:
        hints.append(
            f"It builds diag(σ') as a matrix ({diagonals.calls} calls to torch.diag): each "
            f"product diag(σ')·M then costs 2·K·K·n FLOPs where scaling M's rows costs K·n "
            f"element-ops, {2 * k}× the work at K={k} (2000× at K=1000). Scale instead: "
            "(1 - h**2)[:, None] * M for rows, M * (1 - h**2) for columns."
        )
    if used > 1.1 * best and plan.flops["forward"] > 2 * plan.flops["reverse"]:
        order = "forward-mode" if used >= 0.9 * plan.flops["forward"] else "a costlier"
        hints.append(
            f"It does {used / best:.0f}× the FLOPs of {plan.mode} mode here, in {order} order: "
            f"with one output, carrying one adjoint row from WF down to W1 (reverse mode) "
            f"costs {plan.flops['forward'] / plan.flops['reverse']:.0f}× less than carrying "
            f"D tangent columns up from W1 (forward mode)."
        )
    return hints


def timing_summary(timings: pd.DataFrame, routine: Method | Routine) -> pd.DataFrame:
    """Per shape: the routine's median, each peer's, and the routine over the best of them."""
    timed = timings[timings["median_s"].notna()]
    medians = timed.pivot_table(index="widths", columns="method", values="median_s", sort=False)
    peers = [m for m in TIMING_METHODS if m in medians.columns]
    table = medians.reindex(columns=[routine.name, *peers])
    table["× best jacbench"] = table[routine.name] / medians[
        [m for m in ("forward", "reverse", "auto") if m in medians.columns]
    ].min(axis=1)
    if "func-jacrev" in medians.columns:
        table["× func-jacrev"] = table[routine.name] / medians["func-jacrev"]
    return table.reset_index()
