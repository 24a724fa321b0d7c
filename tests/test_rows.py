import io
import math

import pandas as pd
import pytest

from jacbench.measure.rows import (
    COLUMNS,
    KEY_COLUMNS,
    ResultsFileError,
    Row,
    RowKey,
    Status,
    check_frame,
    keys_of,
    typed_frame,
)


def _raw(text: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)


def _line(**values) -> str:
    row = Row(
        depth=1,
        d_in=3,
        width=4,
        d_out=2,
        widths=(3, 4, 2),
        dtype="float32",
        device="cpu",
        method="reverse",
        median_s=1e-3,
    ).as_dict()
    row.update(values)
    return ",".join(str(row[c]) for c in COLUMNS)


HEADER = ",".join(COLUMNS)


def test_columns_are_the_documented_schema_in_order():
    assert COLUMNS[:12] == (
        "depth",
        "d_in",
        "width",
        "d_out",
        "widths",
        "batch",
        "dtype",
        "device",
        "method",
        "family",
        "mode",
        "status",
    )
    # columns are only ever appended: older files stay readable
    assert COLUMNS[-11:] == (
        "message",
        "source",
        "ci_low_s",
        "ci_high_s",
        "operator",
        "model",
        "mistake",
        "other_cores",
        "bound_note",
        "primal_s",
        "evals",
    )
    assert len(COLUMNS) == 38
    assert "samples" not in COLUMNS  # a row's samples go to samples.csv
    assert KEY_COLUMNS == ("widths", "batch", "dtype", "device", "method", "model")


def test_statuses():
    assert [s.value for s in Status] == [
        "ok",
        "slow",
        "unchecked",
        "wrong",
        "error",
        "oom",
        "skipped",
        "timeout",
    ]
    assert str(Status.WRONG) == "wrong"


def test_row_key_and_dict():
    row = Row(widths=(3, 4, 2), batch=2, dtype="float64", device="cpu", method="forward")
    assert row.key == RowKey((3, 4, 2), 2, "float64", "cpu", "forward")
    assert row.as_dict()["status"] == "ok" and list(row.as_dict()) == list(COLUMNS)
    assert row.timed and not Row(status=Status.WRONG).timed


def test_check_frame_types_every_column():
    frame = check_frame(_raw(f"{HEADER}\n{_line()}\n{_line(method='forward', noisy=True)}\n"), "f")
    assert frame["depth"].dtype == "Int64" and frame["depth"].tolist() == [1, 1]
    assert frame["median_s"].tolist() == [1e-3, 1e-3]
    assert math.isnan(frame["iqr_s"][0])
    assert frame["noisy"].tolist() == [False, True]
    assert keys_of(frame) == {
        RowKey((3, 4, 2), 1, "float32", "cpu", "reverse"),
        RowKey((3, 4, 2), 1, "float32", "cpu", "forward"),
    }


def test_older_files_without_later_columns_read_with_them_empty():
    short = ",".join(COLUMNS[:-2])
    line = ",".join(_line().split(",")[:-2])
    frame = check_frame(_raw(f"{short}\n{line}\n"), "old.csv")
    assert list(frame.columns) == list(COLUMNS)
    assert math.isnan(frame["compile_s"][0]) and frame["message"][0] == ""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x,y\n1,2\n", "f is not a jacbench results file (unexpected columns)"),
        (f"{HEADER}\n{_line(status='great')}\n", "f, line 2: unknown status 'great'"),
        (f"{HEADER}\n{_line()}\n{_line(depth='three')}\n", "f, line 3: depth = 'three' is not"),
        (f"{HEADER}\n{_line(batch='1.5')}\n", "f, line 2: batch = '1.5' is not a int"),
        (f"{HEADER}\n{_line(median_s='')}\n", "f, line 2: a timed row without a positive"),
        (f"{HEADER}\n{_line(median_s='nan')}\n", "f, line 2: a timed row without a positive"),
        (f"{HEADER}\n{_line(noisy='maybe')}\n", "f, line 2: noisy = 'maybe' is not a bool"),
        (f"{HEADER}\n{_line()}\n{_line()}\n", "f, line 3: a second row with the same key"),
        (f"{HEADER}\n{_line(method='')}\n", "f: a row has no method"),
    ],
)
def test_check_frame_names_the_problem_in_one_line(text, message):
    with pytest.raises(ResultsFileError) as raised:
        check_frame(_raw(text), "f")
    assert str(raised.value).startswith(message)


def test_typed_frame_from_rows():
    frame = typed_frame([Row(method="a").as_dict(), {"method": "b", "status": "oom"}])
    assert list(frame.columns) == list(COLUMNS)
    assert frame["method"].tolist() == ["a", "b"]
    assert frame["status"].tolist() == ["ok", "oom"]
