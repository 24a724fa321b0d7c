"""Report and compare on small hand-made result files with known numbers."""

import pandas as pd
import pytest
from typer.testing import CliRunner

from jacbench import cost, report
from jacbench.cli import app
from jacbench.rows import COLUMNS

runner = CliRunner()


def fixture_frame(scale_reverse: float = 1.0) -> pd.DataFrame:
    """Two depths × two P values; reverse is 4× faster than forward at P=1, 4× slower at P=128."""
    rows = []
    for depth in (2, 4):
        for d_out in (1, 128):
            widths = "-".join(map(str, (64, *[32] * depth, d_out)))
            fwd = 1e-3 * depth
            rev = (fwd / 4 if d_out == 1 else fwd * 4) * scale_reverse
            predicted = cost.plan(tuple(int(w) for w in widths.split("-"))).mode
            for method, median in (("forward", fwd), ("reverse", rev), ("mixed", min(fwd, rev))):
                row = dict.fromkeys(COLUMNS, "")
                row.update(
                    depth=depth,
                    d_in=64,
                    width=32,
                    d_out=d_out,
                    widths=widths,
                    batch=1,
                    dtype="float32",
                    device="cpu",
                    method=method,
                    status="ok",
                    median_s=median,
                    predicted_mode=predicted,
                    noisy=False,
                )
                rows.append(row)
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame.replace("", float("nan")).infer_objects()


def test_summary_frame_ratio_and_winner():
    summary = report.summary_frame(fixture_frame())
    assert len(summary) == 4
    p1 = summary[summary["d_out"] == 1].iloc[0]
    assert p1["fwd/rev"] == pytest.approx(4.0)
    assert p1["measured"] == "reverse"
    assert p1["predicted"] == "reverse"
    assert bool(p1["prediction_ok"])
    p128 = summary[summary["d_out"] == 128].iloc[0]
    assert p128["fwd/rev"] == pytest.approx(0.25)
    assert (p128["predicted"], p128["measured"], bool(p128["prediction_ok"])) == (
        "forward",
        "forward",
        True,
    )
    assert report.prediction_accuracy(summary) == (4, 4)


def test_no_verdict_where_the_predicted_mode_was_not_timed():
    # Only reverse timed: the P=128 shapes predict forward, so they get no verdict (not a miss).
    frame = fixture_frame()
    frame = frame[frame["method"] == "reverse"]
    summary = report.summary_frame(frame)
    p128 = summary[summary["d_out"] == 128]
    assert p128["prediction_ok"].isna().all()
    assert report.prediction_accuracy(summary) == (2, 2)
    text = report.summary_markdown(frame, {})
    assert "| 8 ms | — | forward | reverse |" in text  # predicted, unmarked; then measured
    assert "at 2 of 2 shapes" in text


def test_accuracy_sentence_without_any_verdict():
    frame = fixture_frame()
    only_mixed = frame[frame["method"] == "mixed"].assign(predicted_mode="forward")
    summary = report.summary_frame(only_mixed)
    assert report.prediction_accuracy(summary) == (0, 0)
    assert "no verdict" in report.accuracy_sentence(summary)


def test_summary_markdown_has_one_row_per_shape():
    text = report.summary_markdown(fixture_frame(), {"command": "jacbench run --preset x"})
    assert "Command: `jacbench run --preset x`" in text
    assert "| L=2 D=64 K=32 P=1 B=1 float32 cpu | 2 ms | 500 µs | 500 µs | 4 | reverse ✓ |" in text
    assert "at 4 of 4 shapes" in text


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


def test_compare_flags_regressions_and_exits_1(tmp_path):
    a = _write(tmp_path, "a", fixture_frame())
    b = _write(tmp_path, "b", fixture_frame(scale_reverse=1.5))
    result = runner.invoke(app, ["compare", str(a), str(b), "--threshold", "10%"])
    assert result.exit_code == 1, result.output
    assert "12 rows compared: 6 regressed" in result.output  # reverse ×4, mixed at P=1 ×2
    merged = report.compare_frames(
        pd.read_csv(a / "results.csv"), pd.read_csv(b / "results.csv"), 0.1
    )
    assert merged.loc[merged["method"] == "reverse", "ratio"].tolist() == pytest.approx([1.5] * 4)


def test_compare_same_run_passes(tmp_path):
    a = _write(tmp_path, "a", fixture_frame())
    result = runner.invoke(app, ["compare", str(a), str(a)])
    assert result.exit_code == 0
    assert "0 regressed" in result.output


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
