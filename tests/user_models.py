"""Model factories as a user would write them: good ones and ones that are wrong in each way
a run must refuse or survive (used by tests/test_models.py, by file spec and as callables)."""

import threading

import numpy as np
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


def make_one_sample(d_in, d_out, width=16):
    """The torch.func idiom: a function of one sample, W2 @ tanh(W1 @ x + b), batching the
    caller's job (W1 @ x refuses a batch (B, D))."""
    w1, b = torch.randn(width, d_in) / d_in**0.5, torch.randn(width)
    w2 = torch.randn(d_out, width) / width**0.5

    def f(x):
        return w2.to(x.dtype) @ torch.tanh(w1.to(x.dtype) @ x + b.to(x.dtype))

    return f


def make_mixes_samples(d_in, d_out):
    """Maps (B, D) to (B, P), but each row depends on the others (centred over the batch, not
    over the features): jacbench must batch it sample by sample."""
    w = torch.randn(d_out, d_in) / d_in**0.5

    def f(x):
        centred = x - x.mean(0) if x.ndim == 2 else x - x.mean()
        return torch.tanh(centred @ w.T.to(x.dtype))

    return f


def make_branches_on_a_value(d_in, d_out):
    """Code written for torch.autograd: a Python branch on a tensor's value (vmap refuses it)."""
    w = torch.randn(d_out, d_in) / d_in**0.5

    def f(x):
        h = w.to(x.dtype) @ x
        if h.norm() > 1e6:  # never taken, but vmap cannot decide it
            h = h / h.norm()
        return torch.tanh(h)

    return f


class Normed(nn.Module):
    """BatchNorm between two linear layers: in eval mode a function of each sample, but
    BatchNorm1d refuses one sample of shape (D,)."""

    def __init__(self, d_in, d_out, width):
        super().__init__()
        self.inp, self.norm = nn.Linear(d_in, width), nn.BatchNorm1d(width)
        self.out = nn.Linear(width, d_out)
        with torch.no_grad():  # running statistics a trained model would have
            self.norm.running_mean.uniform_(-0.5, 0.5)
            self.norm.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        return self.out(torch.tanh(self.norm(self.inp(x))))


def make_batchnorm(d_in, d_out, width=16):
    return Normed(d_in, d_out, width)


def make_writes_in_place(d_in, d_out):
    """Code written for torch.autograd: writes into a tensor made inside the function."""
    w = torch.randn(d_out, d_in) / d_in**0.5

    def f(x):
        out = torch.zeros(d_out, dtype=x.dtype)
        out[0] = x.sum()
        out[1:] = torch.tanh(w[1:].to(x.dtype) @ x)
        return out

    return f


class _NumpySine(torch.autograd.Function):
    """sin computed in NumPy, with its derivative given to autograd (backward and jvp):
    exact for torch.autograd, opaque to torch.func (no vmap rule, no setup_context)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        ctx.save_for_forward(x)
        return torch.from_numpy(np.sin(x.detach().cpu().numpy())).to(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.cos(x)

    @staticmethod
    def jvp(ctx, tangent):
        (x,) = ctx.saved_tensors
        return tangent * torch.cos(x)


def make_through_numpy(d_in, d_out):
    """Code written for torch.autograd: a step in NumPy inside an autograd.Function that
    gives its derivative; torch.func cannot transform it."""
    w = torch.randn(d_out, d_in) / d_in**0.5

    def f(x):
        return _NumpySine.apply(w.to(x.dtype) @ x)

    return f


def make_hides_a_derivative(d_in, d_out):
    """A scale read through NumPy: its derivative is hidden from every AD, so AD's Jacobian
    is not the function's."""
    w = torch.randn(d_out, d_in) / d_in**0.5

    def f(x):
        h = w.to(x.dtype) @ x
        scale = float(np.abs(h.detach().numpy()).max()) + 1.0
        return torch.tanh(h) / scale

    return f


def make_batches_itself_by_a_loop(d_in, d_out):
    """Batches itself with a Python loop over one-sample code that branches on a value: its
    batch call is right, but vmap cannot run the one-sample code."""
    w = torch.randn(d_out, d_in) / d_in**0.5

    def one(x):
        h = w.to(x.dtype) @ x
        for _ in range(5):
            if h.abs().max() > 1e6:
                break
            h = h - 0.05 * torch.sin(h)
        return h

    def f(x):
        return torch.stack([one(s) for s in x]) if x.ndim == 2 else one(x)

    return f


