"""The cost model against exact counts: torch's FLOP counter, brute-force bracketings."""

import itertools
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from jacbench import MLP, jacobian_forward, jacobian_mixed, jacobian_reverse
from jacbench.ad import cost
from jacbench.faces.grading import count_matmul_flops
from jacbench.measure import tuning

ROUTINES = {"forward": jacobian_forward, "reverse": jacobian_reverse, "mixed": jacobian_mixed}


def counted_flops(routine, net, x, **kwargs) -> int:
    return count_matmul_flops(lambda: routine(net, x, **kwargs))


@settings(max_examples=40, deadline=None)
@given(
    widths=st.lists(st.integers(1, 24), min_size=3, max_size=8),
    batch=st.integers(1, 4),
    bias=st.booleans(),
)
def test_flop_count_equals_torch_flop_counter(widths, batch, bias):
    net = MLP.from_widths(widths, bias=bias, dtype=torch.float64)
    x = torch.randn(batch, widths[0], dtype=torch.float64)
    for mode, routine in ROUTINES.items():
        assert counted_flops(routine, net, x) == cost.flop_count(widths, mode, batch), mode


@pytest.mark.parametrize("chunk_size", [1, 3])
def test_chunking_does_not_change_flops(chunk_size):
    widths = (7, 9, 5, 6)
    net = MLP.from_widths(widths, dtype=torch.float64)
    x = torch.randn(2, 7, dtype=torch.float64)
    for mode in ("forward", "reverse"):
        got = counted_flops(ROUTINES[mode], net, x, chunk_size=chunk_size)
        assert got == cost.flop_count(widths, mode, 2)


@pytest.mark.parametrize("widths", [(6, 8, 8, 3), (768, 768, 704, 1), (1, 704, 768, 768)])
def test_unbatched_input_counts_as_batch_of_one(widths):
    net = MLP.from_widths(widths, dtype=torch.float64)
    for mode, routine in ROUTINES.items():
        assert counted_flops(
            routine, net, torch.randn(widths[0], dtype=torch.float64)
        ) == cost.flop_count(widths, mode)


def test_worked_example_from_the_note():
    assert cost.primal_flops((4, 3, 3, 1)) == 42
    assert cost.flop_count((4, 3, 3, 1), "forward") == 138
    assert cost.flop_count((4, 3, 3, 1), "reverse") == 84


def test_seed_shape_formulas():
    d = k = 1000
    for depth in (3, 5, 10):
        widths = (d, *[k] * depth, 1)
        primal = 2 * d * k + (depth - 1) * 2 * k * k
        assert cost.flop_count(widths, "reverse") == primal + 2 * d * k + (depth - 1) * 2 * k * k
        assert (
            cost.flop_count(widths, "forward") == primal + (depth - 1) * 2 * k * k * d + 2 * k * d
        )
        assert cost.flop_count(widths, "forward", batch=4) == 4 * cost.flop_count(widths, "forward")


def _all_bracketings(i: int, j: int):
    if i == j:
        yield i
        return
    for k in range(i, j):
        for left in _all_bracketings(k + 1, j):
            for right in _all_bracketings(i, k):
                yield (left, right)


@settings(max_examples=60, deadline=None)
@given(widths=st.lists(st.integers(1, 50), min_size=3, max_size=7))
def test_chain_order_is_optimal_by_brute_force(widths):
    n = len(widths) - 1
    best, tree = cost.chain_order(widths)
    brute = min(cost.bracketing_cost(widths, t) for t in _all_bracketings(1, n))
    assert best == brute
    assert cost.bracketing_cost(widths, tree) == best


@settings(max_examples=60, deadline=None)
@given(widths=st.lists(st.integers(1, 64), min_size=3, max_size=10), batch=st.integers(1, 8))
def test_mixed_never_costs_more_than_a_pure_mode(widths, batch):
    flops = {m: cost.flop_count(widths, m, batch) for m in cost.MODES}
    assert flops["mixed"] <= min(flops["forward"], flops["reverse"])


def test_mixed_strictly_cheaper_on_hourglass():
    widths = (64, 64, 4, 64, 64)
    flops = {m: cost.flop_count(widths, m) for m in cost.MODES}
    assert flops["mixed"] < min(flops["forward"], flops["reverse"])
    assert cost.chain_order(widths) == (98304, ((4, 3), (2, 1)))
    assert cost.format_bracketing(cost.chain_order(widths)[1], 4) == "((WF·W3)·(W2·W1))"
    assert cost.plan(widths, 8).mode == "mixed"


def test_pure_bracketings_cost_what_the_formulas_say():
    widths = (5, 4, 3, 2)
    assert cost.bracketing_cost(widths, cost.forward_bracketing(3)) == 2 * 3 * 4 * 5 + 2 * 2 * 3 * 5
    assert cost.bracketing_cost(widths, cost.reverse_bracketing(3)) == 2 * 2 * 3 * 4 + 2 * 2 * 4 * 5


