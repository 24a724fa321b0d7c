import csv
import json

import pytest

from jacbench import results
from jacbench.results import COLUMNS, RunDirError, RunWriter


def _row(method="forward", **kw):
    row = {c: "" for c in COLUMNS}
    row.update(
        depth=1,
        d_in=3,
        width=4,
        d_out=2,
        widths="3-4-2",
        batch=1,
        dtype="float32",
        device="cpu",
        method=method,
        status="ok",
        median_s=1e-3,
    )
    row.update(kw)
    return row


def test_csv_schema_and_append(tmp_path):
    writer = RunWriter(tmp_path / "run", {"a": 1})
    writer.append(_row("forward"))
    writer.append(_row("reverse"))
    writer.append(_row("forward"))  # already there: not written twice
    with (tmp_path / "run" / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(COLUMNS)
    assert [r["method"] for r in rows] == ["forward", "reverse"]
    for column in (
        "depth",
        "d_in",
        "width",
        "d_out",
        "batch",
        "dtype",
        "device",
        "method",
        "status",
        "median_s",
        "iqr_s",
        "runs",
        "flops",
        "elementwise_flops",
        "gflops",
        "predicted_mode",
        "max_rel_err",
        "memory_bytes",
    ):
        assert column in COLUMNS


def test_meta_is_written_atomically_with_params(tmp_path):
    writer = RunWriter(tmp_path / "run", {"depths": [3]})
    writer.write_meta(command="jacbench run", started="now")
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta == {"command": "jacbench run", "started": "now", "params": {"depths": [3]}}
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_resume_repairs_a_torn_last_line(tmp_path):
    writer = RunWriter(tmp_path / "run", {"a": 1})
    writer.append(_row("forward"))
    with writer.csv_path.open("a") as handle:
        handle.write("1,3,4,2,3-4-2,1,float32,cpu,rev")  # killed mid-row
    resumed = RunWriter(tmp_path / "run", {"a": 1}, resume=True)
    assert resumed.done == {("3-4-2", "1", "float32", "cpu", "forward")}
    resumed.append(_row("reverse"))
    frame = results.read_results(tmp_path / "run")
    assert list(frame["method"]) == ["forward", "reverse"]


def test_refuses_other_parameters_without_resume(tmp_path):
    RunWriter(tmp_path / "run", {"a": 1}).append(_row())
    with pytest.raises(RunDirError, match="other parameters"):
        RunWriter(tmp_path / "run", {"a": 2})
    RunWriter(tmp_path / "run", {"a": 1}, resume=True)  # allowed


def test_read_results_rejects_foreign_csv(tmp_path):
    (tmp_path / "results.csv").write_text("x,y\n1,2\n")
    with pytest.raises(ValueError, match="not a jacbench results file"):
        results.read_results(tmp_path)
    with pytest.raises(FileNotFoundError):
        results.read_results(tmp_path / "missing")


def test_default_run_dir_never_reuses_a_run(tmp_path):
    first = results.default_run_dir("cuda:0", tmp_path)
    assert first.name.endswith("-cuda0")
    first.mkdir()
    (first / "results.csv").write_text("")
    assert results.default_run_dir("cuda:0", tmp_path).name.endswith("-cuda0-2")


def test_environment_has_versions():
    env = results.environment("cpu")
    assert env["torch"] and env["jacbench"] and env["threads"] >= 1
