"""The command line through typer's CliRunner: exit codes, output, files, error lines."""

import json
import re
import types
from pathlib import Path

import pandas as pd
import pytest
import torch
import typer
from typer.testing import CliRunner

from jacbench.faces.cli import app, main
from jacbench.faces.cli.common import NamesOf, OneOf, join_list_options, numbers
from jacbench.faces.text import format_percent
from jacbench.measure.machine import install_hint
from jacbench.measure.rows import COLUMNS

runner = CliRunner()

TINY = ["--d-in", "3", "9", "--width", "8", "--d-out", "2", "--min-time", "0.01", "--no-peak"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_join_list_options():
    assert join_list_options(["run", "--device", "cuda", "--depths", "3", "5", "10"]) == [
        "run",
        "--device",
        "cuda",
        "--depths",
        "3,5,10",
    ]
    assert join_list_options(["--depths", "3,5", "--quiet"]) == ["--depths", "3,5", "--quiet"]


def test_list_values_are_read_by_their_parsers():
    assert numbers("3,5,10") == (3, 5, 10) == numbers("3 5 10")
    assert numbers((1, 3)) == (1, 3)  # a default, read already
    assert NamesOf()("forward,mine.py:fn") == ("forward", "mine.py:fn")
    assert NamesOf(("float32", "float64"))("float64") == ("float64",)
    assert OneOf(("first", "last"))("last") == "last"
    assert OneOf(("first", "last")).metavar == "<first|last>"
    for parse, text, message in [
        (numbers, "3,x", "takes whole numbers, got 'x'"),
        (numbers, "3,0", "must be ≥ 1, got 0"),
        (numbers, ",", "needs at least one value"),
        (NamesOf(("float32", "float64")), "float8", "takes float32 or float64, got 'float8'"),
        (OneOf(("first", "last")), "middle", "takes first or last, got 'middle'"),
    ]:
        with pytest.raises(typer.BadParameter) as bad:
            parse(text)
        assert bad.value.format_message() == message


def test_help_lists_commands():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("run", "predict", "validate", "report", "compare", "info"):
        assert command in result.output


# ------------------------------------------------------------------------- predict
def test_predict_seed_shape_recommends_reverse():
    result = invoke("predict", "--depth", 5, "--d-in", 1000, "--width", 1000, "--d-out", 1)
    assert result.exit_code == 0, result.output
    assert "widths 1000-1000-1000-1000-1000-1000-1" in result.output
    assert "Recommended: reverse mode (fewest FLOPs)" in result.output
    # forward needs 4·2·K²·D + 2·K·D more than... the ratio the model derives: 8.01e9 / 2.0e7
    assert "forward mode needs 401× that" in result.output


def test_predict_explicit_widths_hourglass():
    result = invoke("predict", "--widths", 64, 64, 4, 64, 64, "--batch", 8)
    assert result.exit_code == 0, result.output
    assert "Recommended: mixed mode (its bracketing saves 82% of reverse mode's FLOPs)" in (
        result.output
    )
    assert "((WF·W3)·(W2·W1))" in result.output


def test_predict_says_which_rule_decided():
    tiny = invoke("predict", "--depth", 8, "--d-in", 4, "--width", 24, "--d-out", 6)
    assert "Recommended: reverse mode (launch-bound:" in tiny.output
    assert "forward mode needs 0.721× that" in tiny.output  # fewer FLOPs, yet not picked
    tie = invoke("predict", "--depth", 5, "--d-in", 16, "--width", 512, "--d-out", 16)
    assert "Recommended: forward mode (a tie in FLOPs: forward mode by the rule for one" in (
        tie.output
    )


def test_predict_bad_widths_is_one_line():
    result = invoke("predict", "--widths", 3, 0, 1)
    assert result.exit_code == 2
    assert "--widths must be ≥ 1, got 0" in result.output
    assert "Traceback" not in result.output


# ------------------------------------------------------------------------ validate
def test_validate_small_grid_passes():
    args = "--depths 1 4 --d-in 3 --width 5 --d-out 2 --batch 1 2 --activations tanh relu"
    result = invoke("validate", *args.split())
    assert result.exit_code == 0, result.output
    assert "all within tolerance" in result.output
    assert "forward chunk_size=1" in result.output
    assert "8 networks × 8 routines" in result.output


def test_validate_fails_with_impossible_tolerance():
    args = "--depths 3 --d-in 6 --width 6 --d-out 3 --batch 1 --activations tanh --dtype float32"
    result = invoke("validate", *args.split(), "--tolerance", 1e-12)
    assert result.exit_code == 1
    assert "FAIL" in result.output
    assert "checks failed" in result.output


def test_validate_unknown_activation():
    result = invoke("validate", "--activations", "gelu")
    assert result.exit_code == 2
    assert "--activations takes all, tanh, sigmoid, relu, softplus or identity, got 'gelu'" in (
        result.output
    )


# ----------------------------------------------------------------------------- run
def test_run_writes_every_file(tmp_path):
    out = tmp_path / "run"
    result = invoke(
        "run",
        "--depths",
        1,
        2,
        *TINY,
        "--methods",
        "forward",
        "reverse",
        "func-jacrev",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out / "results.csv")
    assert len(frame) == 2 * 2 * 3
    assert set(frame["status"]) == {"ok"}
    assert (frame["max_rel_err"] < 1e-4).all()
    assert (frame["median_s"] > 0).all()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["command"].startswith("jacbench run --depths 1 2")
    assert meta["finished"] is not None
    assert meta["environment"]["torch"] == torch.__version__
    assert meta["settings"]["methods"] == ["forward", "reverse", "func-jacrev"]
    summary = (out / "summary.md").read_text()
    assert "| L=1 D=3 K=8 P=2 B=1 float32 cpu |" in summary
    assert (out / "time_vs_depth.png").stat().st_size > 1000
    assert (out / "fwd_rev_ratio.png").exists() is False  # needs ≥ 2 values of both D and P


def test_run_accepts_comma_lists(tmp_path):
    result = invoke(
        "run",
        "--depths",
        "1,2",
        "--d-in",
        "3",
        "--width",
        "4",
        "--d-out",
        "2",
        "--methods",
        "reverse",
        "--min-time",
        "0.01",
        "--out",
        tmp_path / "r",
        "--quiet",
        "--no-peak",
    )
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(tmp_path / "r" / "results.csv")) == 2