def make_numpy_on_the_input(d_in, d_out):
    """Reads the input itself through NumPy: neither torch.func nor torch.autograd can
    differentiate it."""
    w = torch.randn(d_out, d_in) / d_in**0.5

    def f(x):
        scale = float(np.linalg.norm(x.numpy()))  # the line the refusal names
        return torch.tanh(w.to(x.dtype) @ x) * scale

    return f


def make_honest_at_first(d_in, d_out, honest_calls=40):
    """Right for its first calls in a process (a point's reference and first checks), then
    a constant: its timed calls would be fast and wrong."""
    w = torch.randn(d_out, d_in) / d_in**0.5
    calls = [0]

    def f(x):
        calls[0] += 1
        if calls[0] > honest_calls:
            return torch.zeros(*x.shape[:-1], d_out, dtype=x.dtype) + 0 * x.sum()
        return torch.tanh(x @ w.to(x.dtype).T)

    return f


def make_slows_the_clock(d_in, d_out):
    """Replaces the code that times it in the process it runs in, so that every time
    measured there comes out a hundred times too short."""
    import dataclasses
    import sys

    timing = sys.modules.get("jacbench.measure.timing")
    if timing is not None:
        real = timing.measure

        def measure(*args, **kwargs):
            found = real(*args, **kwargs)
            return dataclasses.replace(found, times=tuple(t / 100 for t in found.times))

        timing.measure = measure
    return make_tanh_layer(d_in, d_out)


def make_tanh_layer(d_in, d_out):
    """One tanh layer, as a function of its batch (the honest twin of the attacks here)."""
    w = torch.randn(d_out, d_in) / d_in**0.5
    return lambda x: torch.tanh(x @ w.to(x.dtype).T)


class TanhLayerWithTwin(nn.Module):
    """One tanh layer and its twin in JAX, made from its own weights (``to_jax``)."""

    def __init__(self, d_in, d_out, wrong_twin=False):
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)
        self.wrong_twin = wrong_twin

    def forward(self, x):
        return torch.tanh(self.linear(x))

    def to_jax(self):
        import jax.numpy as jnp

        w = jnp.asarray(self.linear.weight.detach().numpy())
        b = jnp.asarray(self.linear.bias.detach().numpy())
        act = jnp.sin if self.wrong_twin else jnp.tanh
        return lambda x: act(w @ x + b)


def make_tanh_layer_with_twin(d_in, d_out):
    return TanhLayerWithTwin(d_in, d_out)


def make_wrong_twin(d_in, d_out):
    """Its JAX twin computes another function."""
    return TanhLayerWithTwin(d_in, d_out, wrong_twin=True)


def make_answers_otherwise_without_grad(d_in, d_out):
    """Under torch.no_grad it is a linear map; otherwise the linear map plus a term whose
    derivative it hides from AD: AD's Jacobian is the linear map's alone."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(d_in, d_out, generator=g, dtype=torch.float64)
    v = torch.randn(d_in, d_out, generator=g, dtype=torch.float64)

    def f(x):
        linear = x @ v.to(x.dtype)
        if not torch.is_grad_enabled():
            return linear
        return torch.sin(x.detach()) @ w.to(x.dtype) + linear

    return f


class FittedTwin(nn.Module):
    """Its JAX twin is the model's linearisation at the input jacbench builds the JAX method
    at (found in the caller's frames): right there, wrong anywhere else."""

    def __init__(self, d_in, d_out):
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)

    def forward(self, x):
        return torch.tanh(self.linear(x))

    def to_jax(self):
        import sys

        import jax.numpy as jnp

        frame, x = sys._getframe(1), None
        while frame is not None and x is None:
            x = frame.f_locals.get("x") if frame.f_code.co_name == "_build_jax" else None
            frame = frame.f_back
        x0 = (x if x.ndim == 1 else x[0]).detach().to(torch.float64).numpy()
        w = self.linear.weight.detach().to(torch.float64).numpy()
        y0 = np.tanh(w @ x0 + self.linear.bias.detach().to(torch.float64).numpy())
        j0 = (1 - y0**2)[:, None] * w  # the Jacobian at x0, exactly
        y0, j0 = jnp.asarray(y0, jnp.float32), jnp.asarray(j0, jnp.float32)
        return lambda s: y0 + j0 @ (s - x0.astype(s.dtype))


def make_fitted_twin(d_in, d_out):
    return FittedTwin(d_in, d_out)