@pytest.mark.parametrize(
    ("widths", "batch", "mode"),
    [
        ((1000, 1000, 1000, 1000, 1), 1, "reverse"),
        ((1, 1000, 1000, 1000, 1000), 1, "forward"),
        ((64, 64, 4, 64, 64), 8, "mixed"),
        # FLOP ties (D = P): NOTE [Ties between forward and reverse mode]
        ((64, 32, 32, 64), 1, "reverse"),  # wider than the layers
        ((16, 512, 512, 512, 16), 1, "forward"),  # one input, narrower than the layers
        ((16, 512, 512, 512, 16), 8, "reverse"),  # a batch
        ((512, 512, 512, 512), 1, "reverse"),  # square
    ],
)
def test_plan_picks_the_obvious_mode(widths, batch, mode):
    p = cost.plan(widths, batch)
    assert p.mode == mode
    assert set(p.flops) == set(cost.MODES)
    assert p.flops[mode] == min(p.flops.values())


@pytest.mark.parametrize(
    "widths",
    [(4, 24, 24, 24, 24, 24, 24, 24, 24, 6), (64, 64, 4, 64, 64), (1, 32, 32, 32, 64)],
)
def test_launch_bound_inputs_go_to_reverse_mode(widths):
    # NOTE: [Launch-bound problems]: fewer FLOPs in forward (first, third) or mixed mode
    # (second), but both pure modes under a megaflop.
    p = cost.plan(widths)
    assert max(p.flops["forward"], p.flops["reverse"]) < cost.LAUNCH_BOUND_FLOPS
    assert min(p.flops["forward"], p.flops["mixed"]) < p.flops["reverse"]
    assert p.mode == "reverse"
    assert p.reason.startswith("launch-bound")
    assert cost.plan(widths, 2).mode != "reverse"  # a batch keeps the FLOP rule


@pytest.mark.parametrize(
    ("widths", "batch", "mode", "reason"),
    [
        ((1000,) * 6 + (1,), 1, "reverse", "fewest FLOPs"),
        ((1,) + (512,) * 5 + (128,), 1, "forward", "fewest FLOPs"),
        (
            (16,) + (512,) * 5 + (16,),
            1,
            "forward",
            "a tie in FLOPs: forward mode by the rule for one input narrower than every layer, "
            "hidden width from 512",
        ),
        (
            (16, 256, 256, 256, 16),
            1,
            "reverse",
            "a tie in FLOPs: reverse mode by the rule for one input narrower than every layer, "
            "hidden width under 512",
        ),
        ((16,) + (512,) * 5 + (16,), 4, "reverse", "a tie in FLOPs"),
        (
            (1024,) + (512,) * 5 + (1024,),
            1,
            "mixed",
            "its bracketing saves 25% of reverse mode's FLOPs",
        ),
    ],
)
def test_the_plan_says_which_rule_decided(widths, batch, mode, reason):
    p = cost.plan(widths, batch, tuned=tuning.DEFAULTS)
    assert (p.mode, p.reason) == (mode, reason)


def _measured(**ties: str) -> tuning.Tuning:
    """A tuning as measured on some machine, with these tie choices and made-up times."""
    chosen = {name.replace("_", " "): choice for name, choice in ties.items()}
    return replace(
        tuning.DEFAULTS,
        ties={**tuning.DEFAULTS.ties, **chosen},
        machine="a machine",
        measured_s={name: dict.fromkeys(tuning.TIE_CLASSES[name], 1e-3) for name in chosen},
    )


def test_one_inputs_tie_is_decided_by_its_width_class():
    """NOTE: [One input's tie by width]: a network narrower than ONE_INPUT_WIDE follows the
    narrow class's measurement, a wider one the wide class's."""
    narrow, wide = (16, 256, 256, 256, 16), (16,) + (512,) * 5 + (16,)
    split = _measured(tie_one_input_narrow="reverse", tie_one_input_wide="forward")
    assert cost.plan(narrow, tuned=split).mode == "reverse"
    assert cost.plan(wide, tuned=split).mode == "forward"
    below, at = tuning.ONE_INPUT_WIDE - 1, tuning.ONE_INPUT_WIDE  # over a megaflop either way
    assert cost.plan((16, below, below, 16), tuned=split).mode == "reverse"
    assert cost.plan((16, at, at, 16), tuned=split).mode == "forward"
    flipped = _measured(tie_one_input_narrow="forward", tie_one_input_wide="reverse")
    assert cost.plan(narrow, tuned=flipped).mode == "forward"
    assert cost.plan(wide, tuned=flipped).mode == "reverse"
    # the widest hidden layer decides: one 512-wide layer among narrow ones is wide
    assert cost.plan((16, 256, 512, 256, 16), tuned=flipped).mode == "reverse"


