"""A run's analysis as data (jacbench.runs.analysis), on small hand-made rows with known numbers."""

import math

import numpy as np
import pandas as pd
import pytest

from jacbench.ad import cost
from jacbench.faces import report
from jacbench.measure import stats
from jacbench.measure.rows import COLUMNS, KEY_COLUMNS, SAMPLE_COLUMNS
from jacbench.runs import analysis
from jacbench.runs.analysis import Accuracy


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
                rows.append(
                    _row(
                        depth=depth,
                        d_out=d_out,
                        widths=widths,
                        method=method,
                        median_s=median,
                        predicted_mode=predicted,
                    )
                )
    return _frame(rows)


def _row(**values) -> dict:
    row = dict.fromkeys(COLUMNS, "")
    row.update(d_in=64, width=32, batch=2, dtype="float32", device="cpu", status="ok")
    row.update(noisy=False, model="mlp", family="jacbench")
    row.update(values)
    return row


def _frame(rows: list[dict]) -> pd.DataFrame:
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


# ------------------------------------------------------------------- summary
def test_summary_frame_keeps_the_verdicts_as_data():
    frame = fixture_frame()
    summary = analysis.summary_frame(frame, fixture_samples(frame))
    assert len(summary) == 4
    p1 = summary[summary["d_out"] == 1].iloc[0]
    assert p1["fwd/rev"] == pytest.approx(4.0)
    # mixed runs the reverse bracketing here: the same time, so no significant winner
    assert (p1["measured"], p1["measured_tied"]) == ("reverse", ("reverse", "mixed"))
    assert (p1["fastest"], p1["fastest_tied"]) == ("reverse", ("reverse", "mixed"))
    assert (p1["predicted"], p1["prediction_ok"], p1["decided"], p1["tested"]) == (
        "reverse",
        True,
        False,
        True,
    )
    p128 = summary[summary["d_out"] == 128].iloc[0]
    assert p128["fwd/rev"] == pytest.approx(0.25)
    assert (p128["predicted"], p128["measured_tied"], p128["prediction_ok"]) == (
        "forward",
        ("forward", "mixed"),
        True,
    )
    assert analysis.prediction_accuracy(summary) == Accuracy(4, 4, 0, 0)
    assert analysis.prediction_accuracy(summary).ties == 4


def test_a_significant_winner_stands_alone_and_a_tie_counts_as_right():
    frame = fixture_frame()
    frame = frame[frame["method"] != "mixed"]
    summary = analysis.summary_frame(frame, fixture_samples(frame))
    assert list(summary["measured"]) == ["reverse", "forward", "reverse", "forward"]
    assert [len(t) for t in summary["measured_tied"]] == [1, 1, 1, 1]
    assert summary["decided"].tolist() == [True] * 4
    # L=4 P=128 predicts mixed, which this frame did not time: 3 shapes with a verdict
    assert analysis.prediction_accuracy(summary) == Accuracy(3, 3, 3, 0)
    # forward 2% slower than reverse, with 30% noise in every block: no significant winner
    close = frame.assign(median_s=frame["median_s"].where(frame["method"] == "reverse", 0))
    close["median_s"] = close.groupby("widths")["median_s"].transform("max")
    close.loc[close["method"] == "forward", "median_s"] *= 1.02
    summary = analysis.summary_frame(close, fixture_samples(close, spread=0.3))
    assert summary["measured_tied"].tolist() == [("reverse", "forward")] * 4
    assert analysis.prediction_accuracy(summary) == Accuracy(3, 3, 0, 0)


def test_without_samples_equal_medians_tie_and_nothing_is_tested():
    summary = analysis.summary_frame(fixture_frame())
    tied = [("reverse", "mixed"), ("forward", "mixed")] * 2
    assert summary["measured_tied"].tolist() == tied
    assert not summary["tested"].astype(bool).any()
    frame = fixture_frame()
    summary = analysis.summary_frame(frame[frame["method"] != "mixed"])
    assert list(summary["measured"]) == ["reverse", "forward", "reverse", "forward"]
    assert analysis.prediction_accuracy(summary) == Accuracy(3, 3, 0, 3)


