"""Holdout metrics, defined once: training, the evaluation gate and the baseline all score alike.

Classification, binary: ``roc_auc`` (primary), accuracy, f1, precision, recall, log_loss; the
positive class is the last of the sorted class labels (``True`` for a boolean target).
Classification, multiclass: ``f1_macro`` (primary), accuracy, log_loss.
Regression: ``rmse`` (primary, lower is better), mae, r2.
"""

from __future__ import annotations

from typing import Any

from pipeline_tasks.core.errors import PipelineInputError

CLASSIFICATION = "classification"
REGRESSION = "regression"
TASK_TYPES = (CLASSIFICATION, REGRESSION)

# The scikit-learn scorer that optimises each primary metric (used by the hyperparameter search
# and by permutation importance).
SKLEARN_SCORERS: dict[str, str] = {
    "roc_auc": "roc_auc",
    "f1_macro": "f1_macro",
    "rmse": "neg_root_mean_squared_error",
}


def primary_metric(task_type: str, n_classes: int = 2) -> tuple[str, bool]:
    """``(metric name, greater_is_better)`` of the metric the gate decides on."""
    if task_type == REGRESSION:
        return "rmse", False
    if task_type == CLASSIFICATION:
        return ("roc_auc", True) if n_classes <= 2 else ("f1_macro", True)
    raise ValueError(f"unknown task type {task_type!r}")


def score_model(model: Any, X, y, task_type: str) -> dict[str, float]:
    """Score a fitted estimator (anything with ``predict`` / ``predict_proba``) on ``X, y``."""
    if task_type == CLASSIFICATION:
        if not hasattr(model, "predict_proba"):
            raise TypeError(f"{type(model).__name__} has no predict_proba: not a classifier")
        return classification_metrics(y, model.predict_proba(X), model.classes_)
    if task_type == REGRESSION:
        return regression_metrics(y, model.predict(X))
    raise ValueError(f"unknown task type {task_type!r}")


def baseline_metrics(y, task_type: str) -> dict[str, float]:
    """Metrics of the trivial model on ``y``: class priors / the mean, taken from ``y`` itself.

    Fitting the dummy on the scored rows gives it the best constant for them, so the baseline is
    slightly optimistic, which only makes the "beats the baseline" gate stricter.
    """
    import numpy as np
    from sklearn.dummy import DummyClassifier, DummyRegressor

    dummy_x = np.zeros((len(y), 1))
    if task_type == CLASSIFICATION:
        dummy = DummyClassifier(strategy="prior").fit(dummy_x, y)
    else:
        dummy = DummyRegressor(strategy="mean").fit(dummy_x, y)
    return score_model(dummy, dummy_x, y, task_type)


def classification_metrics(y_true, proba, classes) -> dict[str, float]:
    """Metrics from class probabilities (columns in the order of ``classes``)."""
    import numpy as np
    from sklearn.metrics import (
        accuracy_score,
        f1_score,
        log_loss,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    y_true = np.asarray(y_true)
    classes = np.asarray(classes)
    present = np.unique(y_true)
    labels = np.union1d(classes, present)
    # A label the model never saw gets probability 0 (the model cannot predict it).
    aligned = np.zeros((len(y_true), len(labels)))
    aligned[:, np.searchsorted(labels, classes)] = np.asarray(proba, dtype=float)
    y_pred = labels[aligned.argmax(axis=1)]

    metrics = {"accuracy": accuracy_score(y_true, y_pred)}
    metrics["log_loss"] = log_loss(y_true, aligned, labels=labels)
    if len(labels) <= 2:
        if len(present) < 2:
            raise PipelineInputError(
                f"cannot compute roc_auc: the scored rows hold a single class ({present[0]!r}); "
                "the holdout needs both classes"
            )
        positive = labels[-1]
        metrics["roc_auc"] = roc_auc_score(y_true == positive, aligned[:, -1])
        for name, fn in (("f1", f1_score), ("precision", precision_score), ("recall", recall_score)):
            metrics[name] = fn(y_true, y_pred, pos_label=positive, zero_division=0)
    else:
        metrics["f1_macro"] = f1_score(y_true, y_pred, average="macro", zero_division=0)
    return {name: float(value) for name, value in metrics.items()}


def regression_metrics(y_true, y_pred) -> dict[str, float]:
    import numpy as np
    from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error

    y_true = np.asarray(y_true, dtype=float)
    y_pred = np.asarray(y_pred, dtype=float)
    return {
        "rmse": float(root_mean_squared_error(y_true, y_pred)),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "r2": float(r2_score(y_true, y_pred)),
    }
