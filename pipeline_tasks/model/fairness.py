"""Fairness of a model's holdout predictions across the groups of one sensitive column.

Everything here is computed by Fairlearn (``fairlearn.metrics``), never by hand: the per-group
numbers are a ``MetricFrame``, the differences are Fairlearn's own functions. What is computed:

- Binary classification (predicted labels, the positive class mapped to 1): per group the rows,
  selection rate, true and false positive rates and accuracy; ``demographic_parity_difference``
  (largest minus smallest selection rate) and ``equalized_odds_difference`` (the larger of the
  true- and false-positive-rate differences). The gap a gate compares is the larger of the two.
- Multiclass classification: per group the accuracy; the gap is its difference between groups.
- Regression: per group the RMSE and MAE; the gap is the RMSE difference between groups.

Why: a model can win on the whole holdout while treating one group (a carrier, an airport, a
customer segment) clearly worse; the gate may refuse such a candidate (``max_fairness_gap``).
A sensitive column need not be a model input: it only groups the rows.

Pure functions over arrays: no MLflow, no I/O.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from pipeline_tasks.core.results import XComResult

CLASSIFICATION = "classification"
REGRESSION = "regression"
#: The group of the rows whose sensitive value is null.
MISSING_GROUP = "(missing)"
#: A numeric sensitive column with more distinct values than this is binned ...
MAX_NUMERIC_GROUPS = 10
#: ... into this many quantile bins.
NUMERIC_BINS = 4


@dataclass(frozen=True)
class FairnessResult(XComResult):
    """The fairness of one sensitive column.

    ``demographic_parity_difference`` and ``equalized_odds_difference`` are set for binary
    classifiers only, ``worst_group_gap`` for multiclass classifiers (accuracy) and regressors
    (RMSE). ``gap`` is the one number a gate compares with ``max_fairness_gap``: the larger of
    the two differences for a binary classifier, ``worst_group_gap`` otherwise.

    Groups with fewer than ``min_group_rows`` rows are listed in ``groups`` (with their numbers)
    and in ``small_groups``, but left out of the differences. When fewer than 2 groups remain,
    nothing can be compared: the differences are None, ``gap`` is 0.0 and ``note`` says why.
    """

    column: str
    task_type: str
    metric: str
    groups: list[dict]
    demographic_parity_difference: float | None
    equalized_odds_difference: float | None
    worst_group_gap: float | None
    gap: float
    small_groups: list[str]
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (floats, strings, lists); NaN becomes None."""
        return _jsonable(dataclasses.asdict(self))


def fairness_report(y_true, y_pred, sensitive, *, task_type: str, column: str,
                    positive_label=None, min_group_rows: int = 0) -> FairnessResult:
    """Fairness metrics of ``y_pred`` against ``y_true`` across the groups of ``sensitive``.

    ``y_pred`` holds predicted labels for a classifier, predicted values for a regressor.
    A classifier with at most two labels (in ``y_true`` and ``y_pred`` together) is binary: the
    positive class is ``positive_label`` if given, else the last of the sorted labels (``True``
    for a boolean target, 1 for 0/1), as in ``pipeline_tasks.model.metrics``.

    Groups are the values of ``sensitive`` as strings; a null value is the group "(missing)".
    A numeric (non-boolean) column with more than 10 distinct values is cut into 4 quantile bins
    (``pd.qcut``, duplicate edges dropped), labelled by their interval: pandas' quantile bins
    are closed on the right, the first one on both sides, e.g. "[0, 4.75]", "(4.75, 9.5]".
    Groups are listed in that order (bins in ascending order, other values sorted, "(missing)"
    last).
    """
    import numpy as np
    import pandas as pd

    if task_type not in (CLASSIFICATION, REGRESSION):
        raise ValueError(f"unknown task type {task_type!r}: expected {CLASSIFICATION!r} or "
                         f"{REGRESSION!r}")
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    # positional, like the arrays (a Series' index is dropped)
    sensitive = pd.Series(sensitive.to_numpy() if isinstance(sensitive, pd.Series)
                          else np.asarray(sensitive, dtype=object))
    if y_true.ndim != 1 or y_pred.ndim != 1:
        raise ValueError("y_true and y_pred must be one-dimensional")
    if not len(y_true) == len(y_pred) == len(sensitive):
        raise ValueError(f"length mismatch for fairness of {column!r}: y_true has "
                         f"{len(y_true)} rows, y_pred {len(y_pred)}, the sensitive column "
                         f"{len(sensitive)}")
    if len(y_true) == 0:
        raise ValueError(f"no rows to measure the fairness of {column!r} on")
    if min_group_rows < 0:
        raise ValueError(f"min_group_rows must be >= 0, got {min_group_rows}")

    groups, order = _groups(sensitive, column)
    if task_type == REGRESSION:
        kind, y_true, y_pred = "regression", y_true.astype(float), y_pred.astype(float)
    else:
        labels = _sorted_labels(np.concatenate([y_true, y_pred]))
        if len(labels) <= 2:
            positive = labels[-1] if positive_label is None else positive_label
            kind = "binary"
            y_true = (y_true == positive).astype(int)
            y_pred = (y_pred == positive).astype(int)
        else:
            kind = "multiclass"

    by_group = _metric_frame(kind, y_true, y_pred, groups).by_group
    rows = {str(label): int(n) for label, n in by_group["rows"].items()}
    small = [g for g in order if rows[g] < min_group_rows]
    per_group = []
    for g in order:
        entry: dict[str, Any] = {"group": g, "rows": rows[g]}
        entry.update({name: float(by_group.loc[g, name]) for name in by_group.columns
                      if name != "rows"})
        per_group.append(entry)

    keep = ~groups.isin(small).to_numpy()
    compared = len(order) - len(small)
    dpd = eod = worst = None
    note = None
    if compared < 2:
        note = (f"{compared} group(s) with at least {min_group_rows} rows: nothing to compare, "
                "no differences (gap 0.0)")
    else:
        yt, yp, gs = y_true[keep], y_pred[keep], groups[keep].reset_index(drop=True)
        if kind == "binary":
            from fairlearn.metrics import (
                demographic_parity_difference,
                equalized_odds_difference,
            )

            dpd = float(demographic_parity_difference(yt, yp, sensitive_features=gs))
            eod = float(equalized_odds_difference(yt, yp, sensitive_features=gs))
        else:
            name = "rmse" if kind == "regression" else "accuracy"
            frame = _metric_frame(kind, yt, yp, gs)
            worst = float(frame.difference(method="between_groups")[name])

    if kind == "binary":
        metric = "selection_rate/equalized_odds"
        values = [v for v in (dpd, eod) if v is not None and not math.isnan(v)]
    else:
        metric = "rmse" if kind == "regression" else "accuracy"
        values = [worst] if worst is not None and not math.isnan(worst) else []
    return FairnessResult(
        column=column,
        task_type=task_type,
        metric=metric,
        groups=per_group,
        demographic_parity_difference=dpd,
        equalized_odds_difference=eod,
        worst_group_gap=worst,
        gap=max(values) if values else 0.0,
        small_groups=small,
        note=note,
    )


