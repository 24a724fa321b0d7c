"""The row: one (point, method) measurement, its columns, its status and its key.

This module is the one home of the results schema. ``Row`` lists every column of
``results.csv`` with its type, unit and meaning (docs/results.md says the same for users);
``Status`` says how a row went; ``RowKey`` identifies a row, and the sweep, the run
writer, resume, report and compare all build keys through it. ``check_frame`` turns the
text of a results file into typed columns, or says in one line what is wrong with it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from typing import Any, NamedTuple

import pandas as pd


class Status(str, Enum):
    """How a row went. Timed statuses (ok, slow, unchecked) carry a median time."""

    OK = "ok"  # within tolerance of the float64 reference, timed
    SLOW = "slow"  # within tolerance; one call took more than max_call_time, timed once
    UNCHECKED = "unchecked"  # timed, but no reference to check against (message says why)
    WRONG = "wrong"  # the Jacobian is not within tolerance (or has the wrong shape); not timed
    ERROR = "error"  # the method raised; message holds the exception's first line
    OOM = "oom"  # ran out of memory, or would have (skipped before running: message says)
    SKIPPED = "skipped"  # not run here (e.g. the method does not apply to this point)
    TIMEOUT = "timeout"  # a call of a user routine did not return within the call timeout

    def __str__(self) -> str:
        return self.value


class Mistake(str, Enum):
    """What is wrong with a method's result or with a routine, as one kind: a wrong row's,
    a failed check's or a graded student's. Diagnoses and failures set it; messages are made
    from it (``jacbench.runs.diagnosis``) and grading counts it, never the words."""

    NOT_A_TENSOR = "not a tensor"
    WRONG_SHAPE = "wrong shape"
    TRANSPOSED = "transposed"
    NAN = "NaN or inf"
    WRONG_TYPE = "wrong dtype or device"
    SLOPES_LEFT_OUT = "σ' left out"
    WRONG_VALUES = "wrong values"
    CHANGES_ARGUMENTS = "changes its arguments"
    WRONG_WHEN_TIMED = "wrong when timed"  # right when checked, wrong on a timed call
    RAISES = "raises an exception"
    CRASH = "crash"  # its process died, or it called sys.exit or raised KeyboardInterrupt
    TIMEOUT = "timeout"
    SYNTAX_ERROR = "syntax error"
    MISSING_FUNCTION = "missing function"
    WRONG_ARGUMENTS = "wrong arguments"
    FAILS_WHEN_LOADED = "fails when loaded"

    def __str__(self) -> str:
        return self.value


# Plain strings, so pandas' isin and hash-based lookups match the CSV's text.
TIMED_STATUSES: tuple[str, ...] = (Status.OK.value, Status.SLOW.value, Status.UNCHECKED.value)
FAILED_STATUSES: tuple[str, ...] = (Status.WRONG.value, Status.ERROR.value, Status.TIMEOUT.value)


class RowKey(NamedTuple):
    """What identifies a row within a run: no run holds two rows with one key."""

    widths: tuple[int, ...]  # (D, K_1, …, K_L, P); its file's cell spells it "D-K_1-…-P"
    batch: int
    dtype: str
    device: str
    method: str
    model: str = "mlp"  # the model's label; "mlp" for jacbench's MLP (files before models)

    @classmethod
    def of_cells(cls, cells: Sequence[Any]) -> RowKey:
        """The key of a file's row from its key cells, in ``KEY_COLUMNS`` order."""
        widths, batch, *rest = cells
        return cls(parse_widths(widths), int(batch), *rest)

    @property
    def cells(self) -> dict[str, Any]:
        """The key as a file's cells, by column."""
        return {**self._asdict(), "widths": format_widths(self.widths)}


KEY_COLUMNS: tuple[str, ...] = RowKey._fields
# Key columns a results file may lack, and what they read as there (files made before them).
KEY_DEFAULTS: dict[str, str] = {"model": "mlp"}


