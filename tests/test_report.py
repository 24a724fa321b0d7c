"""Report and compare on small hand-made result files with known numbers."""

import json
import time

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from jacbench.ad import cost
from jacbench.faces import report
from jacbench.faces.cli import app
from jacbench.measure.rows import COLUMNS, KEY_COLUMNS, SAMPLE_COLUMNS

runner = CliRunner()


def fixture_frame(scale_reverse: float = 1.0) -> pd.DataFrame:
    """Two depths × two P values; reverse is 4× faster than forward at P=1, 4× slower at P=128.

    Batches of two: the predictions follow the FLOP counts (one input this small would be
    launch-bound, NOTE: [Launch-bound problems] in jacbench.ad.cost)."""
    rows = []
    for depth in (2, 4):
        for d_out in (1, 128):
            widths = "-".join(map(str, (64, *[32] * depth, d_out)))
            fwd = 1e-3 * depth
            rev = (fwd / 4 if d_out == 1 else fwd * 4) * scale_reverse
            predicted = cost.plan(tuple(int(w) for w in widths.split("-")), 2).mode
            for method, median in (("forward", fwd), ("reverse", rev), ("mixed", min(fwd, rev))):
                row = dict.fromkeys(COLUMNS, "")
                row.update(
                    depth=depth,
                    d_in=64,
                    width=32,
                    d_out=d_out,
                    widths=widths,
                    batch=2,
                    dtype="float32",
                    device="cpu",
                    method=method,
                    status="ok",
                    median_s=median,
                    predicted_mode=predicted,
                    noisy=False,
                    model="mlp",
                )
                rows.append(row)
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame.replace("", float("nan")).infer_objects()


def fixture_samples(frame: pd.DataFrame, spread: float = 0.02, n: int = 20) -> pd.DataFrame:
    """20 blocks per row around its median; rows of one median share their blocks exactly."""
    rng = np.random.default_rng(0)
    records, drawn = [], {}
    for _, row in frame.iterrows():
        key = (row["widths"], row["median_s"])
        if key not in drawn:
            drawn[key] = row["median_s"] * rng.lognormal(0, spread, n)
        for seconds in drawn[key]:
            records.append({**{c: row[c] for c in KEY_COLUMNS}, "process": 0, "round": 0})
            records[-1]["seconds"] = seconds
    return pd.DataFrame(records, columns=list(SAMPLE_COLUMNS))


def test_summary_frame_ratio_winner_and_ties():
    frame = fixture_frame()
    summary = report.summary_frame(frame, fixture_samples(frame))
    assert len(summary) == 4
    p1 = summary[summary["d_out"] == 1].iloc[0]
    assert p1["fwd/rev"] == pytest.approx(4.0)
    # mixed runs the reverse bracketing here: the same time, so no significant winner
    assert p1["measured"] == "tie: reverse ≈ mixed"
    assert p1["fastest"] == "tie: reverse ≈ mixed"
    assert (p1["predicted"], bool(p1["prediction_ok"]), bool(p1["decided"])) == (
        "reverse",
        True,
        False,
    )
    p128 = summary[summary["d_out"] == 128].iloc[0]
    assert p128["fwd/rev"] == pytest.approx(0.25)
    assert (p128["predicted"], p128["measured"], bool(p128["prediction_ok"])) == (
        "forward",
        "tie: forward ≈ mixed",
        True,
    )
    assert report.prediction_accuracy(summary) == (4, 4, 0)


def test_a_significant_winner_is_named_and_a_tie_counts_as_right():
    frame = fixture_frame()
    frame = frame[frame["method"] != "mixed"]
    summary = report.summary_frame(frame, fixture_samples(frame))
    assert list(summary["measured"]) == ["reverse", "forward", "reverse", "forward"]
    # L=4 P=128 predicts mixed, which this frame did not time: 3 shapes with a verdict
    assert report.prediction_accuracy(summary) == (3, 3, 3)
    # forward 2% slower than reverse, with 30% noise in every block: no significant winner
    close = frame.assign(median_s=frame["median_s"].where(frame["method"] == "reverse", 0))
    close["median_s"] = close.groupby("widths")["median_s"].transform("max")
    close.loc[close["method"] == "forward", "median_s"] *= 1.02
    summary = report.summary_frame(close, fixture_samples(close, spread=0.3))
    assert summary["measured"].str.startswith("tie: ").all()
    assert report.prediction_accuracy(summary) == (3, 3, 0)
    assert "3 of 3 shapes; 0 of 3 had a significant winner (95%), 3 were ties" in (
        report.accuracy_sentence(summary)
    )


