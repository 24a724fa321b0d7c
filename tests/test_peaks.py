"""The roofline's four ceilings: GEMM FLOP/s, read bandwidth, the activations' rate, launches."""

from dataclasses import replace

import pytest
import torch

from jacbench.ad import cost
from jacbench.measure.peaks import (
    Peaks,
    bound_seconds,
    elementwise_seconds,
    launch_seconds,
    measure_peaks,
)

# Round numbers, so that every bound below can be worked by hand.
PEAKS = Peaks(
    device="cpu",
    dtype="float32",
    flops_per_s=1e11,
    bytes_per_s=1e10,
    gemm_size=2048,
    activation="tanh",
    activation_per_s=1e9,
    derivative_per_s=2e9,
)


def test_elementwise_seconds_counts_values_then_scalings():
    # PINN-sized: D=2, K=64 (L=6), P=1, B=4096, reverse mode.
    widths = (2, 64, 64, 64, 64, 64, 64, 1)
    elements = cost.elementwise_flops(widths, "reverse", 4096)
    values = 4096 * 6 * 64  # tanh on every hidden unit
    scalings = 4096 * 1 * 6 * 64  # one adjoint row scaled at every hidden layer
    assert elements == values + scalings
    assert elementwise_seconds(elements, widths, 4096, PEAKS) == pytest.approx(
        values / 1e9 + scalings / 2e9
    )


def test_bound_takes_the_largest_ceiling():
    widths = (2, 64, 64, 64, 64, 64, 64, 1)
    flops = cost.flop_count(widths, "reverse", 4096)
    elements = cost.elementwise_flops(widths, "reverse", 4096)
    gemm = flops / 1e11
    # A CPU whose tanh is a scalar loop: 10 ns per element (one thread), 5 for the scaling.
    slow = replace(PEAKS, activation_per_s=1e8, derivative_per_s=2e8)
    activations = (4096 * 384) / 1e8 + (4096 * 384) / 2e8
    assert activations > gemm  # this shape is elementwise-bound at these rates
    assert bound_seconds(flops, widths, torch.float32, slow) == pytest.approx(gemm)
    got = bound_seconds(flops, widths, torch.float32, slow, elementwise=elements, batch=4096)
    assert got == pytest.approx(activations)


def test_unmeasured_rates_leave_the_two_old_ceilings():
    old = Peaks("cpu", "float32", 1e11, 1e10, 2048)
    assert elementwise_seconds(10**9, (4, 8, 1), 1, old) == 0.0
    assert launch_seconds((4, 8, 1), old) == 0.0


def test_small_networks_are_bound_by_their_launches():
    # NOTE: [Four ceilings]: L=8 D=4 K=24 P=6 is 58 kFLOP, 0.6 µs at 1e11 FLOP/s; 32 launches
    # at 1 µs each take 32 µs.
    widths = (4, *[24] * 8, 6)
    flops = cost.flop_count(widths, "reverse")
    elements = cost.elementwise_flops(widths, "reverse")
    peaks = replace(PEAKS, launch_s=1e-6)
    assert launch_seconds(widths, peaks) == pytest.approx(32e-6)
    bound = bound_seconds(flops, widths, torch.float32, peaks, elementwise=elements)
    assert bound == pytest.approx(32e-6)
    # without a measured launch: reading the weights, 4·(4·24 + 7·24² + 24·6) bytes at 1e10 B/s
    assert bound_seconds(flops, widths, torch.float32, PEAKS, elementwise=elements) == (
        pytest.approx(17_088 / 1e10)
    )
    # A big network's launches hide under its arithmetic: 4·3 µs against 0.12 ms of GEMM.
    seed = (1000, 1000, 1000, 1000, 1000)
    assert bound_seconds(cost.flop_count(seed, "forward"), seed, torch.float32, peaks) == (
        pytest.approx(cost.flop_count(seed, "forward") / 1e11)
    )


def test_measure_peaks_measures_the_activation():
    peaks = measure_peaks("cpu", torch.float32, min_time=0.02, activation="sigmoid")
    assert peaks.activation == "sigmoid"
    # Any CPU evaluates a sigmoid faster than one element per microsecond, and slower than
    # one per picosecond.
    assert 1e6 < peaks.activation_per_s < 1e12
    assert 1e6 < peaks.derivative_per_s < 1e12
    # One call of σ on 16 elements: more than a nanosecond (a dispatch), under a millisecond.
    assert 1e-9 < peaks.launch_s < 1e-3