def format_widths(widths: tuple[int, ...] | list[int]) -> str:
    """The ``widths`` column's spelling of (D, K_1, …, K_L, P): ``"D-K_1-…-P"``."""
    return "-".join(str(int(w)) for w in widths)


def parse_widths(text: str) -> tuple[int, ...]:
    """The tuple (D, K_1, …, K_L, P) from the ``widths`` column."""
    return tuple(int(w) for w in str(text).split("-"))


def _column(kind: type, unit: str, meaning: str, default: Any = None) -> Any:
    if default is None:
        default = {int: 0, float: math.nan, bool: False, str: ""}[kind]
    return field(default=default, metadata={"kind": kind, "unit": unit, "meaning": meaning})


@dataclass
class Row:
    """One row of results.csv: a method's measurement at one point.

    Field order is column order. Each field's metadata holds its type, unit and meaning.
    """

    depth: int = _column(int, "", "L, the number of σ layers")
    d_in: int = _column(int, "", "D, the input dimension")
    width: int = _column(int, "", "K, the hidden width (the largest one when they differ)")
    d_out: int = _column(int, "", "P, the output dimension")
    widths: tuple[int, ...] = _column(str, "", "every width, D-K_1-…-K_L-P", ())
    batch: int = _column(int, "", "B, inputs per call (1: an unbatched x of shape (D,))", 1)
    dtype: str = _column(str, "", "float32, float64 or bfloat16")
    device: str = _column(str, "", "cpu, cuda or cuda:N")
    method: str = _column(str, "", "the method's name (see docs/sweeps.md, Methods)")
    family: str = _column(str, "", "jacbench, torch.func, autograd, naive or jax")
    mode: str = _column(str, "", "the AD mode the method ran at this point")
    status: Status = _column(str, "", "how the row went: one of Status", Status.OK)
    median_s: float = _column(float, "s", "median time per Jacobian call")
    iqr_s: float = _column(float, "s", "interquartile range of the per-call times")
    mean_s: float = _column(float, "s", "mean time per call")
    runs: int = _column(int, "", "timed blocks behind the median (each the mean of its calls)")
    noisy: bool = _column(bool, "", "IQR above 10% of the median")
    flops: int | None = _column(int, "FLOP", "matmul FLOPs of the mode, 2·m·n·k per product")
    elementwise_flops: int | None = _column(
        int, "element-ops", "elementwise operations of the mode"
    )
    gflops: float = _column(float, "GFLOP/s", "flops / median_s / 1e9")
    predicted_mode: str = _column(str, "", "the mode cost.plan predicts fastest here")
    max_rel_err: float = _column(float, "", "max |J − J_ref| / max |J_ref| vs float64 jacrev")
    memory_bytes: int | None = _column(int, "B", "modelled peak extra memory of the mode")
    peak_memory_bytes: float = _column(float, "B", "measured peak extra memory (CUDA only)")
    bound_s: float = _column(
        float,
        "s",
        "roofline bound: max(FLOPs/peak, weight bytes/their read rate, σ and σ' work/their rates)",
    )
    efficiency: float = _column(float, "", "bound_s / median_s (1 = at the roofline)")
    compile_s: float = _column(float, "s", "compile or capture time, apart from median_s")
    message: str = _column(str, "", "why a row is not ok (error line, tolerance, skip reason)")
    source: str = _column(str, "", "a user routine's file:function (empty for built-ins)")
    ci_low_s: float = _column(float, "s", "95% interval of the median, low end (order statistics)")
    ci_high_s: float = _column(float, "s", "95% interval of the median, high end")
    operator: str = _column(
        str, "", "what the method computes: jacobian, hessian, laplacian or hvp", "jacobian"
    )
    model: str = _column(
        str,
        "",
        "the model: mlp for jacbench's MLP, else the factory's name and params, residual(width=64)",
        "mlp",
    )
    mistake: str = _column(
        str, "", "what is wrong, as one kind (a wrong, error or timeout row): one of Mistake"
    )
    other_cores: float = _column(
        float, "cores", "CPU other processes used while the row was timed (busy above 0.5)"
    )
    bound_note: str = _column(str, "", "why bound_s and efficiency are empty at a timed MLP row")
    primal_s: float = _column(float, "s", "median seconds of the function itself at the input")
    evals: float = _column(
        float, "", "median_s / primal_s: the Jacobian's cost in evaluations (ADBench's measure)"
    )
    # Not a column: the measured samples, (process, round, seconds) per timed block, for
    # samples.csv.
    samples: tuple[tuple[int, int, float], ...] = field(default=(), repr=False, compare=False)

    @property
    def key(self) -> RowKey:
        """The row's identity within a run."""
        return RowKey(self.widths, self.batch, self.dtype, self.device, self.method, self.model)

    @property
    def timed(self) -> bool:
        """Whether the row carries a median time."""
        return self.status.value in TIMED_STATUSES

    def as_dict(self) -> dict[str, Any]:
        """The row's values by column as a file holds them: the status and widths as text."""
        values = asdict(self)
        del values["samples"]
        return {**values, "status": self.status.value, "widths": format_widths(self.widths)}

    def set_timing(self, measurement: Any) -> Row:
        """Median, IQR, mean, runs, interval, samples, GFLOP/s and efficiency from a
        ``timing.Measurement`` (efficiency needs ``bound_s`` set first)."""
        self.median_s = measurement.median
        self.ci_low_s, self.ci_high_s = measurement.interval
        self.samples = measurement.samples
        self.iqr_s = measurement.iqr
        self.mean_s = measurement.mean
        self.runs = measurement.runs
        self.noisy = measurement.noisy
        median = measurement.median if measurement.median > 0 else math.nan  # no time: no rate
        self.gflops = self.flops / median / 1e9 if self.flops else math.nan
        self.efficiency = self.bound_s / median  # NaN without a bound
        self.evals = median / self.primal_s  # NaN where f was not timed
        return self

    def sample_records(self) -> list[dict[str, Any]]:
        """The row's samples as samples.csv records."""
        key = self.key.cells
        return [
            {**key, "process": p, "round": r, "seconds": seconds} for p, r, seconds in self.samples
        ]

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Row:
        """A row from a typed results frame's record (missing values back to defaults)."""
        values: dict[str, Any] = {}
        for name in COLUMNS:
            value = record.get(name)
            if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
                values[name] = None if COLUMN_KINDS[name] is int else _DEFAULTS[name]
            else:
                values[name] = COLUMN_KINDS[name](value)
        values["status"] = Status(values["status"])
        values["widths"] = parse_widths(values["widths"])
        return cls(**values)


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Row) if "kind" in f.metadata)
COLUMN_KINDS: dict[str, type] = {f.name: f.metadata["kind"] for f in fields(Row) if f.metadata}
_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(Row) if f.metadata}
# samples.csv: every timed block of every row, by row key.
SAMPLE_COLUMNS: tuple[str, ...] = (*KEY_COLUMNS, "process", "round", "seconds")
_NULLABLE_DTYPES = {int: "Int64", float: "float64", bool: "boolean", str: "object"}


