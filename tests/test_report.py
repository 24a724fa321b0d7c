"""Report and compare rendered (jacbench.faces: report, markdown, tables, text) from small
hand-made result files with known numbers; the analysis itself is tests/test_analysis.py's."""

import json
import math

import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from jacbench.faces import markdown, report, tables, text
from jacbench.faces.cli import app
from jacbench.runs import analysis
from jacbench.runs.grid import Point

from .test_analysis import _frame, _row, _with_peers, fixture_frame, fixture_samples

runner = CliRunner()


def _terminal(shown, width: int = 160) -> str:
    console = Console(width=width, record=True)
    console.print(shown)
    return console.export_text()


# ------------------------------------------------------------------- summary
def test_a_verdict_reads_as_the_winner_or_the_tie():
    assert text.verdict_text("reverse", ("reverse",)) == "reverse"
    assert text.verdict_text("reverse", ("reverse", "mixed")) == "tie: reverse ≈ mixed"
    assert text.verdict_text(float("nan"), None) == "—"
    tied = ("hessian-fwd-over-rev", "hessian-structured")
    assert text.verdict_text(tied[0], tied, "hessian-") == "tie: fwd-over-rev ≈ structured"
    row = {"measured": "forward", "measured_tied": ("forward", "mixed"), "fastest": float("nan")}
    assert text.verdict_cell(row, "measured") == "tie: forward ≈ mixed"
    assert text.verdict_cell(row, "fastest") == "—"
    assert text.prediction_cell({"predicted": "reverse", "prediction_ok": False}) == "reverse ✗"
    assert text.prediction_cell({"predicted": "reverse", "prediction_ok": None}) == "reverse"


def test_summary_markdown_has_one_row_per_shape():
    frame = fixture_frame()
    shown = report.summary_markdown(frame, {"command": "jacbench run --preset x"})
    assert "Command: `jacbench run --preset x`" in shown
    assert (
        "| L=2 D=64 K=32 P=1 B=2 float32 cpu | 2 ms | 500 µs | 500 µs | 4 | reverse ✓ "
        "| tie: reverse ≈ mixed | tie: reverse ≈ mixed |" in shown
    )
    assert "at 4 of 4 shapes" in shown


def test_one_builder_feeds_the_markdown_and_the_terminal():
    frame = fixture_frame()
    summary = analysis.summary_frame(frame, fixture_samples(frame))
    wide = tables.summary_table(summary, wide=True)
    lines = markdown.markdown_lines(wide)
    assert lines[0] == (
        "| shape | forward | reverse | mixed | fwd/rev | predicted | measured | fastest |"
    )
    assert lines[1] == "|---|---:|---:|---:|---:|---:|---:|---:|"
    assert "\n".join(lines) in report.summary_markdown(frame, {}, samples=fixture_samples(frame))
    narrow = tables.summary_table(summary)
    assert narrow.header == ["shape", "forward", "reverse", "mixed", "fwd/rev", "predicted",
                             "measured"]  # fmt: skip
    assert narrow.rows[1] == ["L=2 D=64 K=32 P=128 B=2", "2 ms", "8 ms", "2 ms", "0.25",
                              "forward ✓", "tie: forward ≈ mixed"]  # fmt: skip
    [table] = report.summary_tables(frame, fixture_samples(frame))
    shown = _terminal(table)
    assert all(cell in shown for cell in narrow.rows[1])
    assert "tie: forward ≈ mixed" in shown and "median time per Jacobian" in shown


