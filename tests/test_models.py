"""Any model: the generic Jacobian and its plan, the built-in families, and models in runs
(the factory convention, params, bad factories, validation), by the CLI, Python and pytest."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import jacbench
from jacbench.ad import generic
from jacbench.ad.builtin_models import BUILTIN_MODELS, CLASSIC_PROBLEMS
from jacbench.faces.cli import app
from jacbench.measure.rows import COLUMNS
from jacbench.runs import models, results
from jacbench.runs.grid import get_preset
from jacbench.runs.models import Model, ModelError

from . import user_models

USER_MODELS = Path(__file__).with_name("user_models.py")
runner = CliRunner()


def _exact(f, x):
    """The float64 Jacobian by torch.func.jacrev (vmapped over a batch): the reference."""
    single = torch.func.jacrev(f)
    return single(x) if x.ndim == 1 else torch.func.vmap(single)(x)


def _finite_differences(f, x, h=1e-6):
    """(P, D) by central differences of one sample, in float64: independent of torch.func."""
    columns = []
    for i in range(x.shape[0]):
        e = torch.zeros_like(x)
        e[i] = h
        columns.append((f(x + e) - f(x - e)) / (2 * h))
    return torch.stack(columns, dim=-1)


def _float64(model):
    """A model in float64, its parameters fixed, as a run builds it."""
    return models.moved(model, torch.float64, "cpu")


NETWORKS = {
    "residual MLP": lambda: _float64(BUILTIN_MODELS["residual"](6, 3, width=16, depth=2)),
    "1-D conv net": lambda: _float64(user_models.make_conv1d(6, 3)),
    "attention block": lambda: _float64(BUILTIN_MODELS["attention"](8, 3, seq=4, heads=2)),
}


@pytest.mark.parametrize("name", NETWORKS)
@pytest.mark.parametrize("mode", ["forward", "reverse", "auto"])
@pytest.mark.parametrize("batch", [None, 3])
def test_jacobian_of_any_module_is_exact(name, mode, batch):
    model = NETWORKS[name]()
    d = 6 if name != "attention block" else 8
    x = torch.randn(d, dtype=torch.float64) if batch is None else torch.randn(batch, d).double()
    jac = jacbench.jacobian(model, x, mode)
    assert jac.shape == ((3, d) if batch is None else (batch, 3, d))
    assert torch.allclose(jac, _exact(model, x), rtol=0, atol=1e-12)
    first, one = (jac, x) if batch is None else (jac[0], x[0])
    assert torch.allclose(first, _finite_differences(model, one), atol=1e-7)


def test_the_mlp_keeps_its_own_routines_and_other_modes_are_refused():
    model = NETWORKS["residual MLP"]()
    with pytest.raises(ValueError, match="unknown mode 'mixed' for a function that is not an MLP"):
        jacbench.jacobian(model, torch.randn(6, dtype=torch.float64), "mixed")
    with pytest.raises(ValueError, match=r"map one sample \(D,\) to \(P,\)"):
        jacbench.jacobian(lambda x: x.sum(), torch.randn(4))
    net = jacbench.make_mlp(depth=2, d_in=4, width=8, d_out=3, dtype=torch.float64)
    x = torch.randn(4, dtype=torch.float64)
    assert torch.allclose(jacbench.jacobian(net, x, "mixed"), _exact(net, x), atol=1e-12)


def test_the_plan_counts_the_flops_of_a_linear_chain_exactly():
    d, k, p = 5, 7, 3
    chain = torch.nn.Sequential(torch.nn.Linear(d, k), torch.nn.Tanh(), torch.nn.Linear(k, p))
    chain = _float64(chain)
    plan = generic.plan_of(chain, torch.randn(4, d, dtype=torch.float64))
    one_pass = 2 * k * d + 2 * p * k  # the primal, and each cotangent's way back
    assert plan.flops["reverse"] == 4 * (1 + p) * one_pass
    assert plan.flops["forward"] >= 4 * (1 + d) * one_pass  # each tangent's way up, at least
    assert plan.primal_flops == 4 * one_pass
    assert plan.d_in == d and plan.d_out == p and plan.batch == 4
    assert (
        set(plan.seconds) == {"forward", "reverse"} and plan.calibration.op_seconds("forward") > 0
    )


def test_the_plan_picks_reverse_for_one_output_and_forward_for_wide_outputs_of_few_inputs():
    attention = BUILTIN_MODELS["attention"](64, 1, seq=8, heads=2).eval().requires_grad_(False)
    plan = generic.plan_of(attention, torch.randn(64))
    assert plan.mode == "reverse" and plan.flops["forward"] > 10 * plan.flops["reverse"]
    # Two inputs into 1024-unit layers and 1024 outputs: forward mode's FLOPs are 1/300 of
    # reverse mode's, far past what torch.func's cost per operation could make up.
    wide = torch.nn.Sequential(
        torch.nn.Linear(2, 1024), torch.nn.Tanh(), torch.nn.Linear(1024, 1024), torch.nn.Tanh(),
        torch.nn.Linear(1024, 1024),
    ).requires_grad_(False)  # fmt: skip
    plan = generic.plan_of(wide, torch.randn(2))
    assert plan.mode == "forward" and plan.reason == "fewest FLOPs"


def test_the_plan_is_cached_per_function_and_shape():
    model = NETWORKS["residual MLP"]()
    x = torch.randn(6, dtype=torch.float64)
    assert generic.plan_of(model, x) is generic.plan_of(model, x.clone())
    assert generic.plan_of(model, x) is not generic.plan_of(model, x.expand(2, 6).clone())
    assert generic.plan_of(NETWORKS["residual MLP"](), x) is not generic.plan_of(model, x)


class _NoForwardMode(torch.autograd.Function):
    """sin, with a backward but no forward-mode derivative."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return torch.sin(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad):
        return grad * torch.cos(ctx.saved_tensors[0])


