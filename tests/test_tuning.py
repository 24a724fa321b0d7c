"""Measured kernel choices: every kernel exact and FLOP-exact, the cache, and the CLI."""

import json
import statistics
import subprocess
import sys
import threading
from dataclasses import replace

import pytest
import torch

from jacbench import MLP, jacobian
from jacbench.ad import cost
from jacbench.ad.jacobians import reference_jacobian, relative_error, tanh_by_sigmoid
from jacbench.faces.grading import count_matmul_flops
from jacbench.kernels import native
from jacbench.kernels.products import batched_rows_product
from jacbench.measure import tuning
from jacbench.measure.tuning import cache, current, measurement
from tests.test_cli import invoke


def forcing(
    kernel: str,
    tanh: str = "tanh",
    primal: str = "separate",
    batched: str = "fold",
    few_columns: str = "fold",
) -> tuning.Tuning:
    """A tuning that sends every narrow-product class to ``kernel``, every primal step of
    one input to ``primal``, every batch's wide row block to ``batched``, a batch's product
    with a weight of few columns to ``few_columns``."""
    return tuning.Tuning(
        narrow=dict.fromkeys(tuning.CLASSES, kernel),
        primal=dict.fromkeys(tuning.PRIMAL_CLASSES, primal),
        batched=dict.fromkeys(tuning.BATCHED_CLASSES, batched),
        tanh=tanh,
        few_columns=few_columns,
    )


# Weights of 192² elements take the "small" classes, 768² ones the "large" (split) classes;
# D and P below 16 make narrow tangent and adjoint blocks, batch 3 a narrow primal step.
SHAPES = [
    ((5, 192, 192, 192, 3), 1),
    ((3, 192, 192, 1), 3),
    ((1, 768, 768, 2), 1),
    ((4, 768, 768, 1), 1),
    ((7, 768, 768, 5), 3),
]


@pytest.mark.parametrize("kernel", tuning.NARROW_KERNELS)
@pytest.mark.parametrize(("widths", "batch"), SHAPES)
@pytest.mark.parametrize("mode", ["forward", "reverse", "mixed"])
def test_every_kernel_is_exact_and_flop_exact(kernel, widths, batch, mode):
    net = MLP.from_widths(widths, bias=True)
    x = torch.randn(batch, widths[0]) if batch > 1 else torch.randn(widths[0])
    reference = reference_jacobian(net.to(dtype=torch.float64), x.double())
    with tuning.use(forcing(kernel)):
        jac = jacobian(net, x, mode)
        flops = count_matmul_flops(lambda: jacobian(net, x, mode))
    assert jac.shape == reference.shape
    assert relative_error(jac, reference) < 2e-5
    assert flops == cost.flop_count(widths, mode, batch)


@pytest.mark.parametrize("kernel", tuning.NARROW_KERNELS)
@pytest.mark.parametrize(
    "widths",
    [
        (1, 768, 768, 768, 2),  # one tangent: the stack is 2 rows through split-size weights
        (5, 192, 192, 192, 3),
        (15, 192, 192, 4),  # 16 stacked rows: past the narrow products, a plain GEMM
        (3, 40, 192, 192, 40, 2),  # an hourglass: only the middle weight is tuned
    ],
)
def test_stacked_primal_is_exact_and_flop_exact(kernel, widths):
    net = MLP.from_widths(widths, bias=True)
    x = torch.randn(widths[0])
    reference = reference_jacobian(net.to(dtype=torch.float64), x.double())
    with tuning.use(forcing(kernel, primal="stacked")):
        jac = jacobian(net, x, "forward")
        flops = count_matmul_flops(lambda: jacobian(net, x, "forward"))
    assert relative_error(jac, reference) < 2e-5
    assert flops == cost.flop_count(widths, "forward")


@pytest.mark.parametrize("activation", ["sigmoid", "relu", "softplus", "identity"])
@pytest.mark.parametrize("tanh", tuning.TANH_KERNELS)
def test_stacked_primal_is_exact_for_every_activation(activation, tanh):
    # σ' reads z (relu, softplus) or σ(z), and the identity hands its block back as a view
    # of the stacked product: none may be overwritten before it is read.
    net = MLP.from_widths((2, 256, 256, 256, 3), activation=activation, bias=True)
    x = torch.randn(2)
    reference = reference_jacobian(net.to(dtype=torch.float64), x.double())
    with tuning.use(forcing("rows", tanh=tanh, primal="stacked")):
        assert relative_error(jacobian(net, x, "forward"), reference) < 2e-5


