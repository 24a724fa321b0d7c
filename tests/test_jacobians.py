"""Every routine against torch.func in float64 (an independent reference), on random shapes."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from jacbench import (
    ACTIVATIONS,
    MLP,
    hessian,
    hvp,
    jacobian,
    jacobian_forward,
    jacobian_mixed,
    jacobian_reverse,
    laplacian,
    make_mlp,
    reference_jacobian,
    relative_error,
)

ROUTINES = {
    "forward": jacobian_forward,
    "reverse": jacobian_reverse,
    "mixed": jacobian_mixed,
    "auto": jacobian,
}

widths_strategy = st.lists(st.integers(1, 40), min_size=3, max_size=10)  # depth 1–8


@settings(max_examples=60, deadline=None)
@given(
    widths=widths_strategy,
    batch=st.sampled_from([None, 1, 3]),
    activation=st.sampled_from(list(ACTIVATIONS)),
    bias=st.booleans(),
    chunk=st.sampled_from([None, 1, 2, 7]),
    seed=st.integers(0, 2**16),
)
def test_every_routine_matches_torch_func(widths, batch, activation, bias, chunk, seed):
    net = MLP.from_widths(widths, activation=activation, bias=bias, seed=seed, dtype=torch.float64)
    # Not `seed` itself: x drawn from the weights' own stream would align with W_1's first
    # row and push tanh into saturation, where 1 − t² cancels and last-bit differences in z
    # between two correct programs grow past any fixed relative tolerance.
    generator = torch.Generator().manual_seed(seed + 1)
    shape = (widths[0],) if batch is None else (batch, widths[0])
    x = torch.randn(shape, generator=generator, dtype=torch.float64)
    reference = reference_jacobian(net, x, "jacfwd")
    expected_shape = (widths[-1], widths[0]) if batch is None else (batch, widths[-1], widths[0])
    assert tuple(reference.shape) == expected_shape
    results = {name: routine(net, x) for name, routine in ROUTINES.items()}
    results["forward chunked"] = jacobian_forward(net, x, chunk_size=chunk)
    results["reverse chunked"] = jacobian_reverse(net, x, chunk_size=chunk)
    for name, jac in results.items():
        assert tuple(jac.shape) == expected_shape, name
        assert jac.dtype == torch.float64
        assert relative_error(jac, reference) <= 1e-10, name


def test_reference_methods_agree_and_are_not_trivial():
    net = make_mlp(3, 6, 9, 4, dtype=torch.float64)
    x = torch.randn(2, 6, dtype=torch.float64)
    rev, fwd = reference_jacobian(net, x, "jacrev"), reference_jacobian(net, x, "jacfwd")
    torch.testing.assert_close(rev, fwd)
    assert rev.abs().max() > 1e-2  # lecun init keeps the Jacobian away from 0


def test_textbook_formula_by_hand():
    net = make_mlp(2, 3, 4, 2, dtype=torch.float64)
    w1, w2, wf = net.weights
    x = torch.randn(3, dtype=torch.float64)
    z1 = w1 @ x
    z2 = w2 @ torch.tanh(z1)
    expected = (
        wf @ torch.diag(1 - torch.tanh(z2) ** 2) @ w2 @ torch.diag(1 - torch.tanh(z1) ** 2) @ w1
    )
    for routine in ROUTINES.values():
        torch.testing.assert_close(routine(net, x), expected)


def test_float32_follows_input_dtype():
    net = make_mlp(2, 5, 8, 3)
    x = torch.randn(4, 5)
    jac = jacobian_reverse(net, x)
    assert jac.dtype == torch.float32
    ref = reference_jacobian(net.to(dtype=torch.float64), x.double())
    assert relative_error(jac, ref) < 1e-5


def test_mixed_on_hourglass_matches():
    net = MLP.from_widths((12, 12, 2, 12, 12), dtype=torch.float64, seed=3)
    x = torch.randn(5, 12, dtype=torch.float64)
    assert relative_error(jacobian_mixed(net, x), reference_jacobian(net, x)) < 1e-12


@pytest.mark.parametrize(
    ("widths", "batch", "mode"),
    [
        ((300, 64, 64, 1), 1, "reverse"),  # one output: one adjoint row
        ((1, 64, 64, 256), 1, "forward"),  # one input: one tangent column
        ((2, 256, 256, 512), 4, "forward"),
    ],
)
def test_auto_runs_the_mode_the_plan_chooses(monkeypatch, widths, batch, mode):
    """auto runs the plan's mode, and only it (the routines are watched, not the values:
    every mode gives the same Jacobian)."""
    from jacbench import plan
    from jacbench.ad import jacobians

    ran = []
    for name, routine in list(jacobians._ROUTINES.items()):

        def watched(net, x, chunk_size, routine=routine, name=name):
            ran.append(name)
            return routine(net, x, chunk_size)

        monkeypatch.setitem(jacobians._ROUTINES, name, watched)
    jacobians._predicted_mode.cache_clear()
    assert plan(widths, batch).mode == mode
    net = MLP.from_widths(widths, dtype=torch.float64, seed=0)
    x = torch.randn(batch, widths[0], dtype=torch.float64) if batch > 1 else torch.randn(widths[0])
    result = jacobian(net, x.to(torch.float64), "auto")
    assert ran == [mode]
    assert relative_error(result, reference_jacobian(net, x.to(torch.float64))) < 1e-10


@pytest.mark.parametrize(
    ("x", "error", "message"),
    [
        (torch.zeros(()), ValueError, r"shape \(D,\) or \(B, D\) with D = 5, got shape \(\)"),
        (torch.zeros(2, 3, 5), ValueError, r"got shape \(2, 3, 5\)"),
        (torch.zeros(4), ValueError, "last dimension must be the network's input size D = 5"),
        (
            torch.zeros(5, dtype=torch.float32),
            TypeError,
            "x has dtype torch.float32 but the network has torch.float64",
        ),
        ([0.0] * 5, TypeError, "x must be a torch.Tensor"),
    ],
)
@pytest.mark.parametrize("routine", list(ROUTINES.values()))
def test_bad_input_says_what_was_expected(small_net, routine, x, error, message):
    with pytest.raises(error, match=message):
        routine(small_net, x)


@pytest.mark.parametrize("chunk_size", [0, -1, 1.5, True])
@pytest.mark.parametrize(
    "routine",
    [jacobian_forward, jacobian_reverse, lambda *a, **k: jacobian(*a, mode="mixed", **k)],
)
def test_bad_chunk_size(small_net, routine, chunk_size):
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        routine(small_net, torch.zeros(5, dtype=torch.float64), chunk_size=chunk_size)


@pytest.mark.parametrize("routine", ROUTINES.values())
def test_an_empty_batch_has_an_empty_jacobian(small_net, routine):
    x = torch.randn(0, 5, dtype=torch.float64)
    expected = torch.func.vmap(torch.func.jacrev(small_net))(x)
    assert expected.shape == (0, 3, 5)
    got = routine(small_net, x)
    assert got.shape == expected.shape and got.dtype == expected.dtype


@pytest.mark.parametrize("mode", ["auto", "forward", "reverse"])
def test_an_empty_batch_of_any_function_has_an_empty_jacobian(mode):
    f = torch.nn.Linear(5, 3)
    assert jacobian(f, torch.randn(0, 5), mode).shape == (0, 3, 5)


def test_empty_batches_of_the_second_order_routines(small_net):
    x = torch.randn(0, 5, dtype=torch.float64)
    for method in ("forward-laplacian", "hessian-trace", "hutchinson"):
        assert laplacian(small_net, x, method).shape == (0, 3)
    for method in ("structured", "fwd-over-rev"):
        assert hessian(small_net, x, method).shape == (0, 3, 5, 5)
    assert hvp(small_net, x, torch.ones(5, dtype=torch.float64)).shape == (0, 3, 5)


@pytest.mark.parametrize("x", [[1.0, 2.0, 3.0], torch.tensor([1, 2, 3])])
def test_any_function_says_what_x_must_be(x):
    with pytest.raises(ValueError, match="x must be a tensor of floating point numbers"):
        jacobian(torch.nn.Linear(3, 2), x)


def test_unknown_mode(small_net):
    with pytest.raises(ValueError, match="unknown mode 'sideways'; expected one of: forward"):
        jacobian(small_net, torch.zeros(5, dtype=torch.float64), mode="sideways")


def test_unknown_reference_method(small_net):
    with pytest.raises(ValueError, match="unknown reference method"):
        reference_jacobian(small_net, torch.zeros(5, dtype=torch.float64), method="numeric")


def test_device_mismatch_is_reported():
    net = make_mlp(1, 2, 2, 1)
    x = torch.zeros(2, device="meta")
    with pytest.raises(ValueError, match="x is on meta but the network is on cpu"):
        jacobian_forward(net, x)


def test_relative_error():
    ref = torch.tensor([[2.0, -4.0]])
    assert relative_error(ref, ref) == 0.0
    assert relative_error(torch.tensor([[2.0, -3.0]]), ref) == pytest.approx(0.25)
    assert relative_error(torch.zeros(1, 2), torch.zeros(1, 2)) == 0.0


@pytest.mark.parametrize(
    ("widths", "batch"),
    [
        ((768, 768, 704, 1), None),  # P = 1: a lone adjoint row, primal vector products
        ((1, 704, 768, 768), None),  # D = 1: a lone tangent row, or stacked on the primal
        ((4, 768, 768, 4), None),  # narrow tangent rows through Wᵀ, narrow adjoint rows
        ((768, 768, 768, 6), 3),  # a small batch: narrow primal products
        ((20, 768, 12, 768, 20), None),  # mixed: narrow columns and rows around the waist
        ((513, 511, 509, 1), None),  # sizes that do not divide among threads: the fallback
    ],
)
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_large_narrow_products_on_every_thread_count(widths, batch, threads):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        net = MLP.from_widths(widths, dtype=torch.float64, bias=True, seed=5)
        shape = (widths[0],) if batch is None else (batch, widths[0])
        x = torch.randn(shape, dtype=torch.float64)
        ref = reference_jacobian(net, x)
        for routine in ROUTINES.values():
            assert relative_error(routine(net, x), ref) < 1e-12
    finally:
        torch.set_num_threads(previous)


def test_small_problems_restore_the_thread_count():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        net = make_mlp(2, 3, 4, 1)
        for routine in ROUTINES.values():
            routine(net, torch.randn(3))
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("widths", [(1, 1, 2), (2, 1, 1), (3, 1, 4, 1, 5), (64, 64, 4, 64, 64)])
@pytest.mark.parametrize("batch", [None, 1, 3])
def test_mixed_with_scaled_leaves_in_every_position(widths, batch):
    net = MLP.from_widths(widths, dtype=torch.float64, seed=2)
    shape = (widths[0],) if batch is None else (batch, widths[0])
    x = torch.randn(shape, dtype=torch.float64)
    assert relative_error(jacobian_mixed(net, x), reference_jacobian(net, x)) < 1e-12
