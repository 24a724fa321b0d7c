"""pytest-benchmark suites for jacbench: presets, device, machine info.

Choose the grid with JACBENCH_BENCH_PRESET (any name in ``jacbench.grid.PRESETS``;
default ``smoke``) and the device with JACBENCH_DEVICE=cpu|cuda|cuda:N. Every benchmark's
group is its shape, so pytest-benchmark's tables put the methods for one shape side by side.
"""

import os

import pytest
import torch

from jacbench import tuning
from jacbench.grid import PRESETS, Point
from jacbench.results import environment

PRESET_VARIABLE = "JACBENCH_BENCH_PRESET"
DEVICE_VARIABLE = "JACBENCH_DEVICE"


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


def bench_cases(user_methods=()) -> list[tuple[Point, str]]:
    """(point, method) for every installed method of the preset and every user routine."""
    preset = PRESETS[bench_preset()]
    methods = [*preset.installed_methods(), *user_methods]
    return [(point, method) for point in preset.points(device=bench_device()) for method in methods]


def pytest_configure(config):
    bench_preset(), bench_device()  # a bad variable is a usage error before collection


def pytest_generate_tests(metafunc):
    if "case" not in metafunc.fixturenames:
        return
    # the jacbench plugin has loaded every --jacbench-method routine (pytest_configure)
    cases = bench_cases(metafunc.config.getoption("jacbench_method"))
    ids = [f"{method}-{'-'.join(map(str, p.widths))}-B{p.batch}" for p, method in cases]
    metafunc.parametrize("case", cases, ids=ids)


def pytest_benchmark_update_machine_info(config, machine_info):
    env = environment(bench_device() if torch.cuda.is_available() else "cpu")
    machine_info["jacbench"] = {
        key: env[key]
        for key in ("jacbench", "torch", "cuda", "device_name", "threads", "cpu_model")
    } | {"tuning": tuning.active().as_dict(), "allocator": tuning.allocator_settings()}