def test_run_refuses_existing_run_and_resumes(tmp_path):
    args = [
        "run",
        "--depths",
        1,
        "--d-in",
        3,
        "--width",
        4,
        "--d-out",
        2,
        "--methods",
        "reverse",
        "--min-time",
        0.01,
        "--out",
        tmp_path / "r",
        "--quiet",
        "--no-peak",
    ]
    assert invoke(*args).exit_code == 0
    again = invoke(*args)
    assert again.exit_code == 2
    assert "already holds this run; pass --resume" in again.output
    other = invoke(*[a if a != 3 else 5 for a in args])
    assert other.exit_code == 2
    assert "holds a run with other settings (grid.d_in: 3 → 5)" in other.output
    extended = invoke(*args, "--resume", "--depths", 1, 2)  # a resume is that run, no other
    assert extended.exit_code == 2 and "--depths 1 2 (the run's: 1)" in extended.output
    resumed = invoke(*args, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert sorted(pd.read_csv(tmp_path / "r" / "results.csv")["depth"]) == [1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "cuda:7"], "cuda:7: " + ("only" if torch.cuda.is_available() else "CUDA")),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--depths", "0"], "--depths must be ≥ 1, got 0"),
        (["--d-in", "x"], "--d-in takes whole numbers, got 'x'"),
        (["--methods", "magic"], "unknown method 'magic'"),
        (["--dtype", "float8"], "--dtype takes float64, float32 or bfloat16, got 'float8'"),
        (["--preset", "huge"], "--preset takes quick, seed, "),
        (["--init", "he"], "--init takes lecun, xavier or normal, got 'he'"),
        (["--operator", "jerk"], "--operator takes jacobian, hessian, laplacian or hvp"),
        (["--param", "x"], "--param takes NAME=V1,V2"),
        (["--min-time", "0"], "min_time and max_call_time must be > 0"),
        (["--min-time", "inf"], "min_time and max_call_time must be > 0 and finite"),
        (["--depths", "1000000000"], "depths go up to 256 layers, got 1000000000"),
        (["--seed", str(10**23)], "seed must fit in 64 bits"),
        (["--rounds", "0"], "'--rounds'"),
        (["--resume"], "nothing to resume"),
    ],
)
def test_run_bad_input_is_one_line_exit_2(tmp_path, args, message):
    result = invoke("run", *args, "--out", tmp_path / "r")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "Error" in result.output and message in result.output
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["predict", "--depth", "1000000000"], "depths go up to 256 layers"),
        (["predict", "--widths", *["4"] * 300], "depths go up to 256 layers, got 298"),
        (["validate", "--depths", "1000000000"], "depths go up to 256 layers"),
        (["validate", "--tolerance", "nan"], "--tolerance must be > 0 and finite, got nan"),
        (["validate", "--tolerance", "-1"], "--tolerance must be > 0 and finite, got -1.0"),
    ],
)
def test_absurd_sizes_and_tolerances_are_one_line_exit_2(args, message):
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and message in result.output


