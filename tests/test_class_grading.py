"""Grading a class, directly: each mistake counted by its kind, the class's files made."""

import json
import math

import pytest

from jacbench.faces import class_grading
from jacbench.measure.rows import Mistake

from .test_workers import CLASS


@pytest.fixture
def folder(tmp_path):
    made = tmp_path / "class"
    made.mkdir()
    for name in ("ben.py", "cy.py", "eve.py", "fay.py"):
        (made / name).write_text(CLASS[name])
    (made / "hal").mkdir()  # a folder whose files define no such function
    (made / "hal" / "notes.py").write_text("x = 1\n")
    return made


def test_each_wrong_submission_is_counted_by_its_kind(folder):
    found = class_grading.find_submissions(folder, "my_backward_2a")
    assert [s.student for s in found] == ["ben", "cy", "eve", "fay", "hal"]
    rows = class_grading.grade_class(found, quick=True, call_timeout=20)
    kinds = {r["student"]: r["mistake"] for r in rows}
    assert kinds == {
        "ben": Mistake.SLOPES_LEFT_OUT.value,
        "cy": Mistake.TRANSPOSED.value,
        "eve": Mistake.SYNTAX_ERROR.value,
        "fay": Mistake.MISSING_FUNCTION.value,
        "hal": Mistake.MISSING_FUNCTION.value,
    }
    assert not any(r["passed"] for r in rows)
    ben = next(r for r in rows if r["student"] == "ben")
    assert ben["cases"] == len(class_grading.grading_cases(False)) and ben["cases_passed"] < 11
    first = next(c for c in ben["details"] if not c["passed"])
    assert ben["problem"] == f"{first['case']}: {first['problem']}"
    assert first["mistake"] == Mistake.SLOPES_LEFT_OUT.value


def test_a_routine_of_the_other_convention_is_wrong_arguments(tmp_path):
    body = "def f(net, x):\n    return jacobian_reverse(net, x)\n"
    (tmp_path / "lib.py").write_text(f"from jacbench import jacobian_reverse\n\n{body}")
    submission = class_grading.Submission("lib", f"{tmp_path / 'lib.py'}:f")
    row = class_grading.grade_submission(submission, convention="textbook", call_timeout=20)
    assert row["mistake"] == Mistake.WRONG_ARGUMENTS.value
    assert row["problem"] == "takes (net, x); this exercise's routine takes (x, L, param_dict)"


def test_the_class_files_count_mistakes_and_rank_the_right(tmp_path):
    rows = [
        {**dict.fromkeys(class_grading.COLUMNS, ""), "student": s, "passed": p, "cases": 11,
         "cases_passed": 11 if p else 3, "mistake": m, "max_rel_err": math.nan,
         "time_vs_reverse": t, "time_vs_textbook": math.nan, "details": []}
        for s, p, m, t in (
            ("ann", True, "", 1.5),
            ("bob", False, "transposed", math.nan),
            ("col", False, "transposed", math.nan),
            ("dan", True, "", 0.8),
        )
    ]  # fmt: skip
    written = class_grading.write_class(tmp_path, rows, "f")
    summary = (tmp_path / "summary.md").read_text()
    assert "2 of 4 students pass every case." in summary
    assert "| transposed | 2 |" in summary
    assert summary.index("| dan |") < summary.index("| ann |")  # the faster first
    assert [p.name for p in written] == ["grades.csv", "summary.md"]
    result = class_grading.gradescope_results(rows[3], elapsed_s=1.23)
    assert result["leaderboard"][0]["value"] == 0.8
    assert json.dumps(result)  # Gradescope reads it as JSON
