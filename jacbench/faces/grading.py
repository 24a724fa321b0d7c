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
from torch import Tensor
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode

from jacbench.ad import cost
from jacbench.ad.jacobians import reference_jacobian, relative_error
from jacbench.ad.networks import MLP
from jacbench.runs.grid import PRESETS, Point, uniform_widths
from jacbench.runs.harness import TOLERANCES, SweepObserver, build_input, build_network, sweep
from jacbench.runs.methods import Method
from jacbench.runs.routines import LIBRARY, Routine, from_callable, load

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

    @property
    def passed(self) -> bool:
        """Whether every case passed."""
        return bool(self.cases["passed"].all())


def check(
    fn: str | Callable[..., Any],
    *,
    time: bool = True,
    quick: bool = False,
    min_time: float | None = None,
    observer: SweepObserver | None = None,
) -> CheckReport:
    """Grade a Jacobian routine, then (if it passes and ``time``) time it against jacbench.

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
    routine = load(fn) if isinstance(fn, str) else from_callable(fn)
    graded = [_grade(routine, case) for case in grading_cases(routine.batched)]
    report = CheckReport(routine, pd.DataFrame(graded))
    report.hints = _depth_hint(report.cases)
    if report.passed:
        report.hints += _flop_hints(routine)
        if time:
            shapes = QUICK_SHAPES if quick else PRESETS["textbook"].shapes
            report.timings = sweep(
                [routine.as_method(), *TIMING_METHODS],
                shapes=shapes,
                min_time=min_time or (0.05 if quick else 0.2),
                observer=observer,
            )
    return report


def _grade(routine: Routine, case: Case) -> dict[str, Any]:
    net = build_network(case.point, seed=0, init="lecun", activation="tanh")
    x = build_input(case.point, seed=0)
    reference = reference_jacobian(net.to(dtype=torch.float64), x.to(torch.float64))
    tolerance = TOLERANCES[case.dtype]
    row = {
        "case": case.label,
        "widths": "-".join(map(str, case.widths)),
        "batch": case.batch,
        "dtype": case.dtype,
        "max_rel_err": math.nan,
        "tolerance": tolerance,
        "passed": False,
        "problem": "",
    }
    x_before = x.clone()
    params_before = {k: v.clone() for k, v in net.param_dict().items()}
    try:
        result = routine.bind(net, x)()
    except Exception as error:  # a user routine may raise anything: that is the finding
        first = (str(error).splitlines() or [""])[0]
        row["problem"] = f"raised {type(error).__name__}: {first}"[:300]
        return row
    changed = _changed_in_place(routine, x, x_before, net, params_before)
    if not isinstance(result, Tensor):
        try:
            result = torch.as_tensor(result)
        except (TypeError, ValueError, RuntimeError):
            row["problem"] = f"returned a {type(result).__name__}, not a tensor"
            return row
    problem = _shape_problem(tuple(result.shape), tuple(reference.shape))
    if problem:
        row["problem"] = problem
        return row
    if not torch.isfinite(result).all():
        row["problem"] = "the result holds NaN or inf"
        return row
    max_rel_err = relative_error(result, reference)
    row["max_rel_err"] = max_rel_err
    row["passed"] = max_rel_err <= tolerance and not changed
    if changed:
        row["problem"] = changed
    elif not row["passed"]:
        row["problem"] = _value_problem(result, reference, net, x, tolerance) or (
            f"max relative error {max_rel_err:.2g} > {tolerance:g}"
        )
    return row


def _changed_in_place(
    routine: Routine, x: Tensor, x_before: Tensor, net: MLP, before: dict[str, Tensor]
) -> str:
    changed = [k for k, v in net.param_dict().items() if not torch.equal(v, before[k])]
    if changed:
        where = "param_dict" if routine.convention != LIBRARY else "the network's weights"
        names = ", ".join(changed)
        return f"changes {where} in place ({names}): a routine must not modify its arguments"
    if not torch.equal(x, x_before):
        return "changes x in place: a routine must not modify its arguments"
    return ""


def _shape_problem(got: tuple[int, ...], expected: tuple[int, ...]) -> str:
    if got == expected:
        return ""
    *lead, p, d = expected
    if got == (*lead, d, p):
        return f"returns the transpose: shape {got}, expected (P, D) = {expected}"
    if p == 1 and got == (*lead, d):
        return f"returns shape {got}: keep the output axis, (P, D) = {expected}"
    return f"returns shape {got}, expected {expected} (the Jacobian is (P, D), batch first)"


def _value_problem(result: Tensor, reference: Tensor, net: MLP, x: Tensor, tolerance: float) -> str:
    """Which known mistake the result matches, if any."""
    if reference.shape[-1] == reference.shape[-2] and (
        relative_error(result.transpose(-1, -2), reference) <= tolerance
    ):
        return "returns the transpose Jᵀ (a Jacobian is (P, D): rows are outputs)"
    layers = range(1, net.depth + 1)
    if net.depth > 1 and _matches(result, _chain_without_slopes(net, x, set(layers)), tolerance):
        return "matches the Jacobian with no σ' at any layer: tanh' is missing everywhere"
    for k in layers:
        if _matches(result, _chain_without_slopes(net, x, {k}), tolerance):
            return f"matches the Jacobian with σ' left out at layer {k}: its tanh' is missing"
    return ""


def _matches(result: Tensor, candidate: Tensor, tolerance: float) -> bool:
    return relative_error(result, candidate) <= tolerance


def _chain_without_slopes(net: MLP, x: Tensor, dropped: set[int]) -> Tensor:
    """J = W_F Σ_L W_L ⋯ Σ_1 W_1 in float64, with Σ_k = I for every layer k in ``dropped``."""
    net64 = net.to(dtype=torch.float64)
    samples = x.to(torch.float64).reshape(-1, net.d_in)
    jacobians = []
    for sample in samples:
        jac = torch.eye(net.d_in, dtype=torch.float64)
        h = sample
        for k, (w, b, act) in enumerate(zip(net64.weights, net64.biases, net64.activations), 1):
            z = w @ h if b is None else w @ h + b
            h = act.fn(z)
            jac = w @ jac
            if k not in dropped:
                jac = act.derivative(z, h)[:, None] * jac
        jacobians.append(net64.weights[-1] @ jac)
    stacked = torch.stack(jacobians)
    return stacked if x.ndim == 2 else stacked[0]


def _depth_hint(cases: pd.DataFrame) -> list[str]:
    """A hint when the depth series (L = 1, 2, 5, 8) is right when shallow and wrong when
    deep, for no reason the other checks could name."""
    series = cases[cases["case"].isin(["L=1", "L=2", "L=5", "L=8"])]
    failing = series[~series["passed"]]
    generic = failing["problem"].str.startswith("max relative error").all()
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
    net = build_network(point, seed=0, init="lecun", activation="tanh")
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
