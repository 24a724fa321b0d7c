import math

import pandas as pd
import pytest
import torch

from jacbench import sweep
from jacbench.measure.rows import COLUMNS, SAMPLE_COLUMNS, Status
from jacbench.runs import bench, harness, methods, tasks
from jacbench.runs.grid import Point
from jacbench.runs.harness import run_sweep
from jacbench.runs.methods import Method
from jacbench.runs.operators import OPERATORS
from jacbench.runs.options import SweepOptions
from jacbench.runs.results import read_samples as results_samples
from jacbench.runs.settings import Settings, Timing
from jacbench.runs.tasks import estimated_memory_bytes

POINTS = (Point((5, 6, 6, 2), 1), Point((5, 6, 6, 2), 3))


def _config(
    names=("forward", "reverse", "func-jacrev"),
    points=POINTS,
    validate=True,
    **timing,
):
    """Settings made directly, as resolve() would make them from options."""
    chosen = tuple(methods.get_method(m) for m in names)
    timing = Timing(**{"min_time": 0.01, **timing})
    return Settings(SweepOptions(), tuple(points), chosen, timing=timing, validate=validate)


def test_run_sweep_yields_validated_timed_rows():
    rows = list(run_sweep(_config()))
    assert [(r.batch, r.method) for r in rows] == [
        (1, "forward"),
        (1, "reverse"),
        (1, "func-jacrev"),
        (3, "forward"),
        (3, "reverse"),
        (3, "func-jacrev"),
    ]
    for row in rows:
        assert row.status is Status.OK
        assert row.max_rel_err < 1e-5
        assert row.median_s > 0 and row.runs >= 1
        assert row.predicted_mode == "reverse"
        assert row.gflops == pytest.approx(row.flops / row.median_s / 1e9)
    assert rows[3].flops == 3 * rows[0].flops


def test_skip_leaves_out_done_tasks():
    config = _config()
    skip = frozenset({config.points[0].key("forward")})
    rows = list(run_sweep(config, done=skip))
    assert len(rows) == 5
    assert (rows[0].batch, rows[0].method) == (1, "reverse")


@pytest.fixture
def extra_methods(monkeypatch):
    def wrong(net, x):
        return lambda: (
            torch.zeros(x.shape[0], net.d_out, net.d_in)
            if x.ndim == 2
            else torch.zeros(net.d_out, net.d_in)
        )

    def transposed(net, x):
        return lambda: torch.zeros(net.d_in, net.d_out)

    def oom(net, x):
        def call():
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 TiB")

        return call

    def broken(net, x):
        def call():
            raise RuntimeError("something else")

        return call

    def sluggish(net, x):
        def call():
            return methods.jacobian_reverse(net, x)

        call.sluggish = True  # its first call reads as an hour: the clock is not consulted
        return call

    builders = [
        ("wrong", wrong),
        ("transposed", transposed),
        ("oom", oom),
        ("broken", broken),
        ("sluggish", sluggish),
    ]
    for name, build in builders:
        monkeypatch.setitem(methods.METHODS, name, Method(name, "test", "reverse", name, build))
    clock = tasks.timing.time_once

    def time_once(fn, device="cpu"):
        return 3600.0 if getattr(fn, "sluggish", False) else clock(fn, device)

    monkeypatch.setattr(tasks.timing, "time_once", time_once)


def test_statuses_wrong_oom_error_slow(extra_methods):
    config = _config(
        points=(Point((4, 5, 2), 1),),
        names=("wrong", "transposed", "oom", "broken", "sluggish", "reverse"),
        max_call_time=60,
    )
    rows = {r.method: r for r in run_sweep(config)}
    assert rows["wrong"].status is Status.WRONG
    assert rows["wrong"].max_rel_err == pytest.approx(1.0)
    # The words of jacbench check and grade (jacbench.runs.diagnosis)
    assert rows["wrong"].message == "max relative error 1 > 0.0001"
    assert math.isnan(rows["wrong"].median_s)  # a wrong result is never shown as a timing
    assert rows["transposed"].status is Status.WRONG
    assert (
        rows["transposed"].message
        == "returns the transpose: shape (4, 2), expected (P, D) = (2, 4)"
    )
    assert rows["oom"].status is Status.OOM
    assert "out of memory" in rows["oom"].message
    assert rows["broken"].status is Status.ERROR
    assert rows["broken"].message == "raised RuntimeError: something else"
    assert rows["sluggish"].status is Status.SLOW
    assert rows["sluggish"].runs == 1
    assert rows["reverse"].status is Status.OK  # the sweep went on