def test_the_accuracy_sentence_counts_wins_ties_and_untested_shapes():
    frame = fixture_frame()
    frame = frame[frame["method"] != "mixed"]
    close = frame.assign(median_s=frame["median_s"].where(frame["method"] == "reverse", 0))
    close["median_s"] = close.groupby("widths")["median_s"].transform("max")
    close.loc[close["method"] == "forward", "median_s"] *= 1.02
    summary = analysis.summary_frame(close, fixture_samples(close, spread=0.3))
    assert "3 of 3 shapes; 0 of 3 had a significant winner (95%), 3 were ties." in (
        text.accuracy_sentence(summary)
    )
    decided = analysis.summary_frame(frame, fixture_samples(frame))
    assert text.accuracy_sentence(decided).endswith(
        "at 3 of 3 shapes; 3 of 3 had a significant winner (95%), 0 were ties."
    )
    untested = analysis.summary_frame(frame)
    assert report.accuracy_sentence(untested).endswith(
        "at 3 of 3 shapes (judged by the medians' intervals alone: fewer than 5 samples per"
        " method, or none kept, to test them)."
    )


def test_no_verdict_where_the_predicted_mode_was_not_timed():
    frame = fixture_frame()
    frame = frame[frame["method"] != "forward"]
    judged = analysis.prediction_accuracy(analysis.summary_frame(frame)).judged
    assert judged == 3 and f"of {judged} shapes" in report.summary_markdown(frame, {})


def test_one_mode_timed_alone_is_no_verdict_on_the_prediction():
    # Only reverse timed: it is the fastest hand-written mode by default, everywhere.
    frame = fixture_frame()
    frame = frame[frame["method"] == "reverse"]
    shown = report.summary_markdown(frame, {})
    assert "| 8 ms | — | forward | reverse |" in shown  # predicted, unmarked; measured
    assert "Prediction accuracy: no verdict" in shown


def test_a_models_summary_names_its_predictor_and_no_ratio():
    rows = [
        _row(depth=0, d_in=256, width=0, d_out=1, widths="256-1", model="siren(width=8)",
             method=method, family="torch.func", median_s=median, predicted_mode="reverse")
        for method, median in (("func-jacfwd", 4e-3), ("func-jacrev", 1e-3))
    ]  # fmt: skip
    shown = report.summary_markdown(_frame(rows), {})
    assert "| shape | func-jacfwd | func-jacrev | predicted | measured | fastest |" in shown
    assert "| siren(width=8) D=256 P=1 B=2 float32 cpu | 4 ms | 1 ms | reverse ✓ |" in shown
    assert "the mode generic.plan_of predicted was the fastest of torch.func's jacfwd" in shown


def test_peers_and_rows_not_timed_in_summary_md():
    frame = _with_peers(fixture_frame())
    failed = _row(depth=2, d_out=1, widths="64-32-32-1", method="jax-jacrev", family="jax")
    failed.update(status="error", message="jax is not installed")
    shown = report.summary_markdown(pd.concat([frame, _frame([failed])], ignore_index=True))
    assert "## auto against its peers" in shown
    assert "| shape | auto | torch.func | autograd | × torch.func | × autograd |" in shown
    assert "| L=2 D=64 K=32 P=128 B=2 float32 cpu | 2 ms | 6 ms | 32 ms | 3.00 | 16.00 |" in (shown)
    assert "| geometric mean |  |  |  | 2.45 | 8.00 |" in shown  # √(2·3), √(4·16)
    assert "## Rows not timed\n\n| shape | method | status | message |\n|---|---|---|---|" in (
        shown
    )
    assert "| L=2 D=64 K=32 P=1 B=2 float32 cpu | jax-jacrev | error | jax is not installed |" in (
        shown
    )


def test_devices_side_by_side_in_summary_md():
    cpu = fixture_frame()
    frame = pd.concat([cpu, cpu.assign(device="cuda", median_s=cpu["median_s"] / 10)])
    shown = report.summary_markdown(frame, {}, samples=fixture_samples(frame))
    section = shown.split("## Devices side by side\n\n")[1]
    assert section.startswith("| shape | method | cpu | cuda | cuda / cpu |\n|---|---:|")
    # the shape without its device, forward's cuda/cpu ratio with its interval
    assert "| L=2 D=64 K=32 P=1 B=2 float32 | forward | 2 ms | 200 µs | 0.1 (0." in section
    assert section.count(") faster |") == 12


