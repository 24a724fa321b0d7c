"""Second order: every Hessian mode, hvp and Laplacian method against float64 torch.func.hessian,
their FLOPs against FlopCounterMode, σ'' against autograd, and the cost model's picks."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from jacbench import (
    ACTIVATIONS,
    MLP,
    hessian,
    hessian_flops,
    hvp,
    laplacian,
    laplacian_flops,
    plan_second_order,
    reference_hessian,
)
from jacbench.ad import cost
from jacbench.ad.hessians import HESSIAN_MODES, LAPLACIAN_METHODS, rademacher

SMOOTH = ["tanh", "sigmoid", "softplus"]


def _net(widths, activation="tanh", seed=0, dtype=torch.float64):
    return MLP.from_widths(widths, activation=activation, seed=seed, dtype=dtype)


def _input(widths, batch, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(max(batch, 1), widths[0], generator=g, dtype=dtype)
    return x if batch > 1 else x[0]


def _flops(fn):
    with FlopCounterMode(display=False) as counter:
        result = fn()
    return result, counter.get_total_flops()


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_second_derivative_matches_autograd(name):
    act = ACTIVATIONS[name]
    z = torch.linspace(-25, 25, 1001, dtype=torch.float64)
    z = z[(z.abs() > 1e-6)]  # ReLU's kink: autograd and the closed form may differ at 0
    grad2 = torch.func.vmap(torch.func.grad(torch.func.grad(lambda t: act.fn(t))))(z)
    out = act.fn(z)
    assert torch.allclose(act.second_derivative(z, out), grad2, atol=1e-12, rtol=1e-10)


widths_strategy = st.lists(st.integers(1, 7), min_size=3, max_size=6).map(tuple)


@settings(max_examples=40, deadline=None)
@given(
    widths=widths_strategy,
    batch=st.sampled_from([1, 3]),
    activation=st.sampled_from(SMOOTH + ["relu"]),
    mode=st.sampled_from(HESSIAN_MODES),
    seed=st.integers(0, 1000),
)
def test_hessian_modes_match_torch_func_and_count_their_flops(
    widths, batch, activation, mode, seed
):
    net = _net(widths, activation, seed)
    x = _input(widths, batch, seed + 1)
    expected = reference_hessian(net, x)
    got, flops = _flops(lambda: hessian(net, x, mode))
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-11, rtol=1e-9)
    picked = plan_second_order(widths, batch).hessian_mode if mode == "auto" else mode
    assert flops == hessian_flops(widths, picked, batch)


@settings(max_examples=30, deadline=None)
@given(
    widths=widths_strategy,
    batch=st.sampled_from([1, 4]),
    activation=st.sampled_from(SMOOTH),
    method=st.sampled_from(["forward-laplacian", "hessian-trace"]),
    seed=st.integers(0, 1000),
)
def test_exact_laplacians_match_the_trace_of_the_reference(widths, batch, activation, method, seed):
    net = _net(widths, activation, seed)
    x = _input(widths, batch, seed + 1)
    expected = reference_hessian(net, x).diagonal(dim1=-2, dim2=-1).sum(-1)
    got, flops = _flops(lambda: laplacian(net, x, method))
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-11, rtol=1e-9)
    assert flops == laplacian_flops(widths, method, batch)


def test_hutchinson_is_unbiased_and_seeded():
    widths = (3, 16, 16, 2)
    net = _net(widths)
    x = _input(widths, 6)
    exact = laplacian(net, x)
    estimate, flops = _flops(lambda: laplacian(net, x, "hutchinson", samples=20000, seed=3))
    assert flops == laplacian_flops(widths, "hutchinson", 6, samples=20000)
    scale = exact.abs().max()
    assert (estimate - exact).abs().max() < 0.05 * scale  # ±1/√20000 of the spread
    few = laplacian(net, x, "hutchinson", samples=2, seed=3)
    assert not torch.allclose(few, exact)  # an estimate, not the value
    assert torch.equal(few, laplacian(net, x, "hutchinson", samples=2, seed=3))
    with pytest.raises(ValueError, match="samples"):
        laplacian(net, x, "hutchinson", samples=0)


@pytest.mark.parametrize("batched_v", [False, True])
def test_hvp_matches_the_reference(batched_v):
    widths = (5, 9, 7, 3)
    net = _net(widths, "softplus")
    x = _input(widths, 4)
    v = torch.randn(4, 5, dtype=torch.float64) if batched_v else torch.randn(5, dtype=torch.float64)
    expected = reference_hessian(net, x) @ (v[:, None, :, None] if batched_v else v[:, None])
    got, flops = _flops(lambda: hvp(net, x, v))
    assert torch.allclose(got, expected.squeeze(-1), atol=1e-12)
    assert flops == cost.hvp_flops(widths, 4)
    single = hvp(net, x[0], v[0] if batched_v else v)
    assert single.shape == (3, 5)


def _textbook(weights, biases):
    """f of one sample written from the tensors: independent of MLP."""

    def f(v):
        for w, b in zip(weights[:-1], biases):
            v = torch.tanh(w @ v if b is None else w @ v + b)
        return weights[-1] @ v

    return f


@pytest.mark.parametrize("method", LAPLACIAN_METHODS)
def test_a_laplacian_differentiates_by_the_weights_and_the_input(method):
    # A PINN's loss: the Laplacian's residual, differentiated by the weights (and by x).
    net = MLP.from_widths((3, 6, 5, 2), bias=True, seed=3, dtype=torch.float64)
    tracked = [*net.weights, *net.biases[:-1]]
    for t in tracked:
        t.requires_grad_()
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    f = _textbook(net.weights, net.biases[:-1])
    directions = rademacher(4, 7, 3, seed=0, like=x)  # Hutchinson's: a fixed function of x

    def quadratic(sample, d):  # Σ_s d_sᵀ H_p d_s
        return torch.einsum("si,pij,sj->p", d, torch.func.hessian(f)(sample), d)

    def expected_laplacian(xs):
        if method == "hutchinson":
            return torch.func.vmap(quadratic)(xs, directions) / 7
        return torch.func.vmap(torch.func.hessian(f))(xs).diagonal(dim1=-2, dim2=-1).sum(-1)

    got = torch.autograd.grad(laplacian(net, x, method, samples=7).square().sum(), [*tracked, x])
    expected = torch.autograd.grad(expected_laplacian(x).square().sum(), [*tracked, x])
    for g, e in zip(got, expected):
        assert torch.allclose(g, e, rtol=1e-9, atol=1e-11)
    plain = x.detach()
    through_func = torch.func.grad(lambda v: laplacian(net, v, method, samples=7).sum())(plain)
    (expected_x,) = torch.autograd.grad(expected_laplacian(x).sum(), x)
    assert torch.allclose(through_func, expected_x, rtol=1e-9, atol=1e-11)


def test_hvp_differentiates_by_its_direction():
    net = MLP.from_widths((3, 6, 2), seed=3, dtype=torch.float64)
    x = torch.randn(3, dtype=torch.float64)
    v = torch.randn(3, dtype=torch.float64, requires_grad=True)
    (got,) = torch.autograd.grad(hvp(net, x, v).sum(), v)
    hess = torch.func.hessian(_textbook(net.weights, net.biases[:-1]))(x)  # (P, D, D)
    assert torch.allclose(got, hess.sum(0).sum(0), rtol=1e-10, atol=1e-12)  # Σ_p Σ_i H_p[i, :]


def test_relu_and_identity_have_zero_second_order():
    for activation in ("relu", "identity"):
        net = _net((3, 6, 6, 2), activation)
        x = _input((3, 6, 6, 2), 2)
        assert torch.equal(hessian(net, x), torch.zeros(2, 2, 3, 3, dtype=torch.float64))
        assert torch.equal(laplacian(net, x), torch.zeros(2, 2, dtype=torch.float64))


def test_float32_stays_float32_and_close():
    widths = (2, 64, 64, 1)
    net32, net64 = _net(widths, dtype=torch.float32), _net(widths)
    x = _input(widths, 8)
    got = laplacian(net32, x.float())
    assert got.dtype == torch.float32
    assert torch.allclose(got.double(), laplacian(net64, x), atol=1e-4)


def test_bad_arguments_are_one_line():
    net = _net((3, 4, 1))
    with pytest.raises(ValueError, match="unknown Hessian mode 'sideways'"):
        hessian(net, torch.zeros(3, dtype=torch.float64), "sideways")
    with pytest.raises(ValueError, match="unknown Laplacian method"):
        laplacian(net, torch.zeros(3, dtype=torch.float64), "guess")
    with pytest.raises(ValueError, match="input size D = 3"):
        hessian(net, torch.zeros(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="v must have"):
        hvp(net, torch.zeros(3, dtype=torch.float64), torch.zeros(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="v must have"):  # a direction per sample, or one
        hvp(net, torch.zeros(5, 3, dtype=torch.float64), torch.zeros(2, 3, dtype=torch.float64))
    for samples in (2.5, True, 0):
        with pytest.raises(ValueError, match="samples must be a whole number ≥ 1"):
            laplacian(net, torch.zeros(3, dtype=torch.float64), "hutchinson", samples=samples)


@pytest.mark.parametrize(
    ("widths", "mode"),
    [
        ((2, 64, 64, 64, 1), "structured"),  # PINN: D ≪ K
        ((1000, 300, 300, 1), "rev-over-fwd"),  # D > K: the P·D²·K term loses
        ((2, 32, 32, 200), "fwd-over-fwd"),  # many outputs, two inputs
    ],
)
def test_plan_second_order_picks_by_flops(widths, mode):
    plan = plan_second_order(widths)
    assert plan.hessian_mode == mode
    assert plan.hessian_flops[mode] == min(plan.hessian_flops.values())
    assert plan.hessian_flops["rev-over-rev"] == plan.hessian_flops["fwd-over-rev"]
    assert plan.hessian_flops["rev-over-fwd"] == plan.hessian_flops["fwd-over-rev"]
    assert plan.hessian_memory_bytes["rev-over-rev"] > plan.hessian_memory_bytes["fwd-over-rev"]
    # The forward Laplacian never costs more than the trace of the best Hessian.
    assert plan.laplacian_flops["forward-laplacian"] <= plan.laplacian_flops["hessian-trace"]
    assert plan.laplacian_method == "forward-laplacian"


def test_laplacian_methods_are_listed():
    assert set(LAPLACIAN_METHODS) == {"forward-laplacian", "hessian-trace", "hutchinson"}


def test_predict_order_two_shows_the_picks():
    from typer.testing import CliRunner

    from jacbench.faces.cli import app

    result = CliRunner().invoke(
        app, ["predict", "--widths", "2", "64", "64", "1", "--batch", "8", "--order", "2"]
    )
    assert result.exit_code == 0, result.output
    assert "second order: widths 2-64-64-1, batch 8" in result.output
    structured = next(line for line in result.output.splitlines() if "structured" in line)
    assert "✓" in structured
    assert "forward-laplacian" in result.output


def test_at_d_equal_k_the_structured_form_ties_and_a_composition_is_picked():
    plan = cost.plan_second_order((64, 64, 64, 64, 64, 16), 16)
    assert plan.hessian_flops["structured"] == plan.hessian_flops["rev-over-fwd"]
    assert plan.hessian_mode == "rev-over-fwd"  # the compositions' tie: the least memory
    assert cost.plan_second_order((63, 64, 64, 64, 64, 16)).hessian_mode == "structured"
    assert cost.plan_second_order((65, 64, 64, 64, 64, 16)).hessian_mode == "rev-over-fwd"
