"""A run's rows analysed, as data: per shape the medians and the verdicts, the prediction's
accuracy, jacbench against its peers, devices side by side, compare's verdicts, and what a
run folder's meta says of the machine's load.

Everything here returns DataFrames, dataclasses and numbers; the words people read (``tie:
reverse ≈ mixed``, the sentences, the tables) are rendered in ``jacbench.faces``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from jacbench.measure import machine, stats
from jacbench.measure.rows import KEY_COLUMNS, TIMED_STATUSES
from jacbench.runs.methods import METHODS
from jacbench.runs.models import MLP_LABEL
from jacbench.runs.operators import OPERATORS

# What tells a row's shape apart: one summary row each.
SHAPE_COLUMNS = ["depth", "d_in", "width", "d_out", "widths", "batch", "dtype", "device", "model"]
# A model's modes as torch.func runs them: its prediction is judged against these.
MODEL_FIXED_MODES = {"func-jacfwd": "forward", "func-jacrev": "reverse"}
# The summary's columns of verdicts: the winner among the fixed modes (``measured``) and over
# every exact method (``fastest``), each with the methods tied with it, the winner first.
VERDICT_COLUMNS = (
    "measured",
    "measured_tied",
    "decided",
    "tested",
    "prediction_ok",
    "fastest",
    "fastest_tied",
)
# The summary's columns that are not a method's median.
NON_METHOD_COLUMNS = frozenset(
    {*SHAPE_COLUMNS, "predicted", "fwd/rev", "efficiency", *VERDICT_COLUMNS}
)


# ------------------------------------------------------------------ the rows
def with_model(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with a ``model`` in every row (``mlp`` for rows made before the column)."""
    if "model" not in frame.columns:
        return frame.assign(model=MLP_LABEL)
    models = frame["model"]
    missing = models.isna() | (models.astype(str) == "")
    return frame.assign(model=models.where(~missing, MLP_LABEL)) if missing.any() else frame


def is_model_row(row: Mapping | pd.Series) -> bool:
    """Whether a row (or a summary row) is a model's: its depth is 0 (an MLP has L ≥ 1)."""
    return int(row["depth"]) == 0


def all_models(frame: pd.DataFrame) -> bool:
    """Whether every row of ``frame`` is a model's (none is jacbench's MLP)."""
    return bool((frame["depth"].astype(int) == 0).all())