def test_shape_labels_come_from_the_rows_own_columns():
    row = {"depth": 3, "d_in": 8, "width": 64, "d_out": 8, "widths": "8-64-4-64-8",
           "batch": 4, "dtype": "float64", "device": "cpu", "model": "mlp"}  # fmt: skip
    assert report.shape_label(row) == "L=3 D=8 widths=8-64-4-64-8 P=8 B=4 float64 cpu"
    assert text.compact_label(row) == "L=3 D=8 [8-64-4-64-8] P=8 B=4 float64"
    uniform = {**row, "widths": "8-64-64-64-8"}
    assert report.shape_label(uniform) == "L=3 D=8 K=64 P=8 B=4 float64 cpu"
    assert text.compact_label({**uniform, "batch": 1, "dtype": "float32"}) == "L=3 D=8 K=64 P=8"
    model = {**row, "depth": 0, "width": 0, "widths": "8-1", "d_out": 1, "model": "cnn(c=8)"}
    assert report.shape_label(model) == "cnn(c=8) D=8 P=1 B=4 float64 cpu"
    assert text.compact_label({**model, "device": "cuda"}) == "cnn(c=8) D=8 P=1 B=4 float64 cuda"
    point = Point((8, 64, 4, 64, 8), 4, "float64")
    assert report.shape_label(point) == report.shape_label(row)


def test_summary_warns_when_the_machine_was_busy():
    meta = {
        "environment": {"threads": 2},
        "machine_at_start": {"load_average": [0.1, 0.1, 0.1]},
        "machine_at_end": {"load_average": [2.2, 1.0, 0.5]},
    }
    assert report.busy_warning(meta) is None  # 2.2 at the end is mostly the run's 2 threads
    meta["machine_at_start"]["load_average"] = [1.4, 1.0, 0.5]
    assert "busy during this run (1-minute load average 1.4 at the start" in (
        report.summary_markdown(fixture_frame(), meta)
    )
    assert report.busy_warning({}) is None  # no record, no claim
    # What other processes ran as the run began wins over the decaying load average.
    meta["machine_at_start"]["other_cores"] = 0.02
    assert report.busy_warning(meta) is None
    meta["machine_at_start"]["other_cores"] = 1.2
    assert "(other processes kept 1.2 cores busy at the start, 1-minute load average 2.2" in (
        report.busy_warning(meta)
    )


def test_machine_state_counts_what_other_processes_used(monkeypatch):
    """Other work is the cores' busy time less this process's own, over the window: read
    from /proc/stat snapshots made up here (no process spun up, no clock raced)."""
    from jacbench.measure import machine

    quiet = machine.machine_state()
    assert set(quiet) >= {"other_cores", "load_average", "time"}
    # 0.1 s apart: the cores were busy 0.2 s, this process 0.05 s of it → 1.5 cores' worth
    snapshots = iter([(10.0, 100.0, 1.0), (10.1, 100.2, 1.05)])
    monkeypatch.setattr(machine, "_cpu_snapshot", lambda: next(snapshots))
    assert machine.machine_state()["other_cores"] == 1.5
    # a system that does not say (no /proc/stat) records None, not a guess
    monkeypatch.setattr(machine, "_cpu_snapshot", lambda: None)
    assert machine.machine_state()["other_cores"] is None


def test_write_report_makes_plots(tmp_path):
    frame = fixture_frame()
    written = report.write_report(tmp_path, frame, {})
    names = {p.name for p in written}
    assert names == {"summary.md", "time_vs_depth.png"}  # one D value: no D×P map
    wide = pd.concat([frame, frame.assign(d_in=128)], ignore_index=True)
    written = report.write_report(tmp_path, wide, {})
    assert {p.name for p in written} == {"summary.md", "time_vs_depth.png", "fwd_rev_ratio.png"}
    assert all(p.stat().st_size > 1000 for p in written)