def test_a_function_without_forward_mode_is_planned_in_reverse_mode_and_says_why():
    linear = torch.nn.Linear(3, 40).double().requires_grad_(False)

    def f(x):
        return _NoForwardMode.apply(linear(x))

    x = torch.randn(3, dtype=torch.float64)
    plan = generic.plan_of(f, x)
    assert plan.mode == "reverse" and "forward mode is not supported" in plan.reason
    assert "forward" not in plan.flops
    assert torch.allclose(jacbench.jacobian(f, x), torch.cos(linear(x))[:, None] * linear.weight)


def test_past_the_memory_budget_reverse_mode_is_chunked_and_stays_exact(monkeypatch):
    model = NETWORKS["residual MLP"]()
    x = torch.randn(6, dtype=torch.float64)
    monkeypatch.setattr(generic, "MEMORY_BUDGET_BYTES", 1)
    plan = generic._plan(model, x)
    assert plan.mode == "reverse" and plan.chunk_size == 1
    assert plan.reason == "forward mode would pass the memory budget"
    monkeypatch.setattr(generic, "_PLANS", {})
    assert torch.allclose(jacbench.jacobian(model, x), _exact(model, x), atol=1e-12)


ANY_SIZE = [name for name in BUILTIN_MODELS if name not in CLASSIC_PROBLEMS]


@pytest.mark.parametrize("family", ANY_SIZE)
def test_every_family_follows_the_factory_convention(family):
    d = 64 if family in ("cnn", "attention") else 5
    model = _float64(BUILTIN_MODELS[family](d, 3))
    x = torch.randn(2, d, dtype=torch.float64)
    assert model(x).shape == (2, 3) and model(x[0]).shape == (3,)
    assert torch.allclose(model(x)[1], model(x[1]), atol=1e-12)  # samples are independent
    assert torch.allclose(jacbench.jacobian(model, x), _exact(model, x), atol=1e-10)


def test_params_parse_as_ints_floats_booleans_and_words():
    assert models.parse_param("width=64,128") == ("width", (64, 128))
    assert models.parse_param("omega=30.5") == ("omega", (30.5,))
    assert models.parse_param("activation=gelu,silu") == ("activation", ("gelu", "silu"))
    assert models.parse_param("bias=true") == ("bias", (True,))
    for bad in ("width", "=3", "width=", "2w=3"):
        with pytest.raises(ValueError, match="NAME=V1,V2"):
            models.parse_param(bad)
    assert models.params_grid({"width": [64, 128], "depth": [3]}) == [
        {"width": 64, "depth": 3},
        {"width": 128, "depth": 3},
    ]
    assert models.params_grid(None) == [{}]
    with pytest.raises(ValueError, match="a list of values"):
        models.params_grid({"width": 64})


def test_a_model_is_labelled_by_its_name_and_params():
    assert Model("residual", (("width", 64), ("depth", 3))).label == "residual(width=64,depth=3)"
    assert models.resolve_model("siren").label == "siren"
    spec = f"{USER_MODELS}:make_resnet"
    assert models.resolve_model(spec).with_params({"width": 8}).label == f"{spec}(width=8)"
    assert models.resolve_model(user_models.make_resnet).name == "make_resnet"
    assert models.resolve_model(user_models.make_resnet).isolated  # importable: a worker's
    assert not models.resolve_model(lambda d, p: torch.nn.Linear(d, p)).isolated


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        ("make_wrong_shape", r"returns \(4,\) for x of shape \(5,\); a model maps"),
        ("make_raising", "raised RuntimeError: no model today"),
        ("make_no_arguments", r"does not take \(d_in, d_out, no params\)"),
        ("make_not_a_model", "a factory must return a module or a function, got int"),
        ("missing", "user_models.py has no function 'missing'"),
    ],
)
def test_a_bad_factory_is_refused_in_one_line(factory, message):
    with pytest.raises(ModelError, match=message) as caught:
        models.check_model(models.resolve_model(f"{USER_MODELS}:{factory}"), 5, 3)
    assert "\n" not in str(caught.value)
    with pytest.raises(ValueError, match=message):
        jacbench.sweep(model=f"{USER_MODELS}:{factory}", d_in=[5], d_out=[3], min_time=0.01)


