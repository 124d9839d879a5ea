"""The primary metric slice by slice: a candidate that wins on average can still lose for one
airline, one region or one group of people.

``slice_labels`` names each holdout row's slice of a column: its value for a categorical column
(or a numeric one with few values; on one line, at most 64 characters: ``core.names.printable``), its quantile bin (``(a, b]``, ``slice_bins`` of them) for a
numeric one, ``(missing)`` for a null.
``evaluate_slices`` computes, per slice, the row count and the primary metric of the candidate,
the champion and the trivial baseline, with a paired bootstrap (the same resampled rows for both
models): a confidence interval of the candidate's metric and of the candidate-minus-champion
difference. The gate (``policy``) reads ``SliceResult.regressed``:

    a slice with at least ``min_slice_rows`` rows regresses when the candidate is worse than the
    champion by more than ``max_slice_regression`` x |champion's metric| on the slice, and the
    whole confidence interval of the difference says so (the optimistic end included).

Smaller slices are computed and reported, never gated. ROC AUC and RMSE are computed for all
bootstrap rounds at once with numpy (each resample as row weights: one sort of the slice's
scores, cumulative sums over tie groups; weighted squared errors); other metrics (multiclass F1)
call scikit-learn per round with the same weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

MISSING = "(missing)"
#: Numeric columns with at most this many distinct values are sliced by value, not binned.
MAX_VALUE_SLICES = 10


@dataclass(frozen=True)
class SliceResult:
    """One slice of one column: its rows, each model's metric, and what the gate makes of it."""

    column: str
    value: str
    rows: int
    gated: bool  # enough rows (min_slice_rows) and a champion to compare with
    candidate: float | None
    champion: float | None
    baseline: float | None
    candidate_ci: list[float] | None = None
    difference_ci: list[float] | None = None  # candidate minus champion
    regressed: bool = False
    note: str = ""  # why it is not gated, or why a metric is missing

    @property
    def name(self) -> str:
        return f"{self.column}={self.value}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SliceSettings:
    """How slices are made and judged (the config's ``slice_*`` and ``*_slice_*`` fields)."""

    bins: int = 4
    min_rows: int = 100
    max_regression: float = 0.05
    rounds: int = 200
    confidence: float = 0.95
    seed: int = 42

    @classmethod
    def from_config(cls, config) -> SliceSettings:
        return cls(bins=config.slice_bins, min_rows=config.min_slice_rows,
                   max_regression=config.max_slice_regression,
                   rounds=config.slice_bootstrap_rounds, confidence=config.slice_confidence,
                   seed=config.seed)


def slice_labels(values: pd.Series, bins: int) -> pd.Series:
    """Each row's slice of one column, as text (see the module docstring)."""
    import pandas as pd

    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if numeric and values.nunique(dropna=True) > MAX_VALUE_SLICES:
        binned = pd.qcut(values, q=bins, duplicates="drop")
        labels = binned.map(lambda iv: f"({_num(iv.left)}, {_num(iv.right)}]"
                            if pd.notna(iv) else MISSING).astype(object)
        return labels.where(values.notna(), MISSING)
    from pipeline_tasks.core.names import printable

    labels = values.map(lambda v: _num(v) if isinstance(v, float) else printable(v)).astype(object)
    return labels.where(values.notna(), MISSING)


def _num(value: float) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() else f"{value:.4g}"


