"""Runs of the second order: every method checked against float64 torch.func.hessian, the
operator in every row, FLOPs from the second-order cost model, clear refusals."""

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from jacbench.ad import cost, hessians
from jacbench.faces import report
from jacbench.faces.cli import app
from jacbench.measure.rows import COLUMNS, Status, check_frame
from jacbench.runs import analysis
from jacbench.runs.grid import PRESETS
from jacbench.runs.harness import sweep
from jacbench.runs.operators import direction, get_operator

SHAPE = [((2, 16, 16, 1), 8)]  # D=2 K=16 L=2 P=1, a batch of 8
runner = CliRunner()


def test_a_hessian_run_checks_every_method_and_counts_the_modes_flops():
    frame = sweep(shapes=SHAPE, operator="hessian", min_time=0.005)
    assert set(frame["operator"]) == {"hessian"}
    assert set(frame["status"]) == {"ok"}, frame[["method", "status", "message"]]
    assert {"func-hessian", "func-jacrev-jacfwd", "hessian-rev-over-fwd"} <= set(frame["method"])
    rows = frame.set_index("method")
    assert rows.loc["hessian-auto", "mode"] == "structured"
    assert set(rows["predicted_mode"]) == {"structured"}
    for method in ("hessian-structured", "hessian-fwd-over-fwd", "func-hessian"):
        mode = rows.loc[method, "mode"]
        assert rows.loc[method, "flops"] == cost.hessian_flops((2, 16, 16, 1), mode, 8)
    assert (rows["max_rel_err"] < 1e-5).all()


def test_a_laplacian_run_reports_hutchinson_apart_with_its_error():
    frame = sweep(shapes=SHAPE, operator="laplacian", min_time=0.005)
    rows = frame.set_index("method")
    assert rows.loc["hutchinson", "status"] == "unchecked"
    assert 0 < rows.loc["hutchinson", "max_rel_err"] < 1  # an estimate: off, but not wildly
    assert "stochastic" in rows.loc["hutchinson", "message"]
    exact = rows.drop("hutchinson")
    assert set(exact["status"]) == {"ok"}
    assert rows.loc["forward-laplacian", "flops"] == cost.laplacian_flops(
        (2, 16, 16, 1), "forward-laplacian", 8
    )
    summary = analysis.summary_frame(frame)
    rivals = {m for tied in summary["fastest_tied"] for m in tied} | set(summary["fastest"])
    assert "hutchinson" not in rivals and rivals  # not a rival of exact ones


def test_a_laplacian_preset_runs_laplacians_and_the_operator_option_overrides_it():
    plan = runner.invoke(app, ["run", "--preset", "pinn-laplacian", "--dry-run"])
    assert plan.exit_code == 0, plan.output
    assert "6 " in plan.output  # six points
    lap = PRESETS["pinn-laplacian"]
    assert lap.operator == "laplacian"
    assert lap.installed_methods()[:3] == ["forward-laplacian", "hessian-trace", "hutchinson"]
    assert lap.installed_methods("hessian")[0] == "hessian-fwd-over-rev"
    frame = sweep(["hvp", "func-hvp"], shapes=[((3, 8, 2), 1)], operator="hvp", min_time=0.005)
    assert set(frame["status"]) == {"ok"} and set(frame["operator"]) == {"hvp"}


def test_a_method_of_another_operator_is_refused_in_one_line():
    with pytest.raises(ValueError, match="method forward computes the jacobian, not the hessian"):
        sweep(["forward"], shapes=SHAPE, operator="hessian")
    with pytest.raises(ValueError, match="unknown operator 'jerk'"):
        sweep(shapes=SHAPE, operator="jerk")
    done = runner.invoke(app, ["run", "--operator", "hessian", "--methods", "auto", "--quiet"])
    assert done.exit_code == 2
    assert done.output.startswith("Error: method auto computes the jacobian, not the hessian")


def test_a_user_routine_is_checked_against_the_runs_operator():
    def doubled(net, x):  # a Laplacian off by a factor of two
        return 2 * hessians.laplacian(net, x)

    def right(net, x):
        return hessians.laplacian(net, x, "hessian-trace")

    frame = sweep([right, doubled], shapes=SHAPE, operator="laplacian", min_time=0.005)
    rows = frame.set_index("method")
    assert rows.loc["right", "status"] == "ok" and rows.loc["right", "operator"] == "laplacian"
    assert rows.loc["doubled", "status"] == "wrong"
    assert "relative error 1 >" in rows.loc["doubled", "message"]


