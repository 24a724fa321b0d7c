"""Built-in models: factories of networks beyond the tanh MLP, in one convention.

A model is a factory ``make(d_in, d_out, **params) -> torch.nn.Module | callable``: its result
takes x of shape (D,) or (B, D) and returns (P,) or (B, P). jacbench measures and explains
the Jacobian of any such network (``jacbench.ad.generic``); these are its built-in
models (``BUILTIN_MODELS``, by name), each a real architecture at a size two cores time in
seconds:

- ``mlp``: the tanh MLP itself (``make_mlp``; its hand-written routines and cost model);
- ``residual``: residual blocks x + W₂·σ(W₁·LayerNorm(x)) with SiLU or GELU;
- ``siren``: sine activations, sin(ω₀·(W·x + b)), SIREN's initialisation;
- ``fourier``: a PINN with random Fourier features [cos(2πBx), sin(2πBx)], then a tanh MLP;
- ``cnn``: a small convolutional classifier of a square image (D = side², 28×28 → 10);
- ``attention``: a transformer encoder block over a short sequence (D = seq · dim);
- ``hand``, ``ba``, ``gmm``, ``ode``: the classic AD benchmark problems
  (``jacbench.ad.classic``), functions of one sample.

A module's input is one sample or a batch, as a plain function of x: the batch axis is
handled here, so ``torch.func`` transforms (``vmap`` of ``jacrev``) see one sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, cast

import torch
from torch import Tensor, nn

from jacbench.ad import classic, jax_twins
from jacbench.ad.networks import make_mlp


class OneOrBatch(nn.Module):
    """Takes x of shape (D,) or (B, D) and returns (P,) or (B, P), whatever the body wants:
    sample by sample, which jacbench then need not check (``runs.models.batched``)."""

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim == 1:
            return self.body(x[None])[0]
        return self.body(x)

    def body(self, x: Tensor) -> Tensor:  # (B, D) → (B, P)
        raise NotImplementedError


class Residual(OneOrBatch):
    """``depth`` residual blocks of ``width`` units between a linear input and output."""

    def __init__(self, d_in: int, d_out: int, width: int, depth: int, activation: str) -> None:
        super().__init__()
        act = {"silu": nn.SiLU, "gelu": nn.GELU}[activation]
        self.inp = nn.Linear(d_in, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.LayerNorm(width), nn.Linear(width, width), act(), nn.Linear(width, width)
            )
            for _ in range(depth)
        )
        self.out = nn.Linear(width, d_out)

    def body(self, x: Tensor) -> Tensor:
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h)
        return self.out(h)

    def to_jax(self) -> jax_twins.JaxFunction:
        """The same function of one sample in JAX, from these weights."""
        inp, out = jax_twins.linear(self.inp), jax_twins.linear(self.out)
        blocks = [jax_twins.sequential(cast(nn.Sequential, block)) for block in self.blocks]

        def f(x):
            h = inp(x)
            for block in blocks:
                h = h + block(h)
            return out(h)

        return f


class Siren(OneOrBatch):
    """sin(ω₀·(W·x + b)) layers with SIREN's initialisation (Sitzmann et al., 2020)."""

    def __init__(self, d_in: int, d_out: int, width: int, depth: int, omega: float) -> None:
        super().__init__()
        widths = (d_in, *([width] * depth))
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
        self.out = nn.Linear(width, d_out)
        self.omega = omega
        with torch.no_grad():
            for i, (layer, fan_in) in enumerate(zip(self.layers, widths)):
                bound = 1 / fan_in if i == 0 else math.sqrt(6 / fan_in) / omega
                cast(nn.Linear, layer).weight.uniform_(-bound, bound)

    def body(self, x: Tensor) -> Tensor:
        h = x
        for layer in self.layers:
            h = torch.sin(self.omega * layer(h))
        return self.out(h)

    def to_jax(self) -> jax_twins.JaxFunction:
        """The same function of one sample in JAX, from these weights."""
        import jax.numpy as jnp

        layers = [jax_twins.linear(cast(nn.Linear, m)) for m in self.layers]
        out = jax_twins.linear(self.out)

        def f(x):
            h = x
            for layer in layers:
                h = jnp.sin(self.omega * layer(h))
            return out(h)

        return f


class Fourier(OneOrBatch):
    """Random Fourier features [cos(2π·B·x), sin(2π·B·x)] (B fixed, N(0, scale²)) feeding a
    tanh MLP: the input layer of many PINNs."""

    frequencies: Tensor

    def __init__(
        self, d_in: int, d_out: int, width: int, depth: int, features: int, scale: float
    ) -> None:
        super().__init__()
        self.register_buffer("frequencies", torch.randn(features, d_in) * scale)
        widths = (2 * features, *([width] * depth))
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
        self.out = nn.Linear(width, d_out)

    def body(self, x: Tensor) -> Tensor:
        angles = 2 * math.pi * x @ self.frequencies.T
        h = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
        for layer in self.layers:
            h = torch.tanh(layer(h))
        return self.out(h)

    def to_jax(self) -> jax_twins.JaxFunction:
        """The same function of one sample in JAX, from these weights."""
        import jax.numpy as jnp

        frequencies = jax_twins.array(self.frequencies)
        layers = [jax_twins.linear(cast(nn.Linear, m)) for m in self.layers]
        out = jax_twins.linear(self.out)

        def f(x):
            angles = 2 * math.pi * jax_twins.matmul(frequencies, x)
            h = jnp.concatenate([jnp.cos(angles), jnp.sin(angles)])
            for layer in layers:
                h = jnp.tanh(layer(h))
            return out(h)

        return f


