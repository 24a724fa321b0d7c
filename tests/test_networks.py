import re

import pytest
import torch
from torch import nn

from jacbench import MLP, jacobian, jacobian_forward, jacobian_mixed, jacobian_reverse, make_mlp


def test_make_mlp_shapes_and_names():
    net = make_mlp(depth=3, d_in=4, width=6, d_out=2)
    assert net.widths == (4, 6, 6, 6, 2)
    assert net.depth == 3
    assert [tuple(w.shape) for w in net.weights] == [(6, 4), (6, 6), (6, 6), (2, 6)]
    assert list(net.param_dict()) == ["W1", "W2", "W3", "WF"]
    assert net(torch.ones(4)).shape == (2,)
    assert net(torch.ones(5, 4)).shape == (5, 2)


def test_forward_pass_is_the_textbook_formula():
    net = make_mlp(depth=2, d_in=3, width=4, d_out=2, dtype=torch.float64)
    p = net.param_dict()
    x = torch.randn(3, dtype=torch.float64)
    expected = p["WF"] @ torch.tanh(p["W2"] @ torch.tanh(p["W1"] @ x))
    torch.testing.assert_close(net(x), expected)


def test_same_seed_same_weights_across_dtypes_and_calls():
    a = make_mlp(2, 5, 8, 3, seed=7, dtype=torch.float64)
    b = make_mlp(2, 5, 8, 3, seed=7, dtype=torch.float32)
    c = make_mlp(2, 5, 8, 3, seed=8, dtype=torch.float64)
    for wa, wb in zip(a.weights, b.weights):
        torch.testing.assert_close(wa.float(), wb)
    assert not torch.equal(a.weights[0], c.weights[0])


@pytest.mark.parametrize(
    ("init", "expected_std"),
    [("lecun", 1 / 400**0.5), ("normal", 1.0), ("xavier", (2 / 800) ** 0.5)],
)
def test_init_scales(init, expected_std):
    net = make_mlp(2, 400, 400, 400, init=init, dtype=torch.float64)
    std = net.weights[1].std().item()
    assert abs(std - expected_std) / expected_std < 0.02


def test_normal_init_saturates_deep_tanh_and_lecun_does_not():
    x = torch.randn(64, dtype=torch.float64)
    saturated = make_mlp(8, 64, 64, 1, init="normal", dtype=torch.float64)
    healthy = make_mlp(8, 64, 64, 1, init="lecun", dtype=torch.float64)

    def mean_slope(net):
        h = x
        for w in net.weights[:-1]:
            h = torch.tanh(w @ h)
        return (1 - h**2).mean().item()

    assert mean_slope(saturated) < 0.2
    assert mean_slope(healthy) > 0.4


def test_from_widths_hourglass_and_bias():
    net = MLP.from_widths((8, 32, 2, 32, 8), bias=True, activation="sigmoid")
    assert net.widths == (8, 32, 2, 32, 8)
    assert all(b is not None for b in net.biases)
    assert all(a.name == "sigmoid" for a in net.activations)


def test_to_changes_dtype_and_keeps_values():
    net = make_mlp(2, 3, 4, 1, dtype=torch.float64)
    net32 = net.to(dtype=torch.float32)
    assert net32.dtype == torch.float32
    torch.testing.assert_close(net32.weights[0], net.weights[0].float())


def test_from_sequential_round_trip():
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5, bias=False), nn.ReLU(), nn.Linear(5, 2)
    ).double()
    net = MLP.from_sequential(model)
    assert net.widths == (4, 6, 5, 2)
    assert [a.name for a in net.activations] == ["tanh", "relu"]
    assert net.biases[1] is None
    x = torch.randn(7, 4, dtype=torch.float64)
    torch.testing.assert_close(net(x), model(x).detach())


def test_from_sequential_rejects_unknown_layer_by_name():
    model = nn.Sequential(nn.Linear(3, 3), nn.GELU(), nn.Linear(3, 1))
    with pytest.raises(ValueError, match=r"layer 1 \(GELU\) is not supported"):
        MLP.from_sequential(model)


def test_from_sequential_rejects_bad_structure():
    with pytest.raises(ValueError, match="two Linear layers in a row"):
        MLP.from_sequential(nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 1)))
    with pytest.raises(ValueError, match="at least two Linear"):
        MLP.from_sequential(nn.Sequential(nn.Linear(3, 3), nn.Tanh()))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"depth": 0, "d_in": 3, "width": 3, "d_out": 1}, "depth must be a whole number ≥ 1"),
        ({"depth": 2.0, "d_in": 3, "width": 3, "d_out": 1}, "got 2.0"),
        ({"depth": 2, "d_in": 0, "width": 3, "d_out": 1}, "whole number ≥ 1, got 0 in"),
        ({"depth": 2, "d_in": 2.5, "width": 3, "d_out": 1}, "whole number ≥ 1, got 2.5 in"),
        ({"depth": 2, "d_in": 3, "width": True, "d_out": 1}, "whole number ≥ 1, got True in"),
        ({"depth": 2, "d_in": 3, "width": 3, "d_out": 1, "init": "he"}, "unknown init 'he'"),
    ],
)
def test_make_mlp_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_mlp(**kwargs)


