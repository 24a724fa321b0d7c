"""Grading a class, directly: each mistake counted by its kind, every entry of the folder a
row, the class's files written as students finish, resumed, locked, stopped, and the
leaderboard's rule (peers timed beside each student, intervals, ties, not ranked)."""

import json
import math
import os
import signal
import subprocess
import sys

import filelock
import numpy as np
import pandas as pd
import pytest

from jacbench.faces import class_files, class_grading, class_speed
from jacbench.measure.rows import Mistake
from jacbench.runs import sandbox

from .test_cli import invoke
from .test_workers import CLASS, RIGHT

FUNCTION = "my_backward_2a"
FAST = {"function": FUNCTION, "quick": True, "call_timeout": 20, "min_time": 0.02}
# Right on every case (all small), wrong at one of --quick's timed shapes (L=5, D=200).
WRONG_WHEN_BIG = RIGHT.replace(
    "    return J\n", "    return 2 * J if L == 5 and x.shape[0] == 200 else J\n"
)
# Right on every case, and past any call timeout at that shape.
SLOW_WHEN_BIG = "import time\n" + RIGHT.replace(
    "    return J\n", "    if L == 5 and x.shape[0] == 200:\n        time.sleep(30)\n    return J\n"
)
KILLS_ITSELF = "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n"


def _class(tmp_path, files):
    made = tmp_path / "class"
    made.mkdir()
    for name, text in files.items():
        (made / name).parent.mkdir(parents=True, exist_ok=True)
        (made / name).write_text(text)
    return made


class Recorder(class_grading.ClassProgress):
    """What grade_class told, and who grades.csv held on disk as each student began."""

    def __init__(self, out=None):
        self.out, self.begun, self.on_disk = out, [], {}

    def grading(self, submission):
        self.begun.append(submission.student)
        if self.out is not None:
            rows = class_files.read_grades(self.out / "grades.csv")
            self.on_disk[submission.student] = [r["student"] for r in rows]


# ------------------------------------------------------------------------ mistakes
@pytest.mark.slow  # over 5 s on two cores: run by .ci/run, not by plain pytest
def test_each_wrong_submission_is_counted_by_its_kind(tmp_path):
    names = ("ben.py", "cy.py", "eve.py", "fay.py")
    folder = _class(tmp_path, {n: CLASS[n] for n in names} | {"hal/notes.py": "x = 1\n"})
    found = class_grading.find_submissions(folder, FUNCTION)
    assert [s.student for s in found] == ["ben", "cy", "eve", "fay", "hal"]
    rows = class_grading.grade_class(found, **FAST).rows
    kinds = {r["student"]: r["mistake"] for r in rows}
    assert kinds == {
        "ben": Mistake.SLOPES_LEFT_OUT.value,
        "cy": Mistake.TRANSPOSED.value,
        "eve": Mistake.SYNTAX_ERROR.value,
        "fay": Mistake.MISSING_FUNCTION.value,
        "hal": Mistake.MISSING_FUNCTION.value,
    }
    assert not any(r["passed"] or r["ranked"] for r in rows)
    ben = rows[0]
    assert ben["cases"] == len(class_grading.grading_cases(False)) and ben["cases_passed"] < 11
    first = next(c for c in ben["details"] if not c["passed"])
    assert ben["problem"] == f"{first['case']}: {first['problem']}"
    assert first["mistake"] == Mistake.SLOPES_LEFT_OUT.value
    assert rows[4]["problem"] == f"no .py file in hal/ defines {FUNCTION}"


def test_a_routine_of_the_other_convention_is_wrong_arguments(tmp_path):
    body = "def f(net, x):\n    return jacobian_reverse(net, x)\n"
    (tmp_path / "lib.py").write_text(f"from jacbench import jacobian_reverse\n\n{body}")
    submission = class_grading.Submission("lib", f"{tmp_path / 'lib.py'}:f")
    owner = sandbox.submission_owner("lib", tmp_path / "lib.py")
    try:
        row = class_grading.grade_submission(
            submission, convention="textbook", call_timeout=20, owner=owner
        )
    finally:
        sandbox.close(owner)
    assert row["mistake"] == Mistake.WRONG_ARGUMENTS.value
    assert row["problem"] == "takes (net, x); this exercise's routine takes (x, L, param_dict)"
    assert row["ranked"] is False and math.isnan(row["time_vs_reverse"])


