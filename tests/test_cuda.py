"""CUDA paths: skipped cleanly on machines without a GPU."""

import torch

from jacbench import make_mlp, reference_jacobian, relative_error
from jacbench.grid import Point
from jacbench.harness import SweepConfig, run_sweep
from jacbench.methods import METHODS

from .conftest import requires_cuda


@requires_cuda
def test_every_method_on_cuda_matches_the_cpu_reference():
    net = make_mlp(3, 16, 32, 4, dtype=torch.float64)
    x = torch.randn(5, 16, dtype=torch.float64)
    ref = reference_jacobian(net, x)
    cuda_net, cuda_x = net.to(device="cuda"), x.cuda()
    for name, method in METHODS.items():
        jac = method.build(cuda_net, cuda_x)()
        assert jac.device.type == "cuda", name
        assert relative_error(jac, ref) < 1e-10, name


@requires_cuda
def test_sweep_on_cuda_records_peak_memory():
    config = SweepConfig(
        points=(Point((64, 64, 64, 1), 2, "float32", "cuda"),),
        methods=(METHODS["forward"], METHODS["reverse"]),
        min_time=0.01,
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