class SmallCNN(OneOrBatch):
    """Two 3×3 convolutions (ReLU, 2×2 average pooling) and a linear head, of a square
    one-channel image given as its D = side² pixels."""

    def __init__(self, d_in: int, d_out: int, channels: int) -> None:
        super().__init__()
        side = math.isqrt(d_in)
        if side * side != d_in or side < 4:
            raise ValueError(f"cnn takes a square image: d_in = side² with side ≥ 4, got {d_in}")
        self.side = side
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
            nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
        )  # fmt: skip
        self.head = nn.Linear(2 * channels * (side // 4) ** 2, d_out)

    def body(self, x: Tensor) -> Tensor:
        images = x.reshape(x.shape[0], 1, self.side, self.side)
        return self.head(self.features(images).flatten(1))

    def to_jax(self) -> jax_twins.JaxFunction:
        """The same function of one sample in JAX, from these weights."""
        features, head = jax_twins.sequential(self.features), jax_twins.linear(self.head)
        side = self.side

        def f(x):
            return head(features(x.reshape(1, side, side)).reshape(-1))

        return f


class Attention(OneOrBatch):
    """A transformer encoder block over a sequence of ``seq`` tokens of D / seq features:
    multi-head self-attention and a GELU feed-forward layer, each after a LayerNorm and
    with a residual; its output tokens flattened into a linear head. The attention is
    written out (softmax(Q·Kᵀ/√d)·V): torch's fused kernel has no forward-mode derivative
    on the CPU, and jacbench compares both modes."""

    def __init__(self, d_in: int, d_out: int, seq: int, heads: int) -> None:
        super().__init__()
        if d_in % seq or (d_in // seq) % heads:
            raise ValueError(
                f"attention takes d_in = seq · dim with dim a multiple of heads; got d_in={d_in}, "
                f"seq={seq}, heads={heads}"
            )
        self.seq, self.heads, dim = seq, heads, d_in // seq
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.head = nn.Linear(d_in, d_out)

    def body(self, x: Tensor) -> Tensor:
        batch = x.shape[0]
        tokens = x.reshape(batch, self.seq, -1)
        q, k, v = self.qkv(self.norm1(tokens)).chunk(3, dim=-1)
        split = (batch, self.seq, self.heads, -1)
        q, k, v = (t.reshape(split).transpose(1, 2) for t in (q, k, v))
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
        attended = (weights @ v).transpose(1, 2).reshape(batch, self.seq, -1)
        tokens = tokens + self.proj(attended)
        tokens = tokens + self.ffn(self.norm2(tokens))
        return self.head(tokens.flatten(1))

    def to_jax(self) -> jax_twins.JaxFunction:
        """The same function of one sample in JAX, from these weights."""
        return jax_twins.attention(
            self.norm1, self.qkv, self.proj, self.norm2, self.ffn, self.head,
            self.seq, self.heads,
        )  # fmt: skip


def make_residual(
    d_in: int, d_out: int, *, width: int = 64, depth: int = 3, activation: str = "silu"
) -> nn.Module:
    """Residual MLP with LayerNorm: ``depth`` blocks of ``width`` units, SiLU or GELU."""
    return Residual(d_in, d_out, width, depth, activation)


def make_siren(
    d_in: int, d_out: int, *, width: int = 64, depth: int = 3, omega: float = 30.0
) -> nn.Module:
    """SIREN: ``depth`` sine layers of ``width`` units, frequency ``omega``."""
    return Siren(d_in, d_out, width, depth, omega)


def make_fourier(
    d_in: int,
    d_out: int,
    *,
    width: int = 64,
    depth: int = 3,
    features: int = 32,
    scale: float = 1.0,
) -> nn.Module:
    """A PINN with ``features`` random Fourier features, then ``depth`` tanh layers."""
    return Fourier(d_in, d_out, width, depth, features, scale)


def make_cnn(d_in: int, d_out: int, *, channels: int = 8) -> nn.Module:
    """A small CNN classifier of a square image of d_in = side² pixels."""
    return SmallCNN(d_in, d_out, channels)


def make_attention(d_in: int, d_out: int, *, seq: int = 8, heads: int = 2) -> nn.Module:
    """A transformer encoder block over ``seq`` tokens of d_in / seq features."""
    return Attention(d_in, d_out, seq, heads)


def make_mlp_model(d_in: int, d_out: int, *, width: int = 64, depth: int = 3) -> Any:
    """The tanh MLP as a model: jacbench's ``MLP``."""
    return make_mlp(depth, d_in, width, d_out)


# The classic AD problems among them: functions of one sample at the sizes they are posed at
# (the ``classic`` preset), where the others are networks of any size (the ``models`` one).
CLASSIC_PROBLEMS = ("hand", "ba", "gmm", "ode")

BUILTIN_MODELS: Mapping[str, Callable[..., Any]] = {
    "mlp": make_mlp_model,
    "residual": make_residual,
    "siren": make_siren,
    "fourier": make_fourier,
    "cnn": make_cnn,
    "attention": make_attention,
    # the classic AD problems (jacbench.ad.classic): functions of one sample
    "hand": classic.make_hand,
    "ba": classic.make_ba,
    "gmm": classic.make_gmm,
    "ode": classic.make_ode,
}
