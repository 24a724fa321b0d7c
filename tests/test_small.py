"""The NumPy route for one input through a small network (NOTE: [Small networks in NumPy]):
forced on, it is exact against float64 torch.func wherever it is taken, and it is not taken
where it cannot be (an activation it lacks, autograd, a batch). The C++ chain as the chosen
route: exact on one thread, and a network it cannot take goes the next measured way."""

import dataclasses
import subprocess
import sys
import warnings

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
from jacbench.ad import jacobians
from jacbench.kernels import native, small
from jacbench.measure import tuning

NUMPY = dataclasses.replace(
    tuning.DEFAULTS, small={"small forward": "numpy", "small reverse": "numpy"}
)
ROUTINES = [jacobian_forward, jacobian_reverse, jacobian]
needs_kernels = pytest.mark.skipif(
    not native.available(), reason=f"the C++ kernels do not run here: {native.why_not()}"
)


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_numpy_route_takes_nan_and_huge_inputs_as_autograd_does(taken, dtype):
    # ReLU'(NaN) is 1 in autograd (threshold_backward: 0 only where z ≤ 0); σ(−1e4)
    # overflows e^−z, which NumPy warned of (an error under -W error).
    for activation, x in (("relu", [float("nan"), 0.5, -0.5]), ("sigmoid", [-1e4, 1e4, 0.5])):
        net64 = MLP.from_widths((3, 24, 24, 2), activation=activation, bias=True, seed=4,
                                dtype=torch.float64)  # fmt: skip
        x64 = torch.tensor(x, dtype=torch.float64)
        reference = torch.func.jacrev(net64)(x64)
        if activation == "relu":
            assert reference.abs().max() > 0.1  # not a Jacobian that is 0 either way
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = jacobian_reverse(net64.to(dtype=dtype), x64.to(dtype))
        assert torch.allclose(got.double(), reference, atol=1e-6)
    assert taken == ["reverse", "reverse"]


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


# ------------------------------------------------------------------ the C++ chain as a route
NATIVE = dataclasses.replace(
    tuning.DEFAULTS,
    machine="a test",
    small={"small forward": "native", "small reverse": "native"},
    measured_s={
        "small forward": {"native": 1e-5, "numpy": 3e-5, "torch": 8e-5},
        "small reverse": {"native": 1e-5, "torch": 3e-5, "numpy": 8e-5},
    },
)


@pytest.fixture
def routes_taken(monkeypatch):
    """The routes ("native", "numpy") that computed a small network's Jacobian while the
    tuning chooses the chain, NumPy next for forward mode and torch for reverse."""
    seen = []
    real = jacobians._small_route

    def spy(route, mode, net, x):
        done = real(route, mode, net, x)
        if done is not None:
            seen.append(route)
        return done

    def team_of_one(run):  # the chain's team: one thread, no barriers
        def checked(self, x, threads=0):
            assert threads == 1
            return run(self, x, threads)

        return checked

    monkeypatch.setattr(jacobians, "_small_route", spy)
    monkeypatch.setattr(native.Chain, "forward", team_of_one(native.Chain.forward))
    monkeypatch.setattr(native.Chain, "reverse", team_of_one(native.Chain.reverse))
    with tuning.use(NATIVE):
        yield seen


def test_the_small_routes_are_tried_in_the_order_they_were_measured():
    assert NATIVE.small_routes("forward") == ("native", "numpy", "torch")
    assert NATIVE.small_routes("reverse") == ("native", "torch")  # torch takes every network
    assert tuning.DEFAULTS.small_routes("reverse") == ("torch",)
    assert NUMPY.small_routes("forward") == ("numpy", "torch")  # nothing measured: torch next
    # What a cache file holds is the user's: junk in it is no route, and no crash.
    for junk in ({"numpy": "fast", "x": 1}, None, [1, 2], "fast", {"numpy": float("nan")}):
        entry = {**NATIVE.as_dict(), "measured_s": {"small forward": junk}}
        assert tuning.Tuning.from_dict(entry).small_routes("forward") == ("native", "torch")
    for junk in (None, [1], "x"):
        assert tuning.Tuning.from_dict({**NATIVE.as_dict(), "measured_s": junk}).measured_s == {}


@needs_kernels
@pytest.mark.parametrize("routine", ROUTINES)
@pytest.mark.parametrize("bias", [True, False])
def test_the_chain_route_is_exact_on_one_thread_and_restores_the_threads(
    routes_taken, routine, bias
):
    widths = (4, 24, 24, 24, 24, 24, 24, 24, 24, 6)  # the classes preset's tiny network
    net64 = MLP.from_widths(widths, bias=bias, seed=5, dtype=torch.float64)
    x = torch.randn(4, dtype=torch.float64)
    before = torch.get_num_threads()
    result = routine(net64.to(dtype=torch.float32), x.float())
    assert routes_taken == ["native"]
    assert torch.get_num_threads() == before
    assert result.dtype == torch.float32 and result.shape == (6, 4)
    assert relative_error(result, reference_jacobian(net64, x)) < 1e-5


@pytest.mark.parametrize(
    ("activation", "dtype", "forward_route", "reverse_route"),
    [
        ("tanh", torch.float64, ["numpy"], []),  # the chain is float32: NumPy, then torch
        ("relu", torch.float32, ["numpy"], []),  # and tanh only
        ("softplus", torch.float32, [], []),  # NumPy has no softplus: torch
    ],
)
def test_a_network_the_chain_cannot_take_goes_the_next_measured_way(
    routes_taken, activation, dtype, forward_route, reverse_route
):
    net64 = MLP.from_widths((3, 16, 16, 5), activation=activation, seed=2, dtype=torch.float64)
    x = torch.randn(3, dtype=torch.float64)
    net = net64.to(dtype=dtype)
    exact = reference_jacobian(net64, x)
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    assert relative_error(jacobian_forward(net, x.to(dtype)), exact) < tolerance
    assert routes_taken == forward_route
    routes_taken.clear()
    assert relative_error(jacobian_reverse(net, x.to(dtype)), exact) < tolerance
    assert routes_taken == reverse_route


# A process whose first call is a small network's: the tuning it reads is its own thread
# count's, though the call runs on one thread.
_FIRST_CALL = """
import os, sys, dataclasses, torch
os.environ["JACBENCH_CACHE_DIR"] = sys.argv[1]
torch.set_num_threads(2)
from jacbench import MLP, jacobian_reverse
from jacbench.measure import tuning
mine = dataclasses.replace(tuning.DEFAULTS, machine=tuning.machine_key(), small={
    "small forward": "numpy", "small reverse": "numpy"})
tuning.save(mine)
jacobian_reverse(MLP.from_widths((3, 8, 2), seed=0), torch.randn(3))
print(tuning.active().machine == mine.machine, torch.get_num_threads())
"""


def test_a_small_first_call_reads_the_tuning_of_the_process_thread_count(tmp_path, monkeypatch):
    monkeypatch.delenv("JACBENCH_TUNING", raising=False)
    done = subprocess.run(
        [sys.executable, "-c", _FIRST_CALL, str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "2"]