def test_no_validate_makes_unchecked_timed_rows():
    rows = list(run_sweep(_config(validate=False, names=("reverse",))))
    assert {r.status for r in rows} == {Status.UNCHECKED}
    assert all(math.isnan(r.max_rel_err) and r.median_s > 0 for r in rows)
    assert rows[0].message == "not checked: validation is off"


def test_reference_out_of_memory_marks_rows_unchecked(monkeypatch):
    def no_memory(point, net, x, operator):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 9 TB")

    monkeypatch.setattr(bench, "point_reference", no_memory)
    rows = list(run_sweep(_config(names=("reverse",))))
    assert {r.status for r in rows} == {Status.UNCHECKED}
    assert rows[0].message == "not checked: the float64 reference ran out of memory"


def test_task_that_would_exhaust_memory_is_skipped_as_oom(monkeypatch):
    monkeypatch.setattr(tasks, "_available_memory_bytes", lambda: 10)
    rows = list(run_sweep(_config(names=("reverse",))))
    assert {r.status for r in rows} == {Status.OOM}
    assert rows[0].message.startswith("skipped: needs about")


def test_memory_estimate_of_autograd_forward_grows_with_batch_squared():

    point = Point((64, 64, 64, 1), 8)
    plan = OPERATORS["jacobian"].costs(point.widths, point.batch, torch.float32)
    one = estimated_memory_bytes(point, methods.METHODS["func-jacfwd"], plan)
    assert one == 8 * 64 * (64 + 64) * 4 * 4  # B · D · ΣK · 4 live blocks · 4 bytes
    assert estimated_memory_bytes(point, methods.METHODS["autograd-forward"], plan) == 8 * one
    assert (
        estimated_memory_bytes(point, methods.METHODS["reverse"], plan)
        == plan.memory_bytes["reverse"]
    )


def test_rounds_interleave_methods_and_keep_every_status(extra_methods):
    config = _config(
        points=(Point((4, 5, 2), 1),),
        names=("wrong", "oom", "broken", "sluggish", "reverse", "forward"),
        max_call_time=60,
        rounds=3,
    )
    rows = {r.method: r for r in run_sweep(config)}
    assert [rows[m.name].status.value for m in config.methods] == [
        "wrong",
        "oom",
        "error",
        "slow",
        "ok",
        "ok",
    ]
    assert rows["reverse"].runs >= 3  # at least one block from each round
    assert rows["sluggish"].runs == 1


def test_sweep_returns_a_typed_frame_of_every_row():
    frame = sweep(["reverse", "auto"], depths=[2], d_in=[3], width=[4], d_out=[1, 2], min_time=0.01)
    assert list(frame.columns) == list(COLUMNS)
    assert len(frame) == 4
    assert list(frame["status"]) == ["ok"] * 4
    assert frame["depth"].dtype == "Int64" and frame["median_s"].dtype == "float64"
    assert list(frame["widths"]) == ["3-4-4-1", "3-4-4-1", "3-4-4-2", "3-4-4-2"]


