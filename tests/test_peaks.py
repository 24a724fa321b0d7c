"""The roofline's three ceilings: GEMM FLOP/s, the weights' read (from cache where they fit),
the activations' rate."""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from jacbench.ad import cost
from jacbench.measure.peaks import (
    Peaks,
    bound_seconds,
    cache_bytes,
    elementwise_seconds,
    measure_peaks,
    weight_seconds,
)
from jacbench.runs.results import read_results, rebound

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
    launch_s=1e-6,
    cache_bytes=32 << 20,
    cache_bytes_per_s=5e10,
    scaling_per_s=4e9,
)


def test_elementwise_seconds_counts_values_then_scalings():
    # PINN-sized: D=2, K=64 (L=6), P=1, B=4096, reverse mode.
    widths = (2, 64, 64, 64, 64, 64, 64, 1)
    elements = cost.elementwise_flops(widths, "reverse", 4096)
    values = 4096 * 6 * 64  # tanh on every hidden unit
    scalings = 4096 * 1 * 6 * 64  # one adjoint row scaled at every hidden layer
    assert elements == values + scalings
    # the scalings at the cheapest scaling's rate (4e9), not g ⊙ σ'(z)'s (2e9)
    assert elementwise_seconds(elements, widths, 4096, PEAKS) == pytest.approx(
        values / 1e9 + scalings / 4e9
    )


def test_bound_takes_the_largest_ceiling():
    widths = (2, 64, 64, 64, 64, 64, 64, 1)
    flops = cost.flop_count(widths, "reverse", 4096)
    elements = cost.elementwise_flops(widths, "reverse", 4096)
    gemm = flops / 1e11
    # A CPU whose tanh is a scalar loop: 10 ns per element (one thread), 5 for the scaling.
    slow = replace(PEAKS, activation_per_s=1e8, scaling_per_s=2e8)
    activations = (4096 * 384) / 1e8 + (4096 * 384) / 2e8
    assert activations > gemm  # this shape is elementwise-bound at these rates
    assert bound_seconds(flops, widths, torch.float32, slow).seconds == pytest.approx(gemm)
    got = bound_seconds(flops, widths, torch.float32, slow, elementwise=elements, batch=4096)
    assert got.seconds == pytest.approx(activations) and not got.note


def test_weights_that_fit_in_the_cache_are_read_at_its_rate():
    # NOTE: [Three ceilings]: the seed problem at L=3 (12 MB) in a 32 MiB cache; at L=10 (40 MB)
    # the cache still holds 32 MiB of them (NOTE: [Weights a little larger than the cache]):
    # all 40 MB at the cache's rate (0.8 ms) outlasts the 6.4 MB it cannot hold at memory's
    # (0.64 ms), where reading all of it from memory took 4 ms.
    seed3, seed10 = (1000,) * 4 + (1,), (1000,) * 11 + (1,)
    assert weight_seconds(seed3, torch.float32, PEAKS) == pytest.approx(4 * 3_001_000 / 5e10)
    assert weight_seconds(seed10, torch.float32, PEAKS) == pytest.approx(4 * 10_001_000 / 5e10)
    assert weight_seconds(seed10, torch.float32, replace(PEAKS, cache_bytes_per_s=1e11)) == (
        pytest.approx((4 * 10_001_000 - (32 << 20)) / 1e10)
    )
    flops = cost.flop_count(seed3, "reverse")
    bound = bound_seconds(flops, seed3, torch.float32, PEAKS)
    assert bound.seconds == pytest.approx(4 * 3_001_000 / 5e10)


