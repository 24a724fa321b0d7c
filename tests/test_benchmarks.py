"""The pytest-benchmark suites stay runnable, and their JSON turns into jacbench summaries."""

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from jacbench.cli import app
from jacbench.results import read_pytest_benchmark

ROOT = Path(__file__).resolve().parents[1]


def _run_benchmarks(preset: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "JACBENCH_BENCH_PRESET": preset, "JACBENCH_DEVICE": "cpu"}
    command = [sys.executable, "-m", "pytest", "benchmarks/", "--benchmark-disable", "-q"]
    return subprocess.run(
        [*command, "-p", "no:cacheprovider"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_smoke_preset_runs_with_benchmarks_disabled():
    done = _run_benchmarks("smoke")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "12 passed" in done.stdout


def test_unknown_preset_is_a_usage_error():
    done = _run_benchmarks("enormous")
    assert done.returncode != 0
    assert "JACBENCH_BENCH_PRESET='enormous' is not a preset" in done.stdout + done.stderr


def _benchmark(method, median, widths=(64, 64, 64, 1)):
    return {
        "group": "L=2 D=64 K=64 P=1 B=1 float32 cpu",
        "name": f"test_jacobian[{method}]",
        "extra_info": {
            "method": method,
            "family": "jacbench",
            "widths": list(widths),
            "batch": 1,
            "dtype": "float32",
            "device": "cpu",
            "flops": 1_000_000,
            "predicted_mode": "reverse",
            "max_rel_err": 1e-7,
        },
        "stats": {"median": median, "iqr": median / 100, "mean": median, "rounds": 50},
    }


def test_report_from_pytest_benchmark_json(tmp_path):
    path = tmp_path / "bench.json"
    benchmarks = [
        _benchmark("forward", 4e-4),
        _benchmark("reverse", 1e-4),
        _benchmark("mixed", 1e-4),
    ]
    path.write_text(json.dumps({"machine_info": {}, "benchmarks": benchmarks}))
    frame = read_pytest_benchmark(path)
    assert list(frame["method"]) == ["forward", "reverse", "mixed"]
    assert frame["gflops"].tolist()[1] == 10.0
    result = CliRunner().invoke(app, ["report", "--pytest-benchmark", str(path)])
    assert result.exit_code == 0, result.output
    assert "| L=2 D=64 K=64 P=1 B=1 float32 cpu | 400 µs | 100 µs | 100 µs | 4 | reverse ✓ |" in (
        result.output
    )


def test_report_rejects_other_json(tmp_path):
    path = tmp_path / "other.json"
    path.write_text("{}")
    result = CliRunner().invoke(app, ["report", "--pytest-benchmark", str(path)])
    assert result.exit_code == 2
    assert "is not a pytest-benchmark JSON file" in result.output
    neither = CliRunner().invoke(app, ["report"])
    assert neither.exit_code == 2 and "give a RUN_DIR or --pytest-benchmark" in neither.output