def test_a_run_of_models_plots_each_model_s_methods_over_its_shapes(tmp_path):
    from jacbench.runs import analysis

    frame = fixture_frame()
    one = frame[(frame["depth"] == frame["depth"].min()) & (frame["d_out"] == 1)]
    models = pd.concat(
        [one.assign(model="residual", d_in=d, batch=b) for d, b in ((64, 8), (16, 8), (16, 1))]
        + [one.assign(model="ode")],
        ignore_index=True,
    )
    series = dict(analysis.model_series(pd.concat([frame, models], ignore_index=True)))
    assert list(series) == ["residual", "ode"]  # the MLP's rows are not a model's
    residual = series["residual"]
    assert list(dict.fromkeys(residual["shape"])) == [
        "D=16 P=1 B=1", "D=16 P=1 B=8", "D=64 P=1 B=8",
    ]  # fmt: skip
    written = report.write_report(tmp_path, models, {})
    assert "models.png" in {p.name for p in written}
    assert (tmp_path / "models.png").stat().st_size > 1000


def test_summary_md_keeps_the_order_the_methods_were_asked_in(tmp_path):
    header = "| shape | reverse | mixed | forward | fwd/rev | predicted | measured | fastest |"
    for meta in (
        {"settings": {"methods": ["reverse", "mixed", "forward"]}},
        {"params": {"methods": ["reverse", "mixed", "forward"]}},  # an older meta.json
    ):
        report.write_report(tmp_path, fixture_frame(), meta)
        assert header in (tmp_path / "summary.md").read_text()
    report.write_report(tmp_path, fixture_frame(), {})
    assert "| shape | forward | reverse | mixed |" in (tmp_path / "summary.md").read_text()


def test_format_helpers():
    assert report.format_seconds(1.5e-6) == "1.5 µs"
    assert report.format_seconds(0.25) == "250 ms"
    assert report.format_seconds(float("nan")) == "—"
    # rounding to three figures may carry into the next unit: never "1e+03 µs"
    assert report.format_seconds(999.6e-6) == "1 ms"
    assert report.format_seconds(999.4e-6) == "999 µs"
    assert report.format_seconds(3e-8) == "30 ns"
    assert report.format_count(999_700) == "1 M"
    assert report.format_bytes(2**20 - 100) == "1 MiB"
    assert report.format_count(12_000_000) == "12 M"
    assert report.format_bytes(3 * 2**20) == "3 MiB"


def _write(tmp_path, name, frame):
    path = tmp_path / name
    path.mkdir()
    frame.to_csv(path / "results.csv", index=False)
    return path


def _write_with_samples(tmp_path, name, frame, spread=0.02):
    path = _write(tmp_path, name, frame)
    fixture_samples(frame, spread).to_csv(path / "samples.csv", index=False)
    return path


def test_compare_flags_significant_regressions_and_exits_1(tmp_path):
    a = _write_with_samples(tmp_path, "a", fixture_frame())
    b = _write_with_samples(tmp_path, "b", fixture_frame(scale_reverse=1.5))
    result = runner.invoke(app, ["compare", str(a), str(b), "--threshold", "10%"])
    assert result.exit_code == 1, result.output
    # reverse ×1.5 everywhere, mixed ×1.5 at P=1 (where it is reverse's time)
    assert "12 rows compared: 6 regressed, 6 same." in result.output
    json_path = tmp_path / "cmp.json"
    runner.invoke(app, ["compare", str(a), str(b), "--json", str(json_path)])
    rows = json.loads(json_path.read_text())["rows"]
    reverse = [r for r in rows if r["method"] == "reverse"]
    assert [r["ratio"] for r in reverse] == pytest.approx([1.5] * 4, rel=0.02)
    assert all(r["ci_low"] > 1.1 and r["verdict"] == "regressed" for r in reverse)


def test_compare_the_other_way_is_an_improvement_and_exits_0(tmp_path):
    a = _write_with_samples(tmp_path, "a", fixture_frame(scale_reverse=1.5))
    b = _write_with_samples(tmp_path, "b", fixture_frame())
    result = runner.invoke(app, ["compare", str(a), str(b), "--markdown"])
    assert result.exit_code == 0, result.output
    assert "| L=2 D=64 K=32 P=1 B=2 float32 cpu | reverse | 750 µs | 500 µs | 0.667 |" in (
        result.output
    )
    assert "6 improved" in result.output