# ------------------------------------------------------------------------ every entry
def test_every_entry_of_the_folder_gets_a_row(tmp_path):
    (tmp_path / "elsewhere.py").write_text(RIGHT)
    folder = _class(
        tmp_path,
        {
            ".hidden.py": RIGHT,
            "_private.py": RIGHT,
            "notes.txt": "not code\n",
            "x.py": RIGHT,
            "x/helpers.py": "SCALE = 1\n",
            "x/main.py": RIGHT,
            "hal/notes.py": "x = 1\n",
            "__pycache__/ada.cpython-311.pyc": "",
        },
    )
    (folder / "empty").mkdir()
    (folder / "loop.py").symlink_to("loop.py")
    (folder / "gone.py").symlink_to("nowhere.py")
    (folder / "outside.py").symlink_to(tmp_path / "elsewhere.py")
    (folder / "linked.py").symlink_to("_private.py")
    (folder / "itself").symlink_to(".")
    os.mkfifo(folder / "pipe.py")
    found = {s.student: s for s in class_grading.find_submissions(folder, FUNCTION)}
    problems = {name: s.problem for name, s in found.items() if s.spec is None}
    assert problems == {
        "empty": "empty/ is empty",
        "gone": "gone.py is a link to a missing file",
        "hal": f"no .py file in hal/ defines {FUNCTION}",
        "itself": "itself is a link out of the class's folder",
        "loop": "loop.py is a link that loops back on itself",
        "notes.txt": "notes.txt is not a Python file",
        "outside": "outside.py is a link out of the class's folder",
        "pipe.py": "pipe.py is not a regular file",
    }
    graded = {name: s.spec for name, s in found.items() if s.spec is not None}
    assert graded == {
        ".hidden": f"{folder / '.hidden.py'}:{FUNCTION}",
        "_private": f"{folder / '_private.py'}:{FUNCTION}",
        "linked": f"{folder / '_private.py'}:{FUNCTION}",  # the link's target, in the folder
        "x.py": f"{folder / 'x.py'}:{FUNCTION}",  # x.py and x/ keep their whole names
        "x": f"{folder / 'x' / 'main.py'}:{FUNCTION}",
    }
    assert found["x"].files == str(folder / "x")  # helpers.py goes into the sandbox too
    for name in problems:  # each a row of its own, as the grade writes it
        row = class_grading.grade_submission(found[name])
        assert (row["student"], row["mistake"]) == (name, Mistake.MISSING_FUNCTION.value)
        assert row["problem"] == problems[name]
        assert row["source"] == found[name].entry == str(folder / found[name].entry)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode")
def test_an_unreadable_file_is_a_row(tmp_path):
    folder = _class(tmp_path, {"ada.py": RIGHT})
    (folder / "ada.py").chmod(0)
    (found,) = class_grading.find_submissions(folder, FUNCTION)
    assert found.spec is None and found.problem == "ada.py cannot be read (Permission denied)"


def test_the_grades_own_folder_inside_the_class_is_no_student(tmp_path):
    folder = _class(tmp_path, {"ada.py": RIGHT})
    (folder / "grades").mkdir()
    found = class_grading.find_submissions(folder, FUNCTION, ignore=[folder / "grades"])
    assert [s.student for s in found] == ["ada"]


