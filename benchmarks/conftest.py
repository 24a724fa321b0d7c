"""pytest-benchmark suites for jacbench: presets, device, machine info.

Choose the grid with JACBENCH_BENCH_PRESET (any name in ``jacbench.runs.grid.PRESETS``;
default ``smoke``), the operator with JACBENCH_BENCH_OPERATOR=jacobian|hessian|laplacian|hvp
(default: the preset's, so ``pinn-laplacian`` times Laplacians) and the device with
JACBENCH_DEVICE=cpu|cuda|cuda:N. Every benchmark's group is its shape (``<operator>
<shape>`` for the second order), so pytest-benchmark's tables put the methods for one shape
side by side. The Jacobian's cases run in test_jacobians.py, the others in
test_second_order.py.
"""

import os

import pytest
import torch

from jacbench.measure import allocator, tuning
from jacbench.runs.grid import PRESETS, Point
from jacbench.runs.operators import OPERATORS
from jacbench.runs.results import environment

PRESET_VARIABLE = "JACBENCH_BENCH_PRESET"
DEVICE_VARIABLE = "JACBENCH_DEVICE"
OPERATOR_VARIABLE = "JACBENCH_BENCH_OPERATOR"


def bench_preset() -> str:
    name = os.environ.get(PRESET_VARIABLE, "smoke")
    if name not in PRESETS:
        raise pytest.UsageError(
            f"{PRESET_VARIABLE}={name!r} is not a preset; expected one of: {', '.join(PRESETS)}"
        )
    return name


def bench_device() -> str:
    device = os.environ.get(DEVICE_VARIABLE, "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise pytest.UsageError(f"{DEVICE_VARIABLE}={device!r}; expected cpu, cuda or cuda:N")
    return device


def bench_operator() -> str:
    name = os.environ.get(OPERATOR_VARIABLE) or PRESETS[bench_preset()].operator
    if name not in OPERATORS:
        raise pytest.UsageError(
            f"{OPERATOR_VARIABLE}={name!r} is not an operator; expected one of: "
            f"{', '.join(OPERATORS)}"
        )
    return name


def bench_cases(user_methods=()) -> list[tuple[Point, str]]:
    """(point, method) for every installed method of the preset (of the chosen operator)
    and every user routine."""
    preset = PRESETS[bench_preset()]
    methods = [*preset.installed_methods(bench_operator()), *user_methods]
    return [(point, method) for point in preset.points(device=bench_device()) for method in methods]


def pytest_configure(config):
    bench_preset(), bench_device(), bench_operator()  # a bad variable: a usage error now
    # A saved run keeps every round's time: `jacbench compare` needs them for its intervals.
    if config.getoption("benchmark_autosave", False) or config.getoption("benchmark_save", None):
        config.option.benchmark_save_data = True


def pytest_sessionstart(session):
    """pytest-benchmark's --benchmark-compare-fail claimed only where a benchmark moved
    beyond what every benchmark did: the machine's drift between the two sessions (NOTE:
    [One decision rule] and ``stats.common_shift`` in jacbench.measure.stats)."""
    timing = getattr(session.config, "_benchmarksession", None)
    if timing is not None and timing.compare_fail:
        timing.compare_fail = [_BeyondTheShift(c, timing) for c in timing.compare_fail]


@pytest.hookimpl(hookwrapper=True)
def pytest_terminal_summary(terminalreporter):
    """A regression as one line and exit 1, not pytest-benchmark's traceback."""
    outcome = yield
    error = outcome.excinfo[1] if outcome.excinfo else None
    if type(error).__name__ == "PerformanceRegression":
        outcome.force_result(None)
        terminalreporter.write_line(
            "Performance has regressed (listed above), beyond the shift every benchmark "
            "shared; `jacbench compare` on the two saved files gives each its interval.",
            red=True,
        )
        terminalreporter._session.exitstatus = pytest.ExitCode.TESTS_FAILED


class _BeyondTheShift:
    """One of pytest-benchmark's regression checks (``median:25%``), failing only where the
    benchmark's ratio to its saved time, divided by the median ratio of every compared
    benchmark (at least ``stats.MIN_SHIFT_ROWS``), still fails it."""

    def __init__(self, check, session):
        self.check, self.session = check, session

    def fails(self, current, compared):
        said = self.check.fails(current, compared)
        threshold = getattr(self.check, "threshold", None)
        if not said or type(self.check).__name__ != "PercentageRegressionCheck":
            return said
        shift = self._shift()
        if shift is None:
            return said
        moved = current[self.check.field] / compared[self.check.field] / shift
        if moved * 100 - 100 > threshold:
            return f"{said} (×{moved:.2f} beyond the run's common shift ×{shift:.2f})"
        return None

    def _shift(self):
        from jacbench.measure.stats import common_ratio

        field, ratios = self.check.field, []
        for bench in self.session.benchmarks:
            for mapping in self.session.compared_mapping.values():
                saved = mapping.get(bench.fullname)
                if bench and saved and saved["stats"].get(field):
                    ratios.append(bench[field] / saved["stats"][field])
        return common_ratio(ratios)


def pytest_generate_tests(metafunc):
    # test_jacobians.py takes "case", test_second_order.py "second_order_case": each gets the
    # cases only when the chosen operator is its own, so the other shows as one skip.
    wanted = "case" if bench_operator() == "jacobian" else "second_order_case"
    for fixture in ("case", "second_order_case"):
        if fixture not in metafunc.fixturenames:
            continue
        # the jacbench plugin has loaded every --jacbench-method routine (pytest_configure)
        cases = bench_cases(metafunc.config.getoption("jacbench_method"))
        cases = cases if fixture == wanted else []
        ids = [f"{method}-{_shape_id(p)}-B{p.batch}" for p, method in cases]
        metafunc.parametrize(fixture, cases, ids=ids)


def _shape_id(point: Point) -> str:
    widths = "-".join(map(str, point.widths))
    return widths if point.model is None else f"{point.label}-{widths}"


def pytest_benchmark_update_machine_info(config, machine_info):
    device = bench_device() if torch.cuda.is_available() else "cpu"
    # The kernels and allocator setting every benchmark runs with, in force before they are
    # recorded: read before the first benchmark set them, a run's machine_info differed
    # from the one it saved, and every --benchmark-compare warned of another machine.
    tuning.ensure(device)
    env = environment(device)
    machine_info["jacbench"] = {
        key: env[key]
        for key in ("jacbench", "torch", "cuda", "device_name", "threads", "cpu_model")
    } | {"tuning": tuning.active().as_dict(), "allocator": allocator.allocator_settings()}
