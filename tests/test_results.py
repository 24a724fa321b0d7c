import csv
import json
import re
from pathlib import Path

import pytest

from jacbench.measure.rows import COLUMNS, ResultsFileError, Row, RowKey
from jacbench.runs import results
from jacbench.runs.results import RunDirError, RunWriter


def _row(method="forward", **kw):
    values = dict(
        depth=1,
        d_in=3,
        width=4,
        d_out=2,
        widths=(3, 4, 2),
        batch=1,
        dtype="float32",
        device="cpu",
        method=method,
        median_s=1e-3,
    )
    return Row(**{**values, **kw})


def _write(run, params=None, rows=("forward",), **kw):
    with RunWriter(run, params or {"a": 1}, **kw) as writer:
        for method in rows:
            writer.append(_row(method))
    return writer


def test_rows_are_appended_once_in_schema_order(tmp_path):
    with RunWriter(tmp_path / "run", {"a": 1}) as writer:
        writer.append(_row("forward"))
        writer.append(_row("reverse"))
        writer.append(_row("forward"))  # already there: not written twice
    with (tmp_path / "run" / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(COLUMNS)
    assert [r["method"] for r in rows] == ["forward", "reverse"]
    assert rows[0]["status"] == "ok" and rows[0]["median_s"] == "0.001"


def test_meta_is_written_atomically_with_settings(tmp_path):
    with RunWriter(tmp_path / "run", {"depths": [3]}) as writer:
        writer.write_meta(command="jacbench run", started="now")
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta == {"command": "jacbench run", "started": "now", "settings": {"depths": [3]}}
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_resume_repairs_a_torn_last_line(tmp_path):
    writer = _write(tmp_path / "run")
    with writer.csv_path.open("a") as handle:
        handle.write("1,3,4,2,3-4-2,1,float32,cpu,rev")  # killed mid-row
    with RunWriter(tmp_path / "run", {"a": 1}, resume=True) as resumed:
        assert resumed.done == {RowKey((3, 4, 2), 1, "float32", "cpu", "forward")}
        resumed.append(_row("reverse"))
    frame = results.read_results(tmp_path / "run")
    assert list(frame["method"]) == ["forward", "reverse"]


def test_refuses_other_parameters_or_a_second_run_without_resume(tmp_path):
    _write(tmp_path / "run")
    with pytest.raises(RunDirError, match=r"other settings \(a: 1 → 2\)"):
        _write(tmp_path / "run", {"a": 2})
    with pytest.raises(RunDirError, match="already holds this run; pass --resume"):
        _write(tmp_path / "run")
    _write(tmp_path / "run", resume=True, rows=("reverse",))  # allowed


def test_a_folder_in_use_is_refused(tmp_path):
    with RunWriter(tmp_path / "run", {"a": 1}) as writer:
        writer.append(_row())
        for resume in (False, True):
            with pytest.raises(RunDirError, match="is in use by another jacbench run"):
                _write(tmp_path / "run", resume=resume)
    _write(tmp_path / "run", resume=True, rows=("reverse",))  # free again once the first is done


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("{header}\n{good}\ngarbage,1\n{good2}\n", "line 3"),
        ("a,b,c\n1,2,3\n", "its columns differ"),
        ("{header}\n{good}\n{good}\n", "a second row with the same key"),
        ("\x00\xff\xfe garbage\n", "cannot resume"),
    ],
)
def test_resume_refuses_a_damaged_results_csv_and_leaves_it(tmp_path, damage, message):
    run = tmp_path / "run"
    writer = _write(run, rows=("forward", "reverse"))
    header, good, good2 = writer.csv_path.read_text().splitlines()
    text = damage.format(header=header, good=good, good2=good2)
    writer.csv_path.write_bytes(text.encode("latin-1"))
    before = writer.csv_path.read_bytes()
    with pytest.raises(RunDirError, match=message) as raised:
        _write(run, resume=True)
    assert "\n" not in str(raised.value)
    assert writer.csv_path.read_bytes() == before


def test_an_empty_results_csv_resumes_as_no_rows(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.csv").write_text("")
    _write(tmp_path / "run", resume=True)
    assert list(results.read_results(tmp_path / "run")["method"]) == ["forward"]


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ("{not json", "is not valid JSON (line 1)"),
        ("[1, 2]", "not a JSON object"),
        ('{"x": 1}', "was not written by jacbench"),
    ],
)
def test_a_corrupt_or_foreign_meta_json_is_refused_and_left(tmp_path, meta, message):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "meta.json").write_text(meta)
    for resume in (False, True):
        with pytest.raises(RunDirError, match=re.escape(message)):
            _write(tmp_path / "run", resume=resume)
    assert (tmp_path / "run" / "meta.json").read_text() == meta
    assert not (tmp_path / "run" / "results.csv").exists()


def test_read_results_names_the_file_it_cannot_read(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text("x,y\n1,2\n")
    with pytest.raises(ResultsFileError, match=f"{path} is not a jacbench results file"):
        results.read_results(tmp_path)
    path.write_text("")
    with pytest.raises(ResultsFileError, match=f"{path} is empty"):
        results.read_results(path)
    path.write_text(",".join(COLUMNS) + "\n1,2\n" + "1," * 40 + "\n")
    damaged = f"{path} is damaged: line 2 has 2 fields, expected {len(COLUMNS)}"
    with pytest.raises(ResultsFileError, match=damaged):
        results.read_results(path)
    with pytest.raises(FileNotFoundError):
        results.read_results(tmp_path / "missing")


def test_read_pytest_benchmark_refuses_other_json(tmp_path):
    path = tmp_path / "b.json"
    path.write_text('{"benchmarks": [{"extra_info": {}, "stats": {}}]}')
    with pytest.raises(ResultsFileError, match="holds no jacbench benchmarks"):
        results.read_pytest_benchmark(path)
    path.write_text("[]")
    with pytest.raises(ResultsFileError, match="is not a pytest-benchmark JSON file"):
        results.read_pytest_benchmark(path)


def test_default_run_dir_never_reuses_a_run(tmp_path):
    first = results.default_run_dir("cuda:0", tmp_path)
    assert first.name.endswith("-cuda0")
    first.mkdir()
    (first / "results.csv").write_text("")
    assert results.default_run_dir("cuda:0", tmp_path).name.endswith("-cuda0-2")


def test_environment_has_versions():
    env = results.environment("cpu")
    assert env["torch"] and env["jacbench"] and env["threads"] >= 1


def test_a_run_without_out_stays_out_of_the_committed_results():
    """A checkout's results/ holds the committed runs; a user's go to ./jacbench-results/."""
    assert results.default_run_dir("cpu").parts[0] == "jacbench-results"
    ignored = (Path(__file__).parent.parent / ".gitignore").read_text().splitlines()
    assert "jacbench-results/" in ignored


def test_compare_warns_when_the_runs_built_other_networks():
    import pandas as pd

    from jacbench.runs.results import RunData, run_differences

    rows = pd.DataFrame({"device": ["cpu"], "dtype": ["float32"]})
    built = {"settings": {"build": {"seed": 0, "init": "lecun", "activation": "tanh"}}}
    other = {"settings": {"build": {"seed": 1, "init": "lecun", "activation": "tanh"}}}
    legacy = {"params": {"seed": 0, "init": "lecun", "activation": "tanh"}}
    same = run_differences(RunData(rows, rows, built), RunData(rows, rows, legacy))
    assert same == ([], [])
    refusals, warnings = run_differences(RunData(rows, rows, built), RunData(rows, rows, other))
    assert refusals == [] and warnings == ["build.seed: 0 → 1"]
