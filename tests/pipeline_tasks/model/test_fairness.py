"""Fairness metrics: Fairlearn's own numbers, per sensitive group, and the gap a gate compares."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    equalized_odds_difference,
    selection_rate,
)
from sklearn.metrics import accuracy_score, root_mean_squared_error

from pipeline_tasks.model.fairness import FairnessResult, fairness_report


def _biased_binary(seed: int = 0, n: int = 600, bias: float = 0.4):
    """Groups a, b, c; the model predicts the positive class for group c far less often
    (``bias``) than the truth warrants. Labels are booleans (positive: True)."""
    rng = np.random.default_rng(seed)
    group = rng.choice(["a", "b", "c"], size=n)
    y_true = rng.random(n) < 0.5
    correct = rng.random(n) < 0.85
    y_pred = np.where(correct, y_true, ~y_true)
    # group c: a share of its positive predictions turned negative
    y_pred = y_pred & ~((group == "c") & (rng.random(n) < bias))
    return y_true, y_pred, group


def test_binary_metrics_agree_with_fairlearn():
    y_true, y_pred, group = _biased_binary()
    result = fairness_report(y_true, y_pred, group, task_type="classification", column="g")

    assert result.task_type == "classification"
    assert result.demographic_parity_difference == pytest.approx(
        demographic_parity_difference(y_true, y_pred, sensitive_features=group))
    assert result.equalized_odds_difference == pytest.approx(
        equalized_odds_difference(y_true, y_pred, sensitive_features=group))
    assert result.gap == pytest.approx(
        max(result.demographic_parity_difference, result.equalized_odds_difference))
    assert result.worst_group_gap is None
    assert result.small_groups == [] and result.note is None

    frame = MetricFrame(metrics={"selection_rate": selection_rate, "accuracy": accuracy_score},
                        y_true=y_true, y_pred=y_pred, sensitive_features=group)
    assert [g["group"] for g in result.groups] == ["a", "b", "c"]
    for entry in result.groups:
        rows = group == entry["group"]
        assert entry["rows"] == rows.sum()
        assert entry["selection_rate"] == pytest.approx(
            frame.by_group.loc[entry["group"], "selection_rate"])
        assert entry["accuracy"] == pytest.approx(frame.by_group.loc[entry["group"], "accuracy"])
        assert {"true_positive_rate", "false_positive_rate"} <= set(entry)
    # group c is the one the model disfavours
    lowest = min(result.groups, key=lambda g: g["selection_rate"])
    assert lowest["group"] == "c"


def test_biased_predictions_give_a_larger_gap_than_unbiased_ones():
    biased = fairness_report(*_biased_binary(bias=0.5), task_type="classification", column="g")
    fair = fairness_report(*_biased_binary(bias=0.0), task_type="classification", column="g")
    assert biased.gap > fair.gap + 0.15
    assert biased.demographic_parity_difference > fair.demographic_parity_difference
    assert biased.equalized_odds_difference > fair.equalized_odds_difference


def test_positive_class_is_the_last_label_or_the_one_given():
    y_true = np.array([0, 1, 1, 0, 1, 0, 0, 0])
    y_pred = np.array([0, 1, 1, 0, 0, 0, 1, 0])
    group = np.array(["x", "x", "x", "x", "y", "y", "y", "y"])
    default = fairness_report(y_true, y_pred, group, task_type="classification", column="g")
    assert default.demographic_parity_difference == pytest.approx(
        demographic_parity_difference(y_true, y_pred, sensitive_features=group))
    # positive_label=0: selection rate is the rate of predicted 0s
    flipped = fairness_report(y_true, y_pred, group, task_type="classification", column="g",
                              positive_label=0)
    assert flipped.demographic_parity_difference == pytest.approx(
        demographic_parity_difference(1 - y_true, 1 - y_pred, sensitive_features=group))
    assert {g["group"]: g["selection_rate"] for g in flipped.groups} == {"x": 0.5, "y": 0.75}
    # string labels: "yes" sorts last
    words = fairness_report(np.where(y_true == 1, "yes", "no"), np.where(y_pred == 1, "yes", "no"),
                            group, task_type="classification", column="g")
    assert words.gap == pytest.approx(default.gap)


def test_missing_values_form_their_own_group():
    y_true = np.array([1, 0, 1, 0, 1, 0, 1, 0, 1])
    y_pred = np.array([1, 0, 1, 1, 0, 0, 0, 0, 0])
    sensitive = pd.Series(["a", "a", "a", None, None, np.nan, "b", "b", "b"])
    result = fairness_report(y_true, y_pred, sensitive, task_type="classification", column="g")
    groups = {g["group"]: g for g in result.groups}
    assert list(groups) == ["a", "b", "(missing)"]
    assert groups["(missing)"]["rows"] == 3
    assert groups["(missing)"]["selection_rate"] == pytest.approx(1 / 3)
    expected_groups = sensitive.fillna("(missing)")
    assert result.demographic_parity_difference == pytest.approx(
        demographic_parity_difference(y_true, y_pred, sensitive_features=expected_groups))


def test_small_groups_are_reported_but_left_out_of_the_differences():
    y_true, y_pred, group = _biased_binary(n=400)
    # group d: 5 rows, every one predicted positive (it would dominate the differences)
    y_true = np.concatenate([y_true, [False] * 5])
    y_pred = np.concatenate([y_pred, [True] * 5])
    group = np.concatenate([group, ["d"] * 5])
    result = fairness_report(y_true, y_pred, group, task_type="classification", column="g",
                             min_group_rows=20)
    assert result.small_groups == ["d"]
    d = next(g for g in result.groups if g["group"] == "d")
    assert d["rows"] == 5 and d["selection_rate"] == 1.0
    big = group != "d"
    assert result.demographic_parity_difference == pytest.approx(
        demographic_parity_difference(y_true[big], y_pred[big], sensitive_features=group[big]))
    assert result.equalized_odds_difference == pytest.approx(
        equalized_odds_difference(y_true[big], y_pred[big], sensitive_features=group[big]))
    everyone = fairness_report(y_true, y_pred, group, task_type="classification", column="g")
    assert everyone.gap > result.gap


def test_fewer_than_two_groups_left_compare_nothing():
    y_true = np.array([1, 0, 1, 0, 1, 1])
    y_pred = np.array([1, 0, 0, 0, 1, 0])
    group = np.array(["a", "a", "a", "a", "b", "b"])
    result = fairness_report(y_true, y_pred, group, task_type="classification", column="g",
                             min_group_rows=3)
    assert result.small_groups == ["b"]
    assert result.demographic_parity_difference is None
    assert result.equalized_odds_difference is None
    assert result.gap == 0.0
    assert "nothing to compare" in result.note
    assert len(result.groups) == 2


def test_regression_gives_the_rmse_gap_between_groups():
    rng = np.random.default_rng(1)
    n = 300
    group = rng.choice(["north", "south"], size=n)
    y_true = rng.normal(10, 2, n)
    noise = np.where(group == "south", 3.0, 0.5)  # the model is much worse in the south
    y_pred = y_true + rng.normal(0, 1, n) * noise
    result = fairness_report(y_true, y_pred, group, task_type="regression", column="region")

    frame = MetricFrame(metrics=root_mean_squared_error, y_true=y_true, y_pred=y_pred,
                        sensitive_features=group)
    assert result.metric == "rmse"
    assert result.worst_group_gap == pytest.approx(frame.difference(method="between_groups"))
    assert result.gap == result.worst_group_gap
    assert result.demographic_parity_difference is None
    assert result.equalized_odds_difference is None
    south = next(g for g in result.groups if g["group"] == "south")
    assert south["rmse"] == pytest.approx(
        root_mean_squared_error(y_true[group == "south"], y_pred[group == "south"]))
    assert "mae" in south and result.gap > 1.5


def test_multiclass_gives_the_accuracy_gap_between_groups():
    rng = np.random.default_rng(2)
    n = 300
    group = rng.choice(["a", "b"], size=n)
    y_true = rng.choice(["cat", "dog", "fish"], size=n)
    wrong = rng.random(n) < np.where(group == "b", 0.5, 0.1)
    y_pred = np.where(wrong, rng.choice(["cat", "dog", "fish"], size=n), y_true)
    result = fairness_report(y_true, y_pred, group, task_type="classification", column="g")

    frame = MetricFrame(metrics=accuracy_score, y_true=y_true, y_pred=y_pred,
                        sensitive_features=group)
    assert result.metric == "accuracy"
    assert result.worst_group_gap == pytest.approx(frame.difference(method="between_groups"))
    assert result.gap == result.worst_group_gap > 0.1
    assert result.demographic_parity_difference is None
    assert result.equalized_odds_difference is None


def test_a_numeric_column_with_many_values_is_binned_into_quartiles():
    rng = np.random.default_rng(3)
    n = 400
    age = rng.integers(18, 80, n).astype(float)
    age[:10] = np.nan
    y_true = rng.random(n) < 0.5
    y_pred = y_true ^ (rng.random(n) < 0.2)
    result = fairness_report(y_true, y_pred, age, task_type="classification", column="age")

    labels = [g["group"] for g in result.groups]
    assert len(labels) == 5 and labels[-1] == "(missing)"
    assert labels[0].startswith("[") and all(label.startswith("(") for label in labels[1:4])
    bins = pd.qcut(age[10:], 4, duplicates="drop")
    assert [g["rows"] for g in result.groups[:4]] == list(pd.Series(bins).value_counts(
        sort=False))
    # a numeric column with few values is grouped by value
    few = fairness_report(y_true, y_pred, np.where(age > 50, 1.0, 0.0), task_type="classification",
                          column="old")
    assert [g["group"] for g in few.groups] == ["0", "1"]


def test_to_dict_is_json_serialisable_and_reads_back():
    y_true, y_pred, group = _biased_binary()
    result = fairness_report(y_true, y_pred, group, task_type="classification", column="g",
                             min_group_rows=1000)
    payload = result.to_dict()
    text = json.dumps(payload, allow_nan=False)
    assert json.loads(text)["column"] == "g"
    assert FairnessResult.from_xcom(json.loads(text)) == result
    # NaN becomes None
    nan = FairnessResult(column="g", task_type="regression", metric="rmse",
                         groups=[{"group": "a", "rows": 1, "rmse": float("nan")}],
                         demographic_parity_difference=None, equalized_odds_difference=None,
                         worst_group_gap=np.float64("nan"), gap=0.0, small_groups=[])
    assert nan.to_dict()["groups"][0]["rmse"] is None
    assert nan.to_dict()["worst_group_gap"] is None
    json.dumps(nan.to_dict(), allow_nan=False)


def test_bad_input_is_a_value_error():
    with pytest.raises(ValueError, match="length mismatch"):
        fairness_report([1, 0, 1], [1, 0], ["a", "b", "c"], task_type="classification",
                        column="g")
    with pytest.raises(ValueError, match="length mismatch"):
        fairness_report([1, 0], [1, 0], ["a"], task_type="classification", column="g")
    with pytest.raises(ValueError, match="unknown task type 'ranking'"):
        fairness_report([1, 0], [1, 0], ["a", "b"], task_type="ranking", column="g")
