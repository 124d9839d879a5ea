"""Row by row, vectorised per chunk: which rows the model may score, and why the others may not.

A row is rejected (never scored, written to the rejects with its reason) when

- a required input is null (the model was trained without nulls there), a number is NaN,
  infinite or beyond ``serving_max_abs_value``, or an integer input holds a fraction: the rules
  of the online contract (``serving.contract``);
- it breaks a *critical* column-value expectation of the model's validation suite:
  ``expect_column_values_to_not_be_null``, ``..._to_be_between`` (with ``strict_min`` /
  ``strict_max``) and ``..._to_be_in_set``, on the model's inputs. Like Great Expectations, the
  range and set checks look at non-null values only. Table-level expectations (row counts,
  means) and warnings say nothing about one row and are not applied here.

The checks are evaluated on whole columns with numpy and pandas, so their cost per row is that of
a comparison, not of a Python call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from pipeline_tasks.serving.contract import Column

#: The suite's column-value expectations that judge one row.
ROW_EXPECTATIONS = ("expect_column_values_to_not_be_null", "expect_column_values_to_be_between",
                    "expect_column_values_to_be_in_set")


@dataclass(frozen=True)
class RowRule:
    """One critical column-value expectation of the suite, as a check of one column."""

    column: str
    kind: str  # not_null | between | in_set
    min_value: float | None = None
    max_value: float | None = None
    strict_min: bool = False
    strict_max: bool = False
    value_set: tuple = ()

    @property
    def reason(self) -> str:
        if self.kind == "not_null":
            return f"{self.column}: null (the suite requires a value)"
        if self.kind == "in_set":
            return f"{self.column}: not one of the suite's values"
        low = "(" if self.strict_min else "["
        high = ")" if self.strict_max else "]"
        lo = "-inf" if self.min_value is None else f"{self.min_value:g}"
        hi = "inf" if self.max_value is None else f"{self.max_value:g}"
        return f"{self.column}: outside the suite's range {low}{lo}, {hi}{high}"


def row_rules(suite: dict | None, inputs: set[str]) -> list[RowRule]:
    """The critical row-level expectations of ``suite`` (its JSON dict) on the model's inputs."""
    rules = []
    for item in (suite or {}).get("expectations") or []:
        if not isinstance(item, dict) or item.get("type") not in ROW_EXPECTATIONS:
            continue
        if (item.get("severity") or (item.get("meta") or {}).get("severity")) != "critical":
            continue
        kwargs = item.get("kwargs") or {}
        column = kwargs.get("column")
        if column not in inputs:
            continue
        kind = item["type"]
        if kind == "expect_column_values_to_not_be_null":
            rules.append(RowRule(column, "not_null"))
        elif kind == "expect_column_values_to_be_in_set":
            rules.append(RowRule(column, "in_set", value_set=tuple(kwargs.get("value_set") or ())))
        else:
            rules.append(RowRule(column, "between", _number(kwargs.get("min_value")),
                                 _number(kwargs.get("max_value")),
                                 bool(kwargs.get("strict_min")), bool(kwargs.get("strict_max"))))
    return rules


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass
class Sorted:
    """One chunk sorted: the frame the model takes (accepted rows only, in the model's column
    order and dtypes), the accepted mask over the chunk, and each rejected row's reason."""

    frame: pd.DataFrame
    accepted: np.ndarray
    reasons: np.ndarray  # one reason per rejected row (object array), in chunk order
    counts: dict[str, int]  # rows per reason (a row with two reasons counts under both)


def to_frame(batch: pa.RecordBatch, inputs: tuple[Column, ...]) -> pd.DataFrame:
    """The model's inputs of a record batch as pandas columns (missing optional inputs null)."""
    import numpy as np
    import pandas as pd

    data = {}
    for col in inputs:
        if col.name not in batch.schema.names:
            data[col.name] = np.full(batch.num_rows, np.nan if col.kind in ("float", "int")
                                     else None, dtype=float if col.kind in ("float", "int")
                                     else object)
            continue
        array = batch.column(col.name)
        if col.kind in ("float", "int"):
            data[col.name] = array.to_numpy(zero_copy_only=False).astype("float64", copy=False) \
                if array.null_count == 0 else \
                array.cast("float64").to_numpy(zero_copy_only=False)
        elif col.kind == "datetime":
            data[col.name] = pd.to_datetime(pd.Series(array.to_pandas()), utc=True,
                                            errors="coerce", format="ISO8601")
        else:
            data[col.name] = array.to_pandas()
    return pd.DataFrame(data, columns=[c.name for c in inputs])


