"""Train a candidate model on a dataset snapshot and record everything about it in one MLflow run.

This is the entry point of the training stage; its parts live beside it: ``features`` (labels,
task type, feature columns), ``split`` (training and holdout sides), ``estimator`` (the
scikit-learn pipeline, search, thread limit), ``mlflow_run`` (what the run records) and
``plots``. The holdout rows are written to the lake (``layout.holdout_file``) so the evaluation
stage scores candidate and champion on exactly the same rows.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from pipeline_tasks.core import layout, storage, tracking
from pipeline_tasks.core.config import PipelineConfig
from pipeline_tasks.core.errors import ConfigError, PipelineInputError
from pipeline_tasks.core.results import XComResult
from pipeline_tasks.data.versioning import is_version_id, verify_snapshot_file
from pipeline_tasks.model.cache import find_cached_run, record_result, training_key
from pipeline_tasks.model.estimator import (
    SEARCH_SPACE,
    TUNED_PARAMS,
    build_pipeline,
    limit_threads,
    search,
)
from pipeline_tasks.model.features import (
    AUTO,
    MAX_AUTO_CLASSES,
    feature_columns,
    labelled_frame,
    normalize_features,
    normalize_target,
    resolve_task_type,
)
from pipeline_tasks.model.metrics import CLASSIFICATION, TASK_TYPES, primary_metric, score_model
from pipeline_tasks.model.mlflow_run import SKOPS_TRUSTED_TYPES, jsonable, log_run, truncate
from pipeline_tasks.model.split import split_rows

log = logging.getLogger(__name__)

# Names other modules and tests import from here (the training entry point).
__all__ = [
    "AUTO", "MAX_AUTO_CLASSES", "SEARCH_SPACE", "SKOPS_TRUSTED_TYPES", "TUNED_PARAMS",
    "TrainResult", "build_pipeline", "limit_threads", "normalize_features", "normalize_target",
    "resolve_task_type", "train_model",
]


@dataclass(frozen=True)
class TrainResult(XComResult):
    """What the training stage hands to evaluation and registration (small, JSON-able)."""

    run_id: str
    experiment_id: str
    model_uri: str
    task_type: str
    target: str
    time_column: str | None
    primary_metric: str
    greater_is_better: bool
    metrics: dict[str, float]
    holdout_uri: str
    feature_columns: list[str]
    n_train: int
    n_holdout: int
    dataset_version: str
    best_params: dict
    suite_uri: str = ""  # the data's suite, passed on to ``register`` (set by the ``train`` stage)
    cache_key: str = ""  # what decided the fit (``model.cache``): data, code, params, libraries
    cache_hit: bool = False  # True: an earlier run with the same key was reused, nothing fitted
    # why the stages after training have nothing new to do ("": they run): set by the stage on a
    # cache hit whose version was already judged against the current champion
    nothing_new: str = ""

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self), default=jsonable))


def train_model(
    snapshot_uri: str,
    *,
    dataset_version: str,
    target: str,
    model_name: str,
    config: PipelineConfig,
    run_key: str,
    task_type: str = AUTO,
    time_column: str | None = None,
    run_search: bool = False,
    lineage: dict[str, str] | None = None,
    exclude_columns: list[str] | tuple[str, ...] = (),
    holdout_extra: list[str] | tuple[str, ...] = (),
    reuse: bool = False,
    experiment_name: str | None = None,
) -> TrainResult:
    """Fit a candidate on ``snapshot_uri`` and log it as one MLflow run in experiment ``model_name``.

    Rows whose target is null are dropped. With a time column (given, or the one datetime column)
    the last ``config.holdout_fraction`` of the time range is the holdout; otherwise a seeded
    (stratified for classification) random split. ``exclude_columns`` removes columns that must not
    be features (ids, leaks of the label). ``run_key`` names the holdout folder: the same key
    rewrites the same place on a retry. ``holdout_extra``: columns the holdout keeps beside the
    features (slice and sensitive columns that are not inputs), those the data has.

    Every run records its cache key (``model.cache``). With ``reuse``, a finished run of the same
    key is returned instead of fitting (``cache_hit``): no new run, the same model. The run goes
    to experiment ``experiment_name`` (default ``model_name``; the reproduce command uses a
    scratch one).
    """
    if task_type not in (AUTO, *TASK_TYPES):
        raise ConfigError(
            f"task_type must be one of 'auto', 'classification', 'regression'; got {task_type!r}"
        )
    if not run_key:  # the stage always derives one: an empty key is a caller's bug
        raise ValueError("run_key must not be empty (it names the holdout folder)")
    tracking.quiet_telemetry()
    started = time.perf_counter()
    key = training_key(dataset_version=dataset_version, target=target, task_type=task_type,
                       time_column=time_column, run_search=run_search,
                       exclude_columns=exclude_columns, holdout_extra=holdout_extra, config=config)
    if reuse:
        cached = find_cached_run(experiment_name or model_name, key, config)
        if cached is not None:
            log.info("cache hit: key %s; the model of run %s is reused, nothing is fitted",
                     key.key, cached["run_id"])
            return TrainResult.from_xcom({**cached, "cache_key": key.key, "cache_hit": True})
        log.info("cache miss: key %s; fitting", key.key)

    if is_version_id(dataset_version):  # a real content id: train only on the data it names
        snapshot = verify_snapshot_file(snapshot_uri, dataset_version)
    else:
        snapshot = storage.read_parquet(snapshot_uri)
    frame, y, resolved_task, time_col = labelled_frame(
        snapshot, target=target, task_type=task_type, time_column=time_column
    )
    features = feature_columns(frame, target, time_col, exclude_columns)
    X = normalize_features(frame[features])

    n_classes = int(y.nunique()) if resolved_task == CLASSIFICATION else 0
    if resolved_task == CLASSIFICATION and n_classes < 2:
        raise PipelineInputError(
            f"target column {target!r} has a single class ({y.iloc[0]!r}) in its "
            f"{len(y)} labelled rows: a classifier needs at least two"
        )
    metric, greater_is_better = primary_metric(resolved_task, n_classes)

    train_idx, holdout_idx, split_info = split_rows(frame, y, resolved_task, time_col, config)
    X_train, y_train = X.iloc[train_idx], y.iloc[train_idx]
    X_holdout, y_holdout = X.iloc[holdout_idx], y.iloc[holdout_idx]
    if resolved_task == CLASSIFICATION:
        for side, labels in (("training", y_train), ("holdout", y_holdout)):
            if labels.nunique() < 2:
                raise PipelineInputError(
                    f"the {side} side of the {split_info['split']} split holds a single class "
                    f"of {target!r} ({labels.iloc[0]!r}); use more data or another split"
                )

    with limit_threads(config) as threads:
        pipe = build_pipeline(X_train, resolved_task, config)
        fit_started = time.perf_counter()
        pipe.fit(X_train, y_train)
        fit_seconds = time.perf_counter() - fit_started
        log.info("fitted %s on %d rows x %d features in %.1f s (%s threads)", resolved_task,
                 len(X_train), X_train.shape[1], fit_seconds, threads or "default")

        search_info: dict[str, Any] = {"enabled": False}
        if run_search:
            pipe, search_info = search(
                pipe, X_train, y_train, resolved_task, metric, split_info["split"] == "time",
                fit_seconds, config,
            )
        metrics = score_model(pipe, X_holdout, y_holdout, resolved_task)
    model_params = pipe.named_steps["model"].get_params()
    best_params = {name: jsonable(model_params[name]) for name in TUNED_PARAMS}
    log.info("holdout %s = %.4f (%s)", metric, metrics[metric],
             ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))

    holdout_columns = features + [target] + ([time_col] if time_col else [])
    holdout_columns += [c for c in dict.fromkeys(holdout_extra)
                        if c in frame.columns and c not in holdout_columns]
    holdout = frame.iloc[holdout_idx][holdout_columns].reset_index(drop=True)
    holdout[target] = y_holdout.to_numpy()
    holdout_uri = layout.holdout_file(config, run_key)
    storage.atomic_write_parquet(holdout, holdout_uri)
    log.info("holdout (%d rows) written to %s", len(holdout), holdout_uri)

    params = {
        "task_type": resolved_task,
        "target": target,
        "time_column": time_col or "",
        "estimator": type(pipe.named_steps["model"]).__name__,
        "seed": config.seed,
        "n_rows_snapshot": len(snapshot),
        "n_rows_labelled": len(frame),
        "n_train": len(train_idx),
        "n_holdout": len(holdout_idx),
        "n_features": len(features),
        "features": truncate(",".join(features)),
        "holdout_fraction": config.holdout_fraction,
        "max_categories": config.max_categories,
        "primary_metric": metric,
        **{f"split.{k}": v for k, v in split_info.items()},
        **{f"search.{k}": v for k, v in search_info.items()},
        **{f"model.{k}": v for k, v in sorted(model_params.items())},
    }
    if resolved_task == CLASSIFICATION:
        params["n_classes"] = n_classes
    tags = {
        **{str(k): str(v) for k, v in (lineage or {}).items()},
        "dataset_version": dataset_version,
        "task_type": resolved_task,
        "target": target,
        "run_key": run_key,
        "snapshot_uri": snapshot_uri,
        "holdout_uri": holdout_uri,
        **key.tags(),
    }
    run_id, experiment_id, model_uri = log_run(
        pipe=pipe, snapshot=snapshot, snapshot_uri=snapshot_uri, X_train=X_train,
        X_holdout=X_holdout, y_holdout=y_holdout, task_type=resolved_task, metric=metric,
        metrics=metrics, params=params, tags=tags, model_name=experiment_name or model_name,
        dataset_version=dataset_version, target=target, run_key=run_key,
        feature_columns=features, config=config,
    )
    log.info("training run %s done in %.1f s; model %s", run_id,
             time.perf_counter() - started, model_uri)
    result = TrainResult(
        run_id=run_id,
        experiment_id=experiment_id,
        model_uri=model_uri,
        task_type=resolved_task,
        target=target,
        time_column=time_col,
        primary_metric=metric,
        greater_is_better=greater_is_better,
        metrics=metrics,
        holdout_uri=holdout_uri,
        feature_columns=list(features),
        n_train=len(train_idx),
        n_holdout=len(holdout_idx),
        dataset_version=dataset_version,
        best_params=best_params,
        cache_key=key.key,
    )
    record_result(run_id, key, result.to_dict())  # from now on the run is a cache entry
    return result
