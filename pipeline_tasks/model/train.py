"""Train a candidate model on a dataset snapshot and record everything about it in one MLflow run.

The model is a scikit-learn ``Pipeline`` (impute + one-hot encode, then histogram gradient
boosting), so the logged artifact takes raw feature columns and can be served as is. The holdout
rows are written next to the lake so the evaluation stage scores candidate and champion on exactly
the same rows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline_tasks.core import model_artifacts, storage, tracking
from pipeline_tasks.core.config import PipelineConfig
from pipeline_tasks.core.errors import ConfigError, PipelineInputError
from pipeline_tasks.data.versioning import is_version_id, verify_snapshot_file
from pipeline_tasks.model.metrics import (
    CLASSIFICATION,
    REGRESSION,
    SKLEARN_SCORERS,
    TASK_TYPES,
    primary_metric,
    score_model,
)

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

AUTO = "auto"
# A numeric target with at most this many distinct integral values is read as class labels.
MAX_AUTO_CLASSES = 20
# One-hot categories rarer than this (rows) are pooled into the "infrequent" bucket.
MIN_CATEGORY_FREQUENCY = 5
MAX_SEARCH_ITER = 20
DEFAULT_TRAIN_THREADS = 1
IMPORTANCE_ROWS = 2000
IMPORTANCE_REPEATS = 3
# skops refuses to load types it does not know; these are what a fitted
# ColumnTransformer + HistGradientBoosting pipeline holds beyond skops' defaults. The loader
# trusts the same fixed list (model_artifacts.TRUSTED_TYPES), never the one in the MLmodel file.
SKOPS_TRUSTED_TYPES = list(model_artifacts.TRUSTED_TYPES)
SEARCH_SPACE: dict[str, list] = {
    "model__learning_rate": [0.03, 0.05, 0.1, 0.2],
    "model__max_leaf_nodes": [15, 31, 63],
    "model__min_samples_leaf": [10, 20, 50],
    "model__l2_regularization": [0.0, 0.1, 1.0],
    "model__max_iter": [100, 200, 300],
}
TUNED_PARAMS = [key.removeprefix("model__") for key in SEARCH_SPACE]
_DEFAULT_MAX_ITER = 100
_LEAF_COST_FACTOR = 1.1  # mean fit time over the max_leaf_nodes choices, relative to 31
_MAX_PARAM_LENGTH = 6000  # MLflow's limit for a param value


@dataclass(frozen=True)
class TrainResult:
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

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self), default=_jsonable))


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
) -> TrainResult:
    """Fit a candidate on ``snapshot_uri`` and log it as one MLflow run in experiment ``model_name``.

    Rows whose target is null are dropped. With a time column (given, or the one datetime column)
    the last ``config.holdout_fraction`` of the time range is the holdout; otherwise a seeded
    (stratified for classification) random split. ``exclude_columns`` removes columns that must not
    be features (ids, leaks of the label). ``run_key`` names the holdout folder: the same key
    rewrites the same place on a retry.
    """
    if task_type not in (AUTO, *TASK_TYPES):
        raise ConfigError(
            f"task_type must be one of 'auto', 'classification', 'regression'; got {task_type!r}"
        )
    if not run_key:
        raise ConfigError("run_key must not be empty (it names the holdout folder)")
    tracking.quiet_telemetry()
    started = time.perf_counter()

    if is_version_id(dataset_version):  # a real content id: train only on the data it names
        snapshot = verify_snapshot_file(snapshot_uri, dataset_version)
    else:
        snapshot = storage.read_parquet(snapshot_uri)
    frame, y, resolved_task, time_col = _labelled_frame(
        snapshot, target=target, task_type=task_type, time_column=time_column
    )
    feature_columns = _feature_columns(frame, target, time_col, exclude_columns)
    X = normalize_features(frame[feature_columns])

    n_classes = int(y.nunique()) if resolved_task == CLASSIFICATION else 0
    if resolved_task == CLASSIFICATION and n_classes < 2:
        raise PipelineInputError(
            f"target column {target!r} has a single class ({y.iloc[0]!r}) in its "
            f"{len(y)} labelled rows: a classifier needs at least two"
        )
    metric, greater_is_better = primary_metric(resolved_task, n_classes)

    train_idx, holdout_idx, split_info = _split(frame, y, resolved_task, time_col, config)
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
            pipe, search_info = _search(
                pipe, X_train, y_train, resolved_task, metric, split_info["split"] == "time",
                fit_seconds, config,
            )
        metrics = score_model(pipe, X_holdout, y_holdout, resolved_task)
    model_params = pipe.named_steps["model"].get_params()
    best_params = {name: _jsonable(model_params[name]) for name in TUNED_PARAMS}
    log.info("holdout %s = %.4f (%s)", metric, metrics[metric],
             ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))

    holdout_columns = feature_columns + [target] + ([time_col] if time_col else [])
    holdout = frame.iloc[holdout_idx][holdout_columns].reset_index(drop=True)
    holdout[target] = y_holdout.to_numpy()
    holdout_uri = storage.join(config.lake_uri, "holdout", _safe_key(run_key), "holdout.parquet")
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
        "n_features": len(feature_columns),
        "features": _truncate(",".join(feature_columns)),
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
    }
    run_id, experiment_id, model_uri = _log_run(
        pipe=pipe, snapshot=snapshot, snapshot_uri=snapshot_uri, X_train=X_train,
        X_holdout=X_holdout, y_holdout=y_holdout, task_type=resolved_task, metric=metric,
        metrics=metrics, params=params, tags=tags, model_name=model_name,
        dataset_version=dataset_version, target=target, run_key=run_key,
        feature_columns=feature_columns, config=config,
    )
    log.info("training run %s done in %.1f s; model %s", run_id,
             time.perf_counter() - started, model_uri)
    return TrainResult(
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
        feature_columns=list(feature_columns),
        n_train=len(train_idx),
        n_holdout=len(holdout_idx),
        dataset_version=dataset_version,
        best_params=best_params,
    )


# --------------------------------------------------------------------------- data preparation


def resolve_task_type(y: pd.Series, task_type: str = AUTO) -> str:
    """Classification for bool/string/category targets or few integral values, else regression."""
    import numpy as np
    import pandas as pd

    values = y.dropna()
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if task_type == REGRESSION:
        if not numeric:
            raise ConfigError(
                f"task_type 'regression' needs a numeric target; {y.name!r} is {y.dtype}"
            )
        return REGRESSION
    if task_type == CLASSIFICATION:
        return CLASSIFICATION
    if not numeric:
        return CLASSIFICATION
    as_float = values.to_numpy(dtype=float)
    integral = bool(np.all(np.isfinite(as_float)) and np.all(as_float == np.round(as_float)))
    if integral and values.nunique() <= MAX_AUTO_CLASSES:
        return CLASSIFICATION
    return REGRESSION


def normalize_target(y: pd.Series, task_type: str) -> pd.Series:
    """Plain numpy dtypes for the labels: bool, int64, float64 or str (no pandas NA types)."""
    import numpy as np
    import pandas as pd

    if task_type == REGRESSION:
        return y.astype("float64")
    kind = pd.api.types.infer_dtype(y, skipna=True)
    if kind == "boolean":
        return y.astype(bool)
    if kind in ("integer", "floating", "mixed-integer-float", "decimal"):
        as_float = y.astype("float64")
        if np.all(as_float == np.round(as_float)):
            return as_float.astype("int64")
        return as_float
    return y.astype(str).astype(object)


def normalize_features(X: pd.DataFrame) -> pd.DataFrame:
    """Coerce feature columns to the few dtypes the model pipeline (and its signature) expects.

    Strings, categories and mixed objects become object columns of ``str`` with ``NaN`` for
    missing (scikit-learn cannot impute ``pd.NA``). Nullable integers/booleans become int64/bool,
    or float64 when they hold missing values; timedeltas become seconds. Plain int64 columns stay
    int64: MLflow's schema check refuses int64 input for a double column, and JSON clients send
    integers.
    """
    import numpy as np
    import pandas as pd

    out = {}
    for name in X.columns:
        col = X[name]
        if pd.api.types.is_timedelta64_dtype(col):
            out[name] = col.dt.total_seconds().astype("float64")
        elif isinstance(col.dtype, np.dtype) and col.dtype.kind in "biuf":
            out[name] = col
        elif pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            # pandas nullable extension dtypes (Int64, Float64, boolean)
            if col.isna().any():
                out[name] = col.astype("float64")
            elif pd.api.types.is_bool_dtype(col):
                out[name] = col.astype(bool)
            elif pd.api.types.is_integer_dtype(col):
                out[name] = col.astype("int64")
            else:
                out[name] = col.astype("float64")
        else:
            kind = pd.api.types.infer_dtype(col, skipna=True)
            text = col.astype(object)
            missing = text.isna()
            if kind in ("boolean", "integer", "floating", "mixed-integer-float"):
                # e.g. a nullable boolean column read back from Parquet as True/False/None
                out[name] = text.where(~missing, np.nan).astype("float64")
            else:
                out[name] = text.where(missing, text.astype(str)).where(~missing, np.nan)
    return pd.DataFrame(out, index=X.index)


def _labelled_frame(
    snapshot: pd.DataFrame, *, target: str, task_type: str, time_column: str | None
) -> tuple[pd.DataFrame, pd.Series, str, str | None]:
    import pandas as pd

    if target not in snapshot.columns:
        raise ConfigError(
            f"target column {target!r} is not in the snapshot (columns: "
            f"{', '.join(map(str, snapshot.columns))})"
        )
    if time_column and time_column not in snapshot.columns:
        raise ConfigError(f"time_column {time_column!r} is not in the snapshot")
    if time_column == target:
        raise ConfigError(f"time_column and target are the same column {target!r}")
    unlabelled = snapshot[target].isna()
    if unlabelled.any():
        log.info("dropped %d of %d rows whose target %r is null", int(unlabelled.sum()),
                 len(snapshot), target)
    frame = snapshot.loc[~unlabelled].reset_index(drop=True)
    if frame.empty:
        raise PipelineInputError(
            f"no labelled rows: target column {target!r} is null in all {len(snapshot)} rows"
        )

    time_col = time_column
    if time_col is None:
        datetimes = [
            c for c in frame.columns
            if c != target and pd.api.types.is_datetime64_any_dtype(frame[c])
        ]
        if len(datetimes) > 1:
            raise ConfigError(
                f"several datetime columns ({', '.join(datetimes)}): pass time_column to choose "
                "the one that orders the rows"
            )
        time_col = datetimes[0] if datetimes else None
        if time_col:
            log.info("time column auto-detected: %r (time-aware split)", time_col)
    if time_col is not None:
        if not pd.api.types.is_datetime64_any_dtype(frame[time_col]):
            try:
                frame[time_col] = pd.to_datetime(frame[time_col], utc=True, format="ISO8601")
            except (TypeError, ValueError) as exc:
                raise ConfigError(
                    f"time_column {time_col!r} ({frame[time_col].dtype}) cannot be read as "
                    f"ISO 8601 datetimes: {exc}"
                ) from exc
        no_time = frame[time_col].isna()
        if no_time.any():
            log.info("dropped %d labelled rows whose time column %r is null",
                     int(no_time.sum()), time_col)
            frame = frame.loc[~no_time].reset_index(drop=True)
            if frame.empty:
                raise PipelineInputError(f"time column {time_col!r} is null in every labelled row")

    resolved = resolve_task_type(frame[target], task_type)
    y = normalize_target(frame[target], resolved)
    log.info("task type %s (requested %s) for target %r", resolved, task_type, target)
    return frame, y, resolved, time_col


def _feature_columns(
    frame: pd.DataFrame, target: str, time_col: str | None, exclude: list[str] | tuple[str, ...]
) -> list[str]:
    import pandas as pd

    unknown = sorted(set(exclude) - set(frame.columns))
    if unknown:
        raise ConfigError(f"exclude_columns not in the snapshot: {', '.join(unknown)}")
    skip = {target, *exclude} | ({time_col} if time_col else set())
    features, dropped_time, dropped_empty = [], [], []
    for name in frame.columns:
        if name in skip:
            continue
        if pd.api.types.is_datetime64_any_dtype(frame[name]):
            dropped_time.append(name)
        elif frame[name].isna().all():
            dropped_empty.append(name)
        else:
            features.append(name)
    if dropped_time:
        log.info("datetime columns dropped from the features: %s", ", ".join(dropped_time))
    if dropped_empty:
        log.info("all-null columns dropped from the features: %s", ", ".join(dropped_empty))
    if not features:
        raise PipelineInputError(f"no feature columns left besides target {target!r}")
    return features


def _split(frame, y, task_type: str, time_col: str | None, config: PipelineConfig):
    """Row positions of the training and holdout sides, and how they were chosen."""
    import numpy as np
    import pandas as pd
    from sklearn.model_selection import train_test_split

    n = len(frame)
    positions = np.arange(n)
    if time_col is not None:
        stamps = frame[time_col]
        if stamps.dt.tz is not None:
            stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
        order = np.argsort(stamps.to_numpy(), kind="stable")
        times = stamps.to_numpy()[order]
        cut = times[min(int(n * (1 - config.holdout_fraction)), n - 1)]
        # Rows sharing the cutoff timestamp all go to the holdout: no same-time leak across sides.
        boundary = int(np.searchsorted(times, cut, side="left"))
        if boundary == 0:
            raise PipelineInputError(
                f"time split impossible: every row shares the first timestamp of {time_col!r}"
            )
        info = {"split": "time", "cutoff_utc": pd.Timestamp(cut).isoformat()}
        return order[:boundary], order[boundary:], info
    stratify = None
    if task_type == CLASSIFICATION:
        if y.value_counts().min() >= 2:
            stratify = y
        else:
            log.info("a class has a single row: random split instead of stratified")
    train_idx, holdout_idx = train_test_split(
        positions, test_size=config.holdout_fraction, random_state=config.seed, stratify=stratify
    )
    info = {"split": "stratified" if stratify is not None else "random"}
    return np.sort(train_idx), np.sort(holdout_idx), info


# --------------------------------------------------------------------------- model


def build_pipeline(X: pd.DataFrame, task_type: str, config: PipelineConfig):
    """``Pipeline([("preprocess", ColumnTransformer), ("model", HistGradientBoosting*)])``."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    numeric = [c for c in X.columns if pd.api.types.is_numeric_dtype(X[c])]
    categorical = [c for c in X.columns if c not in numeric]
    transformers = []
    if numeric:
        # Booleans go here too: for trees 0/1 is the same split as a one-hot pair.
        transformers.append(("numeric", SimpleImputer(strategy="median"), numeric))
    if categorical:
        encode = Pipeline([
            ("impute", SimpleImputer(strategy="constant", fill_value="missing")),
            ("onehot", OneHotEncoder(
                handle_unknown="infrequent_if_exist",
                max_categories=config.max_categories,
                min_frequency=MIN_CATEGORY_FREQUENCY,
                sparse_output=False,
            )),
        ])
        transformers.append(("categorical", encode, categorical))
    estimator_cls = (
        HistGradientBoostingClassifier if task_type == CLASSIFICATION
        else HistGradientBoostingRegressor
    )
    return Pipeline([
        ("preprocess", ColumnTransformer(transformers, remainder="drop")),
        ("model", estimator_cls(random_state=config.seed)),
    ])


