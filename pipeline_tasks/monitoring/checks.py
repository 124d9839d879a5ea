"""Monitoring: what the served model saw and how well it did, per data interval, and whether to
retrain.

- ``check_interval``: the drift check of one interval. Current data: the prediction log rows whose
  ``event_time`` falls in the interval (or a CSV/Parquet file given as ``current``). Reference:
  the training snapshot of the model version that served those rows, found through the version's
  ``dataset_version`` tag (never "the latest file"). The comparison is ``drift.check_drift`` (an
  Evidently report). Outputs, under ``lake/monitoring/<model>/<run partition>/``: ``report.html``,
  ``drift.json`` (the verdict), ``metrics.prom`` (Prometheus text), and MLflow metrics in the
  experiment ``<model>-monitoring`` (one run per check, plus a ``drift-over-time`` run whose
  metric steps are the intervals, for the chart).
- ``check_performance``: delayed labels. True outcomes (``row_id``, ``event_time``, the target)
  are joined on ``row_id`` to the logged predictions of the interval; the served model's real
  metrics are compared with its offline holdout metric. Labels with no matching prediction are
  counted and reported.
- ``decide_retrain``: drift or a performance drop asks for retraining, at most once per
  ``retrain_cooldown_days`` of data time per model. Decisions are recorded (and re-runs of the same
  monitoring run give the same decision), so the asset event the DAG emits is not repeated.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline_tasks.core import layout, storage, tracking
from pipeline_tasks.core.config import PipelineConfig
from pipeline_tasks.core.errors import PipelineInputError, StageSkipped
from pipeline_tasks.data.ingest import as_utc
from pipeline_tasks.model.metrics import primary_metric
from pipeline_tasks.serving.predlog import META_COLUMNS as LOG_META

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


class MonitoringInputError(PipelineInputError):
    """Monitoring inputs that cannot be used (a corrupt log file, labels without a key...)."""


# ------------------------------------------------------------------------------- served version

@dataclass(frozen=True)
class ServedVersion:
    """What monitoring needs to know of a registered model version, from its lineage tags."""

    model_name: str
    version: str
    run_id: str
    dataset_version: str
    target: str
    task_type: str
    feature_columns: list[str]
    primary_metric: str
    offline_metric: float | None
    source: str


def served_version(model_name: str, version: str, config: PipelineConfig) -> ServedVersion:
    tracking.configure_mlflow(config)
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from pipeline_tasks.deploy.bluegreen import version_inputs

    client = MlflowClient()
    try:
        mv = client.get_model_version(model_name, str(version))
    except MlflowException as exc:
        raise MonitoringInputError(f"model {model_name!r} has no version {version!r} in the "
                                   "registry") from exc
    run = client.get_run(mv.run_id)
    tags, params = run.data.tags, run.data.params
    dataset_version = mv.tags.get("dataset_version") or tags.get("dataset_version")
    if not dataset_version:
        raise MonitoringInputError(f"{model_name} v{version} has no dataset_version tag: its "
                                   "training snapshot cannot be found")
    value = mv.tags.get("primary_metric_value")
    return ServedVersion(
        model_name=model_name, version=str(version), run_id=mv.run_id,
        dataset_version=dataset_version, target=tags.get("target") or params.get("target", ""),
        task_type=tags.get("task_type") or params.get("task_type", ""),
        feature_columns=version_inputs(model_name, str(version), config)[1],
        primary_metric=mv.tags.get("primary_metric") or params.get("primary_metric", ""),
        offline_metric=float(value) if value else None, source=mv.tags.get("source", ""))


def champion_source(model_name: str, config: PipelineConfig) -> str | None:
    """The source the champion was trained on (its ``source`` tag), or None (no champion)."""
    version = champion_version(model_name, config)
    if version is None:
        return None
    from mlflow.tracking import MlflowClient

    return MlflowClient().get_model_version(model_name, version).tags.get("source") or None


def champion_version(model_name: str, config: PipelineConfig) -> str | None:
    tracking.configure_mlflow(config)
    from mlflow.tracking import MlflowClient

    from pipeline_tasks.model.registry import current_champion

    return current_champion(model_name, MlflowClient())


def reference_frame(served: ServedVersion, config: PipelineConfig) -> pd.DataFrame:
    """The training snapshot of ``served`` (the data its model was fitted and checked on)."""
    from pipeline_tasks.data.versioning import read_snapshot

    try:
        return read_snapshot(served.dataset_version, config)
    except FileNotFoundError as exc:
        raise MonitoringInputError(f"{served.model_name} v{served.version}: {exc}") from exc


# ---------------------------------------------------------------------------- current traffic

def _days(start: datetime, end: datetime) -> list[str]:
    day, days = start.date(), []
    while datetime(day.year, day.month, day.day, tzinfo=UTC) < end:
        days.append(day.isoformat())
        day += timedelta(days=1)
    return days


def read_prediction_log(config: PipelineConfig, model_name: str, start: datetime,
                        end: datetime) -> pd.DataFrame:
    """The logged predictions of ``model_name`` with ``start <= event_time < end``.

    Only the ``date=`` partitions of the interval are read. A file that cannot be read fails the
    call with its name; nothing is deleted or moved, so the other partitions stay as they are.
    """
    import pandas as pd

    fs, root = storage.url_to_fs(config.predictions_uri)
    frames = []
    for day in _days(start, end):
        folder = f"{root.rstrip('/')}/date={day}"
        if not fs.exists(folder):
            continue
        for path in sorted(fs.glob(folder + "/*.parquet")):
            try:
                with fs.open(path, "rb") as handle:
                    frame = pd.read_parquet(handle, engine="pyarrow")
            except Exception as exc:  # pyarrow raises several types for a damaged file
                raise MonitoringInputError(f"prediction log file {path} cannot be read "
                                           f"({type(exc).__name__}: {exc}); move it out of "
                                           "the log or restore it, then re-run") from exc
            frames.append(frame[frame["model_name"] == model_name])
    if not frames:
        return pd.DataFrame(columns=list(LOG_META))
    rows = pd.concat(frames, ignore_index=True)
    when = pd.to_datetime(rows["event_time"], utc=True)
    return rows[(when >= start) & (when < end)].reset_index(drop=True)


def read_table(uri: str) -> pd.DataFrame:
    """One CSV or Parquet file (``current`` or a labels file), with a clear error when it cannot
    be read."""
    import pandas as pd

    lower = uri.lower()
    try:
        if lower.endswith((".parquet", ".pq")):
            return storage.read_parquet(uri)
        if lower.endswith((".csv", ".csv.gz")):
            fs, path = storage.url_to_fs(uri)
            with fs.open(path, "rb", compression="infer") as handle:
                return pd.read_csv(handle)
    except FileNotFoundError as exc:
        raise MonitoringInputError(f"{uri}: no such file") from exc
    except Exception as exc:
        raise MonitoringInputError(f"{uri} cannot be read: {type(exc).__name__}: {exc}") from exc
    raise MonitoringInputError(f"{uri}: expected a .csv or .parquet file")


# --------------------------------------------------------------------------------- drift check

@dataclass(frozen=True)
class DriftCheck:
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
    drifted_share: float
    share_threshold: float
    drifted_columns: list[str]
    columns: dict[str, dict]
    rows_current: int
    rows_reference: int
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


def monitoring_uri(config: PipelineConfig, model_name: str, run_key: str) -> str:
    return storage.join(config.lake_uri, "monitoring", layout.safe_name(model_name), run_key)


def check_interval(*, model_name: str, interval_start: str, interval_end: str,
                   config: PipelineConfig, run_key: str, dag_id: str, run_id: str,
                   current_uri: str | None = None) -> DriftCheck:
    """The drift check of one interval (see the module doc)."""
    from pipeline_tasks.monitoring import drift

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
    out = monitoring_uri(config, model_name, run_key)
    verdict_uri, metrics_uri = storage.join(out, "drift.json"), storage.join(out, "metrics.prom")
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
        report_uri=storage.join(out, "report.html"))
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
        mlflow_run_id=_log_mlflow(model_name, "drift", run_key, end, result.metrics(),
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


# ----------------------------------------------------------------------------- delayed labels

@dataclass(frozen=True)
class PerformanceCheck:
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
        wanted = set(_days(start, end + timedelta(days=lookahead_days)))
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
    out = monitoring_uri(config, model_name, run_key)
    verdict_uri = storage.join(out, "performance.json")
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
        mlflow_run_id=_log_mlflow(model_name, "performance", run_key, end, logged,
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
    verdict_uri = storage.join(monitoring_uri(config, model_name, run_key), "performance.json")
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


# ----------------------------------------------------------------------------- retrain decision

@dataclass(frozen=True)
class RetrainDecision:
    model_name: str
    retrain: bool
    reason: str
    interval_end: str
    drift_run_id: str
    drifted_columns: list[str]
    cooldown_until: str | None
    last_request: dict | None
    asset_extra: dict

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide_retrain(*, model_name: str, drift: dict | None, performance: dict | None,
                   interval_end: str, dag_id: str, run_id: str,
                   config: PipelineConfig) -> RetrainDecision:
    """Ask for retraining when drift is real or performance dropped, at most once per
    ``retrain_cooldown_days`` (measured on data intervals) per model."""
    from pipeline_tasks.core.locks import named_lock
    from pipeline_tasks.deploy.bluegreen import serving_place

    end = as_utc(interval_end)
    causes = []
    if drift and drift.get("drift_detected"):
        causes.append(f"drift on {len(drift['drifted_columns'])} column(s) "
                      f"({', '.join(drift['drifted_columns'])}), share "
                      f"{drift['drifted_share']:.2f} >= {drift['share_threshold']:.2f}")
    if performance and performance.get("degraded"):
        causes.append(f"performance drop: {performance['reason']}")
    columns = list((drift or {}).get("drifted_columns") or [])
    root = storage.join(config.lake_uri, "monitoring", layout.safe_name(model_name),
                        "retrain_requests")
    base = {"model_name": model_name, "interval_end": end.isoformat(), "drift_run_id": run_id,
            "drifted_columns": columns}
    if not causes:
        return RetrainDecision(**base, retrain=False, reason="no drift and no performance drop",
                               cooldown_until=None, last_request=None, asset_extra={})
    # the shared named lock: a PostgreSQL advisory lock when workers run on several machines
    with named_lock(config, f"{model_name}.retrain", timeout=120):
        fs, path = storage.url_to_fs(root)
        records = ([storage.read_json(fs.unstrip_protocol(p))
                    for p in sorted(fs.glob(path.rstrip("/") + "/*.json"))]
                   if fs.exists(path) else [])
        mine = [r for r in records if r["drift_run_id"] == run_id and r["dag_id"] == dag_id]
        if mine:  # a retry or re-run of this monitoring run: the same decision, not a new one
            return RetrainDecision(**base, retrain=True, reason=mine[0]["reason"],
                                   cooldown_until=mine[0]["cooldown_until"],
                                   last_request=mine[0], asset_extra=mine[0]["asset_extra"])
        window = timedelta(days=config.retrain_cooldown_days)
        recent = [r for r in records if abs(as_utc(r["interval_end"]) - end) < window]
        if recent:
            last = max(recent, key=lambda r: r["interval_end"])
            until = (as_utc(last["interval_end"]) + window).isoformat()
            return RetrainDecision(**base, retrain=False, reason=(
                f"{'; '.join(causes)}; but a retrain was already requested for the interval "
                f"ending {last['interval_end'][:10]} (run {last['drift_run_id']}): cool-down of "
                f"{config.retrain_cooldown_days} day(s) until {until[:10]}"),
                cooldown_until=until, last_request=last, asset_extra={})
        reason = "; ".join(causes)
        served = (drift or {}).get("model_version") or (performance or {}).get("model_version")
        extra = {"model_name": model_name, "reason": reason, "drift_dag_id": dag_id,
                 "drift_run_id": run_id, "drifted_columns": columns,
                 "interval_end": end.isoformat(), "served_version": served}
        if served:
            info = served_version(model_name, served, config)
            extra.update(source=info.source, target=info.target)
        extra.update(serving_place(model_name, config))
        until = (end + window).isoformat()
        record = {**base, "dag_id": dag_id, "reason": reason, "cooldown_until": until,
                  "asset_extra": extra, "requested_at": datetime.now(UTC).isoformat()}
        storage.atomic_write_json(storage.join(root, f"{end:%Y-%m-%dT%H%M%S}-"
                                                     f"{layout.safe_name(run_id)}.json"), record)
    log.info("retraining %s requested: %s", model_name, reason)
    return RetrainDecision(**base, retrain=True, reason=reason, cooldown_until=until,
                           last_request=None, asset_extra=extra)


# ------------------------------------------------------------------------------------- helpers

def _log_mlflow(model_name: str, kind: str, run_key: str, end: datetime,
                metrics: dict[str, float], tags: dict[str, Any], artifacts: list[str | None],
                config: PipelineConfig) -> str | None:
    """One MLflow run per check, and the same metrics on the model's ``drift-over-time`` run
    with the interval's day as the step (MLflow charts them as a series)."""
    if not metrics:
        return None
    tracking.configure_mlflow(config)
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    experiment_id = tracking.ensure_experiment(f"{model_name}-monitoring", config)
    stamp = int(end.timestamp() * 1000)
    step = int(end.timestamp() // 86400)
    name = f"{kind}-{layout.safe_name(run_key)}"[:250]
    found = client.search_runs([experiment_id], f"tags.mlflow.runName = '{name}'", max_results=1)
    run_id = found[0].info.run_id if found else client.create_run(
        experiment_id, run_name=name, tags={k: str(v) for k, v in tags.items()}).info.run_id
    series = client.search_runs([experiment_id], "tags.mlflow.runName = 'drift-over-time'",
                                max_results=1)
    series_id = series[0].info.run_id if series else client.create_run(
        experiment_id, run_name="drift-over-time",
        tags={"mlflow.note.content": "Monitoring metrics by interval (step = days since "
                                     "1970-01-01 of the interval's end)."}).info.run_id
    batch = [Metric(k, float(v), stamp, step) for k, v in metrics.items()]
    client.log_batch(run_id, metrics=batch)
    client.log_batch(series_id, metrics=batch)
    for uri in artifacts:
        if uri and storage.is_local(uri):
            client.log_artifact(run_id, str(storage.local_path(uri)))
    client.set_terminated(run_id)
    return run_id
