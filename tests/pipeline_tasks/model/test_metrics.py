"""Holdout metrics: one definition for training, the gate and the baseline."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import roc_auc_score

from pipeline_tasks.model.metrics import (
    baseline_metrics,
    classification_metrics,
    primary_metric,
    regression_metrics,
    score_model,
)


def test_primary_metric_per_task_type():
    assert primary_metric("classification") == ("roc_auc", True)
    assert primary_metric("classification", n_classes=3) == ("f1_macro", True)
    assert primary_metric("regression") == ("rmse", False)
    with pytest.raises(ValueError, match="unknown task type 'ranking'"):
        primary_metric("ranking")


def test_binary_metrics_use_the_last_class_as_positive():
    y = np.array(["no", "no", "yes", "yes", "no", "yes"])
    proba = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.45, 0.55], [0.3, 0.7], [0.7, 0.3]])
    metrics = classification_metrics(y, proba, np.array(["no", "yes"]))
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(y == "yes", proba[:, 1]))
    # predictions: no, no, yes, yes, yes, no -> 4 of 6 right; precision 2/3, recall 2/3
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["precision"] == pytest.approx(2 / 3)
    assert metrics["recall"] == pytest.approx(2 / 3)


def test_trivial_baseline_has_no_skill():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    assert baseline_metrics(labels, "classification")["roc_auc"] == pytest.approx(0.5)
    values = rng.normal(10, 2, 500)
    base = baseline_metrics(values, "regression")
    assert base["rmse"] == pytest.approx(values.std())
    assert base["r2"] == pytest.approx(0.0)


def test_score_model_matches_the_metric_functions():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + rng.normal(0, 0.1, 300)
    model = LinearRegression().fit(X, y)
    assert score_model(model, X, y, "regression") == regression_metrics(y, model.predict(X))
    labels = (y > 0).astype(int)
    clf = LogisticRegression().fit(X, labels)
    assert score_model(clf, X, labels, "classification")["roc_auc"] > 0.95


def test_a_regressor_cannot_be_scored_as_a_classifier():
    model = LinearRegression().fit(np.zeros((4, 1)), [0, 1, 0, 1])
    with pytest.raises(TypeError, match="LinearRegression has no predict_proba"):
        score_model(model, np.zeros((4, 1)), [0, 1, 0, 1], "classification")