def test_compare_a_slowdown_inside_the_noise_is_not_a_regression(tmp_path):
    a = _write_with_samples(tmp_path, "a", fixture_frame(), spread=0.4)
    b = _write_with_samples(tmp_path, "b", fixture_frame(scale_reverse=1.15), spread=0.4)
    result = runner.invoke(app, ["compare", str(a), str(b)])
    assert result.exit_code == 0, result.output
    assert "regressed" not in result.output.split("rows compared")[1]


def test_compare_says_slower_is_significant_but_within_the_threshold():
    from jacbench.measure import stats

    a, b = fixture_frame(), fixture_frame(scale_reverse=1.5)
    merged = stats.compare_runs(a, fixture_samples(a), b, fixture_samples(b), 0.6)
    assert report.compare_sentence(merged, 0.6) == (
        "12 rows compared: 6 slower, 6 same. faster/slower: significant (the 95% interval "
        "wholly on one side of 1) but not beyond the 60% threshold (a ratio below 1/1.6 or "
        "above 1.6), which regressed/improved are."
    )
    shown = report.compare_markdown(merged, 0.6, "a", "b")
    caption, _, header, separator, first = shown.splitlines()[:5]
    assert caption == (
        "Ratio b/a, 95% bootstrap interval; regressed or improved: significantly slower or "
        "faster, by 1.6× or more."
    )
    assert header == "| shape | method | a | b | ratio | 95% interval | verdict |"
    assert separator == "|---|---|---:|---:|---:|---:|---:|"
    assert first.startswith("| L=2 D=64 K=32 P=1 B=2 float32 cpu | forward | 2 ms | 2 ms |")
    assert shown.count("| slower |") == 6
    terminal = _terminal(report.compare_table(merged, 0.6, "a", "b"), width=200)
    caption = "regressed or improved: significantly slower or faster, by 1.6× or more"
    assert caption in " ".join(terminal.split())  # the caption wraps at the table's width
    lines = terminal.splitlines()
    for cells in tables.compare_table(merged, 0.6, "a", "b", text.compact_label).rows:
        assert any(all(cell in line for cell in cells) for line in lines), cells


def test_compare_without_samples_is_unsure_never_a_regression(tmp_path):
    a = _write(tmp_path, "a", fixture_frame())
    b = _write(tmp_path, "b", fixture_frame(scale_reverse=1.5))
    result = runner.invoke(app, ["compare", str(a), str(b)])
    assert result.exit_code == 0, result.output
    assert "12 rows compared: 12 unsure." in result.output


def test_compare_same_run_passes(tmp_path):
    a = _write_with_samples(tmp_path, "a", fixture_frame())
    result = runner.invoke(app, ["compare", str(a), str(a)])
    assert result.exit_code == 0
    assert "12 rows compared: 12 same." in result.output


def _meta(path, **environment):
    (path / "meta.json").write_text(json.dumps({"params": {}, "environment": environment}))


def test_compare_refuses_other_torch_or_device_and_warns_on_threads(tmp_path):
    a = _write_with_samples(tmp_path, "a", fixture_frame())
    b = _write_with_samples(tmp_path, "b", fixture_frame())
    _meta(a, torch="2.13.0", threads=2, cpu_model="X")
    _meta(b, torch="2.12.0", threads=1, cpu_model="X")
    refused = runner.invoke(app, ["compare", str(a), str(b)])
    assert refused.exit_code == 2
    assert "the runs differ in torch 2.13.0 vs 2.12.0: their times do not compare" in (
        refused.output
    )
    forced = runner.invoke(app, ["compare", str(a), str(b), "--force"])
    assert forced.exit_code == 0, forced.output
    assert "Warning: the runs differ in threads 2 vs 1" in forced.output
    c = _write_with_samples(tmp_path, "c", fixture_frame().assign(device="cuda"))
    other_device = runner.invoke(app, ["compare", str(a), str(c)])
    assert other_device.exit_code == 2 and "device cpu vs cuda" in other_device.output