def test_mlp_checks_shapes():
    with pytest.raises(ValueError, match="weight 2 has 5 columns but weight 1 has 4 rows"):
        MLP(
            (torch.zeros(4, 3), torch.zeros(2, 5)), (None, None), (make_mlp(1, 1, 1, 1).activations)
        )


def _textbook_dict(depth=3, d_in=4, width=5, d_out=2, dtype=torch.float64):
    """The textbook's generate_dict: W1 (K, D), W2 … WL (K, K), WF (P, K), no biases."""
    generator = torch.Generator().manual_seed(1)
    params = {"W1": torch.randn(width, d_in, generator=generator, dtype=dtype)}
    for i in range(2, depth + 1):
        params[f"W{i}"] = torch.randn(width, width, generator=generator, dtype=dtype)
    params["WF"] = torch.randn(d_out, width, generator=generator, dtype=dtype)
    return params


def test_from_param_dict_builds_the_textbook_network():
    params = _textbook_dict()
    net = MLP.from_param_dict(params)
    assert net.widths == (4, 5, 5, 5, 2) and net.depth == 3
    x = torch.randn(4, dtype=torch.float64)
    h = x
    for i in (1, 2, 3):
        h = torch.tanh(params[f"W{i}"] @ h)
    assert torch.equal(net(x), params["WF"] @ h)
    assert net.param_dict() == params  # the same tensors back, no copies
    assert all(net.param_dict()[k] is params[k] for k in params)


def test_param_dict_round_trip_with_biases():
    net = make_mlp(2, 3, 4, 2, bias=True, activation="sigmoid", dtype=torch.float64)
    params = net.param_dict()
    assert sorted(params) == ["W1", "W2", "WF", "b1", "b2", "bF"]
    again = MLP.from_param_dict(params, activation="sigmoid")
    x = torch.randn(5, 3, dtype=torch.float64)
    assert torch.equal(again(x), net(x))
    assert again.param_dict().keys() == params.keys()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.pop("WF"), "params has no 'WF'"),
        (lambda p: p.pop("W1"), "params has no 'W1'"),
        (lambda p: p.pop("W2"), "params has W1 … W3 but no W2"),
        (lambda p: p.update(W5=p["W3"]), "params has W1 … W5 but no W4"),
        (lambda p: p.update(W0=p["W1"]), "unexpected keys 'W0'"),
        (lambda p: p.update(bias=p["W1"]), "unexpected keys 'bias'"),
        (lambda p: p.update(W2=p["W2"].numpy()), "params['W2'] is a ndarray, not a tensor"),
        (lambda p: p.update(W2=p["W2"][:, :3]), "params['W2'] has shape (5, 3): its 3 columns"),
        (lambda p: p.update(WF=p["WF"].float()), "params['WF'] is torch.float32"),
        (lambda p: p.update(W2=p["W2"][0]), "params['W2'] must be a matrix"),
        (lambda p: p.update(b2=torch.zeros(3, dtype=torch.float64)), "params['b2'] must have"),
    ],
)
def test_from_param_dict_names_the_key_that_does_not_fit(change, message):
    params = _textbook_dict()
    change(params)
    with pytest.raises(ValueError, match=re.escape(message)):
        MLP.from_param_dict(params)


def test_from_param_dict_names_one_layers_keys_once():
    params = {"W1": torch.zeros(3, 2), "WF": torch.zeros(1, 3), "c": torch.zeros(1)}
    with pytest.raises(ValueError, match=re.escape("expected W1, WF and optional biases b1, bF")):
        MLP.from_param_dict(params)


# NOTE: [A network's derived parts follow its tensors]
def _textbook_jacobian(weights, x):
    """J of W_F·tanh(W_L ⋯ tanh(W_1·x)) by torch.func, written out: independent of MLP."""

    def f(v):
        for w in weights[:-1]:
            v = torch.tanh(w @ v)
        return weights[-1] @ v

    return torch.func.jacrev(f)(x)


