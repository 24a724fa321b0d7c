"""One benchmark per (shape, method) of the preset; see conftest.py for presets and devices."""

import pytest
import torch
from conftest import bench_cases

from jacbench import cost
from jacbench.harness import TOLERANCES, build_input, build_network, point_reference
from jacbench.jacobians import relative_error
from jacbench.methods import get_method
from jacbench.report import shape_label

CASES = bench_cases()


def _case_id(case) -> str:
    point, method = case
    return f"{method}-{'-'.join(map(str, point.widths))}-B{point.batch}"


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_jacobian(benchmark, case):
    point, method_name = case
    if point.device.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip("JACBENCH_DEVICE asks for CUDA, which is not available")
    method = get_method(method_name)
    net = build_network(point, seed=0, init="lecun", activation="tanh")
    x = build_input(point, seed=0)
    call = method.build(net, x)
    error = relative_error(call(), point_reference(point, net, x))
    assert error <= TOLERANCES[point.dtype], f"{method_name} is wrong at {shape_label(point)}"

    if point.device.startswith("cuda"):

        def timed():
            call()
            torch.cuda.synchronize()
    else:
        timed = call

    plan = cost.plan(point.widths, point.batch)
    mode = method.mode_for(plan.mode)
    benchmark.group = shape_label(point)
    benchmark.extra_info.update(
        method=method_name,
        family=method.family,
        mode=mode,
        widths=list(point.widths),
        batch=point.batch,
        dtype=point.dtype,
        device=point.device,
        flops=plan.flops[mode],
        predicted_mode=plan.mode,
        max_rel_err=error,
    )
    benchmark(timed)
