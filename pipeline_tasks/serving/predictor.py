"""The model's predictions, bit for bit those of the model's own ``predict_proba`` /
``predict``, computed faster where that is known to be exact: for the batch scorer's chunks of
100,000 rows and for the model server's requests of one row alike.

``ChunkPredictor(model)`` looks at the fitted model once. A scikit-learn ``Pipeline`` whose last
step is a ``HistGradientBoostingClassifier`` or ``HistGradientBoostingRegressor`` without native
categorical features (what ``model.estimator.build_pipeline`` trains) takes the **fast path**:

- preprocessing: a ``ColumnTransformer`` runs block by block into one column-major float64
  matrix (``_Columns``), without its per-call checks: its text blocks made of imputers and
  one-hot / ordinal encoders encode each column's distinct values once, keep the encodings and
  spread them to the rows; a numeric ``SimpleImputer`` block is a float64 copy with the missing
  values filled. Any other preprocessing runs as ``Pipeline`` runs it, its output made
  column-major;
- trees: each tree reads the features' bin numbers (the model's own ``_BinMapper``, uint8) in
  column-major order instead of scattered float64 values, and the leaves are summed as
  ``_raw_predict`` sums them (baseline, then tree after tree); the model's own loss turns the sum
  into probabilities or values. A split ``value <= threshold`` holds exactly when
  ``bin(value) <= bin(threshold)``, since the bin edges are the split thresholds.

Both are exact by construction, and the first calls are computed both ways and compared bit for
bit (a batch run's first chunk, a server's first 16 requests): a part that differs (a model this
module misreads) is dropped, with a warning. The tests compare with the model's own predictions
bit for bit on classifiers, regressors, text inputs, missing and unseen values, chunks and single
rows. On the demo model about 4x faster than the model's own ``predict_proba`` on a chunk (most
from the column-major layout), about 6x on one row (most from skipping the pipeline's per-call
checks and encoding).

Any other model (another final estimator, native categorical features, a preprocessing that
returns a DataFrame or a sparse matrix) is called as it is: ``model.predict_proba(frame)``.
``kind`` says which path a predictor takes (``"hist_gradient_boosting"`` or ``"model"``).

The batch scorer runs one predictor from several threads at once (one chunk each): the trees
release the GIL, and ``one_openmp_thread`` keeps each thread's OpenMP team to itself, since on a
shared machine OpenMP's spinning threads make a predict many times slower. A call of fewer than
``SMALL_ROWS`` rows walks the trees on one thread.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

FAST = "hist_gradient_boosting"
PLAIN = "model"
#: Rows of the first calls computed both ways and compared (``ChunkPredictor._check``), and the
#: most calls compared (a model server's first requests are of a row or a few).
CHECK_ROWS = 20_000
CHECK_CALLS = 16
#: Fewer rows than this are walked through the trees on one thread.
SMALL_ROWS = 1_000


class ChunkPredictor:
    """``predict_proba`` / ``predict`` of ``model`` on a frame of its inputs (see the module
    docstring)."""

    def __init__(self, model: Any):
        import threading

        self.model = model
        self.kind, self.why = _fast_kind(model)
        self._columns: _Columns | None = None
        self._binned = False
        self._checked = threading.Event()  # set once the first calls were compared
        self._checks = self._checked_rows = 0
        self._check_lock = threading.Lock()
        if self.kind == FAST:
            self._preprocess = model[:-1]
            self._final = model[-1]
            self._columns = _Columns.of(self._preprocess)
            self._binned = _can_bin(self._final)
        log.info("predictions: %s path (%s; preprocessing %s; trees on %s values)",
                 self.kind, self.why,
                 "column by column" if self._columns else "as the pipeline does it",
                 "binned" if self._binned else "raw")

    @property
    def columns_path(self) -> bool:
        """Whether the preprocessing runs column by column (``_Columns``)."""
        return self._columns is not None

    @property
    def binned_path(self) -> bool:
        """Whether the trees read the features' bin numbers (``_binned_raw``)."""
        return self._binned

    def predict_proba(self, frame):
        if self.kind != FAST:
            return self.model.predict_proba(frame)
        features, raw = self._features_and_raw(frame)
        if raw is None:
            return self._final.predict_proba(features)
        return self._final._loss.predict_proba(raw)

    def predict(self, frame):
        import numpy as np

        if self.kind != FAST:
            return self.model.predict(frame)
        features, raw = self._features_and_raw(frame)
        final = self._final
        if raw is None:
            return final.predict(features)
        if not hasattr(final, "classes_"):  # HistGradientBoostingRegressor.predict
            return final._loss.link.inverse(raw.ravel())
        # HistGradientBoostingClassifier.predict
        encoded = (raw.ravel() > 0).astype(int) if raw.shape[1] == 1 else np.argmax(raw, axis=1)
        return final.classes_[encoded]

    def _features_and_raw(self, frame):
        """The features (float64, column-major) and, on the binned path, the trees' raw sum
        (else None)."""
        if not self._checked.is_set() and (self._columns is not None or self._binned):
            self._check(frame)
        features = self._features(frame, fast=self._columns is not None)
        raw = self._binned_raw(features) if self._binned else None
        return features, raw

    def _check(self, frame) -> None:
        """Compute the first calls both ways and compare them bit for bit (at most
        ``CHECK_ROWS`` rows of a call; until ``CHECK_ROWS`` rows or ``CHECK_CALLS`` calls were
        compared: a batch run's first chunk, a model server's first requests): a part of the
        fast path that differs (a model this module misreads) is dropped for good, with a
        warning, so such a model is still scored exactly. Other threads wait for the verdict."""
        with self._check_lock:
            if self._checked.is_set():
                return
            sample = frame.iloc[:CHECK_ROWS] if hasattr(frame, "iloc") else frame[:CHECK_ROWS]
            plain = self._features(sample, fast=False)
            if self._columns is not None:
                fast = self._columns.transform(sample, always=True)
                if fast is None or not _same(fast, plain):
                    log.warning("predictions: the column-by-column preprocessing differs "
                                "from the pipeline's on this model: using the pipeline's")
                    self._columns = None
            if self._binned:
                raw = self._binned_raw(plain)
                if raw is None or not _same(raw, self._final._raw_predict(plain)):
                    log.warning("predictions: the trees on binned values differ from the "
                                "model's on this model: using the model's")
                    self._binned = False
            self._checks += 1
            self._checked_rows += len(sample)
            if self._checked_rows >= CHECK_ROWS or self._checks >= CHECK_CALLS \
                    or (self._columns is None and not self._binned):
                self._checked.set()

    def _features(self, frame, *, fast: bool):
        """The preprocessing's output as the trees read it fastest: float64, column-major.
        Anything but a dense 2-D numeric array goes on as it came (the trees' own checks apply
        to it, as in ``Pipeline``)."""
        import numpy as np

        columns = self._columns
        if fast and columns is not None:
            features = columns.transform(frame)
            if features is not None:
                return features
        features = self._preprocess.transform(frame)
        if _dense_numeric(features):
            return np.asfortranarray(features, dtype=np.float64)
        return features

    def _binned_raw(self, features):
        """``HistGradientBoosting*._raw_predict(features)``, the same sum in the same order
        (the baseline, then each iteration's tree), each tree reading the features' bin numbers
        (uint8, 8x smaller than float64: fewer cache misses) instead of the values. Exact: the
        model's bin edges are its split thresholds, so ``value <= threshold`` holds exactly when
        ``bin <= threshold's bin``, and a missing value has its own bin. None for features the
        trees do not take as they are (not a dense float64 matrix of the fitted width)."""
        import numpy as np

        final = self._final
        if not (_dense_numeric(features) and features.dtype == np.float64
                and features.shape[1] == final.n_features_in_):
            return None
        mapper = final._bin_mapper
        binned = mapper.transform(features)
        raw = np.zeros((features.shape[0], final.n_trees_per_iteration_),
                       dtype=final._baseline_prediction.dtype, order="F")
        raw += final._baseline_prediction
        missing = mapper.missing_values_bin_idx_
        # a few rows: one thread (waking an OpenMP team per tree costs more than the rows)
        threads = 1 if len(binned) < SMALL_ROWS else _threads()
        for iteration in final._predictors:
            for k, predictor in enumerate(iteration):
                raw[:, k] += predictor.predict_binned(binned, missing_values_bin_idx=missing,
                                                      n_threads=threads)
        return raw


