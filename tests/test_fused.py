"""The fused Triton kernel: on a GPU, or on the CPU through Triton's interpreter where Triton
is installed (TRITON_INTERPRET=1 is read when a kernel is defined, so the interpreter tests
run in a child process)."""

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from jacbench import make_mlp, reference_jacobian, relative_error
from jacbench.ad.fused import FUSED_MAX_WIDTH, fused_jacobian, pack_weights, supports
from jacbench.ad.networks import MLP, UnsupportedNetwork

from .conftest import requires_cuda

has_triton = importlib.util.find_spec("triton") is not None

# (depth, D, K, P, batch or None, activation): the textbook shape, a tiny net, batches whose
# samples share a tile, every activation, and the widest tile.
CASES = [
    (10, 2, 30, 10, None, "tanh"),
    (3, 16, 32, 4, None, "tanh"),
    (2, 3, 8, 2, 5, "tanh"),
    (4, 2, 64, 1, 37, "sigmoid"),
    (3, 5, 20, 7, 3, "relu"),
    (3, 5, 20, 7, 3, "softplus"),
    (2, 4, 10, 3, None, "identity"),
    (2, 20, FUSED_MAX_WIDTH, 30, 2, "tanh"),
]


def _float32_copy(net64: MLP) -> MLP:
    return MLP(
        tuple(w.float() for w in net64.weights),
        tuple(None if b is None else b.float() for b in net64.biases),
        net64.activations,
    )


def _errors(device: str) -> list[float]:
    errors = []
    for depth, d, k, p, batch, activation in CASES:
        net64 = make_mlp(depth, d, k, p, activation=activation, dtype=torch.float64)
        net64 = MLP(net64.weights, tuple(torch.randn_like(w[:, 0]) for w in net64.weights),
                    net64.activations)  # fmt: skip
        x = torch.randn(d if batch is None else (batch, d), dtype=torch.float64)
        net = _float32_copy(net64).to(device=device)
        result = fused_jacobian(net)(x.float().to(device))
        errors.append(relative_error(result, reference_jacobian(net64, x)))
    return errors


@pytest.mark.skipif(not has_triton, reason="needs Triton")
def test_fused_kernel_in_tritons_interpreter_matches_the_float64_reference():
    code = textwrap.dedent(
        """
        import torch
        from tests.test_fused import _errors
        torch.manual_seed(0)
        print(max(_errors("cpu")))
        """
    )
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.strip()) < 1e-5


@requires_cuda
@pytest.mark.skipif(not has_triton, reason="needs Triton")
def test_fused_kernel_on_cuda_matches_the_float64_reference():
    assert max(_errors("cuda")) < 1e-5


def test_fused_kernel_says_which_networks_it_does_not_take():
    assert supports(make_mlp(3, 4, 32, 2)) is None
    assert "widths up to" in supports(make_mlp(2, 4, FUSED_MAX_WIDTH + 1, 2))
    assert "float32" in supports(make_mlp(2, 4, 8, 2, dtype=torch.float64))
    with pytest.raises(UnsupportedNetwork, match="float32"):
        fused_jacobian(make_mlp(2, 4, 8, 2, dtype=torch.float64))


def test_packed_weights_are_the_transposes_zero_padded():
    net = make_mlp(2, 3, 20, 5)
    packed, biases, n = pack_weights(net)
    assert n == 32 and packed.shape == (3, 32, 32) and biases.shape == (3, 32)
    assert torch.equal(packed[1, :20, :20], net.weights[1].T)
    assert packed[0, 3:].abs().sum() == 0 and packed[2, :, 5:].abs().sum() == 0
