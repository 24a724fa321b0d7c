import re
from pathlib import Path

import pandas as pd
import pytest

from jacbench.faces.grading import check, count_matmul_flops, grading_cases
from jacbench.runs.routines import RoutineError

from . import user_routines

ROUTINES = Path(__file__).with_name("user_routines.py")
EXAMPLES = Path(__file__).parent.parent / "examples" / "textbook.py"


def _problems(report) -> set[str]:
    return set(report.cases.loc[~report.cases["passed"], "problem"])


def test_the_textbook_routines_pass_every_case():
    for name in ("my_backward_2a", "my_forward_2b"):
        report = check(f"{EXAMPLES}:{name}", time=False)
        assert report.passed, report.cases
        assert len(report.cases) == len(grading_cases(batched=False)) == 11
        assert (report.cases["max_rel_err"] < 1e-6).all()
        assert report.timings is None


def test_hints_count_the_routines_flops_against_the_cost_model():
    reverse = check(f"{EXAMPLES}:my_backward_2a", time=False).hints
    assert reverse == [
        "Matmul FLOPs at L=3 D=64 K=64 P=1: your routine 49,152; jacbench forward "
        "1,081,344, reverse 49,152 (cost model)."
    ]
    forward = check(f"{EXAMPLES}:my_forward_2b", time=False).hints
    assert "your routine 2,654,208" in forward[0]
    assert "3 calls to torch.diag" in forward[1] and "128× the work at K=64" in forward[1]
    assert "54× the FLOPs of reverse mode here, in forward-mode order" in forward[2]


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("forgets_layer_2", "matches the Jacobian with σ' left out at layer 2"),
        ("forgets_every_slope", "matches the Jacobian with no σ' at any layer"),
        ("transposed", "returns the transpose: shape"),
        ("mutates_its_weights", "changes param_dict in place (W1)"),
        ("returns_nan", "the result holds NaN or inf"),
        ("raises", "raised RuntimeError: not written yet"),
    ],
)
def test_what_looks_wrong_is_named(name, problem):
    report = check(f"{ROUTINES}:{name}", time=False)
    assert not report.passed
    assert any(p.startswith(problem) for p in _problems(report)), _problems(report)
    assert report.timings is None  # a wrong routine is not timed


def test_forgotten_layer_2_passes_where_there_is_no_layer_2():
    cases = check(f"{ROUTINES}:forgets_layer_2", time=False).cases.set_index("case")
    assert cases.loc["L=1", "passed"]
    assert not cases.loc["L=2", "passed"] and not cases.loc["L=8", "passed"]


def test_square_transpose_is_told_from_its_values():
    cases = check(f"{ROUTINES}:transposed", time=False).cases.set_index("case")
    assert cases.loc["D = P", "problem"].startswith("returns the transpose Jᵀ")


def test_an_error_that_grows_with_depth_gets_a_hint():
    report = check(user_routines.wrong_when_deep, time=False)
    assert not report.passed
    # Shallow nets are right to rounding (how little depends on the kernels tuned here),
    # deep ones off by half.
    found = re.match(
        r"The error grows with depth \(L=1: (\S+), L=2: (\S+), L=5: 0\.5, L=8: 0\.5\)",
        report.hints[0],
    )
    assert found, report.hints[0]
    assert float(found[1]) < 1e-12 and float(found[2]) < 1e-12


def test_a_batched_routine_is_graded_on_a_batch():
    report = check(user_routines.library_batched, time=False)
    assert report.routine.batched and report.passed
    assert report.cases["case"].iloc[-1] == "batch of 4"


def test_a_passing_routine_is_timed_against_jacbench_and_torch_func():
    report = check(f"{EXAMPLES}:my_backward_2a", quick=True, min_time=0.01)
    timings = report.timings
    assert set(timings["status"]) == {"ok"}
    assert list(dict.fromkeys(timings["method"])) == [
        f"{EXAMPLES}:my_backward_2a",
        "forward",
        "reverse",
        "auto",
        "func-jacrev",
    ]
    assert timings["widths"].nunique() == 3
    user = timings[timings["family"] == "user"]
    assert (user["source"] == f"{EXAMPLES.resolve()}:my_backward_2a").all()


def test_an_unloadable_routine_raises_one_line():
    with pytest.raises(RoutineError, match="no such file"):
        check("missing.py:f")


def test_count_matmul_flops_counts_matrix_vector_products():
    import torch

    a, v, b = torch.ones(3, 4), torch.ones(4), torch.ones(4, 5)
    assert count_matmul_flops(lambda: (a @ v, a @ b)) == 2 * 3 * 4 + 2 * 3 * 4 * 5


def test_checks_timings_warn_of_a_busy_machine_and_noisy_rows():
    import pandas as pd

    from jacbench.faces.grading import timing_warnings

    quiet = pd.DataFrame({"median_s": [1e-3, 2e-3], "noisy": [False, False]})
    assert timing_warnings(quiet, 0.1) == []
    assert timing_warnings(quiet, None) == []
    busy, noisy = timing_warnings(quiet.assign(noisy=[True, False]), 1.3)
    assert "busy: other work used 1.3 cores' worth" in busy
    assert noisy.startswith("1 of 2 timings are noisy")


def test_a_check_right_on_its_cases_and_wrong_when_timed_does_not_pass():
    from jacbench.faces.grading import CheckReport
    from jacbench.runs.routines import from_callable

    routine = from_callable(lambda net, x: x, timeout=5)
    cases = pd.DataFrame({"passed": [True, True]})
    timings = pd.DataFrame(
        {
            "method": [routine.name, "reverse"],
            "status": ["wrong", "ok"],
            "message": ["returned a different result when timed (…)", ""],
        }
    )
    report = CheckReport(routine, cases, timings)
    assert not report.passed
    assert report.wrong_when_timed.startswith("returned a different result when timed")
    assert CheckReport(routine, cases, timings.assign(status="ok")).passed
    assert CheckReport(routine, cases).passed  # not timed: the cases say
