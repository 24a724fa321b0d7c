"""Model factories as a user would write them: good ones and ones that are wrong in each way
a run must refuse or survive (used by tests/test_models.py, by file spec and as callables)."""

import threading

import torch
from torch import nn


class ResNet(nn.Module):
    """One residual block with LayerNorm and SiLU between a linear input and output."""

    def __init__(self, d_in, d_out, width):
        super().__init__()
        self.inp = nn.Linear(d_in, width)
        self.block = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.SiLU())
        self.out = nn.Linear(width, d_out)

    def forward(self, x):
        h = self.inp(x)
        return self.out(h + self.block(h))


def make_resnet(d_in, d_out, width=32):
    return ResNet(d_in, d_out, width)


class Conv1d(nn.Module):
    """A 1-D convolutional net over the input as a one-channel signal of length D."""

    def __init__(self, d_in, d_out, channels):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv1d(1, channels, 3, padding=1), nn.Tanh(), nn.Conv1d(channels, 2, 3, padding=1)
        )
        self.head = nn.Linear(2 * d_in, d_out)

    def forward(self, x):
        batched = x if x.ndim == 2 else x[None]
        out = self.head(self.conv(batched[:, None, :]).flatten(1))
        return out if x.ndim == 2 else out[0]


def make_conv1d(d_in, d_out, channels=4):
    return Conv1d(d_in, d_out, channels)


def make_function(d_in, d_out):
    """A plain function with its own float64 weights (not a module)."""
    generator = torch.Generator().manual_seed(3)
    w = torch.randn(d_out, d_in, generator=generator, dtype=torch.float64)
    return lambda x: torch.sin(x.to(torch.float64) @ w.T).to(x.dtype)


def make_wrong_shape(d_in, d_out):
    return nn.Linear(d_in, d_out + 1)


def make_raising(d_in, d_out):
    raise RuntimeError("no model today")


def make_no_arguments():
    return nn.Linear(2, 2)


def make_not_a_model(d_in, d_out):
    return 42


class _Locked(nn.Linear):
    """A module holding a lock: deepcopy (and so a float64 copy) refuses it."""

    def __init__(self, d_in, d_out):
        super().__init__(d_in, d_out)
        self.lock = threading.Lock()


def make_uncopyable(d_in, d_out):
    return _Locked(d_in, d_out)


def transposed_jacobian(model, x):
    """A routine fn(model, x) that returns Jᵀ: wrong."""
    jac = torch.func.jacrev(model)(x)
    return jac.transpose(-1, -2)