def test_stacking_does_not_touch_a_batch_or_chunks():
    net = MLP.from_widths((2, 256, 256, 3), bias=True)
    x = torch.randn(4, 2)
    reference = reference_jacobian(net.to(dtype=torch.float64), x.double())
    with tuning.use(forcing("rows", primal="stacked")):
        assert relative_error(jacobian(net, x, "forward"), reference) < 2e-5
        chunked = jacobian(net, x[0], "forward", chunk_size=1)
    assert relative_error(chunked, reference[0]) < 2e-5


@pytest.mark.parametrize("batched", tuning.BATCHED_KERNELS)
@pytest.mark.parametrize(
    ("widths", "batch"),
    [
        ((16, 64, 64, 64, 32), 3),  # tiny weights, 32 adjoint rows per sample
        ((20, 192, 192, 16), 2),  # small weights, exactly 16 rows
        ((3, 768, 768, 17), 2),  # large weights
        ((16, 64, 8, 64, 24), 4),  # an hourglass: mixed mode's products too
        ((2, 64, 64, 64, 3), 5),  # narrow blocks: always folded
    ],
)
@pytest.mark.parametrize("mode", ["reverse", "mixed"])
def test_batched_blocks_are_exact_and_flop_exact(batched, widths, batch, mode):
    net = MLP.from_widths(widths, bias=True)
    x = torch.randn(batch, widths[0])
    reference = reference_jacobian(net.to(dtype=torch.float64), x.double())
    with tuning.use(forcing("rows", batched=batched)):
        jac = jacobian(net, x, mode)
        flops = count_matmul_flops(lambda: jacobian(net, x, mode))
    assert relative_error(jac, reference) < 2e-5
    assert flops == cost.flop_count(widths, mode, batch)


@pytest.mark.parametrize("few_columns", tuning.FEW_COLUMNS_KERNELS)
@pytest.mark.parametrize(
    ("widths", "batch", "transposed"),
    [
        ((3, 128, 128, 3), 64, True),  # the classes preset's D = P = 3
        ((2, 64, 64, 64, 1), 200, True),  # a PINN's batch
        ((15, 40, 40, 17), 13, True),  # 17 adjoint rows: a wide block, folded by default
        ((15, 40, 40, 4), 52, True),
        ((1, 64, 64, 2), 129, False),  # one column: a matrix-vector product, as stored
        ((16, 64, 64, 2), 129, False),  # 16 columns: as stored
        ((3, 64, 64, 3), 42, False),  # 8,064 elements: the copy would cost more than it saves
        ((3, 64, 64, 3), 43, True),  # 8,256
    ],
)
def test_a_weight_of_few_columns_is_read_as_chosen_and_exact(
    few_columns, widths, batch, transposed, monkeypatch
):
    # NOTE: [A weight of few columns]: reverse mode's last product reads W_1 (K_1 × D)
    # through a copy of its transpose where the tuning chose it and D is 2 to 15.
    from jacbench.ad import jacobians

    seen = []

    def product(block, matrix, shared, out=None, transposed=False):
        seen.append(transposed)
        return batched_rows_product(block, matrix, shared, out, transposed)

    monkeypatch.setattr(jacobians, "batched_rows_product", product)
    net = MLP.from_widths(widths, bias=True)
    x = torch.randn(batch, widths[0])
    reference = reference_jacobian(net.to(dtype=torch.float64), x.double())
    with tuning.use(forcing("rows", few_columns=few_columns)):
        jac = jacobian(net, x, "reverse")
        products = list(seen)
        flops = count_matmul_flops(lambda: jacobian(net, x, "reverse"))
        listed = tuning.FEW_COLUMNS in tuning.classes_for(widths, batch, "reverse")
    assert listed == transposed
    assert relative_error(jac, reference) < 2e-5
    assert flops == cost.flop_count(widths, "reverse", batch)
    assert products[-1] is (transposed and few_columns == "transposed")  # the last: by W_1
    assert not any(products[:-1])  # no other weight has few columns here


