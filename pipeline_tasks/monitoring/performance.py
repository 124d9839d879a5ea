"""The served model's real performance, from delayed labels.

True outcomes (``row_id``, ``event_time``, the target) are joined on ``row_id`` to the logged
predictions of the interval; the served model's real metrics are compared with its offline holdout
metric, and a drop beyond ``performance_max_drop`` is ``degraded``. Labels with no matching
prediction are counted and reported. The verdict is ``performance.json`` in the monitoring run's
folder; a model without a labels source is recorded as ``no_labels``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline_tasks.core import layout, storage
from pipeline_tasks.core.errors import StageSkipped
from pipeline_tasks.core.results import XComResult
from pipeline_tasks.data.ingest import as_utc
from pipeline_tasks.model.metrics import primary_metric
from pipeline_tasks.monitoring.history import log_check
from pipeline_tasks.monitoring.sources import (
    MonitoringInputError,
    champion_version,
    interval_days,
    read_prediction_log,
    read_table,
    served_version,
)

if TYPE_CHECKING:
    import pandas as pd

    from pipeline_tasks.core.config import PipelineConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PerformanceCheck(XComResult):
    """One performance verdict (``performance.json``)."""

    model_name: str
    model_version: str | None
    interval_start: str
    interval_end: str
    status: str  # ok | degraded | insufficient_labels | no_labels
    degraded: bool
    primary_metric: str
    offline_metric: float | None
    served_metrics: dict[str, float]
    rows_predicted: int
    rows_labelled: int  # predictions with a true outcome
    labels_read: int
    unmatched_labels: int  # outcomes in the interval with no logged prediction
    unmatched_examples: list[str]
    reason: str
    verdict_uri: str
    mlflow_run_id: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_labels(labels_uri: str, target: str, start: datetime, end: datetime,
                lookahead_days: int) -> pd.DataFrame:
    """True outcomes whose ``event_time`` is in [start, end), from a file or from a folder of
    ``*_YYYY-MM-DD.{csv,parquet}`` files dated up to ``lookahead_days`` after ``end`` (outcomes
    land after the events)."""
    import pandas as pd

    fs, path = storage.url_to_fs(labels_uri)
    if fs.isdir(path):
        wanted = set(interval_days(start, end + timedelta(days=lookahead_days)))
        files = [f"{fs.unstrip_protocol(p)}" for p in sorted(fs.ls(path, detail=False))
                 if Path(p).stem[-10:] in wanted and p.endswith((".csv", ".parquet"))]
        if "file" in fs.protocol:  # a symlink in the folder cannot lead elsewhere
            from pipeline_tasks.data.ingest import entries_within

            entries_within(path, files, f"labels {labels_uri}")
    elif fs.exists(path):
        files = [labels_uri]
    else:
        raise MonitoringInputError(f"labels {labels_uri}: no such file or folder")
    frames = []
    for uri in files:
        frame = read_table(uri)
        missing = [c for c in ("row_id", "event_time", target) if c not in frame.columns]
        if missing:
            raise MonitoringInputError(f"labels file {uri} lacks column(s) {missing}")
        frames.append(frame[["row_id", "event_time", target]])
    if not frames:
        return pd.DataFrame(columns=["row_id", "event_time", target])
    labels = pd.concat(frames, ignore_index=True)
    labels["row_id"] = labels["row_id"].astype(str)
    when = pd.to_datetime(labels["event_time"], utc=True)
    labels = labels[(when >= start) & (when < end) & labels[target].notna()]
    return labels.drop_duplicates("row_id", keep="last").reset_index(drop=True)


def check_performance(*, model_name: str, interval_start: str, interval_end: str,
                      labels_uri: str, config: PipelineConfig, run_key: str) -> PerformanceCheck:
    """The served model's real performance on [interval_start, interval_end) (see module doc)."""

    start, end = as_utc(interval_start), as_utc(interval_end)
    predicted = read_prediction_log(config, model_name, start, end)
    version = (predicted["model_version"].astype(str).value_counts().idxmax()
               if len(predicted) else champion_version(model_name, config))
    if version is None:
        raise StageSkipped(f"{model_name} has no champion and no logged traffic: nothing to "
                           "score")
    served = served_version(model_name, version, config)
    predicted = predicted[predicted["model_version"].astype(str) == version]
    labels = read_labels(labels_uri, served.target, start, end, config.label_lookahead_days)
    joined = predicted.merge(labels[["row_id", served.target]], on="row_id", how="inner",
                             validate="many_to_one")
    unmatched = labels[~labels["row_id"].isin(predicted["row_id"])]
    metrics: dict[str, float] = {}
    metric = served.primary_metric
    if len(joined) < config.performance_min_rows:
        status, reason = "insufficient_labels", (
            f"{len(joined)} labelled predictions, fewer than performance_min_rows="
            f"{config.performance_min_rows}")
    else:
        metrics = served_metrics(joined[served.target].to_numpy(),
                                 joined["prediction"].to_numpy(),
                                 joined["score"].to_numpy() if "score" in joined else None,
                                 served.task_type)
        value = metrics.get(metric)
        if value is None or not math.isfinite(value):
            status, reason = "insufficient_labels", f"{metric} is undefined on these labels"
        else:
            status, reason = "ok", f"{metric} {value:.4f} on {len(joined)} labelled rows"
            if served.offline_metric is not None:
                _, greater = primary_metric(served.task_type)
                drop = served.offline_metric - value if greater else value - served.offline_metric
                reason += f" (offline {served.offline_metric:.4f}, change {-drop:+.4f})"
                if drop > config.performance_max_drop:
                    status = "degraded"
                    reason += (f": dropped more than performance_max_drop="
                               f"{config.performance_max_drop}")
    if len(unmatched):
        log.warning("%d outcome(s) in %s..%s match no logged prediction of %s (e.g. %s)",
                    len(unmatched), start.date(), end.date(), model_name,
                    unmatched["row_id"].head(3).tolist())
    verdict_uri = storage.join(layout.monitoring_run_dir(config, model_name, run_key),
                               layout.PERFORMANCE_VERDICT)
    logged = {f"served_{k}": v for k, v in metrics.items()}
    logged.update(labelled_rows=float(len(joined)), unmatched_labels=float(len(unmatched)))
    check = PerformanceCheck(
        model_name=model_name, model_version=version, interval_start=start.isoformat(),
        interval_end=end.isoformat(), status=status, degraded=status == "degraded",
        primary_metric=metric, offline_metric=served.offline_metric, served_metrics=metrics,
        rows_predicted=len(predicted), rows_labelled=len(joined), labels_read=len(labels),
        unmatched_labels=len(unmatched),
        unmatched_examples=unmatched["row_id"].head(5).astype(str).tolist(), reason=reason,
        verdict_uri=verdict_uri,
        mlflow_run_id=log_check(model_name, "performance", run_key, end, logged,
                                {"model_version": version, "status": status}, [], config))
    storage.atomic_write_json(verdict_uri, check.to_dict())
    log.info("%s v%s performance %s..%s: %s: %s", model_name, version, start.date(), end.date(),
             status, reason)
    return check


