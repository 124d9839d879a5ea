"""The drift check of one data interval, and its verdict ``DriftCheck`` (what ``drift.json`` holds).

Current data: the prediction log rows whose ``event_time`` falls in the interval (or a CSV/Parquet
file given as ``current``), of the version that served most of them. Reference: that version's
training snapshot (``sources.reference_frame``). The comparison is ``drift.check_drift`` (an
Evidently report). Outputs, in ``layout.monitoring_run_dir``: ``report.html``, ``drift.json``
(the verdict), ``metrics.prom`` (Prometheus text), and MLflow metrics (``history.log_check``).

This module imports nothing heavy at its top: lineage reads ``DriftCheck`` in the web server.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pipeline_tasks.core import layout, storage
from pipeline_tasks.core.errors import StageSkipped
from pipeline_tasks.core.results import XComResult
from pipeline_tasks.data.ingest import as_utc
from pipeline_tasks.monitoring.history import log_check
from pipeline_tasks.monitoring.sources import (
    champion_version,
    read_prediction_log,
    read_table,
    reference_frame,
    served_version,
)

if TYPE_CHECKING:
    import pandas as pd

    from pipeline_tasks.core.config import PipelineConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DriftCheck(XComResult):
    """One drift verdict: ``to_dict()`` is ``drift.json``, ``from_dict()`` reads one back (the
    lineage pages read them with it)."""

    model_name: str
    model_version: str | None
    interval_start: str
    interval_end: str
    dag_id: str
    run_id: str
    current_source: str  # "prediction_log" or the file given
    status: str  # drift | no_drift | insufficient_data
    reason: str
    drift_detected: bool
    drifted_share: float | None
    share_threshold: float | None
    drifted_columns: list[str]
    columns: dict[str, dict]
    rows_current: int | None
    rows_reference: int | None
    versions_seen: dict[str, int]
    skipped_columns: dict[str, str]  # model inputs left out of the comparison, and why
    missing_columns: list[str]
    unexpected_columns: list[str]
    reference_dataset_version: str | None
    report_uri: str | None
    verdict_uri: str
    metrics_uri: str
    mlflow_run_id: str | None
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], **overrides: Any) -> DriftCheck:
        """A verdict from its ``to_dict()``, also an older or partial one: an absent key reads as
        empty (``""``, ``[]``, ``{}`` or None), a number that is not one as None. ``overrides``
        replace keys of ``data`` (for example where the verdict was found)."""
        d = {**data, **overrides}
        return cls(
            model_name=_text(d.get("model_name")), model_version=_opt_text(d.get("model_version")),
            interval_start=_text(d.get("interval_start")),
            interval_end=_text(d.get("interval_end")), dag_id=_text(d.get("dag_id")),
            run_id=_text(d.get("run_id")), current_source=_text(d.get("current_source")),
            status=_text(d.get("status")), reason=_text(d.get("reason")),
            drift_detected=bool(d.get("drift_detected")),
            drifted_share=_number(d.get("drifted_share")),
            share_threshold=_number(d.get("share_threshold")),
            drifted_columns=[str(c) for c in d.get("drifted_columns") or []],
            columns=dict(d.get("columns") or {}),
            rows_current=_count(d.get("rows_current")),
            rows_reference=_count(d.get("rows_reference")),
            versions_seen=dict(d.get("versions_seen") or {}),
            skipped_columns=dict(d.get("skipped_columns") or {}),
            missing_columns=[str(c) for c in d.get("missing_columns") or []],
            unexpected_columns=[str(c) for c in d.get("unexpected_columns") or []],
            reference_dataset_version=_opt_text(d.get("reference_dataset_version")),
            report_uri=_opt_text(d.get("report_uri")), verdict_uri=_text(d.get("verdict_uri")),
            metrics_uri=_text(d.get("metrics_uri")), mlflow_run_id=_opt_text(d.get("mlflow_run_id")),
            created_at=_text(d.get("created_at")))


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _opt_text(value: Any) -> str | None:
    return None if value is None else str(value)


def _number(value: Any) -> float | None:
    try:
        return None if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return None


def _count(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number is not None and math.isfinite(number) else None


def check_interval(*, model_name: str, interval_start: str, interval_end: str,
                   config: PipelineConfig, run_key: str, dag_id: str, run_id: str,
                   current_uri: str | None = None) -> DriftCheck:
    """The drift check of one interval (see the module doc)."""
    from pipeline_tasks.monitoring import drift
    from pipeline_tasks.serving.predlog import META_COLUMNS as LOG_META

    start, end = as_utc(interval_start), as_utc(interval_end)
    if current_uri:
        current = read_table(current_uri)
        versions = ({str(v): int(n) for v, n in current["model_version"].astype(str)
                     .value_counts().items()} if "model_version" in current else {})
    else:
        current = read_prediction_log(config, model_name, start, end)
        versions = {str(v): int(n) for v, n in
                    current["model_version"].astype(str).value_counts().items()}
    # the version that served most of the interval's rows; its rows only are compared
    version = max(versions, key=versions.get) if versions else champion_version(model_name,
                                                                                 config)
    if versions and "model_version" in current:
        current = current[current["model_version"].astype(str) == version]
    out = layout.monitoring_run_dir(config, model_name, run_key)
    verdict_uri = storage.join(out, layout.DRIFT_VERDICT)
    metrics_uri = storage.join(out, layout.DRIFT_METRICS)
    served = served_version(model_name, version, config) if version else None
    if served is None:
        raise StageSkipped(f"{model_name} has no champion and no logged traffic: nothing to "
                           "check")
    reference = reference_frame(served, config)
    features = [c for c in served.feature_columns if c in reference.columns]
    numeric, categorical, skipped = split_features(reference, features, config)
    inputs = [c for c in current.columns
              if c not in LOG_META and c != served.target and c not in skipped]
    result = drift.check_drift(
        reference[numeric + categorical], current[inputs].reset_index(drop=True),
        numeric_columns=numeric, categorical_columns=categorical,
        share_threshold=config.drift_share_threshold, min_rows=config.drift_min_rows,
        sample_rows=config.drift_sample_rows, seed=config.seed,
        report_uri=storage.join(out, layout.DRIFT_REPORT))
    if result.unexpected_columns:
        log.warning("%s: current data has column(s) %s that v%s was not trained on: reported, "
                    "not compared", model_name, result.unexpected_columns, version)
    check = DriftCheck(
        model_name=model_name, model_version=version, interval_start=start.isoformat(),
        interval_end=end.isoformat(), dag_id=dag_id, run_id=run_id,
        current_source=current_uri or "prediction_log", status=result.status,
        reason=result.reason,
        drift_detected=result.drift_detected, drifted_share=result.drifted_share,
        share_threshold=result.share_threshold, drifted_columns=list(result.drifted_columns),
        columns={k: v.to_dict() for k, v in result.columns.items()},
        rows_current=result.rows_current, rows_reference=result.rows_reference,
        versions_seen=versions, skipped_columns=skipped,
        missing_columns=list(result.missing_columns),
        unexpected_columns=list(result.unexpected_columns),
        reference_dataset_version=served.dataset_version, report_uri=result.report_uri,
        verdict_uri=verdict_uri, metrics_uri=metrics_uri,
        mlflow_run_id=log_check(model_name, "drift", run_key, end, result.metrics(),
                                {"model_version": version, "status": result.status,
                                 "airflow.dag_id": dag_id, "airflow.run_id": run_id},
                                [result.report_uri], config))
    drift.write_prometheus(result, metrics_uri, {"model_name": model_name,
                                                 "model_version": version})
    storage.atomic_write_json(verdict_uri, check.to_dict())
    log.info("%s v%s, %s..%s: %s (%d current rows, drifted share %.2f, columns %s)", model_name,
             version, start.date(), end.date(), result.status, result.rows_current,
             result.drifted_share, result.drifted_columns)
    return check


def split_features(reference: pd.DataFrame, features: list[str], config: PipelineConfig
                   ) -> tuple[list[str], list[str], dict[str, str]]:
    """The model inputs to compare, as (numeric, categorical), and those left out with why:
    those named in ``drift_ignore_columns``, and categorical inputs with more than
    ``drift_max_categories`` distinct training values."""
    import pandas as pd

    numeric, categorical, skipped = [], [], {}
    for column in features:
        if column in config.drift_ignored:
            skipped[column] = "listed in drift_ignore_columns"
            continue
        values = reference[column]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            numeric.append(column)
            continue
        distinct = int(values.nunique(dropna=True))
        if distinct > config.drift_max_categories:
            skipped[column] = (f"{distinct} distinct values in training, more than "
                               f"drift_max_categories={config.drift_max_categories}")
        else:
            categorical.append(column)
    return numeric, categorical, skipped