@pytest.mark.parametrize("routine", [jacobian_forward, jacobian_reverse, jacobian_mixed])
def test_gradients_through_the_jacobian_follow_tracking_turned_on_later(routine):
    net = make_mlp(2, 3, 5, 2, dtype=torch.float64, seed=1)
    x = torch.randn(3, dtype=torch.float64)
    routine(net, x)  # the network's parts made while nothing was tracked
    weight = net.weights[1].requires_grad_()
    got = torch.autograd.grad(routine(net, x).square().sum(), weight)[0]
    reference = torch.autograd.grad(_textbook_jacobian(net.weights, x).square().sum(), weight)[0]
    assert torch.allclose(got, reference, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("routine", [jacobian_forward, jacobian_reverse, jacobian_mixed])
@pytest.mark.parametrize("untracked", [torch.no_grad, torch.inference_mode])
@pytest.mark.parametrize("shape", [(3,), (4, 3)])
def test_gradients_hold_after_a_call_where_nothing_was_tracked(routine, untracked, shape):
    # A validation pass before training: the network's parts are made again there (its
    # tensors' tracking changed), and must still carry the gradient in the next call.
    net = make_mlp(2, 3, 5, 2, dtype=torch.float64, seed=1)
    weights = [w.requires_grad_() for w in net.weights]
    x = torch.randn(shape, dtype=torch.float64)
    with untracked():
        routine(net, x)
    got = torch.autograd.grad(routine(net, x).square().sum(), weights)
    samples = x if x.ndim == 2 else x[None]
    jacobians = torch.stack([_textbook_jacobian(weights, sample) for sample in samples])
    expected = torch.autograd.grad(jacobians.square().sum(), weights)
    for g, e in zip(got, expected):
        assert torch.allclose(g, e, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("routine", [jacobian_forward, jacobian_reverse, jacobian_mixed])
def test_gradients_reach_biases_that_alone_are_tracked(routine):
    net = make_mlp(2, 3, 5, 2, dtype=torch.float64, seed=1, bias=True)
    # The hidden layers' biases (the output's is a constant of J): the weights untracked.
    biases = [b.requires_grad_() for b in net.biases[:-1]]
    x = torch.randn(4, 3, dtype=torch.float64)  # a batch: where the routines keep buffers
    got = torch.autograd.grad(routine(net, x).square().sum(), biases)

    def f(v):
        for w, b in zip(net.weights[:-1], biases):
            v = torch.tanh(w @ v + b)
        return net.weights[-1] @ v

    expected_j = torch.stack([torch.func.jacrev(f)(sample) for sample in x])
    expected = torch.autograd.grad(expected_j.square().sum(), biases)
    for g, e in zip(got, expected):
        assert torch.allclose(g, e, rtol=1e-10, atol=1e-12)


def test_a_batch_runs_after_tracking_is_turned_off():
    weights = [torch.randn(5, 3), torch.randn(5, 5), torch.randn(2, 5)]
    net = MLP.from_param_dict({"W1": weights[0], "W2": weights[1], "WF": weights[2]})
    for w in net.weights:
        w.requires_grad_()
    x = torch.randn(4, 3)
    jacobian_reverse(net, x)
    for w in net.weights:
        w.requires_grad_(False)
    expected = torch.stack([_textbook_jacobian(net.weights, sample) for sample in x])
    assert torch.allclose(jacobian_reverse(net, x), expected, atol=1e-5)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda net: net.biases[1].untyped_storage().resize_(0), "bias 2's memory was freed"),
        (lambda net: net.biases[1].untyped_storage().resize_(4), "bias 2's memory was freed"),
        (lambda net: net.weights[0].untyped_storage().resize_(0), "weight 1's memory was freed"),
        (
            lambda net: setattr(net.weights[1], "data", net.weights[1].data.view(torch.int32)),
            "all weights must share one dtype",
        ),
    ],
    ids=["bias-freed", "bias-shrunk", "weight-freed", "weight-reinterpreted"],
)
@pytest.mark.parametrize("widths", [(4, 24, 24, 6), (6, 200, 200, 2)])
def test_a_tensor_freed_or_reinterpreted_under_the_network_is_named(change, message, widths):
    net = MLP.from_widths(widths, bias=True)
    x = torch.randn(widths[0])
    jacobian_reverse(net, x)  # every part made (the C++ chain too, where it builds)
    change(net)
    for routine in (jacobian_reverse, jacobian_forward, jacobian):
        with pytest.raises(ValueError, match=re.escape(message)):
            routine(net, x)


def test_a_small_network_made_of_a_transforms_tensors_is_differentiated_through():
    # torch.func.grad's tracking tensors have no memory: the NumPy and C++ routes step aside
    net = make_mlp(3, 4, 24, 6, seed=2)
    x = torch.randn(4)

    def loss(weight):
        weights = (net.weights[0], weight, *net.weights[2:])
        return jacobian_reverse(MLP(weights, net.biases, net.activations), x).sum()

    got = torch.func.grad(loss)(net.weights[1])
    weight = net.weights[1].detach().requires_grad_()
    weights = (net.weights[0], weight, *net.weights[2:])
    expected = torch.autograd.grad(_textbook_jacobian(weights, x).sum(), weight)[0]
    assert torch.allclose(got, expected, atol=1e-5)