def _threads() -> int:
    """The OpenMP threads a predict of this thread would use (as scikit-learn counts them)."""
    from sklearn.utils._openmp_helpers import _openmp_effective_n_threads

    return _openmp_effective_n_threads()


def _can_bin(final) -> bool:
    """Whether the fitted boosting model has what ``_binned_raw`` reads (scikit-learn 1.x) and
    no categorical feature (whose bins are not ordered thresholds)."""
    import numpy as np

    mapper = getattr(final, "_bin_mapper", None)
    predictors = getattr(final, "_predictors", None)
    if mapper is None or not predictors:
        return False
    return (all(hasattr(p, "predict_binned") for it in predictors for p in it)
            and hasattr(mapper, "missing_values_bin_idx_") and hasattr(mapper, "transform")
            and hasattr(final, "_baseline_prediction") and hasattr(final, "_loss")
            and hasattr(final, "_raw_predict")
            and not np.asarray(getattr(mapper, "is_categorical_", [1])).any())


def _dense_numeric(features) -> bool:
    import numpy as np

    return isinstance(features, np.ndarray) and features.ndim == 2 \
        and features.dtype.kind in "fiub"


def _same(fast, plain) -> bool:
    """Bit for bit the same matrix (NaN where NaN)."""
    import numpy as np

    if not _dense_numeric(plain) or fast.shape != plain.shape:
        return False
    plain = np.ascontiguousarray(plain, dtype=np.float64)
    return bool(np.array_equal(fast.view(np.uint64), plain.view(np.uint64)))