def test_model_options_are_checked():
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        models.resolve_model("resnet")
    with pytest.raises(ValueError, match="a model needs d_in and d_out"):
        jacbench.sweep(model="residual", d_in=[4])
    with pytest.raises(ValueError, match="depths, width and shapes are the MLP's"):
        jacbench.sweep(model="residual", d_in=[4], d_out=[1], depths=[3])
    with pytest.raises(ValueError, match="params are a model's"):
        jacbench.sweep(params={"width": [3]})
    with pytest.raises(ValueError, match="does not take"):
        jacbench.sweep(model="residual", d_in=[4], d_out=[1], params={"widht": [3]})
    with pytest.raises(ValueError, match=r"attention does not take \(d_in, d_out, width=8\)"):
        jacbench.sweep(model=["residual", "attention"], d_in=[8], d_out=[1], params={"width": [8]})


def test_a_sweep_of_models_writes_validated_rows_with_a_model_column(tmp_path):
    frame = jacbench.sweep(
        model=[f"{USER_MODELS}:make_resnet", "residual"],
        d_in=[8, 16],
        d_out=[1],
        batch=[2],
        params={"width": [8]},
        min_time=0.01,
        out=tmp_path / "run",
    )
    assert len(frame) == 2 * 2 * 3
    assert set(frame["method"]) == {"func-jacfwd", "func-jacrev", "auto"}
    assert (frame["status"] == "ok").all(), frame[["method", "message"]]
    assert (frame["max_rel_err"] < 1e-4).all()
    assert set(frame["model"]) == {f"{USER_MODELS}:make_resnet(width=8)", "residual(width=8)"}
    assert set(frame["widths"]) == {"8-1", "16-1"} and (frame["depth"] == 0).all()
    auto = frame[frame["method"] == "auto"]
    assert (auto["mode"] == auto["predicted_mode"]).all() and (auto["flops"] > 0).all()
    written = pd.read_csv(tmp_path / "run" / "results.csv")
    assert list(written.columns) == list(COLUMNS)
    summary = (tmp_path / "run" / "summary.md").read_text()
    assert f"{USER_MODELS}:make_resnet(width=8) D=16 P=1 B=2 float32 cpu" in summary
    assert "the mode generic.plan_of predicted" in summary


def test_a_factory_that_raises_at_one_size_fails_those_rows_and_the_run_goes_on():
    frame = jacbench.sweep(model="cnn", d_in=[64, 8], d_out=[2], min_time=0.01)
    bad = frame[frame["widths"] == "8-2"]
    assert set(bad["status"]) == {"error"}
    assert bad["message"].str.contains("cnn takes a square image").all()
    assert set(frame[frame["widths"] == "64-2"]["status"]) == {"ok"}


def test_methods_of_the_mlp_alone_are_skipped_at_a_model_and_wrong_routines_are_caught():
    frame = jacbench.sweep(
        model="siren",
        d_in=[3],
        d_out=[2],
        methods=["forward", "autograd-reverse", f"{USER_MODELS}:transposed_jacobian"],
        min_time=0.01,
    )
    rows = frame.set_index("method")
    assert rows.loc["forward", "status"] == "skipped"
    assert "runs on jacbench's MLP only" in rows.loc["forward", "message"]
    assert rows.loc["autograd-reverse", "status"] == "ok"
    user = rows.loc[f"{USER_MODELS}:transposed_jacobian"]
    assert user["status"] == "wrong" and "transpose" in user["message"]


def test_a_model_without_a_float64_copy_is_timed_unchecked_with_the_cause():
    frame = jacbench.sweep(
        model=f"{USER_MODELS}:make_uncopyable", d_in=[3], d_out=[2], min_time=0.01
    )
    assert set(frame["status"]) == {"unchecked"}
    assert frame["message"].str.contains("the float64 reference failed").all()
    assert frame["message"].str.contains("lock").all()


def test_a_plain_function_factory_and_a_callable_from_python():
    frame = jacbench.sweep(
        model=[user_models.make_function, user_models.make_conv1d],
        d_in=[4],
        d_out=[3],
        min_time=0.01,
    )
    assert (frame["status"] == "ok").all(), frame[["model", "method", "message"]]
    assert set(frame["model"]) == {"make_function", "make_conv1d"}


def test_the_models_preset_covers_every_family_where_each_mode_should_win():
    points = get_preset("models").points()
    families = {p.model.name for p in points}
    assert families == set(ANY_SIZE)
    classic = {p.model.name for p in get_preset("classic").points()}
    assert classic == set(CLASSIC_PROBLEMS)
    assert any(p.d_in > p.d_out for p in points) and any(p.d_in < p.d_out for p in points)
    assert get_preset("models").installed_methods() == ["func-jacfwd", "func-jacrev", "auto"]
    with pytest.raises(ValueError, match="fixed list of models"):
        get_preset("models").points(overrides={"depths": [3]})


def test_run_model_from_the_command_line(tmp_path):
    out = tmp_path / "run"
    args = ["run", "--model", f"{USER_MODELS}:make_resnet", "--d-in", "8", "--d-out", "1"]
    args += ["--batch", "4", "--param", "width=16,32", "--min-time", "0.01", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out / "results.csv")
    assert set(frame["model"]) == {f"{USER_MODELS}:make_resnet(width={w})" for w in (16, 32)}
    assert (frame["status"] == "ok").all()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["settings"]["grid"]["model"] == [f"{USER_MODELS}:make_resnet"]
    assert meta["settings"]["grid"]["model_params"] == {"width": [16, 32]}
    bad = runner.invoke(app, ["run", "--model", "residual", "--d-in", "4", "--d-out", "1",
                              "--param", "width", "--out", str(tmp_path / "bad")])  # fmt: skip
    assert bad.exit_code == 2 and "NAME=V1,V2" in bad.output
    twice = runner.invoke(app, ["run", "--model", "residual", "--d-in", "4", "--d-out", "1",
                                "--param", "width=3", "--param", "width=4"])  # fmt: skip
    assert twice.exit_code == 2 and "given twice" in twice.output


