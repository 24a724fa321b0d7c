"""pytest plugin: benchmark any method, yours included, with pytest-benchmark.

Installed with jacbench (entry point ``pytest11``), it gives every pytest run:

- the option ``--jacbench-method SPEC`` (repeatable): ``benchmarks/`` then times your
  routine (``path/file.py:function`` or ``module:function``) beside the built-in methods;
- the fixture ``jacobian_benchmark``, for your own test files::

      def test_my_reverse(jacobian_benchmark):
          jacobian_benchmark(my_reverse, widths=(1000, 1000, 1000, 1000, 1))

  It checks the method once against float64 ``torch.func.jacrev`` (failing the test if it
  is wrong), then times it with pytest-benchmark's ``benchmark``, in the group of its shape
  and with the same ``extra_info`` as the built-in suites, so ``--benchmark-compare`` and
  ``jacbench report --pytest-benchmark`` read both alike. Your own network is
  ``model=`` (a factory, its spec or a built-in model, with ``params=``), its widths
  (D, P): ``jacobian_benchmark("auto", widths=(64, 1), model="attention")``, grouped per
  model. Second-order methods (or your
  routine with ``operator="hessian"``, ``"laplacian"`` or ``"hvp"``) are checked against
  float64 ``torch.func.hessian`` and grouped as ``<operator> <shape>``.

jacbench itself is imported only when the fixture is used, so the plugin costs other
projects' test runs nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("jacbench", "jacbench Jacobian benchmarks")
    group.addoption(
        "--jacbench-method",
        action="append",
        default=[],
        metavar="SPEC",
        help="Also benchmark this routine (path/file.py:function or module:function) in "
        "jacbench's suites; its file is imported, so its code runs. Repeatable.",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Load every ``--jacbench-method`` routine now: one that cannot load is a usage error."""
    specs = config.getoption("jacbench_method", default=[])
    if not specs:
        return
    from jacbench.runs.routines import resolve

    for spec in specs:
        try:
            resolve(spec, isolated=False)
        except ValueError as error:
            raise pytest.UsageError(f"--jacbench-method {error}") from None


@pytest.fixture
def jacobian_benchmark(benchmark: Any) -> Callable[..., Any]:
    """``run(method, widths, batch=1, dtype="float32", device="cpu")``: check, then time.

    ``method`` is a method name, a routine spec or a callable; ``widths`` the full
    (D, K_1, …, K_L, P). With ``model`` (a built-in model's name, a factory spec or a factory,
    ``params`` its keyword arguments) the network is that model and ``widths`` is (D, P).
    Returns what pytest-benchmark's ``benchmark`` returns.
    """

    def run(
        method: Any,
        widths: Sequence[int],
        batch: int = 1,
        dtype: str = "float32",
        device: str = "cpu",
        operator: str | None = None,
        *,
        model: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        chosen = _model(model, params, tuple(widths))
        return _benchmark_jacobian(
            benchmark, method, tuple(widths), batch, dtype, device, operator, chosen
        )

    return run


def _model(model: Any, params: dict[str, Any] | None, widths: tuple[int, ...]) -> Any:
    """The fixture's model, checked (None: jacbench's MLP)."""
    if model is None:
        if params:
            raise ValueError("params are a model's: give them with model=")
        return None
    from jacbench.runs.models import check_model, resolve_model

    if len(widths) != 2:
        raise ValueError(f"a model's widths are (D, P), got {widths}")
    chosen = resolve_model(model)
    if params is not None:
        chosen = chosen.with_params(params)
    check_model(chosen, *widths)
    return chosen


def _benchmark_jacobian(
    benchmark: Any,
    method: Any,
    widths: tuple[int, ...],
    batch: int,
    dtype: str,
    device: str,
    operator: str | None,
    model: Any = None,
) -> Any:
    import torch

    from jacbench.runs.grid import Point

    point = Point(widths, batch, dtype, device, model)
    if point.device.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip("the benchmark asks for CUDA, which is not available")
    tasks, resolved, row = _checked(point, method, operator)
    try:
        call = tasks.bench_of(resolved).hosted.calls[resolved.name]  # both in this process
        if device.startswith("cuda"):

            def timed() -> Any:
                result = call()
                torch.cuda.synchronize()
                return result
        else:
            timed = call
        _describe(benchmark, point, tasks, resolved, row.max_rel_err)
        from jacbench.measure import device_lock, machine

        # One timing process per device (jacbench.measure.device_lock), as `jacbench run` does;
        # other work while it timed is recorded, as a run's rows record it.
        with device_lock.hold(device):
            others = machine.OtherWork()
            result = benchmark(timed)
            busy = others.cores()
        benchmark.extra_info["other_cores"] = None if busy is None else round(busy, 2)
        return result
    finally:
        tasks.close()


def _checked(point: Any, method: Any, operator: str | None) -> tuple[Any, Any, Any]:
    """The method at ``point`` built, called and checked through the task pipeline, in this
    process (pytest-benchmark times a function of the test's own process); a wrong one
    fails the test."""
    import math

    from jacbench.ad import generic, ties
    from jacbench.faces.report import shape_label
    from jacbench.measure import tuning
    from jacbench.measure.rows import Status
    from jacbench.runs.operators import get_operator
    from jacbench.runs.options import SweepOptions
    from jacbench.runs.routines import resolve
    from jacbench.runs.settings import Settings, Timing, method_of
    from jacbench.runs.tasks import Instruments, PointTasks

    # The routine is loaded here, in the user's own test run (not in a worker as a sweep's).
    resolved = resolve(method, isolated=False)
    # A user routine computes what the caller says (the Jacobian unless told), a registered
    # method its own operator: the run's rule (settings.method_of).
    asked = get_operator(operator or ("jacobian" if resolved.source else resolved.operator))
    resolved = method_of(asked.name, resolved)
    if point.model is not None and not resolved.any_network:
        pytest.skip(f"{resolved.name} runs on jacbench's MLP only, not on a model")
    # the kernels and the calibration `jacbench run` uses
    tuned = tuning.ensure(point.device, ties=ties.candidates, calibrate=generic.calibrated)
    timing = Timing(max_call_time=math.inf)
    options = SweepOptions(device=point.device)
    settings = Settings(options, (point,), (resolved,), asked.name, timing=timing)
    tasks = PointTasks(point, settings, Instruments(tuning=tuned))
    row = tasks.prepare(resolved)
    # An estimate (Hutchinson's) is timed, its error recorded, not held to a tolerance.
    if row.status is not Status.OK and not (row.status is Status.UNCHECKED and not resolved.exact):
        tasks.close()
        pytest.fail(f"{resolved.name} is wrong at {shape_label(point)}: {row.message}")
    return tasks, resolved, row


def _describe(benchmark: Any, point: Any, tasks: Any, resolved: Any, error: float) -> None:
    """The benchmark's group (its shape) and the same extra_info as the built-in suites."""
    from jacbench.faces.report import shape_label

    costs, operator = tasks.costs, tasks.settings.operator
    mode = resolved.mode_for(costs.predicted)
    # The Jacobian's groups keep their names (saved runs compare); others say the operator.
    label = shape_label(point)
    benchmark.group = label if operator == "jacobian" else f"{operator} {label}"
    benchmark.extra_info.update(
        method=resolved.name,
        family=resolved.family,
        operator=operator,
        mode=mode,
        source=resolved.source,
        widths=list(point.widths),
        model=point.label,
        batch=point.batch,
        dtype=point.dtype,
        device=point.device,
        flops=costs.flops.get(mode),
        predicted_mode=costs.predicted,
        max_rel_err=error,
    )
