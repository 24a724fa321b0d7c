"""Buffers reused from call to call (NOTE: [Buffers reused from call to call]): results never
alias them, every call is exact, and they stay out of autograd, transforms and threads'
way."""

import gc
import threading

import pytest
import torch

from jacbench import hessian, hvp, laplacian, make_mlp, reference_hessian
from jacbench.ad import workspace


@pytest.fixture
def net():
    return make_mlp(3, 2, 16, 1, dtype=torch.float64)


ROUTINES = {
    "laplacian": lambda net, x: laplacian(net, x),
    "hutchinson": lambda net, x: laplacian(net, x, "hutchinson", samples=8),
    "hessian": lambda net, x: hessian(net, x, "structured"),
    "fwd-over-rev": lambda net, x: hessian(net, x, "fwd-over-rev"),
    "hvp": lambda net, x: hvp(net, x, torch.ones(2, dtype=torch.float64)),
}


@pytest.mark.parametrize("name", list(ROUTINES))
def test_a_result_is_never_a_buffer_the_next_call_overwrites(net, name):
    routine = ROUTINES[name]
    x1, x2 = torch.randn(5, 2, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    first = routine(net, x1)
    kept = first.clone()
    second = routine(net, x2)
    assert torch.equal(first, kept)  # the second call left the first result alone
    assert not torch.equal(first, second)
    assert torch.equal(routine(net, x1), kept)  # and the buffers hold nothing stale


def test_calls_with_buffers_are_exact(net):
    x = torch.randn(6, 2, dtype=torch.float64)
    reference = reference_hessian(net, x)
    for _ in range(3):
        assert torch.allclose(hessian(net, x, "structured"), reference, atol=1e-12)
        trace = reference.diagonal(dim1=-2, dim2=-1).sum(-1)
        assert torch.allclose(laplacian(net, x), trace, atol=1e-12)


def test_no_buffers_where_autograd_records(net):
    x = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    assert workspace.workspace("laplacian", net, x) is None
    (grad,) = torch.autograd.grad(hessian(net, x, "structured").sum(), x)
    assert grad.shape == x.shape
    with torch.no_grad():
        assert workspace.workspace("laplacian", net, x) is not None


def test_a_call_in_inference_mode_leaves_buffers_the_next_call_can_write(net):
    x = torch.randn(5, 2, dtype=torch.float64)
    reference = reference_hessian(net, x).diagonal(dim1=-2, dim2=-1).sum(-1)
    with torch.inference_mode():
        inside = laplacian(net, x)
    assert torch.allclose(inside, reference, atol=1e-12)
    assert torch.allclose(laplacian(net, x), reference, atol=1e-12)  # raised: inference buffers
    with torch.inference_mode():
        assert torch.allclose(laplacian(net, x), reference, atol=1e-12)


def test_threads_keep_their_own_buffers(net):
    inputs = [torch.randn(64, 2, dtype=torch.float64) for _ in range(4)]
    expected = [laplacian(net, x) for x in inputs]
    results: dict[int, list[torch.Tensor]] = {}

    def work(i: int) -> None:
        results[i] = [laplacian(net, inputs[i]) for _ in range(20)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, got in results.items():
        assert all(torch.equal(g, expected[i]) for g in got)


def test_a_networks_buffers_go_with_it():
    net = make_mlp(2, 2, 8, 1, dtype=torch.float64)
    laplacian(net, torch.randn(3, 2, dtype=torch.float64))
    key = id(net)
    assert any(k[1] == key for k in workspace._KEPT)
    del net
    gc.collect()
    assert not any(k[1] == key for k in workspace._KEPT)


def test_a_thread_keeps_the_last_few_shapes(net):
    for batch in range(1, workspace.WORKSPACES + 4):
        laplacian(net, torch.randn(batch, 2, dtype=torch.float64))
    mine = [k for k in workspace._KEPT if k[-1] == threading.get_ident()]
    assert len(mine) <= workspace.WORKSPACES