def test_tanh_by_sigmoid_matches_tanh():
    z = torch.linspace(-30, 30, 100_001, dtype=torch.float64)
    assert torch.allclose(tanh_by_sigmoid(z.clone()), torch.tanh(z), atol=4e-16, rtol=0)
    z32 = z.float()
    assert torch.allclose(tanh_by_sigmoid(z32.clone()), torch.tanh(z32), atol=3e-7, rtol=0)


@pytest.mark.parametrize("tanh", ["sigmoid", "native"])
@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_every_tanh_form_gives_exact_jacobians_on_a_pinn_batch(mode, tanh):
    net = MLP.from_widths((2, 64, 64, 64, 1), bias=True)
    x = torch.randn(1024, 2)  # (1024, 64) activations: above TANH_MIN_ELEMENTS
    reference = reference_jacobian(net.to(dtype=torch.float64), x.double())
    with tuning.use(forcing("rows", tanh=tanh)):
        jac = jacobian(net, x, mode)
    assert relative_error(jac, reference) < 2e-5


@pytest.mark.parametrize("tanh", ["sigmoid", "native"])
@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_every_tanh_form_differentiates_where_autograd_records(mode, tanh):
    # The tuned tanh runs in place, with out=: where x is tracked, out of place (or torch's).
    net = MLP.from_widths((2, 64, 64, 1), bias=True)
    x = torch.randn(1024, 2)
    net64, x64 = net.to(dtype=torch.float64), x.double()
    expected = torch.func.grad(lambda v: reference_jacobian(net64, v).square().sum())(x64)
    with tuning.use(forcing("rows", tanh=tanh)):
        tracked = x.clone().requires_grad_()
        (got,) = torch.autograd.grad(jacobian(net, tracked, mode).square().sum(), tracked)
        through_func = torch.func.grad(lambda v: jacobian(net, v, mode).square().sum())(x)
    assert relative_error(got, expected) < 2e-5
    assert relative_error(through_func, expected) < 2e-5


def test_choose_keeps_the_default_unless_clearly_beaten():
    assert tuning.choose("rows", {"rows": [1.0] * 3, "split": [0.97] * 3}) == ("rows", True)
    assert tuning.choose("rows", {"rows": [1.0] * 3, "split": [0.90] * 3}) == ("split", True)
    assert tuning.choose("split", {"rows": [0.5] * 3, "split": [1.0] * 3}) == ("rows", True)


def test_choose_applies_the_one_decision_rule_to_hand_made_rounds():
    """NOTE: [One decision rule]: with one sample a round, faster in every round and by more
    than MIN_GAIN; the medians only say which candidate is put to the rule."""
    rounds = {"rows": [1.0, 1.2, 0.8], "split": [0.9, 1.08, 0.72]}  # 10% faster in each
    assert tuning.choose("rows", rounds) == ("split", True)
    # 10% faster by the medians, but slower in one of the interleaved rounds: not taken.
    rounds = {"rows": [1.0, 1.0, 1.0], "split": [0.9, 0.9, 1.2]}
    assert statistics.median(rounds["split"]) < (1 - tuning.MIN_GAIN) * 1.0
    assert tuning.choose("rows", rounds) == ("rows", True)  # steady rounds: a tie, settled
    # Two rounds are too few for the rule to test: the default stands.
    assert tuning.choose("rows", {"rows": [1.0, 1.0], "split": [0.5, 0.5]}) == ("rows", True)


def test_defaults_reproduce_the_fixed_rules():
    for size in (0, 1):  # small and medium weights: the BLAS call (a vector product)
        assert tuning.DEFAULTS.narrow_kernel(forward=True, rows=1, size=size) == "weight-first"
        assert tuning.DEFAULTS.narrow_kernel(forward=False, rows=1, size=size) == "rows"
    assert tuning.DEFAULTS.narrow_kernel(forward=False, rows=7, size=2) == "split"
    assert tuning.DEFAULTS.tanh == "tanh"


def test_buckets():
    assert [tuning.bucket(m) for m in (1, 2, 5, 6, 15)] == [1, 3, 3, 8, 8]