def test_sweep_times_callables_of_both_conventions_validated():
    from . import user_routines

    methods = [
        user_routines.library_batched,
        user_routines.textbook_reverse,
        user_routines.transposed,
    ]
    frame = sweep(methods, depths=[2], d_in=[3], width=[5], d_out=[2], batch=[1, 4], min_time=0.01)
    by_method = frame.set_index(["method", "batch"])
    assert set(frame["family"]) == {"user"}
    assert set(by_method.loc["library_batched", "status"]) == {"ok"}
    assert set(by_method.loc["textbook_reverse", "status"]) == {"ok"}
    assert (frame.loc[frame["status"] == "ok", "max_rel_err"] < 1e-5).all()
    # a (D, P) result where (P, D) is due: wrong at every point, and never a timing
    assert set(by_method.loc["transposed", "status"]) == {"wrong"}
    assert by_method.loc["transposed", "median_s"].isna().all()
    assert by_method.loc["transposed", "message"].str.contains("shape").all()
    assert "tests.user_routines:library_batched" in set(frame["source"])


def test_sweep_refuses_two_routines_of_one_name():
    from . import user_routines

    def textbook_reverse(x, L, param_dict):  # another function of the same name
        return user_routines.textbook_reverse(x, L, param_dict)

    with pytest.raises(ValueError, match="two methods are named 'textbook_reverse'"):
        sweep([user_routines.textbook_reverse, textbook_reverse], depths=[1])


def test_sweep_writes_a_run_folder_and_resumes_it(tmp_path):
    out = tmp_path / "run"
    options = dict(depths=[1], d_in=[3], width=[4], d_out=[2], min_time=0.01, out=out)
    first = sweep(["reverse", "forward"], **options)
    assert {p.name for p in out.iterdir()} == {
        ".lock",
        "results.csv",
        "samples.csv",
        "meta.json",
        "summary.md",
    }
    lines = (out / "results.csv").read_text().splitlines(keepends=True)
    (out / "results.csv").write_text("".join(lines[:-1]))  # cut short before forward's row
    resumed = sweep(out=out, resume=True)  # the folder's own run, as it was made
    assert list(resumed["method"]) == ["reverse", "forward"]
    pd.testing.assert_frame_equal(resumed.iloc[:1], first.iloc[:1])
    with pytest.raises(ValueError, match=r"other settings \(methods: reverse forward → reverse"):
        sweep(["reverse"], **options, resume=True)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"methods": ["nope"]}, "unknown method 'nope'"),
        ({"preset": "nope"}, "unknown preset 'nope'"),
        ({"depths": [0]}, "depths takes whole numbers ≥ 1, got 0"),
        ({"d_in": [2.5]}, "d_in takes whole numbers ≥ 1, got 2.5"),
        ({"dtype": "float16"}, "unknown dtype 'float16'"),
        ({"rounds": 0}, "rounds must be ≥ 1, got 0"),
        ({"min_time": 0}, "min_time and max_call_time must be > 0"),
        ({"init": "zeros"}, "unknown init 'zeros'"),
        ({"activation": "gelu"}, "unknown activation 'gelu'"),
        ({"preset": "peers", "depths": [3]}, "a fixed list of shapes"),
        ({"methods": ["auto-cudagraph"]}, "auto-cudagraph"),
    ],
)
def test_sweep_refuses_bad_options_in_one_line(options, message):
    with pytest.raises(ValueError, match=message) as raised:
        sweep(**options)
    assert "\n" not in str(raised.value)


def test_validate_points_checks_every_routine_and_activation():
    points = [Point((3, 4, 4, 2), 2, "float64")]
    routines = harness.validation_routines([1])
    checks = harness.validate_points(points, routines, activations=("tanh", "relu"))
    assert [c["routine"] for c in checks[:6]] == [
        "forward",
        "reverse",
        "mixed",
        "auto",
        "forward chunk_size=1",
        "reverse chunk_size=1",
    ]
    assert [c["activation"] for c in checks] == ["tanh"] * 6 + ["relu"] * 6
    assert max(c["max_rel_err"] for c in checks) < 1e-12