def test_without_samples_equal_medians_tie_and_others_are_decided_by_medians():
    summary = report.summary_frame(fixture_frame())
    assert list(summary["measured"]) == ["tie: reverse ≈ mixed", "tie: forward ≈ mixed"] * 2
    frame = fixture_frame()
    summary = report.summary_frame(frame[frame["method"] != "mixed"])
    assert list(summary["measured"]) == ["reverse", "forward", "reverse", "forward"]
    assert report.prediction_accuracy(summary) == (3, 3, 0)  # nothing was tested
    assert report.accuracy_sentence(summary).endswith(
        "at 3 of 3 shapes (judged by the medians' intervals alone: fewer than 5 samples per"
        " method, or none kept, to test them)."
    )


def test_no_verdict_where_the_predicted_mode_was_not_timed():
    # Reverse and mixed timed: the shapes that predict forward get no verdict (not a miss);
    # the others are judged.
    frame = fixture_frame()
    frame = frame[frame["method"] != "forward"]
    summary = report.summary_frame(frame, fixture_samples(frame))
    forward = summary["predicted"] == "forward"
    assert forward.any() and summary[forward]["prediction_ok"].isna().all()
    assert summary[~forward]["prediction_ok"].notna().all()
    judged = int((~forward).sum())
    assert report.prediction_accuracy(summary)[1] == judged
    assert f"of {judged} shapes" in report.summary_markdown(frame, {})


def test_one_mode_timed_alone_is_no_verdict_on_the_prediction():
    # Only reverse timed: it is the fastest hand-written mode by default, everywhere.
    frame = fixture_frame()
    frame = frame[frame["method"] == "reverse"]
    summary = report.summary_frame(frame, fixture_samples(frame))
    assert summary["prediction_ok"].isna().all()
    assert report.prediction_accuracy(summary) == (0, 0, 0)
    text = report.summary_markdown(frame, {})
    assert "| 8 ms | — | forward | reverse |" in text  # predicted, unmarked; measured
    assert "no verdict" in text


def test_accuracy_sentence_without_any_verdict():
    frame = fixture_frame()
    only_mixed = frame[frame["method"] == "mixed"].assign(predicted_mode="forward")
    summary = report.summary_frame(only_mixed)
    assert report.prediction_accuracy(summary) == (0, 0, 0)
    assert "no verdict" in report.accuracy_sentence(summary)


def test_summary_markdown_has_one_row_per_shape():
    frame = fixture_frame()
    text = report.summary_markdown(frame, {"command": "jacbench run --preset x"})
    assert "Command: `jacbench run --preset x`" in text
    assert (
        "| L=2 D=64 K=32 P=1 B=2 float32 cpu | 2 ms | 500 µs | 500 µs | 4 | reverse ✓ "
        "| tie: reverse ≈ mixed | tie: reverse ≈ mixed |" in text
    )
    assert "at 4 of 4 shapes" in text


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


def test_machine_state_sees_other_processes():
    import subprocess
    import sys

    from jacbench.measure import machine

    quiet = machine.machine_state()
    assert set(quiet) >= {"other_cores", "load_average", "time"}
    if quiet["other_cores"] is None:
        pytest.skip("this system does not say what other processes use")
    spin = "import time\nend = time.time() + 5\nwhile time.time() < end: pass"
    child = subprocess.Popen([sys.executable, "-c", spin])
    try:
        time.sleep(0.3)  # started
        busy = machine.machine_state()
    finally:
        child.kill()
    assert busy["other_cores"] >= 0.5  # one core spinning


def test_write_report_makes_plots(tmp_path):
    frame = fixture_frame()
    written = report.write_report(tmp_path, frame, {})
    names = {p.name for p in written}
    assert names == {"summary.md", "time_vs_depth.png"}  # one D value: no D×P map


def test_format_helpers():
    assert report.format_seconds(1.5e-6) == "1.5 µs"
    assert report.format_seconds(0.25) == "250 ms"
    assert report.format_seconds(float("nan")) == "—"
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