def test_predict_a_model_recommends_reverse_mode_for_an_attention_block_with_one_output():
    result = runner.invoke(app, ["predict", "--model", "attention", "--d-in", "64", "--d-out", "1"])
    assert result.exit_code == 0, result.output
    assert "Recommended: reverse mode" in result.output
    assert "operations" in result.output and "matmul FLOP" in result.output
    bad = runner.invoke(app, ["predict", "--model", f"{USER_MODELS}:make_raising"])
    assert bad.exit_code == 2 and "no model today" in bad.output
    assert runner.invoke(app, ["predict", "--param", "width=3"]).exit_code == 2


def test_results_made_before_the_model_column_read_as_the_mlp(tmp_path):
    frame = jacbench.sweep(shapes=[((3, 4, 2), 1)], methods=["reverse"], min_time=0.01,
                           out=tmp_path / "run")  # fmt: skip
    run = tmp_path / "run"
    later = ["model", "mistake", "other_cores", "bound_note", "primal_s", "evals"]
    rows = pd.read_csv(run / "results.csv").drop(columns=later)
    rows.to_csv(run / "results.csv", index=False)
    samples = pd.read_csv(run / "samples.csv").drop(columns=["model"])
    samples.to_csv(run / "samples.csv", index=False)
    read = results.read_results(run)
    assert list(read["model"]) == ["mlp"] and len(frame) == 1
    assert set(results.read_samples(run)["model"]) == {"mlp"}
    assert runner.invoke(app, ["report", str(run)]).exit_code == 0


def test_the_pytest_fixture_takes_a_model():
    # The fixture's own code path, called as the fixture calls it (pytest-benchmark's
    # `benchmark` replaced by a recorder).
    from jacbench.faces import pytest_plugin

    class Recorder:
        group = None

        def __init__(self):
            self.extra_info = {}

        def __call__(self, fn):
            return fn()

    bench = Recorder()
    chosen = pytest_plugin._model("attention", {"seq": 4, "heads": 2}, (16, 1))
    result = pytest_plugin._benchmark_jacobian(
        bench, "auto", (16, 1), 1, "float32", "cpu", None, chosen
    )
    assert result.shape == (1, 16)
    assert bench.group == "attention(seq=4,heads=2) D=16 P=1 B=1 float32 cpu"
    assert bench.extra_info["model"] == "attention(seq=4,heads=2)"
    assert bench.extra_info["predicted_mode"] == "reverse"
    assert not math.isnan(bench.extra_info["max_rel_err"])
    with pytest.raises(ValueError, match=r"a model's widths are \(D, P\)"):
        pytest_plugin._model("attention", None, (16, 8, 1))


def test_second_order_of_a_model_by_torch_func_is_validated_against_its_hessian():
    frame = jacbench.sweep(
        model="siren", d_in=[3], d_out=[1], batch=[2], operator="hessian", min_time=0.01
    )
    assert set(frame["method"]) == {
        "func-hessian",
        "func-jacrev-jacrev",
        "func-jacfwd-jacfwd",
        "func-jacrev-jacfwd",
    }
    assert (frame["status"] == "ok").all() and (frame["max_rel_err"] < 1e-4).all()
    assert set(frame["operator"]) == {"hessian"}