class ResultsFileError(ValueError):
    """A results file that is not a jacbench results file, or is damaged."""


def row_key(row: pd.Series | Mapping[str, Any]) -> RowKey:
    """The key of one row of a frame (a key column it lacks reads as its default)."""
    return RowKey.of_cells([row.get(c, KEY_DEFAULTS.get(c)) for c in KEY_COLUMNS])


def with_key_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every key column (those it lacks, or cells it leaves empty, at their
    defaults: ``KEY_DEFAULTS``)."""
    filled = {
        c: frame[c].fillna(d) if c in frame.columns else d
        for c, d in KEY_DEFAULTS.items()
        if c not in frame.columns or frame[c].isna().any()
    }
    return frame.assign(**filled) if filled else frame


def keys_of(frame: pd.DataFrame) -> set[RowKey]:
    """The keys of every row of a typed results frame."""
    return {RowKey.of_cells(values) for values in frame[list(KEY_COLUMNS)].itertuples(index=False)}


def typed_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """A results DataFrame in schema order and types from row dicts (missing columns empty)."""
    frame = pd.DataFrame.from_records(records, columns=list(COLUMNS))
    for name, default in KEY_DEFAULTS.items():  # a record made before that key column
        frame[name] = frame[name].fillna(default)
    return frame.astype({c: _NULLABLE_DTYPES[COLUMN_KINDS[c]] for c in COLUMNS})


def samples_frame(rows: list[Row]) -> pd.DataFrame:
    """samples.csv's records of ``rows`` as a DataFrame."""
    records = [record for row in rows for record in row.sample_records()]
    return pd.DataFrame.from_records(records, columns=list(SAMPLE_COLUMNS))