# ------------------------------------------------------------------------ the files
@pytest.mark.slow  # over 5 s on two cores: run by .ci/run, not by plain pytest
def test_rows_appear_as_students_finish_and_survive_one_that_kills_itself(tmp_path):
    folder = _class(tmp_path, {"ada.py": RIGHT, "bob.py": KILLS_ITSELF, "cy.py": CLASS["cy.py"]})
    out = tmp_path / "grades"
    told = Recorder(out)
    found = class_grading.find_submissions(folder, FUNCTION)
    graded = class_grading.grade_class(found, out=out, progress=told, **FAST)
    assert told.on_disk == {"ada": [], "bob": ["ada"], "cy": ["ada", "bob"]}
    rows = {r["student"]: r for r in class_files.read_grades(out / "grades.csv")}
    assert list(rows) == ["ada", "bob", "cy"]
    assert rows["ada"]["passed"] and rows["ada"]["ranked"]
    assert rows["bob"]["mistake"] == Mistake.FAILS_WHEN_LOADED.value
    assert rows["bob"]["problem"].startswith("loading it ")
    assert rows["cy"]["mistake"] == Mistake.TRANSPOSED.value
    assert sorted(p.name for p in (out / "output").iterdir()) == ["ada.txt", "bob.txt", "cy.txt"]
    record = json.loads((out / "grading.json").read_text())
    assert record["function"] == FUNCTION and record["sessions"][0]["finished"]
    written = {p.relative_to(out).as_posix() for p in graded.written}
    assert written == {
        "grades.csv",
        "summary.md",
        "output/ada.txt",
        "output/bob.txt",
        "output/cy.txt",
    }
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow  # over 5 s on two cores: run by .ci/run, not by plain pytest
def test_resume_keeps_the_graded_and_grades_the_rest(tmp_path):
    folder = _class(tmp_path, {"ben.py": CLASS["ben.py"], "fay.py": CLASS["fay.py"]})
    out = tmp_path / "grades"
    first = class_grading.grade_class(
        class_grading.find_submissions(folder, FUNCTION), out=out, **FAST
    )
    (folder / "eve.py").write_text(CLASS["eve.py"])  # a late submission
    (folder / "fay.py").unlink()
    (folder / "fay").mkdir()  # fay's source changed: a folder now
    (folder / "fay" / "mine.py").write_text(CLASS["ben.py"])
    with pytest.raises(class_files.ClassFolderError, match="holds grades already .* --resume"):
        class_grading.grade_class(class_grading.find_submissions(folder, FUNCTION), out=out, **FAST)
    told = Recorder()
    again = class_grading.grade_class(
        class_grading.find_submissions(folder, FUNCTION, ignore=[out]),
        out=out,
        resume=True,
        progress=told,
        **FAST,
    )
    assert told.begun == ["eve", "fay"]
    assert again.kept == 1
    rows = class_files.read_grades(out / "grades.csv")
    assert [r["student"] for r in rows] == ["ben", "eve", "fay"]
    kept = {k: v for k, v in first.rows[0].items() if k != "details"}
    assert {k: v for k, v in rows[0].items() if k != "details"} == pytest.approx(kept, nan_ok=True)
    assert [r["mistake"] for r in rows[1:]] == ["syntax error", "σ' left out"]
    sessions = json.loads((out / "grading.json").read_text())["sessions"]
    assert len(sessions) == 2 and all(s["finished"] for s in sessions)
    with pytest.raises(class_files.ClassFolderError, match="graded without --convention"):
        class_grading.grade_class([], out=out, resume=True, convention="textbook", **FAST)


def test_a_second_grade_into_a_folder_in_use_is_refused(tmp_path):
    folder = _class(tmp_path, {"ada.py": RIGHT})
    out = tmp_path / "grades"
    out.mkdir()
    with filelock.FileLock(out / ".lock", is_singleton=False):
        result = invoke("grade", folder, "--function", FUNCTION, "--out", out)
    assert result.exit_code == 2
    assert " ".join(result.output.split()) == (
        f"Error: {out} is in use by another jacbench grade; wait for it to finish, or choose "
        "another --out"
    )
    assert list(out.iterdir()) == [out / ".lock"]


def test_resume_refuses_a_folder_without_grades(tmp_path):
    folder = _class(tmp_path, {"ada.py": RIGHT})
    result = invoke("grade", folder, "--function", FUNCTION, "--out", tmp_path / "g", "--resume")
    assert result.exit_code == 2
    assert "nothing to resume in" in result.output and "it holds no grades" in result.output


