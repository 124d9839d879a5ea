"""The estimator: the scikit-learn pipeline, its hyperparameter search, and its thread limit.

The model is a ``Pipeline`` (impute + one-hot encode, then histogram gradient boosting), so the
logged artifact takes raw feature columns and can be served as is.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from typing import TYPE_CHECKING

from pipeline_tasks.core.config import PipelineConfig
from pipeline_tasks.core.errors import ConfigError, PipelineInputError
from pipeline_tasks.model.metrics import CLASSIFICATION, SKLEARN_SCORERS

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

# One-hot categories rarer than this (rows) are pooled into the "infrequent" bucket.
MIN_CATEGORY_FREQUENCY = 5
MAX_SEARCH_ITER = 20
DEFAULT_TRAIN_THREADS = 1
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


def search(pipe, X, y, task_type: str, metric: str, time_aware: bool, fit_seconds: float,
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