def test_no_verdict_where_the_predicted_mode_was_not_timed():
    # Reverse and mixed timed: the shapes that predict forward get no verdict (not a miss).
    frame = fixture_frame()
    frame = frame[frame["method"] != "forward"]
    summary = analysis.summary_frame(frame, fixture_samples(frame))
    forward = summary["predicted"] == "forward"
    assert forward.any() and summary[forward]["prediction_ok"].isna().all()
    assert summary[~forward]["prediction_ok"].notna().all()
    assert analysis.prediction_accuracy(summary).judged == int((~forward).sum())


def test_one_mode_timed_alone_is_no_verdict_on_the_prediction():
    frame = fixture_frame()
    summary = analysis.summary_frame(frame[frame["method"] == "reverse"])
    assert summary["prediction_ok"].isna().all()
    assert list(summary["measured"]) == ["reverse"] * 4
    assert analysis.prediction_accuracy(summary) == Accuracy(0, 0, 0, 0)


def test_shapes_without_a_fixed_mode_have_a_fastest_but_no_measured():
    frame = fixture_frame().assign(family="torch.func")
    frame["method"] = frame["method"].map(
        {"forward": "func-jacfwd", "reverse": "func-jacrev", "mixed": "autograd-reverse"}
    )
    summary = analysis.summary_frame(frame)
    assert "measured" not in summary and "prediction_ok" not in summary
    assert list(summary["fastest"]) == ["func-jacrev", "func-jacfwd"] * 2
    assert analysis.prediction_accuracy(summary) == Accuracy(0, 0, 0, 0)
    assert analysis.summary_frame(frame.assign(status="error")).empty


def test_a_models_prediction_is_judged_against_torch_funcs_modes():
    rows = [
        _row(depth=0, d_in=256, width=0, d_out=1, widths="256-1", model="siren(width=8)",
             method=method, family="torch.func", median_s=median, predicted_mode="reverse")
        for method, median in (("func-jacfwd", 4e-3), ("func-jacrev", 1e-3))
    ]  # fmt: skip
    summary = analysis.summary_frame(_frame(rows))
    assert analysis.all_models(summary) and analysis.is_model_row(summary.iloc[0])
    assert (summary["measured"].iloc[0], summary["prediction_ok"].iloc[0]) == ("func-jacrev", True)
    assert not analysis.all_models(analysis.summary_frame(fixture_frame()))


def test_an_estimate_is_no_rival_of_the_exact_methods():
    rows = [
        _row(method=method, median_s=median, operator="laplacian", widths="64-32-32-1",
             depth=2, d_out=1, predicted_mode="forward-laplacian")
        for method, median in (("forward-laplacian", 2e-3), ("hessian-trace", 3e-3),
                               ("hutchinson", 1e-3))
    ]  # fmt: skip
    frame = _frame(rows)
    summary = analysis.summary_frame(frame)
    assert summary["fastest"].iloc[0] == "forward-laplacian"
    assert analysis.operator_of(frame) == "laplacian"
    assert analysis.fixed_modes("laplacian") == {
        "forward-laplacian": "forward-laplacian",
        "hessian-trace": "hessian-trace",
    }


def test_split_operators_keeps_the_order_of_first_appearance():
    jac = fixture_frame().assign(operator="jacobian")
    lap = jac.assign(operator="laplacian")
    parts = analysis.split_operators(pd.concat([lap, jac], ignore_index=True))
    assert [(op, len(rows)) for op, rows in parts] == [("laplacian", 12), ("jacobian", 12)]
    assert analysis.split_operators(jac.drop(columns="operator"))[0][0] == "jacobian"
    assert analysis.operator_of(jac.iloc[0:0]) == "jacobian"


def test_method_order_follows_the_methods_then_user_routines_by_name():
    columns = ["depth", "widths", "reverse", "zeta.py:jac", "forward", "alpha.py:jac", "fwd/rev"]
    assert analysis.method_order(columns, ["reverse", "forward"]) == [
        "reverse",
        "forward",
        "alpha.py:jac",
        "zeta.py:jac",
    ]
    assert analysis.method_order(columns, None)[:2] == ["forward", "reverse"]
    assert analysis.user_methods(columns) == ["zeta.py:jac", "alpha.py:jac"]