@pytest.mark.slow  # over 5 s on two cores: run by .ci/run, not by plain pytest
def test_run_compile_adds_the_compiled_method(tmp_path):
    out = tmp_path / "r"
    args = ["run", "--depths", 2, "--d-in", 8, "--width", 16, "--d-out", 2, "--min-time", 0.01]
    result = invoke(
        *args, "--methods", "reverse", "--compile", "--out", out, "--quiet", "--no-peak"
    )
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out / "results.csv")
    assert list(frame["method"]) == ["reverse", "auto-compiled"]
    compiled = frame.iloc[1]
    assert compiled["status"] == "ok" and compiled["compile_s"] > 0
    assert compiled["max_rel_err"] < 1e-5


@pytest.mark.parametrize("option", ["--cuda-graphs", "--fused"])
def test_run_cuda_only_methods_need_cuda_device(tmp_path, option):
    result = invoke("run", option, "--out", tmp_path / "r")
    assert result.exit_code == 2
    assert f"{option} needs --device cuda" in result.output


def test_peers_preset_takes_no_grid_options(tmp_path):
    result = invoke("run", "--preset", "peers", "--depths", 3, "--out", tmp_path / "r")
    assert result.exit_code == 2
    assert "preset peers is a fixed list of shapes" in result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_run_cuda_unavailable_message(tmp_path):
    result = invoke("run", "--device", "cuda", "--depths", 3, 5, 10, "--out", tmp_path / "r")
    assert result.exit_code == 2
    assert "--device cuda: CUDA is not available" in result.output


def test_run_out_not_writable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = invoke("run", "--out", blocker / "run", "--depths", 1)
    assert result.exit_code == 2
    assert "cannot write to" in result.output


def test_run_measures_peaks_and_efficiency(tmp_path):
    out = tmp_path / "r"
    args = ["run", "--depths", 2, "--d-in", 64, "--width", 64, "--d-out", 1, "--min-time", 0.01]
    result = invoke(*args, "--methods", "reverse", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "meta.json").read_text())
    peaks = meta["peaks"]["float32"]
    assert peaks["flops_per_s"] > 1e8 and peaks["bytes_per_s"] > 1e8
    assert peaks["activation"] == "tanh" and peaks["activation_per_s"] > 1e6
    assert peaks["launch_s"] > 0 and peaks["scaling_per_s"] > 1e6
    row = pd.read_csv(out / "results.csv").iloc[0]
    # Reverse mode at P = 1: 2·64 tanh evaluations, then 1·(64 + 64) scalings by 1 − t²;
    # the 33 kB of weights from the cache where this system says how large it is.
    activations = 128 / peaks["activation_per_s"] + 128 / peaks["scaling_per_s"]
    if not peaks["cache_bytes"]:
        pytest.skip("this system does not say how large its caches are")
    weights = 4 * (64 * 64 * 2 + 64) / peaks["cache_bytes_per_s"]
    expected_bound = max(row["flops"] / peaks["flops_per_s"], weights, activations)
    assert row["bound_s"] == pytest.approx(expected_bound)
    assert row["efficiency"] == pytest.approx(row["bound_s"] / row["median_s"])
    summary = (out / "summary.md").read_text()
    assert "| efficiency |" in summary
    assert f"| {format_percent(row['efficiency'])} |" in summary


