"""The NumPy route for one input through a small network (NOTE: [Small networks in NumPy]):
forced on, it is exact against float64 torch.func wherever it is taken, and it is not taken
where it cannot be (an activation it lacks, autograd, a batch)."""

import dataclasses

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from jacbench import (
    MLP,
    jacobian,
    jacobian_forward,
    jacobian_reverse,
    reference_jacobian,
    relative_error,
)
from jacbench.kernels import small
from jacbench.measure import tuning

NUMPY = dataclasses.replace(
    tuning.DEFAULTS, small={"small forward": "numpy", "small reverse": "numpy"}
)
ROUTINES = [jacobian_forward, jacobian_reverse, jacobian]


@pytest.fixture
def taken(monkeypatch):
    """The modes the NumPy route computed, while it is forced on."""
    seen = []
    for mode in ("forward", "reverse"):
        route = getattr(small, mode)

        def spy(*args, _route=route, _mode=mode):
            seen.append(_mode)
            return _route(*args)

        monkeypatch.setattr(small, mode, spy)
    with tuning.use(NUMPY):
        yield seen


@pytest.mark.parametrize("routine", ROUTINES)
@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu", "identity"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bias", [True, False])
def test_the_numpy_route_is_exact(taken, routine, activation, dtype, bias):
    widths = (4, 24, 24, 24, 6)
    net64 = MLP.from_widths(widths, activation=activation, bias=bias, seed=3, dtype=torch.float64)
    x = torch.randn(4, dtype=torch.float64)
    net = net64.to(dtype=dtype)
    result = routine(net, x.to(dtype))
    assert taken  # the route was taken
    assert result.dtype == dtype and result.shape == (6, 4)
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    assert relative_error(result, reference_jacobian(net64, x)) < tolerance


def test_the_numpy_route_is_not_taken_where_it_cannot_be(taken):
    net = MLP.from_widths((3, 8, 8, 2), activation="softplus", seed=0)
    jacobian_reverse(net, torch.randn(3))  # no softplus in NumPy here
    net = MLP.from_widths((3, 8, 8, 2), seed=0)
    jacobian_reverse(net, torch.randn(5, 3))  # a batch
    x = torch.randn(3, requires_grad=True)
    jac = jacobian_reverse(net, x)  # autograd records: the result must carry a graph
    assert jac.requires_grad
    xs = torch.randn(4, 3)
    batched = torch.func.vmap(lambda one: jacobian(net, one))(xs)  # vmap's batched input
    assert torch.allclose(batched, jacobian_reverse(net, xs))
    with FlopCounterMode(display=False) as counter:  # a mode that must see every product
        jacobian_reverse(net, torch.randn(3))
    assert counter.get_total_flops() > 0
    half = MLP.from_widths((3, 8, 8, 2), seed=0, dtype=torch.bfloat16)
    jacobian_reverse(half, torch.randn(3, dtype=torch.bfloat16))  # no bfloat16 in NumPy
    assert taken == []


def test_the_numpy_route_keeps_its_arrays_with_the_network(taken):
    net = MLP.from_widths((3, 8, 8, 2), seed=0)
    first = net.numpy_network
    jacobian_forward(net, torch.randn(3))
    assert taken == ["forward"] and net.numpy_network is first
    assert first.weights[0].base is not None  # a view of the tensor's memory, not a copy


def test_the_numpy_route_reads_the_weights_as_they_are_now(taken):
    net = MLP.from_widths((3, 8, 8, 2), seed=0)
    x = torch.randn(3)
    before = jacobian_reverse(net, x)
    with torch.no_grad():
        net.weights[1].mul_(2)
    after = jacobian_reverse(net, x)
    assert not torch.allclose(before, after)
    assert relative_error(after, reference_jacobian(net.to(dtype=torch.float64), x.double())) < 1e-5