#: Transformers that map each value of each column on its own (the output for a row's value of
#: a column depends on nothing else), so a column's distinct values can be transformed once.
_PER_VALUE = ("SimpleImputer", "OneHotEncoder", "OrdinalEncoder")
#: Distinct values per text column whose encoding a predictor keeps (``_TextBlock``); values
#: past it are encoded per call (the model server's clients choose them: memory stays bounded).
CACHED_VALUES = 4096


class _Columns:
    """A fitted ``ColumnTransformer``'s transform, done block by block into one column-major
    float64 matrix: each transformer on its columns (as ``ColumnTransformer`` calls it), written
    at its ``output_indices_``. Two kinds of block skip the transformer's own per-call checks:

    - ``_TextBlock``: text columns made of ``_PER_VALUE`` steps (impute, then one-hot or ordinal
      encode). Each column's distinct values are encoded once and spread to the rows
      (``pandas.factorize``): a chunk of 100,000 flights has a few thousand tail numbers, not
      100,000. The encodings are kept (``CACHED_VALUES`` per column), so a request of one row
      whose values were seen before costs a dictionary lookup, not a pipeline call;
    - ``_NumberBlock``: numeric columns through a ``SimpleImputer`` (what the package trains):
      the values as float64, a missing one replaced by the column's fitted statistic.

    ``of`` returns None for any other preprocessing. A text block with a missing value (or too
    many new distinct values to gain), a number block with an infinite value or a dtype it does
    not know, is transformed whole, as ``ColumnTransformer`` does; ``transform`` returns None
    when a block's output is not the dense numeric matrix expected, and the predictor then uses
    the pipeline's own transform.
    """

    def __init__(self, blocks: list, width: int):
        self.blocks = blocks  # (transformer, columns, output slice, _TextBlock/_NumberBlock/None)
        self.width = width

    @classmethod
    def of(cls, preprocess) -> _Columns | None:
        import sklearn
        from sklearn.compose import ColumnTransformer
        from sklearn.pipeline import Pipeline

        steps = preprocess.steps if type(preprocess) is Pipeline else [(None, preprocess)]
        if len(steps) != 1 or type(steps[0][1]) is not ColumnTransformer:
            return None
        ct = steps[0][1]
        if sklearn.get_config().get("transform_output", "default") != "default" \
                or getattr(ct, "_sklearn_output_config", {}).get("transform",
                                                                  "default") != "default" \
                or getattr(ct, "sparse_output_", True) \
                or getattr(ct, "feature_names_in_", None) is None:
            return None
        blocks, width = [], 0
        for name, transformer, columns in ct.transformers_:
            where = ct.output_indices_.get(name)
            if where is None:
                return None
            width = max(width, where.stop)
            if transformer == "drop" or where.stop == where.start:
                continue
            if isinstance(transformer, str) or not isinstance(columns, list) \
                    or not all(isinstance(c, str) for c in columns):
                return None
            blocks.append((transformer, columns, where,
                           _TextBlock.of(transformer, columns) or _NumberBlock.of(transformer,
                                                                                  columns)))
        return cls(blocks, width) if blocks else None

    def transform(self, frame, *, always: bool = False):
        """The matrix, or None (see the class docstring). ``always``: encode the distinct text
        values even when there are few rows per new value (to check that path)."""
        import numpy as np

        out = np.empty((len(frame), self.width), dtype=np.float64, order="F")
        for transformer, columns, where, fast in self.blocks:
            if fast is not None and fast.write(frame, out[:, where], always=always):
                continue
            block = transformer.transform(frame[columns])
            if not _dense_numeric(block) or block.shape != (len(frame), where.stop - where.start):
                return None
            out[:, where] = block
        return out