# ---------------------------------------------------------------- report, compare, info
def test_report_rerenders(tmp_path):
    out = tmp_path / "r"
    assert (
        invoke(
            "run", "--depths", 1, *TINY, "--methods", "forward", "reverse", "--out", out, "--quiet"
        ).exit_code
        == 0
    )
    (out / "summary.md").unlink()
    result = invoke("report", out)
    assert result.exit_code == 0, result.output
    assert (out / "summary.md").exists()


def _tiny_run(out):
    args = ["run", "--depths", 1, *TINY, "--methods", "forward", "reverse", "--quiet"]
    assert invoke(*args, "--out", out).exit_code == 0
    return [*args, "--out", out]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda text: text + "garbage line\n", "line 6"),
        (lambda text: "", None),
        (lambda text: "a,b\n" + text, "its columns differ"),
        (lambda text: text.replace(",ok,", ",great,", 1), "unknown status 'great'"),
    ],
)
def test_resume_on_a_damaged_results_csv_is_one_line_and_leaves_it(tmp_path, damage, message):
    out = tmp_path / "r"
    args = _tiny_run(out)
    csv_path = out / "results.csv"
    csv_path.write_text(damage(csv_path.read_text()))
    before = csv_path.read_bytes()
    result = invoke(*args, "--resume")
    if message is None:  # an empty file is a run killed before its first row: resumed
        assert result.exit_code == 0, result.output
        assert len(pd.read_csv(csv_path)) == 4
        return
    assert result.exit_code == 2, result.output
    assert f"Error: cannot resume: {csv_path}" in result.output and message in result.output
    assert "Traceback" not in result.output
    assert csv_path.read_bytes() == before


def test_resume_on_a_corrupt_meta_json_is_refused(tmp_path):
    out = tmp_path / "r"
    args = _tiny_run(out)
    (out / "meta.json").write_text("{")
    result = invoke(*args, "--resume")
    assert result.exit_code == 2
    assert f"{out / 'meta.json'} is not valid JSON (line 1)" in result.output
    assert (out / "meta.json").read_text() == "{"


def test_compare_and_report_name_the_file_they_cannot_read(tmp_path):
    good, bad = tmp_path / "good", tmp_path / "bad"
    _tiny_run(good)
    bad.mkdir()
    text = (good / "results.csv").read_text()
    (bad / "results.csv").write_text(text + "1,2,3\n")
    for args in (["compare", good, bad], ["report", bad]):
        result = invoke(*args)
        assert result.exit_code == 2
        damaged = f"{bad / 'results.csv'} is damaged: line 6 has 3 fields, expected {len(COLUMNS)}"
        assert damaged in result.output
    lines = text.splitlines()
    cells = lines[1].split(",")
    cells[12] = "nan"  # median_s of an ok row
    (bad / "results.csv").write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n")
    result = invoke("compare", good, bad)
    assert result.exit_code == 2
    assert "line 2: a timed row without a positive median_s" in result.output


def test_report_missing_run(tmp_path):
    result = invoke("report", tmp_path / "nothing")
    assert result.exit_code == 2
    assert "no results.csv" in result.output


def test_info():
    result = invoke("info")
    assert result.exit_code == 0
    assert torch.__version__ in result.output
    assert "func-jacrev" in result.output