def test_from_dict_ignores_unknown_kernels_and_classes():
    data = {"machine": "m", "tanh": "cosh", "narrow": {"forward m=3 small": "magic", "x": "rows"}}
    got = tuning.Tuning.from_dict({**data, "few_columns": "sideways"})
    assert got.tanh == "tanh"
    assert got.few_columns == "fold" and not got.transposes_few_columns()
    chosen = tuning.Tuning.from_dict({"few_columns": "transposed"})
    assert chosen.kernel(tuning.FEW_COLUMNS) == "transposed" and chosen.transposes_few_columns()
    assert tuning.Tuning.from_dict(chosen.as_dict()) == chosen
    assert got.narrow == tuning.DEFAULTS.narrow
    assert got.primal == tuning.DEFAULTS.primal  # absent: every primal step separate
    assert got.batched == tuning.DEFAULTS.batched
    assert (
        tuning.Tuning.from_dict({"batched": {"batched rows tiny": "bmm"}}).kernel(
            "batched rows tiny"
        )
        == "bmm"
    )
    assert tuning.Tuning.from_dict(got.as_dict()) == got


def test_tie_choices_survive_the_cache_and_unknown_ones_are_dropped():
    data = {"ties": {"tie batch": "mixed", "laplacian wide": "magic", "no such tie": "x"}}
    got = tuning.Tuning.from_dict(data)
    assert got.kernel("tie batch") == "mixed"
    assert got.ties["laplacian wide"] == "forward-laplacian"  # the default: the first
    assert "no such tie" not in got.ties
    assert tuning.Tuning.from_dict(got.as_dict()) == got


def test_a_tie_choice_must_hold_in_the_earlier_tunings_of_this_machine():
    """NOTE: [A tie holds across tunings]: the challenger this tuning's rounds chose stands
    only where each earlier tuning that timed both found it faster by MIN_GAIN."""
    held = measurement.held
    assert held("mixed", "pure", ()) == "mixed"  # a first tuning decides on its own rounds
    assert held("mixed", "pure", [{"pure": 1.0, "mixed": 0.9}]) == "mixed"
    assert held("mixed", "pure", [{"pure": 1.0, "mixed": 0.97}]) == "pure"  # under MIN_GAIN
    twice = [{"pure": 1.0, "mixed": 0.9}, {"pure": 1.0, "mixed": 1.2}]
    assert held("mixed", "pure", twice) == "pure"  # the older tuning disagreed
    assert held("pure", "pure", [{"pure": 2.0, "mixed": 1.0}]) == "pure"  # the default stands
    assert held("mixed", "pure", [{"pure": 1.0}]) == "mixed"  # timed one side only: no say


def test_a_tuning_keeps_the_tie_medians_of_the_tunings_before_it():
    newer, older, oldest = ({"pure": t, "mixed": 1.0} for t in (1.1, 1.2, 1.3))
    before = tuning.Tuning(
        machine=tuning.machine_key(),
        measured_s={"tie batch": newer},
        ties_before={"tie batch": (older, oldest)},
    )
    kept = measurement._earlier_ties(before)
    assert kept["tie batch"] == (newer, older)  # newest first, TIE_TUNINGS - 1 of them
    assert kept["laplacian wide"] == ()
    assert measurement._earlier_ties(replace(before, machine="another CPU")) == {}
    assert measurement._earlier_ties(tuning.DEFAULTS) == {}
    assert measurement._earlier_ties(None) == {}
    again = tuning.Tuning.from_dict(replace(before, ties_before=kept).as_dict())
    assert again.ties_before["tie batch"] == (newer, older)


def test_the_earlier_tie_medians_read_from_the_cache_drop_what_is_not_seconds():
    data = {
        "ties_before": {
            "tie batch": [{"pure": 1e-3, "mixed": -1}, "x", {"pure": 2e-3}, {"pure": 3e-3}],
            "laplacian wide": "not a list",
        }
    }
    got = tuning.Tuning.from_dict(data).ties_before
    assert got == {"tie batch": ({"pure": 1e-3}, {"pure": 2e-3})}
    assert tuning.Tuning.from_dict({"ties_before": [1, 2]}).ties_before == {}


