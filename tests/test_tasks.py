"""The task pipeline: one implementation, the same rows in this process and in a worker."""

import math

import pytest

from jacbench.measure.rows import Mistake, Status
from jacbench.runs import routines
from jacbench.runs.bench import Bench
from jacbench.runs.executors import InProcess, StepFailed
from jacbench.runs.grid import Point
from jacbench.runs.methods import get_method
from jacbench.runs.options import SweepOptions
from jacbench.runs.settings import Settings, Timing
from jacbench.runs.tasks import PointTasks, run_point

from . import user_routines

HOSTILE = "tests/hostile_routines.py"
POINT = Point((4, 6, 6, 3), 1, "float64")


def _prepared(isolated, spec, *, point=POINT, timeout=20.0):
    method = routines.resolve(spec, timeout=timeout, isolated=isolated)
    assert (method.owner is not None) == isolated  # a sandbox of its own, or this process
    timing = Timing(min_time=0.01, call_timeout=timeout, max_call_time=math.inf)
    settings = Settings(SweepOptions(), (point,), (method,), timing=timing)
    tasks = PointTasks(point, settings)
    try:
        row = tasks.prepare(method)
        timed = tasks.measure(method, 0.01) if tasks.waiting(method) else None
    finally:
        tasks.close()
    return row, timed


@pytest.mark.parametrize("isolated", [False, True], ids=["in process", "in its sandbox"])
@pytest.mark.parametrize(
    ("spec", "status", "mistake", "message"),
    [
        ("tests.user_routines:library_batched", Status.OK, "", ""),
        ("tests.user_routines:textbook_reverse", Status.OK, "", ""),
        (
            "tests.user_routines:transposed",
            Status.WRONG,
            Mistake.TRANSPOSED,
            "returns the transpose: shape (4, 3), expected (P, D) = (3, 4)",
        ),
        (f"{HOSTILE}:returns_a_list", Status.WRONG, Mistake.NOT_A_TENSOR, "returned a list"),
        (f"{HOSTILE}:exits", Status.ERROR, Mistake.CRASH, "raised SystemExit: 0"),
        (
            f"{HOSTILE}:mutates_and_sets_threads",
            Status.WRONG,
            Mistake.CHANGES_ARGUMENTS,
            "changes x in place: a routine must not modify its arguments",
        ),
    ],
)
def test_both_executors_give_the_same_row(isolated, spec, status, mistake, message):
    row, timed = _prepared(isolated, spec)
    assert row.status is status
    assert row.mistake == mistake
    assert message in row.message
    if status is Status.OK:
        assert row.max_rel_err < 1e-10 and timed is not None and timed.runs >= 1
    else:
        assert timed is None  # a wrong or failed task is never timed


def test_a_worker_past_its_deadline_is_a_timeout_and_its_next_point_goes_on():
    row, _ = _prepared(True, f"{HOSTILE}:forever", timeout=2.0)
    assert (row.status, row.mistake) == (Status.TIMEOUT, Mistake.TIMEOUT)
    assert row.message == "did not return within 2 s"
    row, _ = _prepared(True, "tests.user_routines:library_batched")
    assert row.status is Status.OK


def test_a_worker_that_dies_is_a_crash_and_the_bench_is_hosted_again():
    """A routine that kills its worker fails its own row; the point's next method finds its
    bench built again in the fresh worker."""
    crash = routines.resolve(f"{HOSTILE}:hard_exit", timeout=20)
    good = routines.resolve("tests.user_routines:library_batched", timeout=20)
    settings = Settings(SweepOptions(), (POINT,), (crash, good), timing=Timing(min_time=0.01))
    rows = {r.method: r for r in run_point(POINT, [crash, good], settings, None)}
    assert rows[crash.name].status is Status.ERROR
    assert rows[crash.name].mistake == Mistake.CRASH
    assert rows[crash.name].message == "exited with code 3"
    assert rows[good.name].status is Status.OK and rows[good.name].median_s > 0


def test_the_bench_builds_the_point_once_and_gives_plain_results():
    bench = Bench(POINT, Settings(SweepOptions(), (), ()).build, False, "jacobian")
    failure, costs = bench.describe()
    assert failure == "" and costs.predicted in ("forward", "reverse", "mixed")
    assert bench.reference() == "not checked: validation is off"
    assert math.isnan(bench.build(get_method("reverse"), "reverse"))
    result, changed = bench.result("reverse")
    assert (result.kind, result.array, result.dtype, result.shape) == (
        "Tensor",
        True,
        "float64",
        (3, 4),
    )
    assert changed is None  # jacbench's own method: its arguments are not watched