def record_no_labels(*, model_name: str, interval_start: str, interval_end: str,
                     config: PipelineConfig, run_key: str) -> PerformanceCheck:
    """Record that ``model_name`` has no labels source: its performance cannot be checked (not an
    error; the drift check still runs). Written as ``performance.json`` like any other verdict."""
    start, end = as_utc(interval_start), as_utc(interval_end)
    verdict_uri = storage.join(layout.monitoring_run_dir(config, model_name, run_key),
                               layout.PERFORMANCE_VERDICT)
    check = PerformanceCheck(
        model_name=model_name, model_version=None, interval_start=start.isoformat(),
        interval_end=end.isoformat(), status="no_labels", degraded=False, primary_metric="",
        offline_metric=None, served_metrics={}, rows_predicted=0, rows_labelled=0,
        labels_read=0, unmatched_labels=0, unmatched_examples=[],
        reason=(f"no labels source for {model_name}: performance not checked (set the 'labels' "
                "param, or a model_labels entry for this model in the config)"),
        verdict_uri=verdict_uri, mlflow_run_id=None)
    storage.atomic_write_json(verdict_uri, check.to_dict())
    log.info("%s", check.reason)
    return check


def served_metrics(y_true, prediction, score, task_type: str) -> dict[str, float]:
    """Metrics of served predictions against true outcomes."""
    import numpy as np
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    from pipeline_tasks.model.metrics import regression_metrics

    if task_type == "regression":
        return regression_metrics(y_true, prediction)
    y_true = np.asarray(y_true)
    prediction = np.asarray(prediction).astype(y_true.dtype, copy=False)
    out = {"accuracy": float(accuracy_score(y_true, prediction))}
    labels = np.unique(y_true)
    if score is not None and len(labels) == 2:
        out["roc_auc"] = float(roc_auc_score(y_true == labels.max(), score))
        out["f1"] = float(f1_score(y_true, prediction, pos_label=labels.max(), zero_division=0))
    elif len(labels) > 2:
        out["f1_macro"] = float(f1_score(y_true, prediction, average="macro", zero_division=0))
    return out