def test_compare_bad_threshold_and_missing_run(tmp_path):
    a = _write(tmp_path, "a", fixture_frame())
    bad = runner.invoke(app, ["compare", str(a), str(a), "--threshold", "ten"])
    assert bad.exit_code == 2 and "--threshold takes a share" in bad.output
    missing = runner.invoke(app, ["compare", str(a), str(tmp_path / "zz")])
    assert missing.exit_code == 2 and "no results.csv" in missing.output


def test_report_command_on_fixture(tmp_path):
    a = _write(tmp_path, "a", fixture_frame())
    result = runner.invoke(app, ["report", str(a)])
    assert result.exit_code == 0, result.output
    assert (a / "summary.md").exists() and (a / "time_vs_depth.png").exists()


def test_the_hessians_modes_keep_distinct_headers_in_a_narrow_terminal():
    """hessian-fwd-over-rev and hessian-fwd-over-fwd once both showed as "hessian-fwd-…"."""
    from pathlib import Path

    from rich.console import Console

    from jacbench.runs.results import read_results

    run = Path(__file__).parent.parent / "results" / "cpu-pinn-hessian"
    console = Console(width=100, record=True)
    for shown in report.summary_tables(read_results(run)):
        console.print(shown)
    text = console.export_text()
    assert "jacbench's methods: hessian-<mode>" in text
    assert "hessian-fwd-…" not in text and "hessian-" not in text.split("\n", 1)[1]
    assert text.count("over-") >= 4  # fwd-/over-/rev and the three other compositions


def test_the_rows_say_when_the_machine_was_busy():
    from jacbench.faces import text

    frame = fixture_frame().assign(other_cores=0.1)
    assert text.busy_warning({}, frame) is None
    frame.loc[frame.index[:2], "other_cores"] = [0.9, 1.4]
    warning = text.busy_warning({}, frame)
    assert warning is not None and f"up to 1.4 cores while 2 of {len(frame)} rows" in warning
    assert text.busy_warning({}, fixture_frame()) is None  # rows that do not say: meta decides


def test_the_summary_tables_each_jacobian_s_cost_in_evaluations():
    frame = fixture_frame()
    assert "costs in evaluations" not in report.summary_markdown(frame, {})  # rows that do not say
    frame = frame.assign(evals=frame["median_s"] / 2e-5)
    text = report.summary_markdown(frame, {})
    section = text.split("## What a Jacobian costs in evaluations of the function", 1)[1]
    first = frame.iloc[0]
    assert f"{first['median_s'] / 2e-5:.3g}" in section


def test_the_summary_says_after_how_many_calls_a_compiled_method_repays_its_compile_time():
    frame = fixture_frame()
    one = frame[(frame["depth"] == frame["depth"].min()) & (frame["d_out"] == 1)].copy()
    eager = one["median_s"].min()
    compiled = one.iloc[[0]].assign(method="auto-compiled", median_s=eager - 1e-3, compile_s=2.0)
    slower = one.iloc[[0]].assign(method="jax-jacrev", median_s=eager * 2, compile_s=0.5)
    found = analysis.compile_payback(pd.concat([one, compiled, slower], ignore_index=True))
    by = found.set_index("method")
    assert by.loc["auto-compiled", "calls"] == pytest.approx(2000)  # 2 s / 1 ms a call
    assert by.loc["jax-jacrev", "calls"] == math.inf
    text = report.summary_markdown(pd.concat([one, compiled, slower], ignore_index=True), {})
    assert "## When compiling pays" in text
    assert "2,000 calls" in text and "never" in text
    assert "When compiling pays" not in report.summary_markdown(one, {})


def test_a_share_prints_as_a_whole_percentage_and_under_one_percent_with_two_figures():
    assert [text.format_percent(s) for s in (0.994, 0.0125, 0.0095, 7.1e-5, 0.0)] == [
        "99%", "1%", "0.95%", "0.0071%", "0%",
    ]  # fmt: skip
    assert text.format_percent(float("nan")) == "—" and text.format_percent(None) == "—"