def _metric_frame(kind: str, y_true, y_pred, groups):
    """Fairlearn's ``MetricFrame`` of the per-group metrics of ``kind`` (rows included)."""
    from fairlearn.metrics import (
        MetricFrame,
        count,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )
    from sklearn.metrics import accuracy_score, mean_absolute_error, root_mean_squared_error

    metrics: dict[str, Any] = {"rows": count}
    if kind == "binary":
        metrics.update(selection_rate=selection_rate, true_positive_rate=true_positive_rate,
                       false_positive_rate=false_positive_rate, accuracy=accuracy_score)
    elif kind == "multiclass":
        metrics.update(accuracy=accuracy_score)
    else:
        metrics.update(rmse=root_mean_squared_error, mae=mean_absolute_error)
    return MetricFrame(metrics=metrics, y_true=y_true, y_pred=y_pred,
                       sensitive_features=groups)


def _groups(sensitive, column: str):
    """``(group label of each row as a string Series, the group labels in report order)``."""
    import pandas as pd

    values = pd.Series(sensitive).infer_objects()
    missing = values.isna().to_numpy()
    present = values[~missing]
    numeric = (pd.api.types.is_numeric_dtype(present)
               and not pd.api.types.is_bool_dtype(present))
    if numeric and present.nunique() > MAX_NUMERIC_GROUPS:
        binned, edges = pd.qcut(present.astype(float), NUMERIC_BINS, labels=False,
                                retbins=True, duplicates="drop")
        names = [("[" if i == 0 else "(") + f"{_number(edges[i])}, {_number(edges[i + 1])}]"
                 for i in range(len(edges) - 1)]
        labels = binned.astype(int).map(lambda i: names[i])
        order = [n for i, n in enumerate(names) if (binned == i).any()]
    else:
        labels = present.map(_label)
        order = sorted(set(labels))
    out = pd.Series(MISSING_GROUP, index=values.index, dtype=object, name=column)
    out[~missing] = labels.to_numpy()
    if missing.any():
        order.append(MISSING_GROUP)
    return out.reset_index(drop=True), order


def _label(value) -> str:
    """A group label: a float holding an integer (an int column with nulls) prints as one."""
    from pipeline_tasks.core.names import printable

    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return printable(value)


def _number(value: float) -> str:
    return _label(float(f"{float(value):.6g}"))


def _sorted_labels(values) -> list:
    """The distinct class labels, sorted (by their text when they cannot be compared)."""
    import numpy as np
    import pandas as pd

    distinct = list(pd.unique(values))
    try:
        return sorted(distinct)
    except TypeError:
        return sorted(distinct, key=lambda v: str(np.asarray(v)))


def _jsonable(value):
    """``value`` with numpy scalars as Python ones and NaN (or infinity) as None."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