# --------------------------------------------------------------------- peers
def _with_peers(frame: pd.DataFrame) -> pd.DataFrame:
    """auto at the faster of forward and reverse; torch.func's jacrev 2× reverse, jacfwd 3×
    forward; autograd 4× everywhere; naive left out of the comparison."""
    mlp = frame[frame["method"] != "mixed"]
    best = mlp.loc[mlp.groupby("widths")["median_s"].idxmin()].assign(method="auto")
    peers = [best]
    for name, family, base, factor in (
        ("func-jacrev", "torch.func", "reverse", 2.0),
        ("func-jacfwd", "torch.func", "forward", 3.0),
        ("autograd-reverse", "autograd", "reverse", 4.0),
        ("naive-reverse", "naive", "reverse", 9.0),
    ):
        rows = mlp[mlp["method"] == base]
        peers.append(rows.assign(method=name, family=family, median_s=rows["median_s"] * factor))
    return pd.concat([frame, *peers], ignore_index=True)


def test_peer_comparison_gives_each_familys_best_over_auto():
    table = analysis.peer_comparison(_with_peers(fixture_frame()))
    assert len(table) == 4
    assert {"auto", "torch.func", "× torch.func", "autograd", "× autograd"} <= set(table.columns)
    assert "naive" not in table.columns
    p1 = table[table["d_out"] == 1]
    # at P=1 auto is reverse's time: torch.func's best is its jacrev, 2×
    assert p1["× torch.func"].tolist() == pytest.approx([2.0, 2.0])
    p128 = table[table["d_out"] == 128]
    # at P=128 auto is forward's time: jacfwd 3×, jacrev 2 × 4 = 8×; autograd 4 × 4 = 16×
    assert p128["× torch.func"].tolist() == pytest.approx([3.0, 3.0])
    assert p128["× autograd"].tolist() == pytest.approx([16.0, 16.0])
    assert analysis.geometric_mean(table["× torch.func"]) == pytest.approx(math.sqrt(6))
    assert math.isnan(analysis.geometric_mean(pd.Series([np.nan])))
    assert analysis.peer_comparison(fixture_frame()).empty  # auto not timed


# ------------------------------------------------------------------- devices
def test_devices_side_by_side_puts_each_device_in_a_column_with_its_ratio():
    cpu = fixture_frame()
    cuda = cpu.assign(device="cuda", median_s=cpu["median_s"] / 10)
    frame = pd.concat([cpu, cuda], ignore_index=True)
    assert analysis.devices_of(frame) == ["cpu", "cuda"]
    table = analysis.devices_side_by_side(frame, fixture_samples(frame))
    assert len(table) == 12  # four shapes × three methods
    assert table["ratio cuda"].tolist() == pytest.approx([0.1] * 12, rel=0.05)
    assert set(table["verdict cuda"]) == {"faster"}
    assert (table["ci_high cuda"] < 1).all()
    forward = table[(table["method"] == "forward") & (table["depth"] == 4)]
    assert forward["cpu"].tolist() == pytest.approx([4e-3, 4e-3])
    assert analysis.devices_side_by_side(cpu).empty  # one device
    unsure = analysis.devices_side_by_side(frame)  # no samples: no test
    assert set(unsure["verdict cuda"]) == {"unsure"}


# ------------------------------------------------------------------- compare
def test_compare_verdicts_count_and_records():
    a, b = fixture_frame(), fixture_frame(scale_reverse=1.5)
    merged = stats.compare_runs(a, fixture_samples(a), b, fixture_samples(b), 0.1)
    counts = analysis.verdict_counts(merged)
    # reverse ×1.5 everywhere, mixed ×1.5 at P=1 (where it is reverse's time)
    assert counts == {
        "regressed": 6, "slower": 0, "same": 6, "faster": 0, "improved": 0, "unsure": 0
    }  # fmt: skip
    records = analysis.compare_records(merged)
    reverse = [r for r in records if r["method"] == "reverse"]
    assert [r["verdict"] for r in reverse] == ["regressed"] * 4
    assert [r["ratio"] for r in reverse] == pytest.approx([1.5] * 4, rel=0.02)
    assert all(r["samples_a"] == r["samples_b"] == 20 for r in records)
    # past 1.1 but under a 60% threshold: slower, not regressed
    merged = stats.compare_runs(a, fixture_samples(a), b, fixture_samples(b), 0.6)
    assert analysis.verdict_counts(merged)["slower"] == 6
    bare = stats.compare_runs(a, a.iloc[0:0], b, b.iloc[0:0], 0.1)
    assert analysis.compare_records(bare)[0]["ci_low"] is None
    assert analysis.verdict_counts(bare)["unsure"] == 12


