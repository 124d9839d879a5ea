"""The drift check: an Evidently 0.7 report (``DataDriftPreset`` plus a data summary) of current
data against the reference it should resemble, read back into a small typed verdict.

Evidently computes every statistic and every per-column verdict (its ``ValueDrift`` metrics and
the tests bound to them); this module only picks the columns, samples large inputs, pins the stat
test Evidently's default would pick on the *full* data, and turns the snapshot into a
``DriftResult`` (``drift_check.DriftCheck``, saved as ``drift.json``, carries its verdict), flat
metrics and a Prometheus text file.

Sampling: each side above ``sample_rows`` rows is replaced by a seeded uniform sample of that many
rows. Evidently's default test depends on the size of the data (K-S and chi-square up to 1,000
reference rows, normalised Wasserstein and Jensen-Shannon at 0.1 above), so the test and threshold
of each column are decided as the full data would have them and passed explicitly: the sampled run
applies the same tests as Evidently's default run on everything, only on fewer rows. The
calibration tests (tests/pipeline_tasks/monitoring/test_drift.py) show the detection power of that scheme and
``benchmarks/bench_drift.py`` its speed and agreement on 1M rows.

Why one module of about 540 lines: it is one procedure (column kinds, type checks, sampling, the
pinned default test, the Evidently run, the verdict) whose helpers only make sense together, plus
the verdict's two writers (``to_dict``, ``write_prometheus``); the drift check of an interval
(where the data comes from, where results go) lives in ``drift_check``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline_tasks.core import storage
from pipeline_tasks.core.errors import DriftInputError, PipelineError

if TYPE_CHECKING:
    import pandas as pd

    from pipeline_tasks.core.config import PipelineConfig

log = logging.getLogger(__name__)

NUMERIC, CATEGORICAL = "numeric", "categorical"
DRIFT, NO_DRIFT, INSUFFICIENT_DATA = "drift", "no_drift", "insufficient_data"
# Evidently's default test switches on the reference size (stattests.registry.get_stattest).
_EVIDENTLY_SMALL_REFERENCE = 1000
_PROMETHEUS_PREFIX = "mlops_drift"
_RESERVED_LABELS = ("column", "method")


class _FromConfig:
    """Default marker: take the value from the config (``MLOPS_DRIFT_*``), not from the caller."""

    def __repr__(self) -> str:
        return "<config default>"


CONFIG_DEFAULT: Any = _FromConfig()


@dataclass(frozen=True)
class ColumnDrift:
    """Evidently's verdict on one column."""

    column: str
    kind: str  # numeric | categorical
    method: str  # Evidently's stat test name: wasserstein, jensenshannon, ks, chisquare, z, ...
    score: float  # a p-value for tests (drift when below threshold), else a distance (drift at/above)
    threshold: float
    drifted: bool

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["score"] = _finite_or_none(self.score)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColumnDrift:
        score = data["score"]
        return cls(column=data["column"], kind=data["kind"], method=data["method"],
                   score=float("nan") if score is None else float(score),
                   threshold=float(data["threshold"]), drifted=bool(data["drifted"]))


