"""CUDA graphs: capture_jacobian and auto's graph cache (CUDA tests skip without a GPU; the
cache's bookkeeping is checked on any machine with a stand-in for the capture)."""

import gc
import weakref

import pytest
import torch

from jacbench import capture_jacobian, jacobian, make_mlp, reference_jacobian, relative_error
from jacbench.ad import graphs, jacobians

from .conftest import requires_cuda


class _FakeCapture:
    """Stands in for a CUDA graph on the CPU: runs the routine, counts captures (and holds
    its network weakly, as a graph does)."""

    made = 0

    def __init__(self, net, x, mode):
        _FakeCapture.made += 1
        self.net, self.mode, self.current = weakref.ref(net), mode, True

    def __call__(self, x):
        return jacobian(self.net(), x, self.mode)


@pytest.fixture
def fake_graphs(monkeypatch):
    monkeypatch.setattr(graphs, "capturable", lambda *tensors: True)
    monkeypatch.setattr(jacobians, "capture_jacobian", _FakeCapture)
    _FakeCapture.made = 0
    return _FakeCapture


def test_auto_captures_a_shape_at_its_second_call_and_replays_after(fake_graphs):
    net = make_mlp(3, 4, 8, 2, dtype=torch.float64)
    x = torch.randn(4, dtype=torch.float64)
    assert jacobians._replay_graph(net, x, "reverse") is None  # first sight: eager
    assert fake_graphs.made == 0
    for _ in range(3):
        result = jacobians._replay_graph(net, x, "reverse")
        assert relative_error(result, reference_jacobian(net, x)) < 1e-12
    assert fake_graphs.made == 1


def test_auto_keeps_the_graphs_of_the_last_few_shapes(fake_graphs):
    net = make_mlp(2, 3, 8, 2, dtype=torch.float64)
    batches = range(1, jacobians.GRAPHS_PER_NETWORK + 2)
    for b in batches:
        for _ in range(2):
            jacobians._replay_graph(net, torch.randn(b, 3, dtype=torch.float64), "forward")
    kept = jacobians._GRAPHS[id(net)].graphs
    assert len(kept) == jacobians.GRAPHS_PER_NETWORK
    assert [key[1][0] for key in kept] == list(batches)[1:]  # the oldest went first
    made = fake_graphs.made
    jacobians._replay_graph(net, torch.randn(1, 3, dtype=torch.float64), "forward")
    assert fake_graphs.made == made + 1  # evicted, so captured again


def test_a_graph_whose_weights_moved_is_captured_again(fake_graphs):
    net = make_mlp(2, 3, 8, 2, dtype=torch.float64)
    x = torch.randn(3, dtype=torch.float64)
    for _ in range(3):
        jacobians._replay_graph(net, x, "reverse")
    graph = next(iter(jacobians._GRAPHS[id(net)].graphs.values()))
    graph.current = False
    jacobians._replay_graph(net, x, "reverse")
    assert fake_graphs.made == 2


def test_a_networks_graphs_go_with_it(fake_graphs):
    net = make_mlp(2, 3, 8, 2, dtype=torch.float64)
    x = torch.randn(3, dtype=torch.float64)
    for _ in range(2):
        jacobians._replay_graph(net, x, "reverse")
    key = id(net)
    assert key in jacobians._GRAPHS
    del net
    gc.collect()
    assert key not in jacobians._GRAPHS


def test_shapes_over_the_memory_limit_run_eagerly(fake_graphs, monkeypatch):
    monkeypatch.setattr(jacobians, "GRAPH_MEMORY_BYTES", 1000)
    jacobians._fits_a_graph.cache_clear()
    net = make_mlp(2, 30, 30, 30, dtype=torch.float64)
    x = torch.randn(30, dtype=torch.float64)
    for _ in range(3):
        assert jacobians._replay_graph(net, x, "reverse") is None
    assert fake_graphs.made == 0
    jacobians._fits_a_graph.cache_clear()


def test_nothing_on_the_cpu_is_capturable():
    assert not graphs.capturable(torch.ones(3))


def test_capture_jacobian_needs_cuda():
    net = make_mlp(2, 3, 8, 2)
    with pytest.raises(ValueError, match="CUDA"):
        capture_jacobian(net, torch.ones(3))


# ------------------------------------------------------------------ on a GPU
@requires_cuda
@pytest.mark.parametrize("mode", ["auto", "forward", "reverse", "mixed"])
@pytest.mark.parametrize("shape", [(7,), (5, 7)])
def test_captured_jacobian_replays_the_jacobian_of_each_new_input(mode, shape):
    net = make_mlp(4, 7, 16, 3, dtype=torch.float64)
    captured = capture_jacobian(
        net.to(device="cuda"), torch.randn(shape, dtype=torch.float64, device="cuda"), mode
    )
    assert captured.capture_s > 0
    results = []
    for _ in range(3):
        x = torch.randn(shape, dtype=torch.float64)
        result = captured(x.cuda())
        assert relative_error(result, reference_jacobian(net, x)) < 1e-10
        results.append(result)
    assert results[0].data_ptr() != results[1].data_ptr()  # each call answers its own tensor


@requires_cuda
def test_captured_jacobian_refuses_another_shape():
    net = make_mlp(2, 3, 8, 2).to(device="cuda")
    captured = capture_jacobian(net, torch.ones(3, device="cuda"))
    with pytest.raises(ValueError, match="captured for inputs of shape"):
        captured(torch.ones(2, 3, device="cuda"))


@requires_cuda
def test_auto_on_cuda_replays_a_graph_and_sees_weights_changed_in_place():
    net64 = make_mlp(3, 6, 12, 2, dtype=torch.float64)
    net = net64.to(device="cuda")
    for _ in range(4):
        x = torch.randn(6, dtype=torch.float64)
        assert relative_error(jacobian(net, x.cuda()), reference_jacobian(net64, x)) < 1e-10
    assert len(jacobians._GRAPHS[id(net)].graphs) == 1
    with torch.no_grad():
        net.weights[1].mul_(0.5)
        net64.weights[1].mul_(0.5)
    x = torch.randn(6, dtype=torch.float64)
    assert relative_error(jacobian(net, x.cuda()), reference_jacobian(net64, x)) < 1e-10


@requires_cuda
def test_a_captured_graph_knows_when_a_weight_moved():
    net = make_mlp(2, 6, 12, 2).to(device="cuda")
    captured = capture_jacobian(net, torch.ones(6, device="cuda"))
    assert captured.current
    net.weights[0].data = torch.zeros_like(net.weights[0])
    assert not captured.current
    square = make_mlp(2, 6, 12, 2).to(device="cuda")
    captured = capture_jacobian(square, torch.ones(6, device="cuda"))
    square.weights[1].data = square.weights[1].data.t()  # the same address, other strides
    assert not captured.current


@requires_cuda
def test_auto_on_cuda_runs_eagerly_where_autograd_records():
    net = make_mlp(2, 4, 8, 2, dtype=torch.float64).to(device="cuda")
    x = torch.randn(4, dtype=torch.float64, device="cuda", requires_grad=True)
    for _ in range(3):
        jac = jacobian(net, x)
    (grad,) = torch.autograd.grad(jac.sum(), x)
    assert grad.shape == x.shape
    assert not jacobians._GRAPHS.get(id(net), jacobians._NetworkGraphs()).graphs