def test_every_timed_row_keeps_its_samples_and_an_interval_around_its_median(tmp_path):
    out = tmp_path / "run"
    frame = sweep(
        ["forward", "reverse"],
        depths=[1, 2],
        d_in=[3],
        width=[8],
        d_out=[2],
        batch=[1, 3],
        min_time=0.02,
        rounds=3,
        out=out,
    )
    samples = pd.read_csv(out / "samples.csv")
    assert list(samples.columns) == list(SAMPLE_COLUMNS)
    assert (frame["status"] == "ok").all()
    assert (frame["ci_low_s"] <= frame["median_s"]).all()
    assert (frame["median_s"] <= frame["ci_high_s"]).all()
    counts = samples.groupby(["widths", "batch", "method"]).size()
    for _, row in frame.iterrows():
        assert counts[(row["widths"], row["batch"], row["method"])] == row["runs"]
        mine = samples[(samples["widths"] == row["widths"]) & (samples["method"] == row["method"])]
        mine = mine[mine["batch"] == row["batch"]]
        assert mine["seconds"].median() == pytest.approx(row["median_s"])
    assert set(samples["round"]) == {0, 1, 2}
    pd.testing.assert_frame_equal(
        frame.attrs["samples"].reset_index(drop=True), results_samples(out), check_dtype=False
    )


def test_resume_drops_the_samples_of_a_row_that_never_reached_results_csv(tmp_path):
    out = tmp_path / "run"
    options = dict(depths=[1], d_in=[3], width=[4], d_out=[2], min_time=0.01, out=out)
    sweep(["reverse", "forward"], **options)
    lines = (out / "results.csv").read_text().splitlines(keepends=True)
    (out / "results.csv").write_text("".join(lines[:-1]))  # killed after forward's samples
    resumed = sweep(["reverse", "forward"], **options, resume=True)
    samples = pd.read_csv(out / "samples.csv")
    forward = resumed.set_index("method").loc["forward"]
    assert (samples["method"] == "forward").sum() == forward["runs"]  # only the new blocks


@pytest.mark.slow  # over 5 s on two cores: run by .ci/run, not by plain pytest
def test_processes_pool_every_process_samples_into_one_row_each(tmp_path):
    out = tmp_path / "run"
    options = dict(depths=[1], d_in=[3], width=[4], d_out=[2], min_time=0.01)
    frame = sweep(["reverse", "forward"], **options, processes=2, out=out)
    assert list(frame["method"]) == ["reverse", "forward"]
    assert (frame["status"] == "ok").all()
    samples = pd.read_csv(out / "samples.csv")
    assert set(samples["process"]) == {0, 1}
    for process in (0, 1):  # each process kept its own run folder
        own = pd.read_csv(out / "processes" / str(process) / "results.csv")
        assert list(own["method"]) == ["reverse", "forward"]
    runs = samples.groupby("method").size()
    assert runs["reverse"] == frame.set_index("method").loc["reverse", "runs"]
    assert (frame["ci_low_s"] <= frame["median_s"]).all()
    assert (frame["median_s"] <= frame["ci_high_s"]).all()
    with pytest.raises(ValueError, match="processes > 1 takes methods and models by name"):
        sweep([lambda net, x: x], **options, processes=2)


def test_processes_pool_a_wrong_row_as_wrong():
    from jacbench.runs.processes import pool
    from jacbench.runs.results import RunData

    good = sweep(["reverse"], depths=[1], d_in=[3], width=[4], d_out=[2], min_time=0.01)
    bad = good.assign(status="wrong", median_s=float("nan"), message="relative error 1")
    rows = pool([RunData(good, good.attrs["samples"], {}), RunData(bad, bad.iloc[0:0], {})])
    assert [(r.status.value, r.message) for r in rows] == [("wrong", "relative error 1")]


def test_every_timed_row_says_what_its_jacobian_costs_in_evaluations_of_the_function():
    """evals = median_s / primal_s, primal_s the network's own forward pass at the point's
    input, one per point."""
    frame = sweep(
        depths=[1, 8], d_in=[6], width=[32], d_out=[2], methods=["reverse"], min_time=0.02
    )
    assert frame["primal_s"].notna().all() and (frame["primal_s"] > 0).all()
    assert frame["evals"].to_numpy() == pytest.approx(
        (frame["median_s"] / frame["primal_s"]).to_numpy()
    )
