"""pytest-benchmark suites for jacbench: presets, device, machine info.

Choose the preset with JACBENCH_BENCH_PRESET=smoke|default|large and the device with
JACBENCH_DEVICE=cpu|cuda. Every benchmark's group is its shape, so pytest-benchmark's tables
put the methods for one shape side by side.
"""

import os

import pytest
import torch

from jacbench.methods import default_methods
from jacbench.results import environment
from jacbench.sweep import Point

PRESET_VARIABLE = "JACBENCH_BENCH_PRESET"
DEVICE_VARIABLE = "JACBENCH_DEVICE"

# The routines and the references they are measured against (JAX joins when installed).
CORE_METHODS = ("forward", "reverse", "mixed", "auto", "func-jacfwd", "func-jacrev")


def _uniform(depth, d_in, width, d_out):
    return (d_in, *[width] * depth, d_out)


PRESETS = {
    # ≥ 6 benchmarks over ≥ 2 shapes, well under a minute on two CPU cores.
    "smoke": {
        "shapes": [(_uniform(3, 64, 64, 1), 1), (_uniform(3, 1, 64, 64), 1)],
        "methods": CORE_METHODS,
    },
    "default": {
        "shapes": [
            (_uniform(3, 1000, 1000, 1), 1),
            (_uniform(5, 1000, 1000, 1), 1),
            (_uniform(10, 1000, 1000, 1), 1),
            (_uniform(5, 1, 1000, 1000), 1),
            (_uniform(5, 256, 256, 256), 1),
            ((512, 512, 16, 512, 512), 1),
            (_uniform(5, 256, 256, 1), 64),
            (_uniform(10, 2, 30, 10), 1),
        ],
        "methods": None,  # every installed method
    },
    "large": {
        "shapes": [
            (_uniform(10, 4096, 4096, 1), 1),
            (_uniform(5, 2048, 2048, 2048), 1),
            (_uniform(5, 1024, 1024, 16), 256),
        ],
        "methods": ("forward", "reverse", "mixed", "auto", "func-jacrev", "func-jacfwd"),
    },
}


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


def bench_cases() -> list[tuple[Point, str]]:
    preset = PRESETS[bench_preset()]
    installed = default_methods()
    methods = [m for m in (preset["methods"] or installed) if m in installed]
    device = bench_device()
    return [
        (Point(widths, batch, "float32", device), method)
        for widths, batch in preset["shapes"]
        for method in methods
    ]


def pytest_benchmark_update_machine_info(config, machine_info):
    env = environment(bench_device() if torch.cuda.is_available() else "cpu")
    machine_info["jacbench"] = {
        key: env[key]
        for key in ("jacbench", "torch", "cuda", "device_name", "threads", "cpu_model")
    }
