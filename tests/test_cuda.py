"""CUDA paths: skipped cleanly on machines without a GPU."""

import pytest
import torch

from jacbench import make_mlp, reference_jacobian, relative_error
from jacbench.ad.networks import UnsupportedNetwork
from jacbench.runs.grid import Point
from jacbench.runs.harness import run_sweep
from jacbench.runs.methods import METHODS
from jacbench.runs.operators import OPERATORS
from jacbench.runs.options import SweepOptions
from jacbench.runs.settings import Settings, Timing

from .conftest import requires_cuda


@requires_cuda
@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_on_cuda_matches_the_float64_reference(name):
    method = METHODS[name]
    if not method.available():
        pytest.skip(f"{name} needs {method.requirement}")
    net = make_mlp(3, 16, 32, 4, dtype=torch.float64)
    x = torch.randn(5, 16, dtype=torch.float64)
    ref = OPERATORS[method.operator].reference(net, x)  # on the CPU: independent of CUDA
    try:
        call = method.build(net.to(device="cuda"), x.cuda())
    except UnsupportedNetwork as why:  # fused: float32 only, checked in test_fused
        pytest.skip(str(why))
    result = call()
    if isinstance(result, torch.Tensor):  # JAX's peers answer with arrays of their own
        assert result.device.type == "cuda"
    assert tuple(result.shape) == tuple(ref.shape)
    if method.exact:
        assert relative_error(result, ref) < 1e-10
    else:  # Hutchinson's estimate: of the right size, not the value
        assert 0 < relative_error(result, ref) < 1


@requires_cuda
def test_sweep_on_cuda_records_peak_memory():
    config = Settings(
        SweepOptions(device="cuda"),
        points=(Point((64, 64, 64, 1), 2, "float32", "cuda"),),
        methods=(METHODS["forward"], METHODS["reverse"]),
        timing=Timing(min_time=0.01),
    )
    rows = list(run_sweep(config))
    assert all(r.status.value == "ok" for r in rows)
    assert all(r.peak_memory_bytes > 0 for r in rows)


@requires_cuda
def test_cuda_graph_method_replays_the_right_jacobian():
    net = make_mlp(10, 2, 30, 10, dtype=torch.float64)
    x = torch.randn(2, dtype=torch.float64)
    ref = reference_jacobian(net, x)
    call = METHODS["auto-cudagraph"].build(net.to(device="cuda"), x.cuda())
    assert call.compile_s > 0
    for _ in range(3):
        assert relative_error(call(), ref) < 1e-10


@requires_cuda
def test_sweep_on_cuda_turns_out_of_memory_into_an_oom_row_and_goes_on():
    # A batch of 4096 Jacobians of 4096 × 4096 is 275 GB in float32: more than any GPU holds,
    # while its weights and input (on the host, in float64) are a few hundred MB.
    too_large = Point((4096, 4096, 4096), 4096, "float32", "cuda")
    small = Point((8, 16, 4), 2, "float32", "cuda")
    config = Settings(
        SweepOptions(device="cuda"),
        points=(too_large, small),
        methods=(METHODS["forward"],),
        timing=Timing(min_time=0.01),
    )
    rows = list(run_sweep(config))
    assert [r.status.value for r in rows] == ["oom", "ok"]
    assert rows[1].max_rel_err < 1e-4
