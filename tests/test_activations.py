import pytest
import torch

from jacbench.kernels.activations import ACTIVATIONS, get_activation


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


@pytest.mark.parametrize("name", list(ACTIVATIONS))
@pytest.mark.parametrize(
    ("g_shape", "z_shape"),
    [((5, 303), (303,)), ((303, 5), (303, 1)), ((5, 303), (2, 1, 303)), ((303, 5), (2, 303, 1))],
)
def test_times_derivative_scales_by_the_derivative(name, g_shape, z_shape):
    # g ⊙ σ'(z) with z broadcast against g the ways the Jacobian routines lay blocks out
    # (columns, rows, batched rows, batched columns); σ' itself is checked against autograd
    # above.
    act = ACTIVATIONS[name]
    grid = torch.cat([torch.linspace(-30, 30, 301, dtype=torch.float64), torch.tensor([0.0, 20.0])])
    z = torch.stack([grid, grid.flip(0)]) if len(z_shape) == 3 else grid
    z = z.reshape(z_shape)
    out = act.fn(z)
    g = torch.randn(g_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    got = act.times_derivative(g, out if act.reads_output else z)
    expected = g * act.derivative(z, out)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-15, atol=0)


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
