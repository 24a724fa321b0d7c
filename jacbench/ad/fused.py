"""One GPU kernel for the whole Jacobian of a small MLP (Triton).

NOTE: [One kernel for a small network]
    On a GPU a small network's Jacobian is all launches: about 4L kernels of a few
    microseconds each (NOTE: [CUDA graphs for launch-bound Jacobians] in ``jacbench.ad.graphs``),
    while its arithmetic would take well under one. Where every width fits one tile
    (``FUSED_MAX_WIDTH``), one Triton program carries a sample's primal row and its D tangent
    rows up the chain in registers, forward mode with the primal stacked on the tangents:

        M_0 = [ xᵀ ]        M_k = [ σ(z_k)ᵀ        ]   where [ z_kᵀ ] = M_{k-1} · W_kᵀ (+ b_k on
              [ I_D ]             [ Z_k ⊙ σ'(z_k)ᵀ ]         [ Z_k  ]    the primal row only)

    and J = (rows 1…D of M_L · W_Fᵀ)ᵀ. Each layer is one tile product (``tl.dot``, full
    float32 precision) and one elementwise step, with no trip to memory between layers:
    the weights are read once per program, from one zero-padded block of W_kᵀ per layer
    (``pack_weights``, made when a method is built), and J is written once. Zero padding
    keeps the padded rows and columns out of the result whatever σ(0) is, since the padded
    rows of every W_kᵀ are zero. Small inputs share a tile: ``rows_per_sample`` rows each
    (1 + D rounded up to a power of two), as many samples as fill ``ROWS`` rows.

    The packed copy is read, not the network's tensors: it is made for one measurement and
    does not follow later changes to the weights.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable

import torch
from torch import Tensor

from jacbench.ad.networks import MLP, UnsupportedNetwork

# Widths up to this fit one tile (registers: ROWS × 128 and 128 × 128 floats per program).
FUSED_MAX_WIDTH = 128
# Rows of one program's tile (tl.dot needs at least 16): samples share it when 1 + D is small.
ROWS = 16
# The activations the kernel evaluates, by code.
_ACTIVATION_CODES = {"tanh": 0, "sigmoid": 1, "relu": 2, "softplus": 3, "identity": 4}


def available() -> bool:
    """Whether Triton is installed and a CUDA device is there to run it."""
    return importlib.util.find_spec("triton") is not None and torch.cuda.is_available()


def _next_power_of_two(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def supports(net: MLP) -> str | None:
    """Why the fused kernel cannot take ``net`` (None: it can)."""
    if max(net.widths) > FUSED_MAX_WIDTH or net.d_in + 1 > FUSED_MAX_WIDTH:
        return f"the fused kernel takes widths up to {FUSED_MAX_WIDTH}, got {max(net.widths)}"
    if net.dtype != torch.float32:
        return f"the fused kernel computes in float32, got {net.dtype}"
    names = {act.name for act in net.activations}
    if len(names) != 1 or next(iter(names)) not in _ACTIVATION_CODES:
        return (
            "the fused kernel takes one activation for every layer, one of: "
            f"{', '.join(_ACTIVATION_CODES)}; got {', '.join(sorted(names))}"
        )
    return None


def pack_weights(net: MLP) -> tuple[Tensor, Tensor, int]:
    """(W_kᵀ zero-padded to N × N, stacked; biases padded to N, stacked; N)."""
    n = max(16, _next_power_of_two(max(net.widths)))
    packed = torch.zeros(len(net.weights), n, n, dtype=net.dtype, device=net.device)
    biases = torch.zeros(len(net.weights), n, dtype=net.dtype, device=net.device)
    for k, (w, b) in enumerate(zip(net.weights, net.biases)):
        packed[k, : w.shape[1], : w.shape[0]] = w.T
        if b is not None:
            biases[k, : b.shape[0]] = b
    return packed.contiguous(), biases, n


def fused_jacobian(net: MLP) -> Callable[[Tensor], Tensor]:
    """The Jacobian of ``net`` as one Triton kernel per call, weights packed now.

    Raises:
        UnsupportedNetwork: the network is too wide, not float32 or mixes activations
            (``supports``).
        ValueError: the network is not on a CUDA device.
    """
    why = supports(net)
    if why is not None:
        raise UnsupportedNetwork(why)
    # Triton's interpreter (TRITON_INTERPRET=1) runs the kernel on the CPU, for tests.
    if net.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError("the fused kernel needs a CUDA device (--device cuda)")
    kernel = _kernel()
    packed, biases, n = pack_weights(net)
    d, p, depth = net.d_in, net.d_out, net.depth
    code = _ACTIVATION_CODES[net.activations[0].name]
    group = _next_power_of_two(d + 1)
    samples = max(1, ROWS // group)

    def call(x: Tensor) -> Tensor:
        xb = (x if x.ndim == 2 else x.unsqueeze(0)).contiguous()
        out = torch.empty(xb.shape[0], p, d, dtype=x.dtype, device=x.device)
        grid = (_cdiv(xb.shape[0], samples),)
        kernel[grid](
            xb, packed, biases, out, xb.shape[0],
            D=d, P=p, L=depth, N=n, G=group, S=samples, ACT=code,
            num_warps=4 if n <= 64 else 8,
        )  # fmt: skip
        return out if x.ndim == 2 else out[0]

    return call


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _kernel():
    """The Triton kernel (Triton is an optional import, made on first use)."""
    from jacbench.ad import fused_kernel

    return fused_kernel.jacobian_kernel