def test_the_plan_says_a_tie_was_kept_because_the_two_trade_places():
    seconds = {"forward-laplacian": 5.5e-3, "hessian-trace": 4.5e-3}
    earlier = {"forward-laplacian": 3.6e-3, "hessian-trace": 4.5e-3}
    tuned = tuning.Tuning(
        machine="m",
        measured_s={"laplacian wide": seconds},
        ties_before={"laplacian wide": (earlier,)},
    )
    choice, said = tuned.tie_rule("laplacian wide")
    assert choice == "forward-laplacian"
    assert said.endswith(
        "; forward-laplacian kept: hessian-trace was faster in this tuning but not in an "
        "earlier one of this machine, the two trade places here"
    )
    from rich.console import Console

    from jacbench.faces import report

    close = replace(tuned, measured_s={"laplacian wide": {**seconds, "hessian-trace": 5.4e-3}})
    assert close.tie_rule("laplacian wide")[1].endswith("the difference within noise")  # 2%
    console = Console(width=200, record=True)
    console.print(report.ties_table(tuned))
    assert "forward-laplacian by 25%" in console.export_text()  # the earlier tuning's lead


def test_a_tie_class_is_chosen_on_this_tunings_rounds_then_held(monkeypatch):
    wins = iter([2.0, 1.0] * tuning.TIE_ROUNDS * 2)  # the challenger faster in every round
    monkeypatch.setattr(measurement, "_time", lambda fn, min_time, threads=None: next(wins))

    def ties():
        return {"tie batch": {"pure": lambda: None, "mixed": lambda: None}}

    session = measurement._Session(0.01, torch.Generator())
    chosen = measurement._choose_ties(session, tuning.DEFAULTS, ties, {})
    assert chosen["tie batch"] == "mixed"
    disagreed = {"tie batch": ({"pure": 1.0, "mixed": 1.3},)}
    chosen = measurement._choose_ties(session, tuning.DEFAULTS, ties, disagreed)
    assert chosen["tie batch"] == "pure"