def test_an_executor_turns_what_a_step_raises_into_data():
    executor = InProcess()
    executor.open(dict, deadline=1)  # any factory: the hosted object is a dict
    with pytest.raises(StepFailed) as caught:
        executor.call("pop", "missing", deadline=1)
    assert caught.value.mistake is Mistake.RAISES
    assert str(caught.value) == "raised KeyError: 'missing'"


def test_a_function_given_by_value_runs_in_a_sandbox_of_its_own():
    row, timed = _prepared(True, user_routines.library_batched)  # a test module's: importable
    assert row.status is Status.OK and timed is not None
    assert routines.resolve(lambda net, x: x, isolated=True).owner is None  # cannot go there


SEEN: list[float] = []


def _remembers_inputs(net, x):
    def call():
        SEEN.append(float(x.sum()))  # which input: their values differ
        return x.sum()

    return call


def test_a_users_routine_is_timed_on_a_new_input_every_call():
    """NOTE: [Every timed call checked]: a block's inputs are new, drawn by its seed, each
    scaled by the digest of the result before it; the results are committed to by digests
    before any is asked for; the parent draws the same inputs for its references."""
    from jacbench.runs.bench import block_draws, chained_input
    from jacbench.runs.methods import Method
    from jacbench.runs.plain import digest, tensor_of

    mine = Method("mine", "user", "", "mine", _remembers_inputs, source="here")
    bench = Bench(POINT, Settings(SweepOptions(), (), ()).build, True, "jacobian")
    bench.build(mine, "mine")
    SEEN.clear()
    digests = bench.timed_block(mine, "mine", 12345, 40)
    assert len(digests) == 40 and len(set(SEEN)) == len(SEEN) == 40  # no input twice
    again = bench.timed_block(mine, "mine", 54321, 40)
    assert not set(SEEN[:40]) & set(SEEN[40:])  # another seed, other inputs
    found = bench.block_results([3, 39, 40])
    assert sorted(found) == [3, 39]  # only calls the block made
    assert [digest(found[i]) for i in (3, 39)] == [again[3], again[39]]
    # the parent's side draws the same inputs from the seed and the digest before
    x = chained_input(block_draws(POINT, 54321, 40)[3], again[2])
    assert float(tensor_of(found[3])) == pytest.approx(float(x.sum()))
    # each input follows from the result before it: another result, another input
    assert float(chained_input(block_draws(POINT, 54321, 40)[3], again[1]).sum()) != float(x.sum())


def test_each_round_after_the_first_runs_the_methods_in_its_own_order():
    """NOTE: [Each round in its own order]: the listed order first, then orders drawn from
    the round's number (the same run, the same orders), under which a method does not
    follow the same neighbour every round."""
    from jacbench.runs.tasks import round_order

    assert round_order(8, 0) == list(range(8))
    orders = [round_order(8, r) for r in range(3)]
    assert all(sorted(o) == list(range(8)) for o in orders)
    assert orders == [round_order(8, r) for r in range(3)]  # reproducible
    before = [{o[i]: o[i - 1] for i in range(1, 8)} for o in orders]  # method → predecessor
    assert any(len({b.get(m) for b in before}) > 1 for m in range(8))
    assert round_order(1, 2) == [0]


def test_rounds_time_every_method_in_each_round_and_tag_its_blocks():
    """Three rounds of two methods: each row's blocks carry rounds 0, 1 and 2, about as many
    in each (NOTE: [Blocks of one size])."""
    methods = [get_method("reverse"), get_method("forward")]
    timing = Timing(min_time=0.06, rounds=3)
    settings = Settings(SweepOptions(), (POINT,), tuple(methods), timing=timing)
    rows = list(run_point(POINT, methods, settings, None))
    assert [row.method for row in rows] == ["reverse", "forward"]  # in the listed order
    for row in rows:
        assert row.status is Status.OK
        counts = [sum(1 for _, r, _ in row.samples if r == round_) for round_ in range(3)]
        assert min(counts) >= 5 and max(counts) <= 3 * min(counts), counts


def test_a_bfloat16_array_of_numpys_or_jaxs_is_its_tensor_exactly():
    # torch takes no NumPy bfloat16 (ml_dtypes', JAX's): JAX's bfloat16 rows read "wrong".
    ml_dtypes = pytest.importorskip("ml_dtypes")
    import numpy as np
    import torch

    from jacbench.runs.diagnosis import as_tensor
    from jacbench.runs.plain import plain_of, tensor_of

    values = [0.6758, -0.2363, 3.0, 1e-3]
    array = np.array(values, dtype=ml_dtypes.bfloat16)
    expected = torch.tensor(values, dtype=torch.bfloat16)
    assert torch.equal(as_tensor(array), expected)
    plain = plain_of(array)
    assert plain.array and plain.dtype == "bfloat16"
    assert torch.equal(tensor_of(plain), expected)