class _Metric:
    """The primary metric of one task, for one slice's rows, over bootstrap resamples at once."""

    def __init__(self, metric: str, task_type: str, labels: np.ndarray | None):
        self.metric, self.task_type, self.labels = metric, task_type, labels

    def prepare(self, y, output):
        """What the metric reads of a model's output: the positive class's score (ROC AUC), the
        predicted label (other classification metrics) or the predicted value (regression)."""
        import numpy as np

        if self.task_type == "regression":
            return np.asarray(output, dtype=float)
        proba, classes = output
        aligned = np.zeros((len(proba), len(self.labels)))
        aligned[:, np.searchsorted(self.labels, classes)] = np.asarray(proba, dtype=float)
        if self.metric == "roc_auc":
            return aligned[:, -1]
        return self.labels[aligned.argmax(axis=1)]

    def target(self, y):
        import numpy as np

        y = np.asarray(y)
        if self.task_type == "regression":
            return y.astype(float)
        return (y == self.labels[-1]).astype(float) if self.metric == "roc_auc" else y

    def many(self, y: np.ndarray, pred: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """The metric on each resample. ``counts`` is (rounds, n): how often each of the slice's
        n rows was drawn in each round (a bootstrap resample as weights, so ROC AUC and RMSE are
        computed for every round at once); NaN where the metric is undefined (one class)."""
        import numpy as np

        if self.metric == "roc_auc":
            return _weighted_auc(y, pred, counts)
        if self.metric == "rmse":
            return np.sqrt((counts * (y - pred) ** 2).sum(axis=1) / counts.sum(axis=1))
        if self.metric == "mae":
            return (counts * np.abs(y - pred)).sum(axis=1) / counts.sum(axis=1)
        from sklearn.metrics import f1_score

        out = np.empty(len(counts))
        for i, weights in enumerate(counts):
            out[i] = f1_score(y, pred, average="macro", zero_division=0, sample_weight=weights)
        return out

    def one(self, y: np.ndarray, pred: np.ndarray) -> float | None:
        import numpy as np

        value = float(self.many(y, pred, np.ones((1, len(y))))[0])
        return None if np.isnan(value) else value


def _weighted_auc(y: np.ndarray, scores: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """ROC AUC of each row of ``counts`` (row weights), ties counted half: the scores are sorted
    once, and per tie group the positive weight times the negative weight ranked below it."""
    import numpy as np

    order = np.argsort(scores, kind="mergesort")
    ranked, truth = scores[order], y[order]
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
    weights = counts[:, order]
    pos = np.add.reduceat(weights * truth, starts, axis=1)
    neg = np.add.reduceat(weights * (1 - truth), starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    total_pos, total_neg = pos.sum(axis=1), neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (pos * (below + 0.5 * neg)).sum(axis=1) / (total_pos * total_neg)
    return np.where((total_pos > 0) & (total_neg > 0), auc, np.nan)


def evaluate_slices(holdout: pd.DataFrame, y, *, columns: list[str], metric: str,
                    greater_is_better: bool, task_type: str, candidate: Any,
                    champion: Any | None, baseline: Any, settings: SliceSettings,
                    classes: list | None = None) -> list[SliceResult]:
    """Every slice of ``columns`` (those the holdout has), candidate vs champion vs baseline.

    ``candidate``/``champion``/``baseline``: each model's output on the holdout rows:
    ``(proba, classes)`` for a classifier, predicted values for a regressor (``champion`` None:
    nothing to compare with, so nothing is gated)."""
    import numpy as np

    labels = None
    if task_type != "regression":
        labels = np.union1d(np.asarray(classes if classes is not None else candidate[1]),
                            np.unique(np.asarray(y)))
    measure = _Metric(metric, task_type, labels)
    truth = measure.target(y)
    preds = {name: measure.prepare(y, output) for name, output in
             (("candidate", candidate), ("champion", champion), ("baseline", baseline))
             if output is not None}
    rng = np.random.default_rng(settings.seed)
    alpha = (1 - settings.confidence) / 2
    results = []
    for column in columns:
        if column not in holdout.columns:
            continue
        values = holdout[column]
        keys = slice_labels(values, settings.bins).to_numpy()
        for value in _in_order(values, keys):
            where = np.flatnonzero(keys == value)
            results.append(_one_slice(column, str(value), where, truth, preds, measure, rng,
                                      alpha, settings, greater_is_better))
    return results


def _in_order(values: pd.Series, keys: np.ndarray) -> list[str]:
    """The slices of a column in a reader's order: numeric bins and values by their smallest
    value, text alphabetically, ``(missing)`` last."""
    import pandas as pd

    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    found = [k for k in dict.fromkeys(keys) if k != MISSING]
    if numeric:
        smallest = values.groupby(keys).min()
        found.sort(key=lambda k: smallest[k])
    else:
        found.sort(key=str)
    return found + ([MISSING] if MISSING in set(keys) else [])


def _one_slice(column, value, where, truth, preds, measure, rng, alpha, settings,
               greater_is_better) -> SliceResult:

    import numpy as np

    n = len(where)
    y = truth[where]
    values = {name: measure.one(y, pred[where]) for name, pred in preds.items()}
    has_champion = "champion" in preds
    note = ""
    if values["candidate"] is None:
        note = "one class only: the metric is undefined"
    elif n < settings.min_rows:
        note = f"{n} rows, fewer than min_slice_rows {settings.min_rows}: reported, not gated"
    elif not has_champion:
        note = "no champion to compare with"
    candidate_ci = difference_ci = None
    if values["candidate"] is not None and n >= 2:
        # each round's resample as row counts: one bincount for every round
        drawn = rng.integers(0, n, size=(settings.rounds, n))
        offsets = (np.arange(settings.rounds) * n)[:, None]
        counts = np.bincount((drawn + offsets).ravel(), minlength=settings.rounds * n)
        counts = counts.reshape(settings.rounds, n).astype(float)
        cand = measure.many(y, preds["candidate"][where], counts)
        candidate_ci = _interval(cand, alpha)
        if has_champion and values["champion"] is not None:
            champ = measure.many(y, preds["champion"][where], counts)
            difference_ci = _interval(cand - champ, alpha)
    gated = not note and difference_ci is not None
    regressed = False
    if gated:
        allowed = settings.max_regression * abs(values["champion"])
        low, high = difference_ci
        regressed = (high < -allowed) if greater_is_better else (low > allowed)
    return SliceResult(column=column, value=value, rows=n, gated=gated,
                       candidate=values["candidate"], champion=values.get("champion"),
                       baseline=values.get("baseline"), candidate_ci=candidate_ci,
                       difference_ci=difference_ci, regressed=regressed, note=note)


def _interval(samples: np.ndarray, alpha: float) -> list[float] | None:
    import numpy as np

    finite = samples[~np.isnan(samples)]
    if len(finite) < 2:
        return None
    low, high = np.quantile(finite, [alpha, 1 - alpha])
    return [float(low), float(high)]