def test_info_says_whether_the_cpp_kernels_run(monkeypatch):
    from jacbench.kernels import native

    shown = re.sub(r"[\s│]+", " ", invoke("info").output)
    assert f"C++ kernels {'built' if native.available() else native.why_not()}" in shown
    monkeypatch.setattr(native, "_library", lambda: "no C++ compiler (set CXX, or install g++)")
    shown = re.sub(r"[\s│]+", " ", invoke("info").output)
    assert "C++ kernels no C++ compiler (set CXX, or install g++)" in shown


def test_info_names_the_jax_extra_when_jax_is_missing(monkeypatch):
    from jacbench.runs import methods

    jax = methods.METHODS["jax-jacrev"]
    missing = jax.__class__(**{**jax.__dict__, "available": lambda: False})
    monkeypatch.setitem(methods.METHODS, "jax-jacrev", missing)
    result = invoke("info")
    # One row per thing to install, the command as jacbench is installed (here: from this
    # checkout). A narrow terminal wraps the row: read it with the borders out.
    hint = install_hint("jax")
    assert hint == f"pip install -e '{Path(__file__).resolve().parents[1]}[jax]'"
    shown = re.sub(r"[\s│]+", " ", result.output)
    assert f"missing {hint}: " in shown
    assert "jax-jacrev" in shown.split(f"{hint}: ")[1].split(" missing ")[0]


def test_version():
    from importlib.metadata import version

    result = invoke("--version")
    assert result.exit_code == 0
    assert result.output.strip() == f"jacbench {version('jacbench')}"


def test_run_help_shows_defaults_intact():
    result = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0
    assert max(len(line) for line in result.output.splitlines()) <= 80
    words = "".join(result.output.split())  # click wraps a default across lines
    for shown in (
        "[default: (the preset's, else all installed)]",
        "[default: (jacbench-results/<date>-<device>)]",
        "[default: (torch's);",
        "[default: (0.2, quick: 0.1)]",
    ):
        assert "".join(shown.split()) in words
    assert " ." not in result.output


@pytest.mark.parametrize(
    "command",
    [[], ["run"], ["predict"], ["check"], ["grade"], ["compare"], ["report"], ["info"], ["tune"]]
    + [["merge"], ["submit"], ["validate"]],
)
def test_help_is_whole_at_80_columns(command):
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0
    assert max(len(line) for line in result.output.splitlines()) <= 80
    lines = result.output.splitlines()
    cut = [line for line in lines[1:] if line.rstrip().endswith(("…", "..."))]  # not Usage:
    assert cut == []


def test_info_peak():
    result = invoke("info", "--peak")
    assert result.exit_code == 0, result.output
    assert re.search(r"GFLOP/s \(n=(2048|1024)\)", result.output) and "GB/s" in result.output


def test_unavailable_method_names_its_extra(tmp_path, monkeypatch):
    from jacbench.runs import methods

    monkeypatch.setitem(
        methods.METHODS,
        "jax-jacrev",
        methods.METHODS["jax-jacrev"].__class__(
            **{**methods.METHODS["jax-jacrev"].__dict__, "available": lambda: False}
        ),
    )
    result = invoke("run", "--methods", "jax-jacrev", "--out", tmp_path / "r")
    assert result.exit_code == 2
    assert f"method jax-jacrev is not available here: {install_hint('jax')}" in " ".join(
        result.output.split()
    )


# --------------------------------------------------------------------- user routines
ROUTINES = str(Path(__file__).with_name("user_routines.py"))
EXAMPLE = str(Path(__file__).resolve().parents[1] / "examples" / "textbook.py")


def test_check_passes_a_correct_routine_and_times_it():
    result = invoke("check", f"{EXAMPLE}:my_backward_2a", "--quick", "--min-time", 0.01)
    assert result.exit_code == 0, result.output
    assert "11 of 11 cases pass" in result.output
    assert "func-jacrev" in result.output  # the timing table names the rivals
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("forgets_layer_2", "σ' left out at layer 2"),
        ("transposed", "transpose"),
    ],
)
def test_check_fails_a_wrong_routine_with_its_reason(name, reason):
    result = invoke("check", f"{ROUTINES}:{name}", "--no-time")
    assert result.exit_code == 1, result.output
    assert reason in result.output
    assert "Traceback" not in result.output


