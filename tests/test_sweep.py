import math

import pytest
import torch

from jacbench import methods
from jacbench.methods import Method
from jacbench.sweep import Point, SweepConfig, expand_grid, run_sweep, task_key


def test_expand_grid_is_the_product_without_repeats():
    points = expand_grid(depths=[1, 2], d_ins=[3, 3], widths=[4], d_outs=[1, 2], batches=[1, 5])
    assert len(points) == 2 * 1 * 2 * 2
    assert points[0] == Point((3, 4, 1), 1, "float32", "cpu")
    assert Point((3, 4, 4, 2), 5).shape_label == "L=2 D=3 K=4 P=2 B=5 float32 cpu"
    assert Point((8, 2, 9, 1)).shape_label.startswith("L=2 D=8 widths=8-2-9-1 P=1")


def test_explicit_widths_join_the_grid():
    points = expand_grid(depths=[], d_ins=[], widths=[], d_outs=[], explicit_widths=[(8, 2, 8)])
    assert [p.widths for p in points] == [(8, 2, 8)]


def _config(**kwargs):
    defaults = dict(
        points=(Point((5, 6, 6, 2), 1), Point((5, 6, 6, 2), 3)),
        methods=("forward", "reverse", "func-jacrev"),
        min_time=0.01,
    )
    return SweepConfig(**{**defaults, **kwargs})


def test_run_sweep_yields_validated_timed_rows():
    rows = list(run_sweep(_config()))
    assert [(r["batch"], r["method"]) for r in rows] == [
        (1, "forward"),
        (1, "reverse"),
        (1, "func-jacrev"),
        (3, "forward"),
        (3, "reverse"),
        (3, "func-jacrev"),
    ]
    for row in rows:
        assert row["status"] == "ok"
        assert row["max_rel_err"] < 1e-5
        assert row["median_s"] > 0 and row["runs"] >= 1
        assert row["predicted_mode"] == "reverse"
        assert row["gflops"] == pytest.approx(row["flops"] / row["median_s"] / 1e9)
    assert rows[3]["flops"] == 3 * rows[0]["flops"]


def test_skip_leaves_out_done_tasks():
    config = _config()
    skip = frozenset({task_key(config.points[0], "forward")})
    rows = list(run_sweep(_config(skip=skip)))
    assert len(rows) == 5
    assert (rows[0]["batch"], rows[0]["method"]) == (1, "reverse")


@pytest.fixture
def extra_methods(monkeypatch):
    def wrong(net, x):
        return lambda: (
            torch.zeros(x.shape[0], net.d_out, net.d_in)
            if x.ndim == 2
            else torch.zeros(net.d_out, net.d_in)
        )

    def oom(net, x):
        def call():
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 TiB")

        return call

    def broken(net, x):
        def call():
            raise RuntimeError("something else")

        return call

    def sluggish(net, x):
        import time

        def call():
            time.sleep(0.05)
            return methods.jacobian_reverse(net, x)

        return call

    for name, build in [("wrong", wrong), ("oom", oom), ("broken", broken), ("sluggish", sluggish)]:
        monkeypatch.setitem(methods.METHODS, name, Method(name, "test", "reverse", name, build))


def test_statuses_invalid_oom_error_slow(extra_methods):
    config = _config(
        points=(Point((4, 5, 2), 1),),
        methods=("wrong", "oom", "broken", "sluggish", "reverse"),
        max_call_time=0.01,
    )
    rows = {r["method"]: r for r in run_sweep(config)}
    assert rows["wrong"]["status"] == "invalid"
    assert rows["wrong"]["max_rel_err"] == pytest.approx(1.0)
    assert "relative error" in rows["wrong"]["message"]
    assert rows["oom"]["status"] == "oom"
    assert "out of memory" in rows["oom"]["message"]
    assert rows["broken"]["status"] == "error"
    assert "RuntimeError: something else" in rows["broken"]["message"]
    assert rows["sluggish"]["status"] == "slow"
    assert rows["sluggish"]["runs"] == 1
    assert rows["reverse"]["status"] == "ok"  # the sweep went on


def test_no_validate_leaves_error_empty():
    rows = list(run_sweep(_config(validate=False, methods=("reverse",))))
    assert all(math.isnan(r["max_rel_err"]) for r in rows)


def test_task_that_would_exhaust_memory_is_skipped_as_oom(monkeypatch):
    from jacbench import sweep

    monkeypatch.setattr(sweep, "_available_memory_bytes", lambda: 10)
    rows = list(run_sweep(_config(methods=("reverse",))))
    assert {r["status"] for r in rows} == {"oom"}
    assert "skipped: needs about" in rows[0]["message"]


def test_memory_estimate_of_autograd_forward_grows_with_batch_squared():
    from jacbench import cost
    from jacbench.sweep import estimated_memory_bytes

    point = Point((64, 64, 64, 1), 8)
    plan = cost.plan(point.widths, point.batch)
    one = estimated_memory_bytes(point, methods.METHODS["func-jacfwd"], plan)
    assert estimated_memory_bytes(point, methods.METHODS["autograd-forward"], plan) == 8 * one
    assert (
        estimated_memory_bytes(point, methods.METHODS["reverse"], plan)
        == plan.memory_bytes["reverse"]
    )


def test_rounds_interleave_methods_and_keep_every_status(extra_methods):
    config = _config(
        points=(Point((4, 5, 2), 1),),
        methods=("wrong", "oom", "broken", "sluggish", "reverse", "forward"),
        max_call_time=0.01,
        rounds=3,
    )
    rows = {r["method"]: r for r in run_sweep(config)}
    assert [rows[m]["status"] for m in config.methods] == [
        "invalid",
        "oom",
        "error",
        "slow",
        "ok",
        "ok",
    ]
    assert rows["reverse"]["runs"] >= 3  # at least one block from each round
    assert rows["sluggish"]["runs"] == 1
    assert rows["wrong"]["median_s"] > 0  # invalid rows are still timed, and reported