def sort_rows(frame: pd.DataFrame, inputs: tuple[Column, ...], rules: list[RowRule], *,
              max_abs: float) -> Sorted:
    """Check every row of ``frame`` (from ``to_frame``) against the contract and ``rules``."""
    import numpy as np

    n = len(frame)
    checks: list[tuple[str, np.ndarray]] = []
    for col in inputs:
        values = frame[col.name]
        null = values.isna().to_numpy()
        if col.required and null.any():
            checks.append((f"{col.name}: null (the model was trained without nulls here)", null))
        if col.kind in ("float", "int"):
            numbers = values.to_numpy(dtype="float64", na_value=np.nan)
            with np.errstate(invalid="ignore"):
                bad = np.isinf(numbers) | (np.abs(numbers) > max_abs)
                if bad.any():
                    checks.append((f"{col.name}: infinite or beyond {max_abs:g}", bad))
                if col.kind == "int":
                    fraction = ~null & np.isfinite(numbers) & (numbers != np.floor(numbers))
                    if fraction.any():
                        checks.append((f"{col.name}: not a whole number", fraction))
    for rule in rules:
        failed = _rule_fails(frame[rule.column], rule)
        if failed.any():
            checks.append((rule.reason, failed))
    rejected = np.zeros(n, dtype=bool)
    for _, mask in checks:
        rejected |= mask
    counts = {reason: int(mask.sum()) for reason, mask in checks}
    reasons = np.full(int(rejected.sum()), "", dtype=object)
    if reasons.size:
        for reason, mask in checks:
            hit = mask[rejected]
            reasons[hit] = np.where(reasons[hit] == "", reason, reasons[hit] + "; " + reason)
    accepted = ~rejected
    scored = frame[accepted] if rejected.any() else frame
    return Sorted(frame=_model_dtypes(scored, inputs), accepted=accepted, reasons=reasons,
                  counts=counts)


def _rule_fails(values: pd.Series, rule: RowRule) -> np.ndarray:
    import numpy as np
    import pandas as pd

    null = values.isna().to_numpy()
    if rule.kind == "not_null":
        return null
    if rule.kind == "in_set":
        allowed = set(rule.value_set)
        if pd.api.types.is_numeric_dtype(values):  # 1 and 1.0 are the same value
            allowed = {float(v) for v in rule.value_set if isinstance(v, (int, float))}
        return ~null & ~values.isin(allowed).to_numpy()
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    failed = np.zeros(len(values), dtype=bool)
    with np.errstate(invalid="ignore"):
        if rule.min_value is not None:
            failed |= (numbers <= rule.min_value) if rule.strict_min else (numbers < rule.min_value)
        if rule.max_value is not None:
            failed |= (numbers >= rule.max_value) if rule.strict_max else (numbers > rule.max_value)
    return failed & ~null


def _model_dtypes(frame: pd.DataFrame, inputs: tuple[Column, ...]) -> pd.DataFrame:
    """The dtypes the online contract hands the model: an integer input without nulls as int64,
    booleans as bool, text as object with NaN for null; a nullable integer input stays float64."""
    import numpy as np
    import pandas as pd

    out = {}
    for col in inputs:
        values = frame[col.name]
        if col.kind == "int" and not values.isna().any():
            out[col.name] = values.to_numpy(dtype="int64")
        elif col.kind == "bool" and not values.isna().any():
            out[col.name] = values.to_numpy(dtype=bool)
        elif col.kind == "str":
            out[col.name] = values.astype(object).where(values.notna(), np.nan).to_numpy() \
                if values.isna().any() else values.to_numpy(dtype=object)
        else:
            out[col.name] = values.to_numpy()
    return pd.DataFrame(out, columns=[c.name for c in inputs])