def test_a_run_folder_records_the_operator_and_summarises_per_operator(tmp_path):
    out = tmp_path / "run"
    done = runner.invoke(
        app,
        ["run", "--operator", "laplacian", "--depths", "2", "--d-in", "2", "--width", "8",
         "--d-out", "1", "--batch", "4", "--methods", "forward-laplacian hessian-trace",
         "--min-time", "0.005", "--no-peak", "--out", str(out), "--quiet"],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    meta = (out / "meta.json").read_text()
    assert '"operator": "laplacian"' in meta
    summary = (out / "summary.md").read_text()
    assert "## The laplacian: the Laplacian" in summary
    assert "cost.plan_second_order predicted" in summary
    assert "fwd/rev" not in summary
    resumed = runner.invoke(
        app,
        ["run", "--operator", "laplacian", "--depths", "2", "--d-in", "2", "--width", "8",
         "--d-out", "1", "--batch", "4", "--methods", "forward-laplacian hessian-trace",
         "--no-peak", "--out", str(out), "--resume", "--quiet"],
    )  # fmt: skip
    assert resumed.exit_code == 0, resumed.output


def test_a_results_file_from_before_the_operator_column_reads_as_jacobian():
    header = list(COLUMNS[: COLUMNS.index("operator")])
    row = dict.fromkeys(header, "")
    row.update(widths="2-4-1", batch="1", dtype="float32", device="cpu", method="forward")
    row.update(status="ok", median_s="0.001")
    raw = pd.DataFrame([row], columns=header)
    frame = check_frame(raw, "old.csv")
    assert list(frame["operator"]) == ["jacobian"]


def test_the_hvp_direction_is_seeded_and_shared():
    x = torch.zeros(3, 4, dtype=torch.float64)
    assert torch.equal(direction(x), direction(x.clone()))
    assert direction(x.float()).dtype == torch.float32
    assert get_operator("hvp").result == "(P, D)"
    with pytest.raises(ValueError, match="expected one of: jacobian, hessian, laplacian, hvp"):
        get_operator("jerk")


def test_summary_markdown_gives_each_operator_its_own_section():
    jac = sweep(["forward", "reverse"], shapes=SHAPE, min_time=0.005)
    lap = sweep(["forward-laplacian"], shapes=SHAPE, operator="laplacian", min_time=0.005)
    jac.attrs, lap.attrs = {}, {}  # their samples: pandas' concat cannot compare them
    text = report.summary_markdown(pd.concat([jac, lap], ignore_index=True))
    assert "## The jacobian: the input Jacobian" in text
    assert "## The laplacian: the Laplacian" in text
    assert Status.OK.value in set(lap["status"])


def test_runs_of_two_operators_merge_into_one_summary_with_a_section_each(tmp_path):
    grid = ["--depths", "2", "--d-in", "2", "--width", "8", "--d-out", "1", "--batch", "4"]
    timing = ["--min-time", "0.005", "--no-peak", "--quiet"]
    first = ["run", *grid, *timing, "--methods", "forward reverse", "--out", str(tmp_path / "a")]
    second = ["run", *grid, *timing, "--operator", "hessian", "--methods", "hessian-structured"]
    assert runner.invoke(app, first).exit_code == 0
    assert runner.invoke(app, [*second, "--out", str(tmp_path / "b")]).exit_code == 0
    merged = tmp_path / "m"
    done = runner.invoke(
        app, ["merge", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(merged)]
    )
    assert done.exit_code == 0, done.output
    frame = pd.read_csv(merged / "results.csv")
    assert list(frame["operator"]) == ["jacobian", "jacobian", "hessian"]
    sections = [
        line
        for line in (merged / "summary.md").read_text().splitlines()
        if line.startswith("## The ")
    ]
    assert [s.split(":")[0] for s in sections] == ["## The jacobian", "## The hessian"]


def test_a_second_order_peer_is_held_to_its_compositions_memory_estimate():
    from jacbench.runs.grid import Point
    from jacbench.runs.methods import METHODS
    from jacbench.runs.tasks import estimated_memory_bytes

    point = Point((1000, 1000, 1000, 1000, 1), 1)
    costs = get_operator("hessian").costs(point.widths, 1, torch.float32)
    ours = estimated_memory_bytes(point, METHODS["hessian-fwd-over-fwd"], costs)
    assert ours == cost.second_order_memory_bytes(point.widths, "fwd-over-fwd", 1)
    assert ours > 10 * 2**30  # every unit's D×D Hessian: the pre-check can skip it
    assert estimated_memory_bytes(point, METHODS["func-jacfwd-jacfwd"], costs) == ours
    assert estimated_memory_bytes(point, METHODS["func-hessian"], costs) < ours