@pytest.mark.slow  # over 5 s on two cores: run by .ci/run, not by plain pytest
def test_a_script_without_a_main_guard_sweeps_once(tmp_path):
    # spawn would run the script again in each worker; jacbench's workers skip __main__.
    (tmp_path / "factories.py").write_text(
        "import torch\n\ndef make(d_in, d_out):\n    return torch.nn.Linear(d_in, d_out)\n"
    )
    (tmp_path / "script.py").write_text(
        "import jacbench\nfrom factories import make\n"
        "rows = jacbench.sweep(model=make, d_in=[3], d_out=[2], min_time=0.01)\n"
        "print('swept', sorted(set(rows['status'])))\n"
    )
    done = subprocess.run(
        [sys.executable, "script.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("swept") == 1 and "swept ['ok']" in done.stdout


def test_a_lambda_factory_with_a_file_routine_runs_its_point_in_this_process():
    frame = jacbench.sweep(
        model=lambda d, p: torch.nn.Linear(d, p),
        d_in=[3],
        d_out=[2],
        methods=["func-jacrev", f"{USER_MODELS}:transposed_jacobian"],
        min_time=0.01,
    )
    assert list(frame["status"]) == ["ok", "wrong"]
    assert set(frame["model"]) == {"<lambda>"}


def test_the_calibration_cached_with_the_tuning_is_the_one_plans_use(monkeypatch):
    """Measured once per machine with the tuning (a quiet one), a plan reads it, whatever
    the process's own timing of a product would say."""
    from jacbench.ad import generic
    from jacbench.measure import tuning

    cached = {"forward_op_s": 2e-5, "reverse_op_s": 1e-5, "flop_rate": 1e11}
    monkeypatch.setattr(generic, "_CALIBRATIONS", {})
    with tuning.use(tuning.Tuning(calibration=cached)):
        found = generic.calibration(torch.float32, "cpu")
        assert (found.forward_op_s, found.reverse_op_s, found.flop_rate) == (2e-5, 1e-5, 1e11)
        assert found.measured == "with the tuning"
    assert (
        tuning.Tuning.from_dict(tuning.Tuning(calibration=cached).as_dict()).calibration == cached
    )


def test_modes_predicted_within_the_model_error_are_a_tie():
    from jacbench.ad import generic

    flops = {"forward": 10, "reverse": 20}
    operations = {"forward": 300, "reverse": 100}
    memory = {"forward": 1, "reverse": 1}
    close = generic._choice({"forward": 1.0, "reverse": 1.2}, flops, operations, memory, "")
    assert close[0] == "forward" and close[2] is True  # the fewer FLOPs, named a tie
    apart = generic._choice({"forward": 3.0, "reverse": 1.0}, flops, operations, memory, "")
    assert apart[0] == "reverse" and apart[2] is False


# ------------------------------------------------------------------- models of one sample
def _spec(name):
    return f"{USER_MODELS}:{name}"


@pytest.mark.parametrize(
    ("name", "takes"),
    [
        ("make_resnet", "takes one sample and a batch"),
        ("make_one_sample", "takes one sample; batched with torch.func.vmap"),
        ("make_mixes_samples", "takes one sample; batched with torch.func.vmap"),
        ("make_branches_on_a_value", "takes one sample; batched by a loop over the samples"),
        ("make_batchnorm", "takes batches only; one sample goes in as a batch of one"),
    ],
)
def test_the_model_check_says_whether_jacbench_batches_a_model_and_how(name, takes):
    found = models.check_model(models.resolve_model(_spec(name)), 6, 3)
    assert found.startswith(takes)


@pytest.mark.parametrize(
    "name", ["make_one_sample", "make_mixes_samples", "make_branches_on_a_value"]
)
def test_a_model_of_one_sample_maps_a_batch_sample_by_sample(name):
    """The batch's rows are each sample's own call: the user's function at one sample, with
    no batch dimension ever reaching it (the mixing one would centre over the batch)."""
    model = models.resolve_model(_spec(name))
    built = model.build(6, 3, dtype=torch.float64)
    torch.manual_seed(0)
    x = torch.randn(5, 6, dtype=torch.float64)
    assert isinstance(built, generic.SampleWise)
    expected = torch.stack([built.inner(sample) for sample in x])
    assert torch.allclose(built(x), expected, rtol=0, atol=1e-12)


def test_the_reference_of_code_vmap_cannot_run_is_autograd_s_at_each_sample():
    from jacbench.runs.operators import get_operator

    built = models.resolve_model(_spec("make_branches_on_a_value")).build(6, 3, dtype=torch.float64)
    x = torch.randn(4, 6, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="vmap"):
        torch.func.vmap(torch.func.jacrev(built.inner))(x)
    found = get_operator("jacobian").reference(built, x)
    expected = torch.stack([torch.autograd.functional.jacobian(built.inner, s) for s in x])
    assert found.shape == (4, 3, 6)
    assert torch.allclose(found, expected, rtol=1e-12, atol=1e-14)


def test_the_reference_of_a_model_of_batches_only_is_each_sample_s_as_a_batch_of_one():
    from jacbench.runs.operators import get_operator

    built = models.resolve_model(_spec("make_batchnorm")).build(6, 3, dtype=torch.float64)
    x = torch.randn(4, 6, dtype=torch.float64)
    with pytest.raises(ValueError, match="got 1D input"):
        built.inner(x[0])
    found = get_operator("jacobian").reference(built, x)
    expected = torch.stack(
        [torch.autograd.functional.jacobian(lambda s: built.inner(s[None])[0], s) for s in x]
    )
    assert torch.allclose(found, expected, rtol=1e-12, atol=1e-14)


def test_one_sample_models_run_validated_at_batch_1_and_8_by_every_model_method():
    """A function of one sample, one written for torch.autograd (a branch on a value) and
    one with BatchNorm (batches only), timed by every method that takes a model: checked
    against the float64 reference (where vmap cannot run the code, autograd's loops)."""
    frame = jacbench.sweep(
        model=[
            _spec("make_one_sample"),
            _spec("make_branches_on_a_value"),
            _spec("make_batchnorm"),
        ],
        d_in=[6],
        d_out=[3],
        batch=[1, 8],
        methods=["func-jacfwd", "func-jacrev", "auto", "autograd-forward", "autograd-reverse"],
        min_time=0.01,
    )
    assert len(frame) == 30
    assert set(frame["status"]) == {"ok"}, frame[["model", "method", "batch", "message"]]
    assert (frame["max_rel_err"] < 1e-5).all()


def test_predict_says_a_model_of_one_sample_is_batched_by_jacbench():
    args = ["predict", "--model", _spec("make_one_sample"), "--d-in", "8", "--d-out", "2"]
    done = CliRunner().invoke(app, [*args, "--batch", "4"])
    assert done.exit_code == 0, done.output
    assert "make_one_sample takes one sample; batched with torch.func.vmap." in done.output
    assert "Recommended: reverse mode" in done.output  # P = 2 < D = 8


def test_run_says_a_model_of_one_sample_is_batched_by_jacbench_and_not_a_batched_one(tmp_path):
    for name, said in (("make_one_sample", True), ("make_tanh_layer", False)):
        args = ["run", "--model", _spec(name), "--d-in", "4", "--d-out", "2", "--batch", "2"]
        args += ["--methods", "func-jacrev", "--min-time", "0.01", "--out", str(tmp_path / name)]
        done = CliRunner().invoke(app, args)
        assert done.exit_code == 0, done.output
        line = f"{_spec(name)} takes one sample; batched with torch.func.vmap."
        assert (line in done.output) is said
        assert ("takes one sample and a batch" in done.output) is False
        meta = json.loads((tmp_path / name / "meta.json").read_text())
        assert meta["models"] == {_spec(name): models.TAKES["vmap" if said else "batch"]}


def test_code_torch_func_cannot_transform_is_timed_with_autograd_s_loops():
    """A scale read through NumPy: torch.func's rows are skipped, naming the line; autograd's
    loops of VJPs (auto's choice too) and of JVPs are timed, checked against a float64
    reference of autograd's."""
    spec = _spec("make_through_numpy")
    takes = models.check_model(models.resolve_model(spec), 6, 3)
    assert "torch.func cannot transform its code" in takes and "user_models.py:" in takes
    frame = jacbench.sweep(
        model=[spec],
        d_in=[6],
        d_out=[3],
        batch=[1, 4],
        methods=["func-jacfwd", "func-jacrev", "auto", "autograd-forward", "autograd-reverse"],
        min_time=0.01,
    )
    func = frame["method"].str.startswith("func-")
    assert set(frame[func]["status"]) == {"skipped"}
    assert frame[func]["message"].str.contains(r"at user_models\.py:\d+\)$").all()
    assert set(frame[~func]["status"]) == {"ok"}
    assert (frame[~func]["max_rel_err"] < 1e-5).all()


def test_the_reference_of_code_through_numpy_is_its_exact_jacobian():
    """sin(W x) with sin in NumPy (its derivative given to autograd): diag(cos(W x)) W."""
    from jacbench.runs.methods import jvp_loop
    from jacbench.runs.operators import get_operator

    built = models.resolve_model(_spec("make_through_numpy")).build(5, 3, dtype=torch.float64)
    x = torch.randn(2, 5, dtype=torch.float64)
    assert built.refused
    (w,) = [c.cell_contents for c in built.inner.__closure__ if torch.is_tensor(c.cell_contents)]
    w = w.double()
    expected = torch.stack([torch.cos(w @ sample)[:, None] * w for sample in x])
    found = get_operator("jacobian").reference(built, x)
    assert torch.allclose(found, expected, rtol=1e-12, atol=1e-14)
    assert torch.allclose(jvp_loop(built, x[0]), expected[0], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("batch", [1, 3])
def test_code_that_hides_its_derivative_from_ad_leaves_its_rows_unchecked(batch):
    """A scale read through NumPy: every AD differentiates it as a constant, AD's Jacobian
    is not the function's, and no row may be called right by a reference blind to it."""
    frame = jacbench.sweep(
        model=[_spec("make_hides_a_derivative")], d_in=[5], d_out=[3], batch=[batch],
        methods=["func-jacrev", "auto", "autograd-reverse"], min_time=0.01,
    )  # fmt: skip
    timed = frame[frame["status"] != "skipped"]
    assert len(timed) == 2 and set(timed["status"]) == {"unchecked"}
    assert timed["message"].str.contains("disagrees with central differences").all()


def test_predict_says_in_one_line_why_it_cannot_count_code_torch_func_cannot_transform():
    args = ["predict", "--model", _spec("make_through_numpy"), "--d-in", "8", "--d-out", "2"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code != 0
    assert "torch.func cannot transform its code" in done.output
    assert "Traceback" not in done.output


def test_a_function_written_for_torch_autograd_runs_validated_with_the_right_mode():
    """examples/autograd_code.py: one sample, float64, writes into its own tensors, branches
    on a value. Batched by a loop, every row checked, and the plan takes reverse mode (8
    parameters, outputs along one long chain of steps)."""
    spec = f"{Path(__file__).parent.parent / 'examples' / 'autograd_code.py'}:make_forced_pendulum"
    model = models.resolve_model(spec).with_params({"steps": 40})
    assert models.check_model(model, 8, 10).startswith("takes one sample; batched by a loop")
    plan, _ = models.model_plan(model, 8, 10, dtype=torch.float64)
    frame = jacbench.sweep(
        model=[spec], params={"steps": [40]}, d_in=[8], d_out=[10], batch=[1, 4],
        dtype=["float64"], methods=["func-jacfwd", "func-jacrev", "auto"], min_time=0.05,
    )  # fmt: skip
    assert set(frame["status"]) == {"ok"} and (frame["max_rel_err"] < 1e-10).all()
    assert plan.mode == "reverse"  # measured 7.8× faster than forward: jacbench run's figure


@pytest.mark.slow
def test_auto_compiled_times_a_model_s_compiled_jacobian_checked_or_skips_code_vmap_cannot_run():
    frame = jacbench.sweep(
        model=["residual", _spec("make_branches_on_a_value")], d_in=[4], d_out=[3],
        batch=[2], methods=["auto-compiled"], min_time=0.01,
    )  # fmt: skip
    compiled = frame.set_index("model").loc["residual"]
    assert compiled["status"] == "ok" and compiled["max_rel_err"] < 1e-5
    assert compiled["compile_s"] > 0  # reported apart from the timed calls
    branch = frame[frame["model"].str.endswith("make_branches_on_a_value")].iloc[0]
    assert branch["status"] == "skipped" and "vmap" in branch["message"]


def test_compiled_jacobian_of_a_module_is_torch_func_s_jacobian():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    model.requires_grad_(False)  # as jacbench fixes a model's weights
    x = torch.randn(2, 5)
    expected = torch.func.vmap(torch.func.jacrev(model))(x)
    for mode in ("forward", "reverse"):
        found = jacbench.compiled_jacobian(model, x, mode)(x)
        assert torch.allclose(found, expected, rtol=1e-5, atol=1e-6)


def test_the_plan_counts_the_bytes_a_mode_makes():
    """Hand tracking with 500 points: reverse mode's vmapped VJP carries 1500 cotangents
    through every elementwise step, and the predicted time counts the bytes it makes."""
    from jacbench.ad import classic

    f = classic.make_hand(26, 1500)
    plan = generic.plan_of(f, torch.zeros(26))
    assert plan.memory_bytes["reverse"] > 20 * plan.memory_bytes["forward"]
    c = plan.calibration
    for mode in ("forward", "reverse"):
        expected = (
            plan.operations[mode] * c.op_seconds(mode)
            + plan.flops[mode] / c.flop_rate
            + plan.memory_bytes[mode] / c.byte_rate
        )
        assert plan.seconds[mode] == pytest.approx(expected)
    assert 1e8 < c.byte_rate < 1e13  # measured: bytes per second, not left at infinity


# ------------------------------------------------------------------- the classic problems
@pytest.mark.parametrize(
    ("name", "d_in", "d_out", "params"),
    [
        ("hand", 26, 30, {}),
        ("ba", 15, 2, {}),
        ("gmm", 30, 1, {"points": 50}),
        ("gmm", 3 * 10, 1, {"dims": 3, "points": 20}),
        ("ode", 5, 5, {"steps": 5}),
    ],
)
def test_each_classic_problem_s_jacobian_matches_central_differences(name, d_in, d_out, params):
    """torch.func's Jacobian of each problem against float64 central differences: the
    problems are smooth where their seeded inputs put them."""
    f = BUILTIN_MODELS[name](d_in, d_out, **params)
    x = 0.3 * torch.randn(d_in, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    found = torch.func.jacrev(f)(x)
    assert found.shape == (d_out, d_in)
    step = 1e-6
    columns = [(f(x + step * e) - f(x - step * e)) / (2 * step) for e in torch.eye(d_in).double()]
    expected = torch.stack(columns, dim=-1)
    assert torch.allclose(found, expected, rtol=1e-6, atol=1e-6 * expected.abs().max())


@pytest.mark.parametrize(
    ("name", "d_in", "d_out", "says"),
    [
        ("hand", 25, 30, "d_in = 26"),
        ("hand", 26, 31, "3·points"),
        ("ba", 15, 3, "d_out = 2"),
        ("gmm", 31, 1, "k·6"),
        ("ode", 4, 5, "d_in = d_out"),
    ],
)
def test_a_classic_problem_at_a_size_it_does_not_have_is_refused_in_one_line(
    name, d_in, d_out, says
):
    with pytest.raises(ModelError, match=says):
        models.check_model(models.resolve_model(name), d_in, d_out)


@pytest.mark.slow
def test_the_classic_preset_runs_every_problem_validated():
    frame = jacbench.sweep(preset="classic", min_time=0.01)
    assert set(frame["model"].str.split("(").str[0]) == {"hand", "ba", "gmm", "ode"}
    assert set(frame["status"]) == {"ok"}, frame[["model", "method", "message"]]
    assert (frame["max_rel_err"] < 1e-4).all()


def test_a_model_that_batches_itself_over_code_vmap_cannot_run_is_looped():
    spec = _spec("make_batches_itself_by_a_loop")
    assert models.check_model(models.resolve_model(spec), 6, 3).startswith(
        "takes one sample; batched by a loop"
    )
    frame = jacbench.sweep(
        model=[spec], d_in=[6], d_out=[3], batch=[4], methods=["func-jacrev", "auto"],
        min_time=0.01,
    )  # fmt: skip
    assert set(frame["status"]) == {"ok"}


def test_a_model_nothing_can_differentiate_is_refused_naming_its_line():
    with pytest.raises(ModelError) as refused:
        models.check_model(models.resolve_model(_spec("make_numpy_on_the_input")), 6, 3)
    text = str(refused.value)
    assert "neither torch.func nor torch.autograd can differentiate this model" in text
    line = next(
        i for i, source in enumerate(USER_MODELS.read_text().splitlines(), 1)
        if "the line the refusal names" in source
    )  # fmt: skip
    assert text.endswith(f"at user_models.py:{line})")


def test_a_model_right_for_its_first_calls_only_is_caught_when_timed():
    """jacbench's methods at a model's point are timed in blocks whose picked calls are
    judged against the reference made before any timed call."""
    frame = jacbench.sweep(
        model=[_spec("make_honest_at_first")], d_in=[6], d_out=[4], batch=[2],
        methods=["func-jacrev"], min_time=0.05,
    )  # fmt: skip
    assert list(frame["status"]) == ["wrong"]
    assert frame["message"].iloc[0].startswith("the model's Jacobian was different when timed")
    assert frame["mistake"].iloc[0] == "wrong when timed"


def test_a_model_that_replaces_the_timing_code_beside_it_is_timed_by_jacbench_s_clock():
    """The model's sandbox divides every time it measures by 100; the timings come from
    the parent's clock, so the model's rows are as slow as the same model's honest twin."""
    frame, honest = (
        jacbench.sweep(
            model=[_spec(name)],
            d_in=[6],
            d_out=[4],
            batch=[2],
            methods=["func-jacrev"],
            min_time=0.05,
        )  # fmt: skip
        for name in ("make_slows_the_clock", "make_tanh_layer")
    )
    assert list(frame["status"]) == ["ok"] and list(honest["status"]) == ["ok"]
    assert frame["median_s"].iloc[0] > 0.2 * honest["median_s"].iloc[0]


@pytest.mark.parametrize("batch", [1, 4])
def test_jax_on_a_model_runs_its_to_jax_twin_validated_and_skips_a_model_without_one(batch):
    pytest.importorskip("jax")
    methods = ["func-jacrev", "jax-jacfwd", "jax-jacrev"]
    kwargs = dict(d_in=[5], d_out=[3], batch=[batch], methods=methods, min_time=0.01)
    twin = jacbench.sweep(model=[_spec("make_tanh_layer_with_twin")], **kwargs)
    assert list(twin["status"]) == ["ok", "ok", "ok"]
    assert (twin["max_rel_err"] < 1e-5).all()
    wrong = jacbench.sweep(model=[_spec("make_wrong_twin")], **kwargs)
    assert list(wrong["status"]) == ["ok", "error", "error"]
    assert wrong["message"].str.contains("computes another function: at an input drawn").iloc[1]
    none = jacbench.sweep(model=[_spec("make_tanh_layer")], **kwargs)
    assert list(none["status"]) == ["ok", "skipped", "skipped"]
    assert none["message"].iloc[1].startswith("the model has no JAX twin")


@pytest.mark.parametrize(
    "name, d_in, d_out",
    [("residual", 6, 4), ("siren", 3, 2), ("fourier", 3, 2), ("cnn", 36, 10),
     ("attention", 32, 3), ("ode", 5, 5)],
)  # fmt: skip
def test_each_built_in_model_s_jax_twin_has_the_model_s_jacobian(name, d_in, d_out):
    """The twin's JAX Jacobian in float64 against torch.func's of the module itself."""
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    model = BUILTIN_MODELS[name](d_in, d_out)
    model = model.to(torch.float64) if isinstance(model, torch.nn.Module) else model
    x = torch.randn(d_in, dtype=torch.float64)
    expected = torch.func.jacrev(model)(x).detach()
    found = jax.jacrev(model.to_jax())(jax.numpy.asarray(x.numpy()))
    assert torch.allclose(torch.from_numpy(np.asarray(found)), expected, rtol=1e-10, atol=1e-12)


def test_a_model_that_answers_otherwise_without_grad_leaves_its_rows_unchecked():
    """Central differences run in grad mode, as the methods do: a model linear under
    torch.no_grad alone cannot pass its hidden derivative off as its own."""
    frame = jacbench.sweep(
        model=[_spec("make_answers_otherwise_without_grad")], d_in=[6], d_out=[4], batch=[2],
        methods=["func-jacrev", "auto"], min_time=0.01,
    )  # fmt: skip
    assert list(frame["status"]) == ["unchecked", "unchecked"]
    assert frame["message"].str.contains("disagrees with central differences").all()


def test_a_jax_twin_fitted_to_the_point_s_input_alone_is_caught_at_inputs_drawn_afresh():
    pytest.importorskip("jax")
    frame = jacbench.sweep(
        model=[_spec("make_fitted_twin")], d_in=[6], d_out=[4], batch=[2],
        methods=["func-jacrev", "jax-jacrev"], min_time=0.01,
    )  # fmt: skip
    assert list(frame["status"]) == ["ok", "error"]
    assert "computes another function" in frame["message"].iloc[1]


def test_predict_decides_the_mode_from_the_counts_a_model_s_sandbox_sends_back():
    """A model that rewrites the plan in its sandbox cannot make predict recommend the mode
    its own counts say is slower (D = 64 inputs, P = 1 output: reverse mode)."""
    spec = f"{Path(__file__).with_name('hostile_models.py')}:make_flips_its_plan"
    args = ["predict", "--model", spec, "--d-in", "64", "--d-out", "1"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert "Recommended: reverse mode" in done.output