class _NumberBlock:
    """``SimpleImputer(missing_values=NaN)`` without indicator on numeric columns, done column by
    column into the output: ``check_array``'s float64 conversion, then each missing value
    replaced by the column's ``statistics_`` (what ``SimpleImputer.transform`` computes)."""

    def __init__(self, columns: list[str], statistics):
        self.columns, self.statistics = columns, statistics

    @classmethod
    def of(cls, transformer, columns: list[str]) -> _NumberBlock | None:
        import numpy as np

        if type(transformer).__name__ != "SimpleImputer" \
                or type(transformer).__module__.split(".")[0] != "sklearn":
            return None
        stats = getattr(transformer, "statistics_", None)
        missing = transformer.missing_values
        if getattr(transformer, "add_indicator", True) \
                or getattr(transformer, "n_features_in_", None) != len(columns) \
                or not (isinstance(missing, float) and np.isnan(missing)) \
                or stats is None or len(stats) != len(columns) \
                or np.asarray(stats).dtype.kind != "f" or not np.isfinite(stats).all():
            return None  # text statistics, dropped all-missing columns, another marker
        return cls(columns, np.asarray(stats, dtype=np.float64))

    def write(self, frame, out, *, always: bool = False) -> bool:
        """Write the block into ``out``; False (the caller transforms it whole) for a column
        whose dtype is not bool, integer or float64, or that holds an infinite value (the
        imputer's own check refuses it, with its error)."""
        import numpy as np

        values = [frame[name].to_numpy() for name in self.columns]
        if not all(v.dtype.kind in "biu" or v.dtype == np.float64 for v in values):
            return False
        for j, (column, statistic) in enumerate(zip(values, self.statistics, strict=True)):
            target = out[:, j]
            target[:] = column
            if column.dtype.kind != "f":
                continue
            finite = np.isfinite(target)
            if not finite.all():
                missing = np.isnan(target)
                if (missing != ~finite).any():  # +-inf
                    return False
                target[missing] = statistic
        return True


class _TextBlock:
    """A transformer of text columns made of ``_PER_VALUE`` steps, applied to each column's
    distinct values once; the encodings it computed are kept per column (at most
    ``CACHED_VALUES``), so the next call's known values are looked up. Exact: each output column
    of these steps depends on one input column's value only. Safe from several threads (a race
    encodes a value twice, the same way)."""

    def __init__(self, transformer, columns: list[str], widths: list[int]):
        import threading

        self.transformer, self.columns, self.widths = transformer, columns, widths
        self.known: list[dict[str, Any]] = [{} for _ in columns]  # value -> its encoded row
        self._lock = threading.Lock()

    @classmethod
    def of(cls, transformer, columns: list[str]) -> _TextBlock | None:
        widths = _per_value_widths(transformer, columns)
        return cls(transformer, columns, widths) if widths is not None else None

    def write(self, frame, out, *, always: bool = False) -> bool:
        """Write the block into ``out`` from each column's distinct values; False (nothing
        written) when a column is not all text without missing values, or has too many new
        distinct values to gain anything (``always``: encode them anyway)."""
        import numpy as np
        import pandas as pd

        n = len(frame)
        codes, distinct = [], []
        for name in self.columns:
            values = frame[name].to_numpy()
            if values.dtype != object:
                return False
            if n == 1:  # a request of one row: no factorize
                code, uniques = np.zeros(1, dtype=np.intp), values
            else:
                code, uniques = pd.factorize(values, use_na_sentinel=True)
                if len(code) and code.min() < 0:  # a missing value: leave it to the pipeline
                    return False
            if not all(type(v) is str for v in uniques):
                return False
            codes.append(code)
            distinct.append(uniques)
        new = [[v for v in uniques if v not in known]
               for uniques, known in zip(distinct, self.known, strict=True)]
        fresh: list[dict] = [{} for _ in self.columns]
        if any(new):
            roomy = all(len(known) + len(values) <= CACHED_VALUES
                        for known, values in zip(self.known, new, strict=True))
            if not roomy:  # past the bound: encode this call's values for this call only
                if max(len(u) for u in distinct) * 4 > n and not always:
                    return False  # few rows per value: nothing to gain over the pipeline
                new = [list(u) for u in distinct]
            encoded = self._encode(new, distinct)
            if encoded is None:
                return False
            fresh = [dict(zip(values, rows, strict=True))
                     for values, rows in zip(new, encoded, strict=True)]
            if roomy:
                with self._lock:
                    for known, values in zip(self.known, fresh, strict=True):
                        if len(known) + len(values) <= CACHED_VALUES:
                            known.update(values)
        columns = [np.array([own[v] if v in own else known[v] for v in uniques],
                            dtype=np.float64).reshape(len(uniques), width)
                   for uniques, own, known, width in zip(distinct, fresh, self.known,
                                                         self.widths, strict=True)]
        return self._spread(codes, columns, out)

    def _encode(self, values: list[list[str]], distinct: list) -> list | None:
        """Each column's encoding of its ``values`` (a ``len(values[j]) x widths[j]`` float64
        array per column), from one transform of a probe frame (a column without values to
        encode is filled with its ``distinct`` ones), or None when the transformer does not
        answer with the dense matrix expected."""
        import numpy as np
        import pandas as pd

        k = max(len(v) for v in values)
        probe = pd.DataFrame({name: np.resize(np.asarray(list(v or d), dtype=object), k)
                              for name, v, d in zip(self.columns, values, distinct, strict=True)},
                             columns=self.columns)
        encoded = self.transformer.transform(probe)
        if not _dense_numeric(encoded) or encoded.shape != (k, sum(self.widths)):
            return None
        encoded = np.asarray(encoded, dtype=np.float64)
        parts, start = [], 0
        for v, width in zip(values, self.widths, strict=True):
            parts.append(np.array(encoded[:len(v), start:start + width]))
            start += width
        return parts

    def _spread(self, codes: list, encoded: list, out) -> bool:
        """Each row's encoding, from its column's code (one output column at a time, in
        place)."""
        import numpy as np

        start = 0
        for code, rows, width in zip(codes, encoded, self.widths, strict=True):
            if len(code) <= SMALL_ROWS // 10:  # a few rows: one copy per input column
                out[:, start:start + width] = rows[code]
            else:
                rows = np.asfortranarray(rows)
                for j in range(width):
                    np.take(rows[:, j], code, out=out[:, start + j])
            start += width
        return True