def timed(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows that carry a median time (statuses ok, slow, unchecked)."""
    return frame[frame["status"].isin(TIMED_STATUSES)]


def operator_of(frame: pd.DataFrame) -> str:
    """The operator of a one-operator results frame (``jacobian`` for files that predate
    the column)."""
    if "operator" not in frame.columns or frame.empty:
        return "jacobian"
    operator = frame["operator"].iloc[0]
    return str(operator) if isinstance(operator, str) and operator else "jacobian"


def split_operators(frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The frame's rows by operator, in order of first appearance: the summaries compare
    methods of one operator at a time."""
    if "operator" not in frame.columns or frame["operator"].nunique(dropna=False) <= 1:
        return [(operator_of(frame), frame)]
    return [(str(op), rows) for op, rows in frame.groupby("operator", sort=False)]


def devices_of(frame: pd.DataFrame) -> list[str]:
    """The devices of the timed rows, sorted."""
    return sorted(timed(frame)["device"].unique())


# ------------------------------------------------------------ the registry's
def fixed_modes(operator: str) -> dict[str, str]:
    """jacbench's methods of ``operator`` that each run one fixed, exact mode: method →
    mode. The predicted mode is judged against these (for the Jacobian: forward, reverse,
    mixed)."""
    return {
        name: m.mode
        for name, m in METHODS.items()
        if m.operator == operator and m.family == "jacbench" and m.mode != "auto" and m.exact
    }


def estimates() -> list[str]:
    """The registered methods that estimate rather than compute (Hutchinson's Laplacian)."""
    return [name for name, m in METHODS.items() if not m.exact]


def families(operator: str) -> dict[str, list[str]]:
    """The peer families of ``operator`` and their methods, in the registry's order."""
    found: dict[str, list[str]] = {}
    for name, m in METHODS.items():
        if m.operator == operator and m.family != "jacbench" and not m.opt_in:
            found.setdefault(m.family, []).append(name)
    return found


def own_methods(operator: str) -> list[str]:
    """jacbench's methods of ``operator`` that a run times by default, in the registry's order."""
    return [
        name
        for name, m in METHODS.items()
        if m.operator == operator and m.family == "jacbench" and not m.opt_in
    ]


def method_order(columns: Iterable[str], methods: Sequence[str] | None) -> list[str]:
    """The methods among ``columns`` in the order of ``methods`` (else the registry's), then
    the others (user routines) by name."""
    order = list(methods) if methods else list(METHODS)
    present = set(columns)
    return [m for m in order if m in present] + sorted(present - set(order) - NON_METHOD_COLUMNS)


def user_methods(columns: Iterable[str]) -> list[str]:
    """The summary's columns that are methods outside the registry: user routines."""
    return [c for c in columns if c not in METHODS and c not in NON_METHOD_COLUMNS]


# ------------------------------------------------------------------- summary
def summary_frame(frame: pd.DataFrame, samples: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per shape: median per method, forward/reverse ratio, predicted vs measured winner.

    ``measured`` names the fastest hand-written mode (forward, reverse, mixed; for the second
    order jacbench's fixed-mode methods; for a model torch.func's jacfwd and jacrev) and
    ``measured_tied`` the methods not significantly slower than it, itself first
    (``stats.point_verdict`` on the run's samples: more than one is a tie); ``decided`` and
    ``tested`` are the verdict's. ``fastest`` and ``fastest_tied`` do the same over every exact
    method. ``prediction_ok`` is true when the predicted mode won or tied, and missing (no
    verdict) where the run did not time the predicted mode and another. ``frame`` holds one
    operator's rows (``split_operators``).
    """
    ok = timed(with_model(frame))
    if ok.empty:
        return pd.DataFrame()
    mlp_fixed = fixed_modes(operator_of(frame))
    medians = ok.pivot_table(index=SHAPE_COLUMNS, columns="method", values="median_s")
    predicted = ok.groupby(SHAPE_COLUMNS)["predicted_mode"].first()
    summary = medians.copy()
    summary.columns.name = None
    summary["predicted"] = predicted
    if {"forward", "reverse"} <= set(medians.columns):
        summary["fwd/rev"] = medians["forward"] / medians["reverse"]
    by_key = stats.samples_by_key(samples)
    found: dict[str, list[tuple[tuple, object]]] = {name: [] for name in VERDICT_COLUMNS}
    for shape, rows in ok.groupby(SHAPE_COLUMNS, sort=False):
        fixed = MODEL_FIXED_MODES if is_model_row(rows.iloc[0]) else mlp_fixed
        verdicts = _shape_verdicts(rows, by_key, fixed, predicted[shape])
        for name, value in verdicts.items():
            found[name].append((shape, value))
    for name in VERDICT_COLUMNS:
        values = found[name]
        if values:
            index = pd.MultiIndex.from_tuples([k for k, _ in values], names=SHAPE_COLUMNS)
            summary[name] = pd.Series([v for _, v in values], index=index, dtype=object)
    jacbench_rows = ok[ok["family"] == "jacbench"] if "family" in ok.columns else ok.iloc[0:0]
    if "efficiency" in jacbench_rows.columns and jacbench_rows["efficiency"].notna().any():
        # Efficiency of jacbench's fastest method at the shape: how close it is to the roofline.
        best = jacbench_rows.loc[jacbench_rows.groupby(SHAPE_COLUMNS)["median_s"].idxmin()]
        summary["efficiency"] = best.set_index(SHAPE_COLUMNS)["efficiency"]
    return summary.reset_index()


def _shape_verdicts(
    rows: pd.DataFrame, by_key: dict, fixed: Mapping[str, str], mode: object
) -> dict[str, object]:
    """The verdict columns of one shape whose timed rows are ``rows``: ``fastest`` always,
    the others where jacbench's fixed modes (``fixed``: method → mode) were timed."""
    exact = rows[~rows["method"].isin(estimates())]  # an estimate is no rival of exact ones
    overall = stats.point_verdict(exact if len(exact) else rows, by_key)
    found: dict[str, object] = {"fastest": overall.winner, "fastest_tied": overall.tied}
    ours = rows[rows["method"].isin(list(fixed))]
    if ours.empty:
        return found
    verdict = stats.point_verdict(ours, by_key)
    timed_modes = {fixed[m] for m in ours["method"]}
    # One mode timed alone is fastest by default: no verdict on the prediction then.
    judged = mode in timed_modes and len(timed_modes) > 1
    return {
        **found,
        "measured": verdict.winner,
        "measured_tied": verdict.tied,
        "decided": verdict.decided,
        "tested": verdict.tested,
        "prediction_ok": (mode in {fixed[m] for m in verdict.tied}) if judged else None,
    }


@dataclass(frozen=True)
class Accuracy:
    """How the predicted modes fared over a summary's shapes."""

    right: int  # shapes where the predicted mode won or tied
    judged: int  # shapes with a verdict on the prediction
    decided: int  # of those, shapes where a test found a significant winner
    untested: int  # of those, shapes judged by the medians' intervals alone (too few samples)

    @property
    def ties(self) -> int:
        """Judged shapes whose test found no significant winner."""
        return self.judged - self.decided - self.untested


def prediction_accuracy(summary: pd.DataFrame) -> Accuracy:
    """Counts of the shapes with a verdict on the prediction (``summary_frame``'s).

    A shape is decided when its fastest hand-written mode was significantly faster than
    the runner-up; a tie counts as right when the predicted mode is among the tied.
    """
    if summary.empty or "prediction_ok" not in summary:
        return Accuracy(0, 0, 0, 0)
    judged = summary[summary["prediction_ok"].notna()]
    right = int(judged["prediction_ok"].astype(bool).sum())
    tested = judged["tested"].astype(bool)
    decided = judged["decided"].astype(bool) & tested
    return Accuracy(right, len(judged), int(decided.sum()), int((~tested).sum()))


# --------------------------------------------------------------------- peers
def peer_comparison(frame: pd.DataFrame) -> pd.DataFrame:
    """Per shape: the median of jacbench's best method (``auto`` for the Jacobian; the
    operator's ``best_method``), the best median of each peer family, and its speed-up.

    ``× <family>`` is the family's best median over jacbench's: above 1, jacbench is faster.
    The column of jacbench's method is named ``auto`` whatever the operator.
    """
    operator = operator_of(frame)
    best = OPERATORS[operator].best_method
    ok = timed(with_model(frame))
    if best not in set(ok["method"]):
        return pd.DataFrame()
    medians = ok.pivot_table(index=SHAPE_COLUMNS, columns="method", values="median_s")
    table = pd.DataFrame({"auto": medians[best]})
    for family, members in families(operator).items():
        present = [m for m in members if m in medians.columns]
        if family == "naive" or not present:
            continue
        table[family] = medians[present].min(axis=1)
        table[f"× {family}"] = table[family] / table["auto"]
    if "efficiency" in ok.columns:
        auto_rows = ok[ok["method"] == best].set_index(SHAPE_COLUMNS)
        table["efficiency"] = auto_rows["efficiency"]
    return table.reset_index()


def geometric_mean(values: pd.Series) -> float:
    """The geometric mean of the values present; nan for none."""
    values = values.dropna()
    return float(math.exp(values.map(math.log).mean())) if len(values) else math.nan


# ------------------------------------------------------------------- devices
def devices_side_by_side(frame: pd.DataFrame, samples: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per shape (without its device) and method: the median on each device in its own
    column, and for each device after the first its time ratio to the first device with a
    95% interval and verdict (``stats.compare_runs``: faster, slower, same, unsure).

    Empty unless the timed rows span two or more devices.
    """
    ok = timed(with_model(frame))
    devices = devices_of(ok) if not ok.empty else []
    if len(devices) < 2:
        return pd.DataFrame()
    samples = samples if samples is not None else pd.DataFrame(columns=list(KEY_COLUMNS))
    shape = [c for c in SHAPE_COLUMNS if c != "device"]
    table = ok.pivot_table(index=[*shape, "method"], columns="device", values="median_s")
    table.columns.name = None
    table = table.reset_index()
    key = [c for c in KEY_COLUMNS if c != "device"]

    def on(device: str, data: pd.DataFrame) -> pd.DataFrame:  # one device, device-free keys
        return data[data["device"] == device].assign(device="")

    first = devices[0]
    for device in devices[1:]:
        pair = stats.compare_runs(
            on(first, ok),
            on(first, samples),
            on(device, ok),
            on(device, samples),
            0.0,
            same_machine=False,
        )
        pair = pair[[*key, "ratio", "ci_low", "ci_high", "verdict"]].rename(
            columns=lambda c, d=device: c if c in key else f"{c} {d}"
        )
        table = table.merge(pair, on=key, how="left")
    return table


# ------------------------------------------------------------------- compare
# compare's verdicts, from the worst: regressed and improved are faster and slower past the
# threshold (``stats.compare_runs``, NOTE: [One decision rule] in jacbench.measure.stats).
COMPARE_VERDICTS = ("regressed", "slower", "same", "faster", "improved", "unsure")


def compare_verdict(row: Mapping | pd.Series) -> str:
    """One compared row's verdict: regressed or improved where it is, else faster, slower,
    same or unsure."""
    if row["regressed"]:
        return "regressed"
    if row["improved"]:
        return "improved"
    return str(row["verdict"])


def verdict_counts(merged: pd.DataFrame) -> dict[str, int]:
    """How many compared rows got each verdict, in ``COMPARE_VERDICTS``' order (none left out)."""
    counts = Counter(compare_verdict(row) for _, row in merged.iterrows())
    return {v: counts[v] for v in COMPARE_VERDICTS}


def compare_records(merged: pd.DataFrame) -> list[dict]:
    """The comparison's rows for ``--json``: key, medians, ratio, interval, verdict."""
    records = []
    for _, row in merged.iterrows():
        records.append(
            {
                **{c: row[c] for c in KEY_COLUMNS},
                "batch": int(row["batch"]),
                "median_s_a": float(row["median_s_a"]),
                "median_s_b": float(row["median_s_b"]),
                "ratio": float(row["ratio"]),
                "ci_low": None if math.isnan(row["ci_low"]) else float(row["ci_low"]),
                "ci_high": None if math.isnan(row["ci_high"]) else float(row["ci_high"]),
                "samples_a": int(row["n_a"]),
                "samples_b": int(row["n_b"]),
                "verdict": compare_verdict(row),
            }
        )
    return records


# --------------------------------------------------------------------- plots
def depth_series(frame: pd.DataFrame, limit: int = 6) -> list[tuple[tuple, pd.DataFrame]]:
    """The timed rows by (D, K, P, B, dtype, device), where a group holds several depths:
    the first ``limit`` groups, each with its key."""
    ok = timed(frame)
    groups = [
        (key, g)
        for key, g in ok.groupby(["d_in", "width", "d_out", "batch", "dtype", "device"])
        if g["depth"].nunique() > 1
    ]
    return groups[:limit]


def compile_payback(frame: pd.DataFrame) -> pd.DataFrame:
    """Per point, each compiled method's time to pay back its compile time: the fastest
    timed method there that compiles nothing (``eager``), what the compiled call saves on
    it (``saved_s``, negative where it is slower) and the calls after which the compile
    time is repaid (``calls``: inf where never). One row per compiled row that was timed."""
    ok = timed(frame)
    if "compile_s" not in ok.columns:
        return pd.DataFrame()
    compile_s = pd.to_numeric(ok["compile_s"], errors="coerce")
    compiled = compile_s.notna() & (compile_s > 0)
    found = []
    for _, g in ok.groupby([c for c in SHAPE_COLUMNS if c in ok.columns], sort=False, dropna=False):
        eager = g[~compiled.loc[g.index]]
        if eager.empty:
            continue
        best = eager.loc[eager["median_s"].idxmin()]
        for _, row in g[compiled.loc[g.index]].iterrows():
            saved = float(best["median_s"] - row["median_s"])
            found.append(
                {
                    **{c: row[c] for c in SHAPE_COLUMNS if c in row.index},
                    "method": row["method"],
                    "compile_s": float(row["compile_s"]),
                    "eager": best["method"],
                    "saved_s": saved,
                    "calls": float(row["compile_s"]) / saved if saved > 0 else math.inf,
                }
            )
    return pd.DataFrame(found)


def model_series(frame: pd.DataFrame, limit: int = 8) -> list[tuple[str, pd.DataFrame]]:
    """The timed rows of each user's or built-in model (not the MLP), by model: the first
    ``limit`` models, each with its rows and a ``shape`` label (``D=16 P=4 B=8``, the
    dtype and device added where the model's rows have several), sorted by D, P and B."""
    ok = with_model(timed(frame))
    ok = ok[ok["model"] != MLP_LABEL]
    found = []
    for model, g in ok.groupby("model", sort=False):
        several = g["dtype"].nunique() > 1 or g["device"].nunique() > 1
        labels = [
            f"D={r.d_in} P={r.d_out} B={r.batch}" + (f" {r.dtype} {r.device}" if several else "")
            for r in g.itertuples()
        ]
        g = g.assign(shape=labels).sort_values(["d_in", "d_out", "batch", "dtype", "device"])
        found.append((str(model), g))
    return found[:limit]


def ratio_grids(frame: pd.DataFrame, limit: int = 4) -> list[tuple[tuple, pd.DataFrame]]:
    """Forward mode's time over reverse mode's, P by D, per (L, K, B, dtype, device) that
    timed both over several D and P: the first ``limit``, each with its key."""
    ok = timed(frame)
    pairs = ok[ok["method"].isin(["forward", "reverse"])]
    grids = []
    for key, g in pairs.groupby(["depth", "width", "batch", "dtype", "device"]):
        if g["d_in"].nunique() > 1 and g["d_out"].nunique() > 1:
            medians = g.pivot_table(index=["d_out", "d_in"], columns="method", values="median_s")
            if {"forward", "reverse"} <= set(medians.columns):
                grids.append((key, (medians["forward"] / medians["reverse"]).unstack("d_in")))
    return grids[:limit]


# ------------------------------------------------------------- machine load
@dataclass(frozen=True)
class MachineLoad:
    """What a run's meta.json says of other work on the machine: at the start the cores
    other processes kept busy (``other_cores``; older records: the 1-minute load average,
    which still counts work that had ended), at the end the 1-minute load average, which
    counts the run's own ``threads`` too."""

    threads: int
    other_cores: float | None
    load_at_start: float | None
    load_at_end: float | None

    @property
    def busy(self) -> bool:
        """Whether other work beyond ``machine.BUSY_LOAD`` shared the machine with the run."""
        start = self.other_cores if self.other_cores is not None else self.load_at_start
        other = [start] if start is not None else []
        if self.load_at_end is not None:
            other.append(self.load_at_end - self.threads)
        return bool(other) and max(other) > machine.BUSY_LOAD


def machine_load(meta: Mapping) -> MachineLoad:
    """A run's ``MachineLoad`` from its meta.json (nothing recorded: all None)."""
    threads = meta.get("environment", {}).get("threads") or 0
    at_start = meta.get("machine_at_start") or {}
    start = at_start.get("load_average")
    end = (meta.get("machine_at_end") or {}).get("load_average")
    return MachineLoad(
        threads,
        at_start.get("other_cores"),
        start[0] if start else None,
        end[0] if end else None,
    )


@dataclass(frozen=True)
class BusyRows:
    """Other work while a run's rows were timed (the ``other_cores`` column): how many rows
    were timed with more than ``machine.BUSY_LOAD`` of it, of how many that say, and the
    most seen."""

    busy: int
    measured: int
    most: float


def busy_rows(frame: pd.DataFrame) -> BusyRows | None:
    """``BusyRows`` of a run's rows; None where no row says (runs made before the column)."""
    if "other_cores" not in frame.columns:
        return None
    cores = pd.to_numeric(frame["other_cores"], errors="coerce").dropna()
    if cores.empty:
        return None
    return BusyRows(int((cores > machine.BUSY_LOAD).sum()), len(cores), float(cores.max()))