@pytest.mark.slow  # over 5 s on two cores: run by .ci/run, not by plain pytest
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_a_stopped_grade_keeps_the_finished_and_resumes(tmp_path, stop):
    folder = _class(tmp_path, {"ada.py": RIGHT, "bob.py": "import time\ntime.sleep(600)\n"})
    out = tmp_path / "grades"
    args = ["grade", str(folder), "--function", FUNCTION, "--quick", "--out", str(out),
            "--min-time", "0.02", "--call-timeout", "300"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "jacbench", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stderr is not None
    for line in proc.stderr:  # ada's row is written before bob is begun
        if line.startswith("grading bob"):
            break
    proc.send_signal(stop)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + stop, err
    assert f"continue with: jacbench grade {folder}" in err and "--resume" in err
    assert [r["student"] for r in class_files.read_grades(out / "grades.csv")] == ["ada"]
    session = json.loads((out / "grading.json").read_text())["sessions"][0]
    assert session["interrupted"] and session["finished"] is None
    (folder / "bob.py").write_text(CLASS["eve.py"])
    result = invoke(*args, "--resume")
    assert result.exit_code == 0, result.output
    grades = pd.read_csv(out / "grades.csv")
    assert grades["student"].tolist() == ["ada", "bob"]
    assert grades["mistake"].fillna("").tolist() == ["", "syntax error"]


# ------------------------------------------------------------------------ the leaderboard
@pytest.mark.slow  # over 5 s on two cores: run by .ci/run, not by plain pytest
def test_equal_routines_tie_against_peers_timed_beside_each(tmp_path, monkeypatch):
    folder = _class(tmp_path, {"ann.py": RIGHT, "bea.py": RIGHT})
    timed = []
    real = class_speed.sweep

    def counted(methods, **keywords):
        timed.append([m if isinstance(m, str) else m.name for m in methods])
        return real(methods, **keywords)

    monkeypatch.setattr(class_speed, "sweep", counted)
    found = class_grading.find_submissions(folder, FUNCTION)
    graded = class_grading.grade_class(found, **FAST)
    # per student, the peers and the student in turn, the order alternating from pass to pass
    peers, turns = list(class_speed.PEERS), []
    for spec in (s.spec for s in found):
        for number in range(class_speed.PASSES):
            turns += [peers, [spec]] if number % 2 == 0 else [[spec], peers]
    assert timed == turns
    grades = class_grading.grades_frame(graded.rows)
    seen = grades[["student", "time_vs_reverse", "time_vs_reverse_low", "time_vs_reverse_high"]]
    seen = f"{seen.to_string()}\n{grades['problem'].tolist()}\n{graded.load.warning()}"
    assert grades["ranked"].tolist() == [True, True], seen
    for row in graded.rows:
        assert 0 < row["time_vs_reverse_low"] <= row["time_vs_reverse"]
        assert row["time_vs_reverse"] <= row["time_vs_reverse_high"]
    places = [place for place, _ in class_grading.leaderboard(grades)]
    assert places == ["1=", "1="], seen


def test_a_shape_without_a_time_means_not_ranked(tmp_path):
    folder = _class(tmp_path, {"odd.py": SLOW_WHEN_BIG})
    out = tmp_path / "grades"
    graded = class_grading.grade_class(
        class_grading.find_submissions(folder, FUNCTION), out=out, **{**FAST, "call_timeout": 3}
    )
    (row,) = graded.rows
    assert row["passed"] and row["cases_passed"] == row["cases"]
    assert not row["ranked"] and math.isnan(row["time_vs_reverse"])
    assert row["problem"].startswith("not ranked: no time at L=5 D=200 K=200 P=1: ")
    assert row["mistake"] == Mistake.TIMEOUT.value
    summary = (out / "summary.md").read_text()
    assert "1 of 1 students pass every case; 0 are ranked by speed." in summary
    assert f"- odd: {row['problem'].removeprefix('not ranked: ')}" in summary
    assert "leaderboard" not in class_grading.gradescope_results(row, 1.0, 11)


def test_right_on_the_cases_and_wrong_when_timed_fails(tmp_path):
    """A routine right on every case and wrong at a timed shape is wrong: it does not pass,
    in grades.csv nor in Gradescope's results (no case's point stands)."""
    folder = _class(tmp_path, {"odd.py": WRONG_WHEN_BIG})
    graded = class_grading.grade_class(class_grading.find_submissions(folder, FUNCTION), **FAST)
    (row,) = graded.rows
    assert row["cases_passed"] == row["cases"] and not row["passed"] and not row["ranked"]
    assert row["mistake"] == Mistake.WRONG_VALUES.value
    assert row["problem"].startswith("no time at L=5 D=200 K=200 P=1: ")
    results = class_grading.gradescope_results(row, 1.0, 11)
    assert sum(t["score"] for t in results["tests"]) == 0


def _peers_and_student(seconds_by_shape):
    """Made-up timings: the peers at 1 and 2 ms everywhere, a student at the given seconds
    (None: timed out)."""
    rng = np.random.default_rng(0)
    rows, samples = [], []
    for widths, seconds in seconds_by_shape.items():
        sizes = [int(w) for w in widths.split("-")]
        shape = {"widths": widths, "depth": len(sizes) - 2, "d_in": sizes[0], "width": sizes[1],
                 "d_out": sizes[-1], "batch": 1, "dtype": "float32", "device": "cpu"}  # fmt: skip
        for method, centre in (("reverse", 1e-3), ("naive-reverse", 2e-3), ("me", seconds)):
            row = {**shape, "method": method, "status": "ok", "median_s": centre}
            row.update(mistake="", message="")
            if centre is None:
                row.update(status="timeout", median_s=math.nan, mistake="timeout")
                row["message"] = "did not return in 3 s"
            rows.append(row)
            for value in [] if centre is None else centre * (1 + 0.01 * rng.standard_normal(10)):
                samples.append({**shape, "method": method, "process": 0, "seconds": value})
    frame, found = pd.DataFrame(rows), pd.DataFrame(samples)
    grid = tuple((tuple(int(w) for w in s.split("-")), 1) for s in seconds_by_shape)
    peers = class_speed.PeerTimings(frame[frame.method != "me"], found[found.method != "me"], grid)
    return peers, frame[frame.method == "me"], found[found.method == "me"]


def test_a_students_speed_is_the_geometric_mean_with_its_interval():
    peers, rows, samples = _peers_and_student({"200-200-200-200-1": 2e-3, "2-30-30-10": 0.5e-3})
    speed = class_speed.speed_against(rows, samples, "me", peers, "reverse")
    assert speed.missing == "" and speed.ratio == pytest.approx(1.0, rel=0.02)
    assert speed.low < speed.ratio < speed.high < 1.05
    textbook = class_speed.speed_against(rows, samples, "me", peers, "naive-reverse")
    assert textbook.ratio == pytest.approx(0.5, rel=0.02)


def test_a_shape_without_a_time_leaves_the_student_unranked_with_the_reason():
    peers, rows, samples = _peers_and_student({"200-200-200-200-1": 2e-3, "2-30-30-10": None})
    speed = class_speed.speed_against(rows, samples, "me", peers, "reverse")
    assert math.isnan(speed.ratio) and math.isnan(speed.low)
    assert speed.missing == "no time at L=2 D=2 K=30 P=10: did not return in 3 s"
    assert speed.mistake == "timeout"


def test_ranks_share_a_place_where_students_are_not_told_apart():
    ranks = class_speed.ranks(
        {
            "ann": (1.00, 0.95, 1.05),
            "bob": (1.04, 1.03, 1.06),  # overlaps ann: tied
            "cy": (1.07, 1.061, 1.08),  # apart from bob, but under 5% slower: tied
            "dee": (1.50, 1.40, 1.60),  # apart and far: behind the three
            "eve": (3.00, 2.90, 3.10),
        }
    )
    assert ranks == {"ann": 1, "bob": 1, "cy": 1, "dee": 4, "eve": 5}


def test_the_class_files_count_mistakes_and_rank_the_right(tmp_path):
    rows = []
    for student, passed, mistake, speed in (
        ("ann", True, "", (1.5, 1.4, 1.6)),
        ("bob", False, "transposed", None),
        ("col", False, "transposed", None),
        ("dan", True, "", (0.8, 0.75, 0.85)),
        ("eli", True, "", (0.82, 0.8, 0.9)),
        ("fox", True, "", None),
    ):
        row = class_files.empty_row(student, f"/class/{student}.py:f")
        row.update(passed=passed, cases=11, cases_passed=11 if passed else 3, mistake=mistake)
        if speed is not None:
            row.update(ranked=True, time_vs_reverse=speed[0], time_vs_textbook=speed[0] / 3)
            row.update(time_vs_reverse_low=speed[1], time_vs_reverse_high=speed[2])
        elif passed:
            row["problem"] = "not ranked: no time at L=3 D=200 K=200 P=1: timeout"
        rows.append(row)
    busy = class_speed.Load(({"during": "ann", "other_cores": 1.25},))
    with class_files.ClassFolder(tmp_path, {"function": "f"}) as folder:
        folder.record["machine"] = list(busy.spans)
        written = folder.write(rows, "f")
    summary = (tmp_path / "summary.md").read_text()
    assert "4 of 6 students pass every case; 3 are ranked by speed." in summary
    assert "> **Warning:** The machine was busy: other work used up to 1.2 cores' worth " in (
        summary
    )
    assert "| transposed | 2 |" in summary
    assert "| 1= | dan | 0.80 | 0.75–0.85 | 0.27 |" in summary
    assert "| 1= | eli | 0.82 | 0.80–0.90 | 0.27 |" in summary
    assert "| 3 | ann | 1.50 | 1.40–1.60 | 0.50 |" in summary
    assert "- fox: no time at L=3 D=200 K=200 P=1: timeout" in summary
    assert [p.name for p in written] == ["grades.csv", "summary.md"]
    back = class_files.read_grades(tmp_path / "grades.csv")
    assert [r["ranked"] for r in back] == [True, False, False, True, True, False]
    assert back[0]["time_vs_reverse_low"] == 1.4 and math.isnan(back[1]["time_vs_reverse"])
    result = class_grading.gradescope_results(rows[3], elapsed_s=1.23, cases=11, load=busy)
    assert result["leaderboard"][0]["value"] == 0.8
    assert "(95% interval 0.75–0.85)" in result["output"] and "machine was busy" in result["output"]
    assert "leaderboard" not in class_grading.gradescope_results(rows[5], 1.0, 11)
    assert json.dumps(result)  # Gradescope reads it as JSON