def _per_value_widths(transformer, columns: list[str]) -> list[int] | None:
    """The output width of each input column when ``transformer`` maps values column by column
    (a ``_PER_VALUE`` step or a Pipeline of them ending in an encoder), else None."""
    from sklearn.pipeline import Pipeline

    steps = [s for _, s in transformer.steps] if type(transformer) is Pipeline else [transformer]
    if not steps or any(type(s).__name__ not in _PER_VALUE
                        or type(s).__module__.split(".")[0] != "sklearn" for s in steps):
        return None
    for step in steps:  # every step keeps one column per input column until the encoder
        if getattr(step, "n_features_in_", None) != len(columns):
            return None
        if type(step).__name__ == "SimpleImputer" and (getattr(step, "add_indicator", False)
                                                       or step.strategy != "constant"):
            return None
    encoder = steps[-1]
    name = type(encoder).__name__
    if name == "OneHotEncoder":
        widths = getattr(encoder, "_n_features_outs", None)
        if getattr(encoder, "sparse_output", True) or widths is None:
            return None
        return [int(w) for w in widths]
    if name == "OrdinalEncoder":
        return [1] * len(columns)
    return None


def _fast_kind(model: Any) -> tuple[str, str]:
    """(FAST, why) when ``model`` is a Pipeline ending in histogram gradient boosting without
    native categorical features; else (PLAIN, why not)."""
    try:
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
        from sklearn.pipeline import Pipeline
    except ImportError:  # pragma: no cover - scikit-learn ships with the package
        return PLAIN, "scikit-learn is not installed"
    if type(model) is not Pipeline or len(model.steps) < 2:
        return PLAIN, f"not a scikit-learn Pipeline of steps: {type(model).__name__}"
    final = model.steps[-1][1]
    if type(final) not in (HistGradientBoostingClassifier, HistGradientBoostingRegressor):
        return PLAIN, f"final step is {type(final).__name__}"
    if getattr(final, "_preprocessor", None) is not None:
        return PLAIN, "the boosting model encodes native categorical features itself"
    if getattr(final, "feature_names_in_", None) is not None:
        return PLAIN, "the boosting model was fitted on a DataFrame"
    return FAST, f"{type(final).__name__} after {len(model.steps) - 1} preprocessing step(s)"


def one_openmp_thread() -> None:
    """Limit the calling thread's OpenMP team to one thread (a thread pool's initializer: the
    limit is per thread in libgomp and ends with the thread)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a dependency of scikit-learn
        return
    threadpool_limits(limits=1, user_api="openmp")