def _scaled(frame: pd.DataFrame, factor: float, method: str | None = None) -> pd.DataFrame:
    """``frame`` with every row's (or ``method``'s) time times ``factor``."""
    scaled = frame.copy()
    rows = scaled["method"] == method if method else slice(None)
    scaled.loc[rows, "median_s"] *= factor
    return scaled


def test_compare_of_unchanged_code_on_a_machine_that_drifted_claims_no_change():
    """An A/A comparison: every row 0.58× (the machine ran faster in the second run, as a
    shared VM does minutes apart) is no improvement; the footer says why rows are unsure."""
    a = fixture_frame()
    b = _scaled(a, 0.58)
    merged = stats.compare_runs(a, fixture_samples(a), b, fixture_samples(b), 0.1)
    counts = analysis.verdict_counts(merged)
    assert counts["improved"] == counts["faster"] == counts["regressed"] == 0
    assert counts["unsure"] == 12 and merged["moved"].all()
    assert merged.attrs["shift"] == pytest.approx(0.58, rel=0.02)
    assert "the whole run moved by 0.58×" in report.compare_sentence(merged, 0.1)


def test_compare_finds_one_methods_regression_beside_a_drift_of_the_machine():
    a = fixture_frame()
    b = _scaled(_scaled(a, 0.8), 2.0, method="forward")  # forward: 1.6×, the rest 0.8×
    merged = stats.compare_runs(a, fixture_samples(a), b, fixture_samples(b), 0.1)
    verdicts = dict(zip(merged["method"], map(analysis.compare_verdict, merged.to_dict("records"))))
    assert verdicts["forward"] == "regressed"
    assert not merged.loc[merged["method"] != "forward", "improved"].any()
    # Two devices side by side: every row is expected to move; nothing is taken out.
    apart = stats.compare_runs(
        a, fixture_samples(a), b, fixture_samples(b), 0.1, same_machine=False
    )
    assert apart["improved"].sum() > 0 and not apart["moved"].any()


# --------------------------------------------------------------------- plots
def test_plot_data_groups_depths_and_makes_ratio_grids():
    frame = fixture_frame()
    series = analysis.depth_series(frame)
    keys = [key for key, _ in series]
    assert keys == [(64, 32, 1, 2, "float32", "cpu"), (64, 32, 128, 2, "float32", "cpu")]
    assert all(sorted(g["depth"].unique()) == [2, 4] for _, g in series)
    assert analysis.ratio_grids(frame) == []  # one D: no map
    wide = pd.concat([frame, frame.assign(d_in=128)], ignore_index=True)
    grids = analysis.ratio_grids(wide)
    assert [key for key, _ in grids] == [(2, 32, 2, "float32", "cpu"), (4, 32, 2, "float32", "cpu")]
    grid = grids[0][1]
    assert list(grid.index) == [1, 128] and list(grid.columns) == [64, 128]
    assert grid.loc[1, 64] == pytest.approx(4.0) and grid.loc[128, 128] == pytest.approx(0.25)
    only_forward = wide[wide["method"] != "reverse"]
    assert analysis.ratio_grids(only_forward) == []  # no ratio without both modes


# ------------------------------------------------------------- machine load
def test_machine_load_reads_both_ends_and_judges_busy():
    meta = {
        "environment": {"threads": 2},
        "machine_at_start": {"load_average": [0.1, 0.1, 0.1]},
        "machine_at_end": {"load_average": [2.2, 1.0, 0.5]},
    }
    load = analysis.machine_load(meta)
    assert (load.threads, load.other_cores, load.load_at_start, load.load_at_end) == (
        2,
        None,
        0.1,
        2.2,
    )
    assert not load.busy  # 2.2 at the end is mostly the run's 2 threads
    meta["machine_at_start"]["load_average"] = [1.4, 1.0, 0.5]
    assert analysis.machine_load(meta).busy
    meta["machine_at_start"]["other_cores"] = 0.02  # what ran as the run began wins
    assert not analysis.machine_load(meta).busy
    assert analysis.machine_load({}) == analysis.MachineLoad(0, None, None, None)
    assert not analysis.machine_load({}).busy