def test_the_read_bound_has_no_step_at_the_cache_size():
    # One byte past the cache, the bound is what it was one byte short; far past it, the part
    # the cache cannot hold, at memory's rate.
    cache = PEAKS.cache_bytes
    just_in = (1, cache // 4)  # one weight of cache / 4 float32 elements: the cache's size
    just_out = (1, cache // 4 + 1)
    inside = weight_seconds(just_in, torch.float32, PEAKS)
    outside = weight_seconds(just_out, torch.float32, PEAKS)
    assert inside == pytest.approx(cache / 5e10)
    assert outside == pytest.approx((cache + 4) / 5e10)
    huge = (1, 2**28)  # 1 GiB
    assert weight_seconds(huge, torch.float32, PEAKS) == pytest.approx((2**30 - cache) / 1e10)
    # The cache's rate unknown: within it no bound; beyond it the part it cannot hold.
    unknown = replace(PEAKS, cache_bytes_per_s=0.0)
    assert weight_seconds(just_in, torch.float32, unknown) is None
    assert weight_seconds(huge, torch.float32, unknown) == pytest.approx((2**30 - cache) / 1e10)
    for width in (cache // 8, cache // 4, cache // 2, cache, 4 * cache):  # never falls
        assert weight_seconds((1, width), torch.float32, PEAKS) < weight_seconds(
            (1, width + 1024), torch.float32, PEAKS
        )


def test_older_peaks_leave_a_bound_empty_where_the_cache_could_hold_the_weights():
    old = Peaks("cpu", "float32", 1e11, 1e10, 2048, activation_per_s=1e9, derivative_per_s=2e9)
    seed3 = (1000,) * 4 + (1,)
    bound = bound_seconds(cost.flop_count(seed3, "reverse"), seed3, torch.float32, old)
    assert bound.seconds is None
    assert "may stay in a cache" in bound.note and "11.4 MiB" in bound.note
    # A GEMM-bound shape needs no read rate: its arithmetic bounds it, cache or not.
    square = (1000,) * 4
    flops = cost.flop_count(square, "forward", 1000)
    assert bound_seconds(flops, square, torch.float32, old).seconds == pytest.approx(flops / 1e11)
    # Weights larger than the buffer memory was read from: memory's rate holds.
    huge = (8192,) * 3
    assert weight_seconds(huge, torch.float32, old) == pytest.approx(4 * 2 * 8192**2 / 1e10)
    # Without the scaling's rate, σ alone (the g ⊙ σ'(z) rate is no bound on a scaling).
    assert elementwise_seconds(2 * 64, (2, 64, 1), 1, old) == pytest.approx(64 / 1e9)


def test_launches_are_no_ceiling_of_a_small_network():
    # NOTE: [Three ceilings]: L=8 D=4 K=24 P=6 is 58 kFLOP; a fused or compiled routine
    # launches fewer than 4·L kernels, so the bound is the weights' read from cache.
    widths = (4, *[24] * 8, 6)
    flops = cost.flop_count(widths, "reverse")
    elements = cost.elementwise_flops(widths, "reverse")
    bound = bound_seconds(flops, widths, torch.float32, PEAKS, elementwise=elements)
    read = 17_088 / 5e10  # 4·(4·24 + 7·24² + 24·6) bytes from cache
    activations = elementwise_seconds(elements, widths, 1, PEAKS)
    assert bound.seconds == pytest.approx(max(flops / 1e11, read, activations))
    assert bound.seconds < 1e-6 < 32 * PEAKS.launch_s


def test_measure_peaks_measures_the_activation_and_the_cache():
    peaks = measure_peaks("cpu", torch.float32, min_time=0.02, activation="sigmoid")
    assert peaks.activation == "sigmoid"
    # Any CPU evaluates a sigmoid faster than one element per microsecond, and slower than
    # one per picosecond.
    assert 1e6 < peaks.activation_per_s < 1e12
    assert 1e6 < peaks.derivative_per_s < 1e12
    assert 1e6 < peaks.scaling_per_s < 1e12
    # One call of σ on 16 elements: more than a nanosecond (a dispatch), under a millisecond.
    assert 1e-9 < peaks.launch_s < 1e-3
    assert peaks.cache_bytes == cache_bytes("cpu")
    if peaks.cache_bytes:  # this system says how large its caches are
        assert 64 << 10 <= peaks.cache_bytes <= 4 << 30
        assert peaks.cache_bytes_per_s > 0


ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("run", sorted(p.parent.name for p in ROOT.glob("results/*/results.csv")))
def test_no_committed_row_is_above_the_roofline(run):
    rows = read_results(ROOT / "results" / run)
    assert not (rows["efficiency"] > 1).any()
    # a row without a bound says why, where the MLP's work is counted
    unbound = rows[rows["bound_s"].isna() & rows["flops"].notna() & (rows["status"] == "ok")]
    assert not (unbound["model"] == "mlp").any() or unbound["bound_note"].ne("").any()


def test_rebound_recomputes_the_bounds_from_the_runs_own_peaks(tmp_path):
    run = tmp_path / "cpu-seed"
    shutil.copytree(ROOT / "results" / "cpu-seed", run)
    samples = (run / "samples.csv").read_bytes()
    rows = rebound(run)
    assert (run / "samples.csv").read_bytes() == samples  # only results.csv is rewritten
    reverse = rows[(rows["method"] == "reverse")]
    # These peaks hold no cache measurement: the 12–40 MB of weights might have stayed in one.
    assert reverse["bound_s"].isna().all() and reverse["efficiency"].isna().all()
    assert reverse["bound_note"].str.contains("may stay in a cache").all()
    forward = rows[rows["method"] == "forward"]  # bound by its arithmetic: a bound all the same
    assert forward["efficiency"].between(0, 1).all()
    written = (run / "results.csv").read_bytes()
    rebound(run)
    assert (run / "results.csv").read_bytes() == written  # the same again


def test_rebound_keeps_a_models_bound_its_flops_ceiling(tmp_path):
    run = tmp_path / "cpu-models"
    shutil.copytree(ROOT / "results" / "cpu-models", run)
    before = read_results(run)
    rows = rebound(run)
    models = rows[(rows["model"].fillna("mlp") != "mlp") & rows["flops"].gt(0)]
    assert len(models) > 50
    peaks = Peaks(**json.loads((run / "meta.json").read_text())["peaks"]["float32"])
    assert models["bound_s"].to_numpy() == pytest.approx(
        (models["flops"] / peaks.flops_per_s).to_numpy()
    )
    assert rows["efficiency"].to_numpy() == pytest.approx(
        before["efficiency"].to_numpy(), nan_ok=True
    )