def test_check_unloadable_routine_is_one_line_exit_2(tmp_path):
    result = invoke("check", f"{tmp_path}/missing.py:fn")
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0, result.output
    assert f"no such file {tmp_path}/missing.py" in result.output


def test_run_times_a_user_routine_beside_the_built_ins(tmp_path):
    out = tmp_path / "run"
    spec = f"{EXAMPLE}:my_forward_2b"
    result = invoke(
        "run", "--depths", 1, 3, *TINY, "--methods", "reverse", spec, "--out", out, "--quiet"
    )
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out / "results.csv")
    user = frame[frame["method"] == spec]
    assert len(user) == 4
    assert set(user["family"]) == {"user"}
    assert set(user["source"]) == {spec}
    assert set(user["status"]) == {"ok"}
    assert (user["max_rel_err"] < 1e-4).all()
    assert spec in json.loads((out / "meta.json").read_text())["routines"]
    assert spec in (out / "summary.md").read_text()


def test_run_records_wrong_and_raising_routines_and_goes_on(tmp_path):
    out = tmp_path / "run"
    methods = ["reverse", f"{ROUTINES}:wrong_when_deep", f"{ROUTINES}:raises"]
    result = invoke("run", "--depths", 1, 3, *TINY, "--methods", *methods, "--out", out)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    frame = pd.read_csv(out / "results.csv").set_index(["widths", "method"])
    wrong = frame.xs(methods[1], level="method")
    assert list(wrong.loc[["3-8-2", "3-8-8-8-2", "9-8-2", "9-8-8-8-2"], "status"]) == [
        "ok",
        "wrong",
        "ok",
        "wrong",
    ]
    assert wrong[wrong["status"] == "wrong"]["median_s"].isna().all()
    assert (wrong[wrong["status"] == "ok"]["median_s"] > 0).all()
    raising = frame.xs(methods[2], level="method")
    assert set(raising["status"]) == {"error"}
    assert raising["message"].str.contains("RuntimeError: not written yet").all()
    assert set(frame.xs("reverse", level="method")["status"]) == {"ok"}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nowhere.py:fn", "nowhere.py:fn: no such file"),
        (f"{ROUTINES}:absent", "has no function 'absent'"),
    ],
)
def test_run_with_an_unloadable_routine_stops_before_timing(tmp_path, spec, message):
    out = tmp_path / "run"
    result = invoke("run", "--depths", 1, *TINY, "--methods", "reverse", spec, "--out", out)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["run", "--bogus"], "Error: No such option: --bogus"),
        (["run", "--depths"], "Error: Option '--depths' requires an argument."),
        (
            ["run", "--depths", "0"],
            "Error: --depths must be ≥ 1, got 0 (see `jacbench run --help`)",
        ),
        (["run", "--init", "he"], "Error: --init takes lecun, xavier or normal, got 'he'"),
        (["bogus"], "Error: No such command 'bogus'. (see `jacbench --help`)"),
    ],
)
def test_the_commands_usage_errors_are_one_line(args, line, capsys):
    """`jacbench` (cli.main): typer's usage errors in one line like every other error."""
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(line) and len(err.strip().splitlines()) == 1, err


def test_the_commands_help_and_version_exit_0(capsys):
    for args in (["predict", "--help"], ["--version"]):
        with pytest.raises(SystemExit) as stop:
            main(args)
        assert stop.value.code == 0
    assert "jacbench" in capsys.readouterr().out


def test_run_says_which_of_the_presets_methods_are_not_installed(monkeypatch, tmp_path):
    from jacbench.runs import methods

    jax = methods.METHODS["jax-jacrev"]
    monkeypatch.setitem(
        methods.METHODS, "jax-jacrev", jax.__class__(**{**jax.__dict__, "available": lambda: False})
    )
    result = invoke("run", "--preset", "classes", "--dry-run")
    assert result.exit_code == 0, result.output
    shown = " ".join(result.output.split())
    hint = install_hint("jax")
    # jax-jacfwd too where JAX is not installed at all
    note = r"Note: (jax-jacfwd, )?jax-jacrev of preset classes left out: not installed \("
    assert re.search(note + re.escape(hint) + r"\)", shown), shown


