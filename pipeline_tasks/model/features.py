"""The training data as the model sees it: the task type, the labels, and the feature columns.

``normalize_features`` is shared by training and evaluation (the champion and the candidate are
scored on the same coerced columns), so it lives here, not in the training entry point.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pipeline_tasks.core.errors import ConfigError, PipelineInputError
from pipeline_tasks.model.metrics import CLASSIFICATION, REGRESSION

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

AUTO = "auto"
# A numeric target with at most this many distinct integral values is read as class labels.
MAX_AUTO_CLASSES = 20


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


def labelled_frame(
    snapshot: pd.DataFrame, *, target: str, task_type: str, time_column: str | None
) -> tuple[pd.DataFrame, pd.Series, str, str | None]:
    """``(rows with a label, normalised labels, task type, time column)``: the rows training can
    use, with the time column given, or the one datetime column, parsed to datetimes."""
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


def feature_columns(
    frame: pd.DataFrame, target: str, time_col: str | None, exclude: list[str] | tuple[str, ...]
) -> list[str]:
    """The model's input columns: all but the target, the time column, ``exclude``, other
    datetime columns and all-null columns."""
    import pandas as pd

    unknown = sorted(set(exclude) - set(frame.columns))
    if unknown:  # an argument of the caller that this data does not match (not a config value)
        raise PipelineInputError(f"exclude_columns not in the snapshot: {', '.join(unknown)}")
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