@dataclass(frozen=True)
class DriftResult:
    """The engine's outcome of one comparison (``drift_check.DriftCheck`` is ``drift.json``)."""

    status: str  # drift | no_drift | insufficient_data
    drift_detected: bool  # True only when status == "drift"
    drifted_share: float  # drifted columns / compared columns (0.0 when nothing was compared)
    share_threshold: float
    drifted_columns: list[str]
    columns: dict[str, ColumnDrift]
    rows_reference: int  # rows given
    rows_current: int
    rows_compared_reference: int  # rows actually compared (after sampling)
    rows_compared_current: int
    missing_columns: list[str]  # expected (reference) columns absent from current
    unexpected_columns: list[str]  # columns in current the reference lacks (reported only)
    report_uri: str | None  # where the HTML report was written, if asked
    reason: str = ""  # the verdict in one sentence
    empty_columns: list[str] = dataclasses.field(default_factory=list)  # no value on one side
    ignored_columns: list[str] = dataclasses.field(default_factory=list)  # unsupported dtype
    min_rows: int = 0
    sample_rows: int | None = None
    seed: int = 0
    evidently_version: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["columns"] = {name: col.to_dict() for name, col in self.columns.items()}
        data["drifted_columns"] = list(self.drifted_columns)
        for name in ("missing_columns", "unexpected_columns", "empty_columns", "ignored_columns"):
            data[name] = list(data[name])
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriftResult:
        """Read back a ``to_dict()``."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["columns"] = {k: ColumnDrift.from_dict(v) for k, v in data["columns"].items()}
        return cls(**values)

    @property
    def columns_compared(self) -> int:
        return len(self.columns)

    def metrics(self) -> dict[str, float]:
        """Flat numeric metrics for MLflow (``log_metrics``) and Prometheus.

        Per column: ``drift_score.<column>`` and ``drifted.<column>`` (0/1); column names are
        reduced to the characters MLflow accepts in metric names.
        """
        out: dict[str, float] = {
            "drift_detected": float(self.drift_detected),
            "drift_share": float(self.drifted_share),
            "drift_share_threshold": float(self.share_threshold),
            "insufficient_data": float(self.status == INSUFFICIENT_DATA),
            "columns_compared": float(self.columns_compared),
            "columns_drifted": float(len(self.drifted_columns)),
            "columns_missing": float(len(self.missing_columns)),
            "columns_unexpected": float(len(self.unexpected_columns)),
            "columns_empty": float(len(self.empty_columns)),
            "rows_reference": float(self.rows_reference),
            "rows_current": float(self.rows_current),
            "rows_compared_reference": float(self.rows_compared_reference),
            "rows_compared_current": float(self.rows_compared_current),
        }
        for name, col in self.columns.items():
            key = _metric_key(name)
            out[f"drift_score.{key}"] = float(col.score)
            out[f"drifted.{key}"] = float(col.drifted)
        return out


def check_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    numeric_columns: Sequence[str] | None = None,
    categorical_columns: Sequence[str] | None = None,
    share_threshold: float = CONFIG_DEFAULT,
    min_rows: int = CONFIG_DEFAULT,
    sample_rows: int | None = CONFIG_DEFAULT,
    seed: int = 0,
    report_uri: str | None = None,
    config: PipelineConfig | None = None,
) -> DriftResult:
    """Compare ``current`` with ``reference`` column by column with Evidently.

    Columns: the reference's ``numeric_columns`` and ``categorical_columns``; a list left as None
    is inferred from the reference's dtypes (numbers are numeric; text, category and bool are
    categorical; other dtypes such as datetimes are listed in ``ignored_columns``). Expected
    columns absent from ``current`` are reported in ``missing_columns``, extra ones in
    ``unexpected_columns``; the shared ones are compared. No shared column raises
    ``DriftInputError``.

    ``share_threshold``, ``min_rows`` and ``sample_rows`` default to the config's
    ``drift_share_threshold``, ``drift_min_rows`` and ``drift_sample_rows`` (``config`` or
    ``load_config()``). Fewer than ``min_rows`` current (or reference) rows gives
    ``insufficient_data`` without running Evidently. ``sample_rows`` None or 0 compares every row.
    With ``report_uri`` (an fsspec URI), the HTML report (drift plus a data summary of the
    compared rows) is written there atomically.
    """
    share_threshold, min_rows, sample_rows = _resolve_defaults(
        config, share_threshold=share_threshold, min_rows=min_rows, sample_rows=sample_rows)
    kinds, ignored = _column_kinds(reference, numeric_columns, categorical_columns)
    expected = list(kinds)
    missing = [c for c in expected if c not in current.columns]
    unexpected = [c for c in current.columns if c not in reference.columns]
    no_traffic = len(current) == 0 and len(current.columns) == 0
    if no_traffic:
        missing = []  # nothing was read at all: no columns to complain about
    elif len(missing) == len(expected):
        raise DriftInputError(
            f"drift check: the current data shares no column with the reference; expected "
            f"{_names(expected)}, got {_names(current.columns)}")
    if missing:
        log.warning("drift check: %d expected column(s) missing from the current data, not "
                    "compared: %s", len(missing), _names(missing))
    if unexpected:
        log.warning("drift check: %d column(s) in the current data that the reference lacks, "
                    "not compared: %s", len(unexpected), _names(unexpected))
    shared = [c for c in expected if c not in missing]

    common: dict[str, Any] = {
        "share_threshold": share_threshold, "rows_reference": len(reference),
        "rows_current": len(current), "missing_columns": missing,
        "unexpected_columns": unexpected, "ignored_columns": ignored, "min_rows": min_rows,
        "sample_rows": sample_rows or None, "seed": seed, "evidently_version": _evidently_version(),
    }
    short = _too_few_rows(len(reference), len(current), min_rows)
    if short:
        log.info("drift check: %s", short)
        return DriftResult(
            status=INSUFFICIENT_DATA, drift_detected=False, drifted_share=0.0, drifted_columns=[],
            columns={}, rows_compared_reference=0, rows_compared_current=0, report_uri=None,
            reason=short, **common)

    _check_types(reference, current, {c: kinds[c] for c in shared})
    ref = _sample(reference, shared, sample_rows, seed)
    cur = _sample(current, shared, sample_rows, seed + 1)
    empty = [c for c in shared if _is_empty(ref[c], kinds[c]) or _is_empty(cur[c], kinds[c])]
    if empty:
        log.warning("drift check: column(s) with no value in the reference or the current rows, "
                    "not compared: %s", _names(empty))
    compared = [c for c in shared if c not in empty]
    if not compared:
        raise DriftInputError(
            f"drift check: every shared column is empty on one side: {_names(empty)}")
    tests = {c: _default_test(reference[c], current[c], ref[c], cur[c], kinds[c])
             for c in compared}
    columns, html = _run_evidently(ref, cur, {c: kinds[c] for c in compared}, tests,
                                   share_threshold, with_html=report_uri is not None)
    if report_uri is not None:
        storage.atomic_write_bytes(report_uri, html.encode("utf-8"))
        log.info("drift check: HTML report written to %s", report_uri)

    drifted = [c for c in compared if columns[c].drifted]
    share = len(drifted) / len(compared)
    detected = share >= share_threshold
    reason = (f"{len(drifted)} of {len(compared)} compared columns drifted (share {share:.3f} "
              f"{'>=' if detected else '<'} threshold {share_threshold:g})"
              + (f": {', '.join(drifted)}" if drifted else ""))
    log.info("drift check: %s", reason)
    return DriftResult(
        status=DRIFT if detected else NO_DRIFT, drift_detected=detected, drifted_share=share,
        drifted_columns=drifted, columns=columns, rows_compared_reference=len(ref),
        rows_compared_current=len(cur), report_uri=report_uri, reason=reason,
        empty_columns=empty, **common)


def write_prometheus(result: DriftResult, uri: str, labels: dict[str, str]) -> None:
    """Write ``result`` as a Prometheus text exposition file (node_exporter textfile collector
    format), atomically. ``labels`` (for example model name and version) go on every sample;
    per-column samples also carry ``column`` and ``method``."""
    from prometheus_client import CollectorRegistry, Gauge, generate_latest

    clash = sorted(set(labels) & set(_RESERVED_LABELS))
    if clash:
        raise ValueError(f"write_prometheus: label(s) {', '.join(clash)} are reserved for the "
                         f"per-column samples")
    names = list(labels)
    registry = CollectorRegistry()

    def gauge(name: str, doc: str, value: float) -> None:
        g = Gauge(f"{_PROMETHEUS_PREFIX}_{name}", doc, names, registry=registry)
        (g.labels(**labels) if names else g).set(value)

    flat = result.metrics()
    gauge("detected", "1 when the drifted share reached the threshold with enough rows",
          flat["drift_detected"])
    gauge("insufficient_data", "1 when too few rows were there to check", flat["insufficient_data"])
    gauge("share", "Share of compared columns that drifted", flat["drift_share"])
    gauge("share_threshold", "Drifted share at or above which the check reports drift",
          flat["drift_share_threshold"])
    for key, doc in (("rows_reference", "Reference rows given"),
                     ("rows_current", "Current rows given"),
                     ("rows_compared_reference", "Reference rows compared (after sampling)"),
                     ("rows_compared_current", "Current rows compared (after sampling)"),
                     ("columns_compared", "Columns compared"),
                     ("columns_drifted", "Columns that drifted"),
                     ("columns_missing", "Expected columns absent from the current data"),
                     ("columns_unexpected", "Current columns the reference lacks"),
                     ("columns_empty", "Shared columns with no value on one side")):
        gauge(key, doc, flat[key])
    per_column = [*names, *_RESERVED_LABELS]
    score = Gauge(f"{_PROMETHEUS_PREFIX}_column_score",
                  "Evidently's drift score of the column (p-value or distance, see method)",
                  per_column, registry=registry)
    threshold = Gauge(f"{_PROMETHEUS_PREFIX}_column_threshold",
                      "Threshold of the column's drift test", per_column, registry=registry)
    drifted = Gauge(f"{_PROMETHEUS_PREFIX}_column_drifted", "1 when the column drifted",
                    per_column, registry=registry)
    for col in result.columns.values():
        values = {**labels, "column": col.column, "method": col.method}
        score.labels(**values).set(col.score)
        threshold.labels(**values).set(col.threshold)
        drifted.labels(**values).set(float(col.drifted))
    storage.atomic_write_bytes(uri, generate_latest(registry))


# --------------------------------------------------------------------------- internals

def _resolve_defaults(config: PipelineConfig | None, **given: Any) -> tuple[float, int, int]:
    if any(isinstance(v, _FromConfig) for v in given.values()):
        from pipeline_tasks.core.config import load_config

        config = config or load_config()
    out = {}
    for name, value in given.items():
        out[name] = getattr(config, f"drift_{name}") if isinstance(value, _FromConfig) else value
    share, min_rows, sample_rows = out["share_threshold"], out["min_rows"], out["sample_rows"]
    if not 0.0 < share <= 1.0:
        raise DriftInputError(f"drift check: share_threshold must be in (0, 1], got {share}")
    if min_rows < 1:
        raise DriftInputError(f"drift check: min_rows must be >= 1, got {min_rows}")
    if sample_rows is not None and sample_rows < 0:
        raise DriftInputError(f"drift check: sample_rows must be >= 0 or None, got {sample_rows}")
    return float(share), int(min_rows), int(sample_rows or 0)


def _column_kinds(reference: pd.DataFrame, numeric: Sequence[str] | None,
                  categorical: Sequence[str] | None) -> tuple[dict[str, str], list[str]]:
    """``{column: kind}`` of the compared reference columns in reference order, and the
    reference columns left out (not selected, or a dtype such as datetime that is neither)."""
    given = [*(numeric or ()), *(categorical or ())]
    unknown = [c for c in given if c not in reference.columns]
    if unknown:
        raise DriftInputError(f"drift check: column(s) {_names(unknown)} not in the reference "
                              f"(it has {_names(reference.columns)})")
    both = sorted(set(numeric or ()) & set(categorical or ()))
    if both:
        raise DriftInputError(f"drift check: column(s) {_names(both)} given as both numeric and "
                              f"categorical")
    kinds: dict[str, str] = {}
    ignored: list[str] = []
    for name in reference.columns:
        series = reference[name]
        if numeric is not None and name in numeric:
            kinds[name] = NUMERIC
        elif categorical is not None and name in categorical:
            kinds[name] = CATEGORICAL
        elif numeric is None and name not in given and _is_numeric(series):
            kinds[name] = NUMERIC
        elif categorical is None and name not in given and _is_categorical(series):
            kinds[name] = CATEGORICAL
        else:
            ignored.append(name)
    if ignored:
        log.info("drift check: reference column(s) not compared: %s", _names(ignored))
    if not kinds:
        raise DriftInputError(
            f"drift check: no numeric or categorical column to compare in the reference "
            f"(it has {_names(reference.columns)})")
    return kinds, ignored


def _is_numeric(series: pd.Series) -> bool:
    import pandas as pd

    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def _is_categorical(series: pd.Series) -> bool:
    import pandas as pd

    return (pd.api.types.is_object_dtype(series) or pd.api.types.is_string_dtype(series)
            or isinstance(series.dtype, pd.CategoricalDtype) or pd.api.types.is_bool_dtype(series))


def _check_types(reference: pd.DataFrame, current: pd.DataFrame, kinds: dict[str, str]) -> None:
    """A numeric column must hold numbers on both sides (or nothing: an all-null column is
    reported as empty, whatever its dtype): say which column does not."""
    def wrong(series: pd.Series) -> bool:
        return not _is_numeric(series) and series.notna().any()

    bad = [f"{c!r} (reference {reference[c].dtype}, current {current[c].dtype})"
           for c, kind in kinds.items()
           if kind == NUMERIC and (wrong(reference[c]) or wrong(current[c]))]
    if bad:
        raise DriftInputError("drift check: numeric column(s) hold non-numeric values: "
                              + "; ".join(bad))


def _too_few_rows(rows_reference: int, rows_current: int, min_rows: int) -> str:
    if rows_current < min_rows:
        return (f"insufficient data: {rows_current} current row(s), fewer than min_rows "
                f"{min_rows}; not counted as drift")
    if rows_reference < min_rows:
        return (f"insufficient data: {rows_reference} reference row(s), fewer than min_rows "
                f"{min_rows}; not counted as drift")
    return ""


def _sample(frame: pd.DataFrame, columns: list[str], rows: int, seed: int) -> pd.DataFrame:
    """``columns`` of a seeded uniform sample of ``rows`` rows without replacement (all rows when
    the frame is not larger). Rows are picked first, so a large frame is never copied whole."""
    import numpy as np

    if not rows or len(frame) <= rows:
        return frame[columns]
    positions = np.sort(np.random.default_rng(seed).choice(len(frame), size=rows, replace=False))
    return frame.take(positions)[columns].reset_index(drop=True)


def _valid(series: pd.Series, kind: str) -> pd.Series:
    """The values Evidently tests: without nulls and, for numbers, without infinities."""
    import numpy as np

    if kind == NUMERIC:
        return series.replace([-np.inf, np.inf], np.nan).dropna()
    return series.dropna()


def _is_empty(series: pd.Series, kind: str) -> bool:
    return _valid(series, kind).empty


def _default_test(ref_full: pd.Series, cur_full: pd.Series, ref_sample: pd.Series,
                  cur_sample: pd.Series, kind: str):
    """The stat test Evidently's default picks for this column on the FULL data.

    Evidently decides from the reference size (more than 1,000 valid rows or not) and, for
    numbers and small references, from the distinct values of both sides (at most 2, at most 5).
    A sample holds a subset of the rows and values, so when its reference already has more than
    1,000 valid rows and (for numbers) more than 5 distinct values, the full data gives the same
    answer and the cheap sample decides; otherwise Evidently decides on the full columns.
    """
    import pandas as pd
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    column_type = ColumnType.Numerical if kind == NUMERIC else ColumnType.Categorical
    ref_s, cur_s = _valid(ref_sample, kind), _valid(cur_sample, kind)
    if len(ref_s) > _EVIDENTLY_SMALL_REFERENCE and (
            kind == CATEGORICAL or pd.concat([ref_s, cur_s]).nunique() > 5):
        return get_stattest(ref_s, cur_s, column_type, None)
    return get_stattest(_valid(ref_full, kind), _valid(cur_full, kind), column_type, None)


def _method_param(test, kind: str) -> str | None:
    """The stat test name to pass to Evidently, or None to let Evidently pick it itself.

    Evidently's default applies chi-square or Z to a numeric column with at most 5 values in a
    small reference, but refuses those tests by name for numeric columns; there (never with a
    reference above 1,000 rows) its own choice on the compared rows is used.
    """
    from evidently.legacy.calculations.stattests.registry import get_registered_stattest
    from evidently.legacy.core import ColumnType

    column_type = ColumnType.Numerical if kind == NUMERIC else ColumnType.Categorical
    try:
        get_registered_stattest(test.name, column_type)
    except ValueError:
        return None
    return test.name


def _run_evidently(ref: pd.DataFrame, cur: pd.DataFrame, kinds: dict[str, str],
                   tests: dict[str, Any], share_threshold: float,
                   with_html: bool) -> tuple[dict[str, ColumnDrift], str]:
    """Run the report and read each column's verdict from Evidently's ``ValueDrift`` tests.

    With the HTML: ``DataDriftPreset`` (its ``ValueDrift`` per column, ``DriftedColumnsCount``
    and its drift table) plus ``DataSummaryPreset``. Without: the same ``ValueDrift`` metrics the
    preset generates, alone, which skips the preset's table (it tests every column again, to draw
    it) and the summary: the same verdicts in a third of the time.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset, DataSummaryPreset

    names = list(kinds)
    methods = {c: _method_param(tests[c], kinds[c]) for c in names}
    thresholds = {c: tests[c].default_threshold for c in names}
    definition = DataDefinition(
        numerical_columns=[c for c in names if kinds[c] == NUMERIC],
        categorical_columns=[c for c in names if kinds[c] == CATEGORICAL])
    items: list[Any]
    if with_html:
        items = [DataDriftPreset(
                     columns=names, drift_share=share_threshold,
                     per_column_method={c: m for c, m in methods.items() if m is not None},
                     per_column_threshold=thresholds),
                 DataSummaryPreset(columns=names)]
    else:
        items = [ValueDrift(column=c, method=methods[c], threshold=thresholds[c]) for c in names]
    snapshot = Report(items, include_tests=True).run(
        current_data=Dataset.from_pandas(cur[names], data_definition=definition),
        reference_data=Dataset.from_pandas(ref[names], data_definition=definition))
    found = snapshot.dict()
    status = {t["metric_config"]["metric_id"]: t["status"] for t in found["tests"]
              if t["bound_test"]["type"].endswith("ValueDriftBoundTest")}
    columns: dict[str, ColumnDrift] = {}
    for metric in found["metrics"]:
        cfg = metric["config"]
        name = cfg.get("column")
        if not cfg["type"].endswith(":ValueDrift") or name not in kinds:
            continue
        verdict = status.get(metric["id"])
        if verdict not in ("FAIL", "SUCCESS"):
            raise PipelineError(f"drift check: Evidently gave no drift verdict for column "
                                f"{name!r} (test status {verdict!r})")
        method = cfg["method"]  # an auto-picked test reads back under its display name
        if method in (tests[name].name, tests[name].display_name):
            method = tests[name].name
        else:
            log.warning("drift check: column %r was tested with %r, not %r as on the full data",
                        name, method, tests[name].name)
        columns[name] = ColumnDrift(
            column=name, kind=kinds[name], method=method, score=float(metric["value"]),
            threshold=float(cfg["threshold"]), drifted=verdict == "FAIL")
    absent = [c for c in names if c not in columns]
    if absent:
        raise PipelineError(f"drift check: Evidently returned no drift for {_names(absent)}")
    html = snapshot.get_html_str(as_iframe=False) if with_html else ""
    return {c: columns[c] for c in names}, html


def _evidently_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("evidently")
    except PackageNotFoundError:
        return ""


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _metric_key(column: str) -> str:
    """MLflow metric names allow letters, digits, ``_ - . : /`` and spaces."""
    return re.sub(r"[^A-Za-z0-9_\-.:/ ]", "_", str(column))


def _names(columns) -> str:
    listed = [str(c) for c in columns]
    return ", ".join(repr(c) for c in listed) if listed else "(none)"