# --------------------------------------------------------------------------- submit
SUBMIT_GRID = ["--depths", "1", "2", "--d-in", "3", "--width", "4", "--d-out", "2"]


def test_submit_deals_the_run_options_as_each_job_reads_them(tmp_path, monkeypatch):
    """submit reads the run options with run's parser (lists folded), prints the plan that
    harness.shard_estimates deals, and passes the options to each job as they were given."""
    from jacbench.cluster import submission

    submitted = {}

    def fake_submit(run_args, count, out, *, executor, parameters):
        submitted.update(run_args=list(run_args), count=count, parameters=parameters)
        return [types.SimpleNamespace(job_id=f"7_{i}") for i in range(count)]

    monkeypatch.setattr(submission, "submit", fake_submit)
    run_args = [*SUBMIT_GRID, "--methods", "forward", "reverse"]
    result = invoke("submit", "--shards", 2, "--out", tmp_path / "r", "--no-wait", *run_args)
    assert result.exit_code == 0, result.output
    assert submitted["run_args"] == run_args and submitted["count"] == 2
    assert submitted["parameters"]["timeout_min"] >= submission.MIN_TIMEOUT_MIN
    assert "Submitted 2 local jobs: 7_0, 7_1" in result.output
    assert f"When they have finished: jacbench merge {tmp_path / 'r'}" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--depths", "0"], "--depths must be ≥ 1, got 0"),
        (["--bogus"], "No such option: --bogus"),
        (["--cuda-graphs"], "--cuda-graphs needs --device cuda"),
        (["--preset", "peers", "--depths", "3"], "preset peers is a fixed list of shapes"),
        (["--quiet"], "submit sets --quiet for each job itself"),
    ],
)
def test_submit_refuses_bad_run_options_before_submitting(tmp_path, monkeypatch, args, message):
    from jacbench.cluster import submission

    monkeypatch.setattr(submission, "submit", lambda *a, **k: pytest.fail("submitted"))
    result = invoke("submit", "--shards", 2, "--out", tmp_path / "r", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_resume_continues_exactly_the_run_in_its_folder(tmp_path):
    """A custom run cut short, resumed with --out and --resume alone: its own grid and
    command, never the default preset; an option typed that differs is refused by name."""
    out = tmp_path / "run"
    grid = ["--depths", 2, 3, "--d-in", 8, "--width", 16, "--d-out", 1, 4]
    made = invoke("run", *grid, "--methods", "forward", "reverse", "--min-time", 0.01,
                  "--no-peak", "--out", out, "--quiet")  # fmt: skip
    assert made.exit_code == 0, made.output
    lines = (out / "results.csv").read_text().splitlines(keepends=True)
    (out / "results.csv").write_text("".join(lines[:-3]))  # as if killed three rows short
    meta = json.loads((out / "meta.json").read_text())
    (out / "meta.json").write_text(json.dumps({**meta, "finished": None}))
    resumed = invoke("run", "--out", out, "--resume", "--quiet")
    assert resumed.exit_code == 0, resumed.output
    frame = pd.read_csv(out / "results.csv")
    assert len(frame) == 8 and sorted(set(frame["depth"])) == [2, 3]
    after = json.loads((out / "meta.json").read_text())
    assert after["command"] == meta["command"] and after["settings"] == meta["settings"]
    assert after["resumed"][0]["command"].endswith("--resume --quiet")
    refused = invoke("run", "--out", out, "--resume", "--seed", 3, "--depths", 2, 3)
    assert refused.exit_code == 2
    assert "--seed 3 (the run's: 0)" in refused.output and "--depths" not in refused.output
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".lock").touch()
    nothing = invoke("run", "--out", empty, "--resume")
    assert nothing.exit_code == 2 and "nothing to resume" in nothing.output
