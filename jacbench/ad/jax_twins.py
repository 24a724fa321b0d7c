"""JAX twins of the built-in models: each the same function of one sample, written in JAX,
made from the module's own weights (NOTE: [A model's JAX twin] in ``jacbench.runs.methods``).

The pieces here read a torch layer's weights as they are when called (the point's dtype)
and return JAX functions of one sample; the built-in models' ``to_jax`` methods compose
them. JAX is imported when a twin is made, never at jacbench's import.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import Tensor, nn

JaxFunction = Callable[[Any], Any]


def array(t: Tensor) -> Any:
    """``t`` as a JAX array of the same dtype (bfloat16 through float32: NumPy has none)."""
    import jax.numpy as jnp

    dtype = str(t.dtype).removeprefix("torch.")
    wide = t.detach().to("cpu", torch.float32 if dtype == "bfloat16" else t.dtype).numpy()
    return jnp.asarray(wide, dtype=getattr(jnp, dtype))


def matmul(a: Any, b: Any) -> Any:
    """a @ b at full precision, as torch computes it (JAX's default on recent GPUs is TF32)."""
    import jax
    import jax.numpy as jnp

    return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


def linear(layer: nn.Linear) -> JaxFunction:
    """An ``nn.Linear``: h ↦ W·h + b over the last axis."""
    weight = array(layer.weight)
    bias = None if layer.bias is None else array(layer.bias)
    return lambda h: matmul(h, weight.T) if bias is None else matmul(h, weight.T) + bias


def layer_norm(norm: nn.LayerNorm) -> JaxFunction:
    """An ``nn.LayerNorm`` over the last axis (biased variance, as torch's)."""
    import jax.numpy as jnp

    weight, bias, eps = array(norm.weight), array(norm.bias), norm.eps

    def f(h):
        mean = h.mean(-1, keepdims=True)
        variance = ((h - mean) ** 2).mean(-1, keepdims=True)
        return (h - mean) / jnp.sqrt(variance + eps) * weight + bias

    return f


def activation(module: nn.Module) -> JaxFunction:
    """SiLU, GELU (exact, as torch's default), ReLU or tanh."""
    import jax
    import jax.numpy as jnp

    found = {
        nn.SiLU: jax.nn.silu,
        nn.GELU: lambda h: jax.nn.gelu(h, approximate=False),
        nn.ReLU: jax.nn.relu,
        nn.Tanh: jnp.tanh,
    }.get(type(module))
    if found is None:
        raise TypeError(f"no JAX twin for {type(module).__name__}")
    return found


def layer(module: nn.Module) -> JaxFunction:
    """One layer of the built-in models: linear, LayerNorm, convolution, average pooling
    or an activation."""
    if isinstance(module, nn.Linear):
        return linear(module)
    if isinstance(module, nn.LayerNorm):
        return layer_norm(module)
    if isinstance(module, nn.Conv2d):
        return conv2d(module)
    if isinstance(module, nn.AvgPool2d):
        return average_pool(cast(int, module.kernel_size))
    return activation(module)


def sequential(modules: nn.Sequential) -> JaxFunction:
    """An ``nn.Sequential`` of the layers ``layer`` knows, one after another."""
    steps = [layer(m) for m in modules]

    def f(h):
        for step in steps:
            h = step(h)
        return h

    return f


def conv2d(layer: nn.Conv2d) -> JaxFunction:
    """An ``nn.Conv2d`` of stride 1 with symmetric padding, of one image (C, H, W)."""
    import jax

    weight = array(layer.weight)
    bias = array(cast(Tensor, layer.bias))
    pad = [(p, p) for p in cast(tuple[int, int], layer.padding)]

    def f(image):
        out = jax.lax.conv_general_dilated(
            image[None], weight, (1, 1), pad, precision=jax.lax.Precision.HIGHEST
        )[0]
        return out + bias[:, None, None]

    return f


def average_pool(size: int) -> JaxFunction:
    """``nn.AvgPool2d(size)`` of one image (C, H, W): windows that do not fit are dropped."""

    def f(image):
        c, h, w = image.shape
        h, w = h // size * size, w // size * size
        blocks = image[:, :h, :w].reshape(c, h // size, size, w // size, size)
        return blocks.mean((2, 4))

    return f


def attention(
    norm1: nn.LayerNorm, qkv: nn.Linear, proj: nn.Linear, norm2: nn.LayerNorm,
    ffn: nn.Sequential, head: nn.Linear, seq: int, heads: int,
) -> JaxFunction:  # fmt: skip
    """The built-in attention block of one sample (``builtin_models.Attention``)."""
    import jax

    first, to_qkv, out, second = layer_norm(norm1), linear(qkv), linear(proj), layer_norm(norm2)
    feed, readout = sequential(ffn), linear(head)

    def f(x):
        tokens = x.reshape(seq, -1)
        q, k, v = (t.reshape(seq, heads, -1).transpose(1, 0, 2) for t in
                   jax.numpy.split(to_qkv(first(tokens)), 3, axis=-1))  # fmt: skip
        scores = matmul(q, k.transpose(0, 2, 1)) / math.sqrt(q.shape[-1])
        attended = matmul(jax.nn.softmax(scores, axis=-1), v).transpose(1, 0, 2).reshape(seq, -1)
        tokens = tokens + out(attended)
        tokens = tokens + feed(second(tokens))
        return readout(tokens.reshape(-1))

    return f