def _search(pipe, X, y, task_type: str, metric: str, time_aware: bool, fit_seconds: float,
            config: PipelineConfig):
    """Randomized search sized to fit ``config.search_time_budget_s`` from one timed fit."""
    from sklearn.model_selection import KFold, RandomizedSearchCV, StratifiedKFold, TimeSeriesSplit

    folds = config.search_cv_folds
    if time_aware:
        cv = TimeSeriesSplit(n_splits=folds)
    elif task_type == CLASSIFICATION:
        cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=config.seed)
    else:
        cv = KFold(n_splits=folds, shuffle=True, random_state=config.seed)
    # Cost model from the one timed fit: a fit's time grows with its boosting iterations (and a
    # little with the leaf count) and roughly with its rows. A candidate is `folds` fits at the
    # space's average max_iter on the folds' average share of the rows (1/2 for TimeSeriesSplit,
    # (k-1)/k for K-fold). Early stopping usually ends fits sooner, so this errs on the safe side.
    iterations_done = max(int(getattr(pipe.named_steps["model"], "n_iter_", _DEFAULT_MAX_ITER)), 1)
    mean_max_iter = sum(SEARCH_SPACE["model__max_iter"]) / len(SEARCH_SPACE["model__max_iter"])
    row_share = 0.5 if time_aware else (folds - 1) / folds
    per_fit = max(fit_seconds * mean_max_iter / iterations_done * _LEAF_COST_FACTOR * row_share,
                  1e-3)
    refit = fit_seconds * mean_max_iter / iterations_done * _LEAF_COST_FACTOR
    per_candidate = per_fit * folds
    remaining = config.search_time_budget_s - refit  # keep time for the final refit
    n_iter = max(1, min(MAX_SEARCH_ITER, int(remaining // per_candidate)))
    log.info(
        "hyperparameter search: one fit took %.1f s (%d iterations), about %.1f s per candidate "
        "fit; budget %.0f s -> %d candidates x %d folds (%s)", fit_seconds, iterations_done,
        per_fit, config.search_time_budget_s, n_iter, folds, type(cv).__name__,
    )
    search = RandomizedSearchCV(
        pipe, SEARCH_SPACE, n_iter=n_iter, scoring=SKLEARN_SCORERS[metric], cv=cv,
        random_state=config.seed, refit=True, n_jobs=1,
    )
    started = time.perf_counter()
    search.fit(X, y)
    seconds = time.perf_counter() - started
    log.info("search took %.1f s (budget %.0f s); best CV %s %.4f with %s", seconds,
             config.search_time_budget_s, metric, abs(search.best_score_), search.best_params_)
    if not math.isfinite(search.best_score_):
        raise PipelineInputError(f"every search candidate failed to score {metric}")
    info = {
        "enabled": True,
        "n_iter": n_iter,
        "cv": type(cv).__name__,
        "folds": folds,
        "budget_s": config.search_time_budget_s,
        "seconds": round(seconds, 1),
        f"best_cv_{metric}": abs(float(search.best_score_)),
    }
    return search.best_estimator_, info


# --------------------------------------------------------------------------- MLflow


def _log_run(*, pipe, snapshot, snapshot_uri, X_train, X_holdout, y_holdout, task_type, metric,
             metrics, params, tags, model_name, dataset_version, target, run_key,
             feature_columns, config) -> tuple[str, str, str]:
    import mlflow
    from mlflow.models import infer_signature

    experiment_id = tracking.ensure_experiment(model_name, config)
    _close_abandoned_runs(experiment_id, run_key)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"train-{_safe_key(run_key)}",
                          tags=tags) as run, warnings.catch_warnings():
        # Two known-noise warnings: MLflow registers its local dataset source twice, and it hints
        # about integer columns, which stay integer on purpose (see normalize_features).
        warnings.filterwarnings("ignore", message="The specified dataset source can be")
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        mlflow.log_params(params)
        dataset = mlflow.data.from_pandas(
            snapshot, source=snapshot_uri, name=dataset_version, targets=target
        )
        mlflow.log_input(dataset, context="training")

        sample = X_train.head(min(len(X_train), 1000))
        signature = _nulls_from_full_data(infer_signature(sample, pipe.predict(sample)),
                                          [X_train, X_holdout])
        started = time.perf_counter()
        model_info = mlflow.sklearn.log_model(
            pipe,
            name="model",
            signature=signature,
            input_example=X_train.head(5),
            pip_requirements=_pinned_requirements(),
            serialization_format="skops",
            skops_trusted_types=SKOPS_TRUSTED_TYPES,
            tags={"dataset_version": dataset_version, "task_type": task_type},
        )
        log.info("model logged in %.1f s (%s)", time.perf_counter() - started,
                 model_info.model_uri)
        # what evaluation and registration check the files against before loading them
        model_artifacts.record_training_digest(model_info.model_id, model_info.model_uri)
        mlflow.log_metrics(metrics, model_id=model_info.model_id)
        mlflow.log_dict({"features": feature_columns}, "feature_columns.json")
        with limit_threads(config):
            _log_plots(pipe, X_holdout, y_holdout, task_type, metric, config)
        return run.info.run_id, experiment_id, model_info.model_uri


def _close_abandoned_runs(experiment_id: str, run_key: str) -> None:
    """Mark ``KILLED`` the runs an earlier attempt of this task left ``RUNNING``: a worker that
    was killed (SIGKILL, OOM, a lost machine) never ends its MLflow run, and the retry starts a
    new one. Airflow runs one attempt of a task at a time, so a run of the same ``run_key``
    still RUNNING now is dead."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    for run in client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'",
                                  max_results=1000):
        if run.data.tags.get("run_key") == run_key:
            client.set_tag(run.info.run_id, "mlops.abandoned",
                           "its attempt died before finishing; a later attempt replaced it")
            client.set_terminated(run.info.run_id, status="KILLED")
            log.warning("MLflow run %s of %s was left RUNNING by an attempt that died: marked "
                        "KILLED", run.info.run_id, run_key)


def _log_plots(pipe, X, y, task_type: str, metric: str, config: PipelineConfig) -> None:
    """Confusion matrix + ROC (classification) or residuals (regression), and feature importance."""
    import mlflow
    import numpy as np
    from matplotlib.figure import Figure
    from sklearn.inspection import permutation_importance
    from sklearn.metrics import ConfusionMatrixDisplay, PredictionErrorDisplay, RocCurveDisplay

    predictions = pipe.predict(X)
    if task_type == CLASSIFICATION:
        fig = Figure(figsize=(6, 5))
        ConfusionMatrixDisplay.from_predictions(y, predictions, ax=fig.subplots(),
                                                colorbar=False)
        fig.suptitle("Confusion matrix (holdout)")
        mlflow.log_figure(fig, "plots/confusion_matrix.png")
        classes = pipe.classes_
        if len(classes) == 2:
            fig = Figure(figsize=(6, 5))
            RocCurveDisplay.from_predictions(
                np.asarray(y) == classes[1], pipe.predict_proba(X)[:, 1], ax=fig.subplots(),
                name="candidate",
            )
            fig.suptitle("ROC curve (holdout)")
            mlflow.log_figure(fig, "plots/roc_curve.png")
    else:
        fig = Figure(figsize=(11, 5))
        ax_resid, ax_actual = fig.subplots(1, 2)
        PredictionErrorDisplay.from_predictions(
            y, predictions, kind="residual_vs_predicted", ax=ax_resid,
            subsample=2000, random_state=config.seed,
        )
        PredictionErrorDisplay.from_predictions(
            y, predictions, kind="actual_vs_predicted", ax=ax_actual,
            subsample=2000, random_state=config.seed,
        )
        fig.suptitle("Residuals (holdout)")
        mlflow.log_figure(fig, "plots/residuals.png")

    n = min(len(X), IMPORTANCE_ROWS)
    rows = np.random.default_rng(config.seed).choice(len(X), size=n, replace=False)
    result = permutation_importance(
        pipe, X.iloc[np.sort(rows)], np.asarray(y)[np.sort(rows)],
        scoring=SKLEARN_SCORERS[metric], n_repeats=IMPORTANCE_REPEATS,
        random_state=config.seed, n_jobs=1,
    )
    order = np.argsort(result.importances_mean)
    table = {
        str(X.columns[i]): {"mean": float(result.importances_mean[i]),
                            "std": float(result.importances_std[i])}
        for i in order[::-1]
    }
    mlflow.log_dict({"metric": metric, "rows": n, "importances": table},
                    "feature_importance.json")
    fig = Figure(figsize=(7, max(3, 0.3 * len(order) + 1)))
    ax = fig.subplots()
    ax.barh([str(X.columns[i]) for i in order], result.importances_mean[order],
            xerr=result.importances_std[order])
    ax.set_xlabel(f"drop in {metric} when the column is shuffled")
    fig.suptitle(f"Permutation importance ({n} holdout rows)")
    fig.tight_layout()
    mlflow.log_figure(fig, "plots/feature_importance.png")


def _pinned_requirements() -> list[str]:
    """Exact versions of what the logged model needs (saves MLflow's slow pip inference)."""
    from importlib.metadata import version

    return [f"{dist}=={version(dist)}"
            for dist in ("mlflow", "scikit-learn", "pandas", "numpy", "scipy", "skops")]


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def limit_threads(config: PipelineConfig):
    """Cap the OpenMP threads of the boosting code (``config.extra["train_threads"]``, default 1).

    On a small machine shared with Airflow and parallel tasks, OpenMP's spinning threads make a
    fit 5-100x slower when a core is busy; one thread per task is both fast and predictable.
    An ``OMP_NUM_THREADS`` set by the user wins. Yields the limit in force (None: the default).
    """
    if os.environ.get("OMP_NUM_THREADS"):
        yield None
        return
    from threadpoolctl import threadpool_limits

    try:
        threads = int(config.extra.get("train_threads", DEFAULT_TRAIN_THREADS))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"extra.train_threads must be an integer: {exc}") from exc
    if threads < 1:
        raise ConfigError(f"extra.train_threads must be >= 1, got {threads}")
    with threadpool_limits(limits=threads, user_api="openmp"):
        yield threads


def _safe_key(value: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._=-]+", "_", value).strip("_") or "run"


def _truncate(text: str) -> str:
    return text if len(text) <= _MAX_PARAM_LENGTH else text[: _MAX_PARAM_LENGTH - 3] + "..."


def _jsonable(value: Any) -> Any:
    """numpy scalars -> Python; anything else unknown -> str."""
    if hasattr(value, "item") and callable(value.item):
        try:
            return value.item()
        except (TypeError, ValueError):
            pass
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _nulls_from_full_data(signature, frames):
    """Mark a column optional iff the model's data (train and holdout) had a null in it, not
    only the sample the signature was inferred from.

    The signature is the serving contract: the model server refuses a null in a required column.
    """
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    nullable = {name for frame in frames for name in frame.columns[frame.isna().any()]}
    inputs = Schema([ColSpec(type=c.type, name=c.name, required=c.name not in nullable)
                     for c in signature.inputs.inputs])
    return ModelSignature(inputs=inputs, outputs=signature.outputs, params=signature.params)