def check_frame(raw: pd.DataFrame, source: str) -> pd.DataFrame:
    """Typed columns from a results file read as text; ``ResultsFileError`` names what is wrong.

    ``raw`` holds the file's cells as strings (empty for missing values). Columns must be
    ``COLUMNS`` in order, or a prefix of it holding every key column but those of
    ``KEY_DEFAULTS`` (a file written before later columns existed: those come back with
    their default, empty for most, ``jacobian`` for the operator, ``mlp`` for the model).
    Line numbers count the header as line 1.
    """
    header = list(raw.columns)
    required = set(KEY_COLUMNS) - set(KEY_DEFAULTS)
    if header != list(COLUMNS[: len(header)]) or not required <= set(header):
        raise ResultsFileError(f"{source} is not a jacbench results file (unexpected columns)")
    frame = pd.DataFrame(index=raw.index)
    for name in COLUMNS:
        kind = COLUMN_KINDS[name]
        absent = str(_DEFAULTS[name]) if COLUMN_KINDS[name] is str else ""
        text = raw[name].fillna("") if name in raw else pd.Series(absent, index=raw.index)
        if name in KEY_DEFAULTS:  # an empty cell of a key with a default reads as that
            text = text.where(text != "", KEY_DEFAULTS[name])
        frame[name] = _typed_column(text, name, kind, source)
    bad = ~frame["status"].isin([s.value for s in Status])
    if bad.any():
        line = int(bad.to_numpy().argmax()) + 2
        value = frame["status"][bad].iloc[0]
        raise ResultsFileError(f"{source}, line {line}: unknown status {value!r}")
    untimed = frame["status"].isin(TIMED_STATUSES) & ~(frame["median_s"] > 0)
    if untimed.any():
        line = int(untimed.to_numpy().argmax()) + 2
        raise ResultsFileError(f"{source}, line {line}: a timed row without a positive median_s")
    for name in KEY_COLUMNS:
        if (frame[name].astype(str) == "").any() or frame[name].isna().any():
            raise ResultsFileError(f"{source}: a row has no {name}")
    duplicated = frame.duplicated(list(KEY_COLUMNS))
    if duplicated.any():
        line = int(duplicated.to_numpy().argmax()) + 2
        raise ResultsFileError(f"{source}, line {line}: a second row with the same key")
    return frame


def _typed_column(text: pd.Series, name: str, kind: type, source: str) -> pd.Series:
    if kind is str:
        return text.astype(object)
    if kind is bool:
        known = {"True": True, "False": False, "true": True, "false": False, "": pd.NA}
        wrong = ~text.isin(list(known))
        values = text.map(known)
    else:
        values = pd.to_numeric(text.where(text != "", None), errors="coerce")
        wrong = values.isna() & (text != "") & (text.str.lower() != "nan")
        if kind is int and not wrong.any():
            wrong = values.notna() & (values % 1 != 0)
    if wrong.any():
        line = int(wrong.to_numpy().argmax()) + 2
        value = text[wrong].iloc[0]
        kind_name = kind.__name__
        raise ResultsFileError(f"{source}, line {line}: {name} = {value!r} is not a {kind_name}")
    return values.astype(_NULLABLE_DTYPES[kind])