def test_each_ties_candidates_compute_the_same_thing():
    """A tie is between routines that agree: choosing one changes the time, not the result."""
    from jacbench.ad import ties

    found = ties.candidates()
    assert set(found) == set(tuning.TIE_CLASSES)
    for name, calls in found.items():
        assert list(calls) == list(tuning.TIE_CLASSES[name])
        first, *others = (call() for call in calls.values())
        scale = first.abs().max()
        for other in others:
            assert other.shape == first.shape
            assert (other - first).abs().max() <= 1e-4 * scale, name


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("JACBENCH_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("JACBENCH_TUNING", raising=False)
    monkeypatch.setattr(current, "_active", None)
    monkeypatch.setattr(measurement, "_REFUSED", [])
    return tmp_path


def fake_measure(monkeypatch, fake) -> None:
    """``measure`` replaced where ``ensure`` calls it and where the CLI reaches it."""
    monkeypatch.setattr(measurement, "measure", fake)
    monkeypatch.setattr(tuning, "measure", fake)


def test_ensure_measures_once_then_reads_the_cache(cache_dir, monkeypatch):
    measured = forcing("split")
    measured = tuning.Tuning(narrow=measured.narrow, machine=tuning.machine_key())
    calls = []
    fake_measure(monkeypatch, lambda **_: calls.append(1) or measured)
    assert tuning.ensure("cpu") == measured
    assert tuning.ensure("cpu") == measured
    assert calls == [1]
    stored = json.loads((cache_dir / "tuning.json").read_text())
    assert stored[tuning.machine_key()]["narrow"]["reverse m=1 small"] == "split"
    # Another process (a fresh module state) reads it without measuring.
    monkeypatch.setattr(current, "_active", None)
    assert tuning.active() == measured


def test_a_cache_entry_of_another_version_is_measured_again(cache_dir, monkeypatch):
    old = forcing("split").as_dict()
    del old["version"]  # written before the primal classes existed
    (cache_dir / "tuning.json").write_text(json.dumps({tuning.machine_key(): old}))
    assert tuning.cached() is None
    fresh = tuning.Tuning(machine=tuning.machine_key())
    fake_measure(monkeypatch, lambda **_: fresh)
    assert tuning.ensure("cpu") == fresh
    assert tuning.cached() == fresh


def test_a_cached_tuning_without_the_calibration_is_calibrated_once(cache_dir, monkeypatch):
    """A tuning cached before the generic plan's constants (or one of them) existed: ensure
    measures the calibration once, caches it, and never per process after that."""
    older = tuning.Tuning(narrow=forcing("split").narrow, machine=tuning.machine_key())
    tuning.save(replace(older, calibration={"forward_op_s": 1e-5}))  # no byte_rate yet
    fake_measure(monkeypatch, lambda **_: pytest.fail("the kernels measured again"))
    monkeypatch.setattr(measurement, "OtherWork", _Quiet)
    constants = {"forward_op_s": 2e-5, "reverse_op_s": 1e-5, "flop_rate": 1e11, "byte_rate": 1e10}
    calls = []
    calibrate = lambda: calls.append(1) or constants  # noqa: E731
    assert dict(tuning.ensure("cpu", calibrate=calibrate).calibration) == constants
    monkeypatch.setattr(current, "_active", None)  # another process
    assert dict(tuning.ensure("cpu", calibrate=calibrate).calibration) == constants
    assert calls == [1]
    assert tuning.cached().narrow == older.narrow  # the kernels as they were


class _Quiet:
    def cores(self):
        return 0.0


def test_tuning_off_keeps_the_defaults(cache_dir, monkeypatch):
    monkeypatch.setenv("JACBENCH_TUNING", "defaults")
    fake_measure(monkeypatch, lambda **_: pytest.fail("measured while off"))
    assert tuning.ensure("cpu") == tuning.DEFAULTS
    assert not (cache_dir / "tuning.json").exists()


@pytest.mark.slow  # over 5 s on two cores: run by .ci/run, not by plain pytest
def test_measure_times_every_class_and_picks_a_candidate(cache_dir):
    from jacbench.ad import ties

    measured = tuning.measure(min_time=0.001, ties=ties.candidates)
    for name, choices in tuning.TIE_CLASSES.items():
        assert set(measured.measured_s[name]) == set(choices)
        assert measured.ties[name] in choices
    assert measured.machine == tuning.machine_key()
    assert set(measured.narrow) == set(tuning.CLASSES)
    assert set(measured.primal) == set(tuning.PRIMAL_CLASSES)
    for name in (*tuning.CLASSES, *tuning.PRIMAL_CLASSES):
        seconds = measured.measured_s[name]
        assert measured.kernel(name) in seconds and all(t > 0 for t in seconds.values())
    assert set(measured.measured_s["forward+primal m=3 large"]) == {"separate", "stacked"}
    assert set(measured.batched) == set(tuning.BATCHED_CLASSES)
    for name in tuning.BATCHED_CLASSES:
        assert set(measured.measured_s[name]) == {"fold", "bmm"}
    assert set(measured.measured_s[tuning.FEW_COLUMNS]) == {"fold", "transposed"}
    assert measured.few_columns in tuning.FEW_COLUMNS_KERNELS
    cpp = {"native"} if native.available() else set()
    assert set(measured.measured_s["tanh"]) == {"tanh", "sigmoid"} | cpp
    for name in tuning.SMALL_CLASSES:
        assert set(measured.measured_s[name]) == {"torch", "numpy"} | cpp


def test_classes_for_names_what_a_shape_looks_up():
    assert tuning.classes_for((1000, 1000, 1000, 1), 1, "reverse") == [
        "forward m=1 large",
        "reverse m=1 large",
    ]
    separate, stacked = forcing("rows"), forcing("rows", primal="stacked")
    # W_1 (3 × 600) is below the tuned size; W_2 has a primal and a tangent step; W_F only
    # a tangent step. 600 × 600 is a medium weight (2^18 ≤ 360,000 < 2^19).
    assert tuning.classes_for((3, 600, 600, 600), 1, "forward", separate) == [
        "forward+primal m=3 medium",
        "forward m=1 medium",
        "forward m=3 medium",
    ]
    assert tuning.classes_for((3, 600, 600, 600), 1, "forward", stacked) == [
        "forward+primal m=3 medium",
        "forward m=3 medium",  # 4 stacked rows, then W_F's 3 tangent rows: one bucket
    ]
    assert tuning.classes_for((300, 300, 300, 1), 1, "reverse") == [
        "forward m=1 small",  # 90,000 elements: from the tuned size to 2^18
        "reverse m=1 small",
    ]
    # W_1 (1 × 1000) and W_F (1000 × 9) are below the tuned size.
    assert tuning.classes_for((1, 1000, 1000, 1000, 9), 1, "forward", stacked) == [
        "forward+primal m=1 large",
        "forward m=3 large",  # h and one tangent: 2 rows
    ]
    # batched GEMMs, the last by W_1 (64 × 2): a weight of few columns
    assert tuning.classes_for((2, 64, 64, 1), 4096, "reverse") == ["batched few columns"]
    assert tuning.classes_for((2, 64, 64, 1), 4096, "forward") == []
    assert tuning.classes_for((1, 64, 64, 1), 4096, "reverse") == []  # W_1 one column
    assert tuning.classes_for((16, 64, 64, 1), 4096, "reverse") == []  # 16 columns
    assert tuning.classes_for((64, 64, 600, 64), 256, "reverse") == [
        "batched rows tiny",  # W_1: 64 × 64
        "batched rows small",  # W_2: 600 × 64
    ]
    assert tuning.classes_for((64, 64, 600, 15), 256, "reverse") == []  # 15 rows: folded


def test_cli_tune_and_predict(cache_dir, monkeypatch):
    fake_measure(monkeypatch, lambda **_: tuning.Tuning(machine=tuning.machine_key()))
    result = invoke("tune")
    assert result.exit_code == 0, result.output
    assert "forward m=3 small" in result.output and "tuning.json" in result.output
    result = invoke("predict", "--depth", 3, "--d-in", 1000, "--width", 1000, "--d-out", 1)
    assert result.exit_code == 0, result.output
    assert "Kernels (measured on" in result.output
    assert "reverse m=1 large: split" in result.output


def test_cli_tune_remeasure_holds_the_ties_against_the_cached_tuning(cache_dir, monkeypatch):
    first = tuning.Tuning(
        machine=tuning.machine_key(), measured_s={"tie batch": {"pure": 2e-3, "mixed": 1e-3}}
    )
    tuning.save(first)
    given = []
    fake_measure(monkeypatch, lambda **kw: given.append(kw.get("before")) or first)
    result = invoke("tune", "--remeasure")
    assert result.exit_code == 0, result.output
    assert len(given) == 1 and given[0] is not None  # the cached tuning, as it was read
    assert given[0].measured_s["tie batch"] == {"pure": 2e-3, "mixed": 1e-3}


def test_cli_tune_says_why_the_cpp_kernels_were_no_candidate(cache_dir, monkeypatch):
    from jacbench.kernels import native

    fake_measure(monkeypatch, lambda **_: tuning.Tuning(machine=tuning.machine_key()))
    monkeypatch.setattr(native, "_library", lambda: "no C++ compiler (set CXX, or install g++)")
    result = invoke("tune")
    assert result.exit_code == 0, result.output
    assert (
        "jacbench's own C++ kernel was not a candidate: no C++ compiler (set CXX, or install g++)."
        in " ".join(result.output.split())
    )


def test_a_tuning_measured_beside_other_work_is_not_cached(cache_dir, monkeypatch):
    busy = tuning.Tuning(machine=tuning.machine_key(), busy="other processes used 1.20 cores")
    fake_measure(monkeypatch, lambda **_: busy)
    told = []
    assert tuning.ensure("cpu", progress=told.append) == tuning.DEFAULTS
    assert not (cache_dir / "tuning.json").exists()
    assert "not cached" in told[-1] and "1.20 cores" in told[-1]
    fake_measure(monkeypatch, lambda **_: pytest.fail("measured again in one process"))
    assert tuning.ensure("cpu") == tuning.DEFAULTS
    fake_measure(monkeypatch, lambda **_: busy)
    result = invoke("tune", "--remeasure")
    assert result.exit_code == 1, result.output
    assert "Not cached: other processes used 1.20 cores" in " ".join(result.output.split())


def test_busy_says_why_a_tuning_is_not_to_be_trusted():
    assert measurement._busy(0.1) == ""
    assert measurement._busy(None) == ""
    assert "0.90 cores" in measurement._busy(0.9)


def test_a_class_whose_rounds_keep_disagreeing_keeps_its_default(monkeypatch):
    """NOTE: [A tuning measured on a busy machine]: timed again, then left at its default,
    while the other classes keep what they measured."""
    calls = []

    def noisy_time(fn, min_time, threads=None):
        calls.append(fn)
        return 1.0 if len(calls) % 2 else 3.0  # every other round three times as slow

    monkeypatch.setattr(measurement, "_time", noisy_time)
    spreads: list[float] = []
    measurement._measure_round_robin({"a": lambda: None}, 0.01, spreads=spreads)
    assert len(calls) == tuning.ROUNDS * (1 + tuning.RETRIES)  # timed again, twice
    assert spreads == [3.0]
    steady = iter([2.0, 1.0] * tuning.ROUNDS)  # "b" faster in every round, and steady
    monkeypatch.setattr(measurement, "_time", lambda fn, min_time, threads=None: next(steady))
    assert measurement._measure_round_robin({"a": lambda: None, "b": lambda: None}, 0.01) == {
        "a": [2.0] * tuning.ROUNDS,
        "b": [1.0] * tuning.ROUNDS,
    }
    # Noisy rounds: a candidate that won every round stands; one the medians alone name
    # leaves the class at its default, named unsettled.
    clear = {"rows": [1.5, 3.0, 1.5], "split": [0.9, 1.8, 0.9]}
    assert tuning.choose("rows", clear, spread=2.0) == ("split", True)
    mixed = {"rows": [1.5, 1.0, 1.5], "split": [0.9, 1.8, 0.9]}
    assert tuning.choose("rows", mixed, spread=1.8) == ("rows", False)
    assert tuning.choose("rows", mixed, spread=1.2) == ("rows", True)  # steady: a tie
    kept = tuning.Tuning.from_dict({"unsettled": ["reverse m=1 large"]})
    assert kept.unsettled == ("reverse m=1 large",)
    assert tuning.Tuning.from_dict(kept.as_dict()).unsettled == kept.unsettled


def test_small_networks_look_up_their_route():
    assert tuning.classes_for((4, 24, 24, 6), 1, "reverse") == ["small reverse"]
    assert tuning.classes_for((4, 24, 24, 6), 1, "forward") == ["small forward"]
    assert tuning.classes_for((4, 24, 24, 6), 8, "reverse") == []  # a batch: torch's GEMMs


def test_the_timed_widths_name_every_size():
    assert tuple(tuning.WIDTHS) == tuning.SIZES
    assert tuple(tuning.BATCHED_WIDTHS) == tuning.BATCHED_SIZES


# Saves ``SAVES`` entries, each under its own machine key, into the cache at argv[1], once
# told to go: both children start saving together, whatever their imports took.
_SAVER = """
import os, sys
os.environ["JACBENCH_CACHE_DIR"] = sys.argv[1]
from jacbench.measure import tuning
print("ready", flush=True)
sys.stdin.readline()
for i in range(int(sys.argv[3])):
    tuning.save(tuning.Tuning(machine=f"{sys.argv[2]} {i}"))
"""
SAVES = 60


def test_two_processes_saving_at_once_keep_each_others_entries(tmp_path, monkeypatch):
    """NOTE: [One writer of the tuning cache]: each save reads, adds and writes under the
    lock, so no entry of the other process is lost in between."""
    monkeypatch.setenv("JACBENCH_CACHE_DIR", str(tmp_path))
    tuning.save(tuning.Tuning(machine="before"))
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _SAVER, str(tmp_path), name, str(SAVES)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    for child in children:
        assert child.stdout.readline().strip() == "ready"
    for child in children:
        child.stdin.write("go\n")
        child.stdin.close()
    assert [child.wait(timeout=300) for child in children] == [0, 0]
    stored = json.loads((tmp_path / "tuning.json").read_text())
    assert set(stored) == {"before"} | {f"{name} {i}" for name in "ab" for i in range(SAVES)}
    assert tuning.Tuning.from_dict(stored["a 3"]) == tuning.Tuning(machine="a 3")
    assert cache.lock_path() == tmp_path / "tuning.json.lock"
    assert not list(tmp_path.glob("*.tmp"))


def test_threads_saving_at_once_keep_each_others_entries(tmp_path, monkeypatch):
    monkeypatch.setenv("JACBENCH_CACHE_DIR", str(tmp_path))
    start = threading.Barrier(4)

    def saver(name: str) -> None:
        start.wait()
        for i in range(10):
            tuning.save(tuning.Tuning(machine=f"{name} {i}"))

    threads = [threading.Thread(target=saver, args=(name,)) for name in "abcd"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stored = json.loads((tmp_path / "tuning.json").read_text())
    assert set(stored) == {f"{name} {i}" for name in "abcd" for i in range(10)}
