import pytest
import torch

from jacbench.activations import ACTIVATIONS, get_activation


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_derivative_matches_autograd(name):
    act = ACTIVATIONS[name]
    # Include the kinks and thresholds where hand-written derivatives usually go wrong.
    z = torch.cat([torch.linspace(-30, 30, 301, dtype=torch.float64), torch.tensor([0.0, 20.0])])
    z.requires_grad_(True)
    out = act.fn(z)
    (expected,) = torch.autograd.grad(out.sum(), z)
    got = act.derivative(z.detach(), out.detach())
    torch.testing.assert_close(got, expected, rtol=1e-13, atol=1e-15)


def test_relu_derivative_at_zero_is_zero():
    relu = ACTIVATIONS["relu"]
    z = torch.zeros(3)
    assert relu.derivative(z, relu.fn(z)).tolist() == [0.0, 0.0, 0.0]


def test_softplus_is_linear_above_threshold():
    softplus = ACTIVATIONS["softplus"]
    z = torch.tensor([20.5, 25.0], dtype=torch.float64)
    assert softplus.derivative(z, softplus.fn(z)).tolist() == [1.0, 1.0]


def test_unknown_activation_names_the_choices():
    with pytest.raises(ValueError, match="unknown activation 'gelu'.*tanh"):
        get_activation("gelu")