def test_measured_ties_decide_where_the_flops_tie():
    """NOTE: [Ties measured, not assumed]: the tuning's choice, with its times, where the
    counts cannot decide; nothing changes where they can."""
    one_input = (16,) + (512,) * 5 + (16,)
    tuned = _measured(tie_one_input_wide="reverse")
    p = cost.plan(one_input, tuned=tuned)
    assert p.mode == "reverse"
    assert p.reason == "a tie in FLOPs: reverse mode as measured on this machine: " + (
        "forward 1 ms, reverse 1 ms"
    )
    assert cost.plan((1000,) * 6 + (1,), tuned=tuned).reason == "fewest FLOPs"
    pinn = (3,) + (64,) * 7 + (2,)
    assert cost.plan(pinn, 1024, tuned=tuning.DEFAULTS).mode == "reverse"
    batched = cost.plan(pinn, 1024, tuned=_measured(tie_batch="mixed"))
    assert batched.mode == "mixed" and "a tie on a batch, measured on this machine" in (
        batched.reason
    )
    assert cost.plan(pinn, 1, tuned=_measured(tie_batch="mixed")).mode != "mixed"  # batches only
    square = (3,) + (128,) * 6 + (3,)  # D = P: the pure modes tie on a batch too
    assert cost.plan(square, 1024, tuned=tuning.DEFAULTS).mode == "reverse"
    forward = cost.plan(square, 1024, tuned=_measured(tie_batch_modes="forward"))
    assert forward.mode == "forward"
    assert forward.reason.startswith("a tie in FLOPs on a batch: forward mode as measured on")
    assert cost.plan(square, 1024, tuned=_measured(tie_batch_modes="reverse")).mode == "reverse"
    one = cost.plan(one_input, 1, tuned=_measured(tie_batch_modes="reverse"))
    assert one.mode == "forward"  # one input: its own class (here the default rule)


def test_a_choice_kept_beside_a_faster_median_says_it_was_within_noise():
    """predict --order 2 said "picked: forward-laplacian, measured on this machine:
    forward-laplacian 2.77 ms, hessian-trace 2.6 ms", the slower one, without saying why."""
    from jacbench.measure.tuning.record import _measured_text

    said = _measured_text({"forward-laplacian": 2.77e-3, "hessian-trace": 2.6e-3},
                          "forward-laplacian")  # fmt: skip
    assert said.endswith(
        "; forward-laplacian kept: hessian-trace was not faster by the one rule, the "
        "difference within noise"
    )
    assert "kept" not in _measured_text({"forward": 5e-4, "reverse": 6e-4}, "forward")


def test_the_measured_laplacian_pick_follows_the_width_class():
    wide, narrow = (2,) + (128,) * 4 + (1,), (2,) + (64,) * 4 + (1,)
    assert cost.plan_second_order(wide, 1024, tuned=tuning.DEFAULTS).laplacian_method == (
        "forward-laplacian"  # fewest FLOPs
    )
    tuned = _measured(laplacian_wide="hessian-trace", laplacian_narrow="forward-laplacian")
    p = cost.plan_second_order(wide, 1024, tuned=tuned)
    assert p.laplacian_method == "hessian-trace"
    assert p.laplacian_reason.startswith("measured on this machine: forward-laplacian 1 ms")
    assert cost.plan_second_order(narrow, 1024, tuned=tuned).laplacian_method == (
        "forward-laplacian"
    )


def test_elementwise_flops():
    widths = (4, 3, 3, 1)
    assert cost.elementwise_flops(widths, "forward") == 1 * 6 + 4 * 6
    assert cost.elementwise_flops(widths, "reverse") == 1 * 6 + 1 * 6
    assert cost.elementwise_flops(widths, "reverse", batch=3, bias=True) == 3 * (2 * 6 + 6)


def test_memory_model_scales_with_chunks_and_batch():
    widths = (1000, 500, 500, 10)
    full = cost.memory_bytes(widths, "forward")
    chunked = cost.memory_bytes(widths, "forward", chunk_size=10)
    assert chunked < full
    assert cost.memory_bytes(widths, "reverse", batch=4) == 4 * cost.memory_bytes(widths, "reverse")
    assert cost.memory_bytes(widths, "reverse", dtype=torch.float64) == 2 * cost.memory_bytes(
        widths, "reverse"
    )
    # float32, batch 1, reverse: kept σ' (1000) + J (10·1000) + sweep 10·(1000+500)
    assert cost.memory_bytes(widths, "reverse") == 4 * (1000 + 10_000 + 15_000)


@pytest.mark.parametrize("bad", [(3, 4), (3, 0, 1), ()])
def test_bad_widths(bad):
    with pytest.raises(ValueError, match="widths|width"):
        cost.flop_count(bad, "forward")


def test_bad_mode():
    with pytest.raises(ValueError, match="unknown mode 'auto'"):
        cost.flop_count((2, 2, 2), "auto")


def test_brute_force_helper_enumerates_catalan_many():
    assert sum(1 for _ in _all_bracketings(1, 5)) == 14
    assert len(set(itertools.islice(_all_bracketings(1, 4), 100))) == 5
