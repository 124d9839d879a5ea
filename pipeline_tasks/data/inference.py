"""Suite inference: a baseline ExpectationSuite from one batch, and the type checks it is made of.

Type families (numeric, string, bool, datetime, category) map a column's dtype to the GX type
expectation that checks it; ``InferenceTolerances`` says how loose an inferred baseline is (see
``config_tolerances``). The run-time checks every run adds (its target column, the champion's
inputs) are built here too.

Great Expectations and pandas are imported inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline_tasks.core.errors import ConfigError
from pipeline_tasks.data.gx_runner import import_gx

if TYPE_CHECKING:
    import pandas as pd
    from great_expectations.expectations.expectation import Expectation

    from pipeline_tasks.core.config import PipelineConfig
    from pipeline_tasks.core.schema import ModelContract

# Type families. Numeric lists every numpy and pandas-nullable int/float dtype, plus the Python
# int/float checked value by value when a column has object dtype (so text in a numeric column
# fails, and an int column that became float64 because of nulls passes).
# fmt: off
NUMERIC_TYPES = [
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64",
    "Int8Dtype", "Int16Dtype", "Int32Dtype", "Int64Dtype",
    "UInt8Dtype", "UInt16Dtype", "UInt32Dtype", "UInt64Dtype", "Float32Dtype", "Float64Dtype",
    "int", "float",
]
# fmt: on
# ExpectColumnValuesToBeOfType compares the dtype's scalar type: "str" matches object columns
# holding str values and both StringDtype storages; "Timestamp" is a tz-aware datetime column
# (ExpectColumnValuesToBeInTypeList cannot match DatetimeTZDtype); "datetime64" a naive one.
FAMILY_TYPE = {
    "string": "str",
    "bool": "bool",
    "datetime_tz": "Timestamp",
    "datetime": "datetime64",
    "category": "CategoricalDtypeType",
}
FAMILY_LABEL = {
    "numeric": "a numeric type (int/float)",
    "string": "text (str)",
    "bool": "bool",
    "datetime_tz": "a tz-aware timestamp",
    "datetime": "a naive datetime64",
    "category": "category",
}


@dataclass(frozen=True)
class InferenceTolerances:
    """How loose an inferred baseline is. Override with ``config.extra["validation"]``."""

    target_max_null: float = 0.10  # critical: at least this share of nulls is always allowed
    null_slack: float = 0.05  # warning: allowed null share = observed + max(slack, observed)
    range_slack: float = 0.10  # warning: numeric range widened by this share of its span
    range_mostly: float = 0.99
    value_set_mostly: float = 0.95
    max_value_set_share: float = 0.5  # a column is categorical if distinct <= share * non-null


#: MLflow signature types -> the type family the batch's column must have.
_SIGNATURE_FAMILY = {"long": "numeric", "integer": "numeric", "double": "numeric",
                     "float": "numeric", "string": "string", "boolean": "bool"}


def champion_input_checks(champion: ModelContract) -> list:
    """Every input of the champion's signature must be in the batch, with its type (critical):
    the suite alone may not name them all (a reviewed suite, or one the champion predates)."""
    import great_expectations.expectations as gxe

    why = f"Input of champion v{champion.version}: its clients send this column."
    checks = []
    for column, spec in champion.inputs.items():
        checks.append(gxe.ExpectColumnToExist(column=column, severity="critical",
                                              meta={"why": why}))
        family = _SIGNATURE_FAMILY.get(spec.get("type"))
        if family:
            checks.append(type_expectation(column, family, why=why))
    return checks


def target_check(suite, target: str) -> list:
    """Every run checks that its target column exists, whatever the suite says."""
    import great_expectations.expectations as gxe

    for exp in suite.expectations:
        if (
            exp.expectation_type == "expect_column_to_exist"
            and getattr(exp, "column", None) == target
        ):
            return []
    return [
        gxe.ExpectColumnToExist(
            column=target,
            severity="critical",
            meta={"why": "Added at run time: the target of this run must be a column of the data."},
        )
    ]


def infer_suite(
    df: pd.DataFrame,
    *,
    dataset_name: str,
    target: str,
    max_categories: int = 30,
    tolerances: InferenceTolerances | None = None,
    source: dict | None = None,
):
    """A baseline suite from one batch: schema and target are critical, distributions warnings."""
    gx = import_gx()
    import great_expectations.expectations as gxe

    tol = tolerances or InferenceTolerances()
    n_rows = len(df)
    exps: list[Expectation] = [
        gxe.ExpectTableColumnsToMatchSet(
            column_set=[str(c) for c in df.columns],
            exact_match=True,
            severity="critical",
            meta={"why": "Schema: downstream steps expect exactly these columns."},
        ),
        gxe.ExpectTableRowCountToBeBetween(
            min_value=1, severity="critical", meta={"why": "An empty batch cannot be used."}
        ),
    ]
    for column in df.columns:
        series = df[column]
        name = str(column)
        family = type_family(series)
        is_target = name == target
        if family:
            exps.append(
                type_expectation(
                    name, family, why=f"Schema: the column was {family} when inferred."
                )
            )
        null_share = float(series.isna().mean()) if n_rows else 0.0
        non_null = series.dropna()
        if is_target:
            exps.append(
                gxe.ExpectColumnToExist(
                    column=name, severity="critical", meta={"why": "Target: the label column."}
                )
            )
            allowed = min(0.99, max(tol.target_max_null, 2 * null_share))
            exps.append(
                gxe.ExpectColumnValuesToNotBeNull(
                    column=name,
                    mostly=_round_down(1 - allowed),
                    severity="critical",
                    meta={
                        "why": f"Target: at most {allowed:.0%} of labels may be missing "
                        f"({null_share:.1%} when inferred)."
                    },
                )
            )
            values = _low_cardinality_values(non_null, max_categories, tol, force=True)
            if values is not None:
                exps.append(
                    gxe.ExpectColumnValuesToBeInSet(
                        column=name,
                        value_set=values,
                        severity="critical",
                        meta={"why": "Target: the label takes only these values."},
                    )
                )
                continue
        else:
            allowed = null_share + max(tol.null_slack, null_share)
            if allowed < 1:
                exps.append(
                    gxe.ExpectColumnValuesToNotBeNull(
                        column=name,
                        mostly=_round_down(1 - allowed),
                        severity="warning",
                        meta={"why": f"Null rate was {null_share:.1%} when inferred."},
                    )
                )
        if family == "numeric" and len(non_null):
            bounds = _slack_range(non_null, tol.range_slack)
            if bounds:
                exps.append(
                    gxe.ExpectColumnValuesToBeBetween(
                        column=name,
                        min_value=bounds[0],
                        max_value=bounds[1],
                        mostly=tol.range_mostly,
                        severity="warning",
                        meta={
                            "why": f"Range {format_number(non_null.min())}..{format_number(non_null.max())} when "
                            f"inferred, widened by {tol.range_slack:.0%} of its span."
                        },
                    )
                )
        elif family in ("string", "category") and not is_target:
            values = _low_cardinality_values(non_null, max_categories, tol)
            if values is not None:
                exps.append(
                    gxe.ExpectColumnValuesToBeInSet(
                        column=name,
                        value_set=values,
                        mostly=tol.value_set_mostly,
                        severity="warning",
                        meta={"why": f"Categorical: {len(values)} values seen when inferred."},
                    )
                )
    meta = {
        "pipeline": {
            "status": "inferred baseline: review it, then copy it to pipeline_tasks/data/suites/",
            "target": target,
            "rows": n_rows,
            **(source or {}),
        }
    }
    return gx.ExpectationSuite(name=dataset_name, expectations=exps, meta=meta)


def type_family(series: pd.Series) -> str | None:
    """numeric / string / bool / datetime(_tz) / category, or ``None`` when no type check fits."""
    import pandas as pd
    from pandas.api import types as ptypes

    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return "category"
    if ptypes.is_bool_dtype(dtype):
        return "bool"
    if ptypes.is_numeric_dtype(dtype):
        return "numeric"
    if isinstance(dtype, pd.DatetimeTZDtype):
        return "datetime_tz"
    if ptypes.is_datetime64_dtype(dtype):
        return "datetime"
    if ptypes.is_string_dtype(dtype) or dtype == object:
        inferred = pd.api.types.infer_dtype(series, skipna=True)
        return {
            "string": "string",
            "integer": "numeric",
            "floating": "numeric",
            "mixed-integer-float": "numeric",
            "boolean": "bool",
        }.get(inferred)
    return None


def type_expectation(column: str, family: str, *, why: str, severity: str = "critical"):
    """The GX expectation that checks a column's type family (see NUMERIC_TYPES, FAMILY_TYPE)."""
    import great_expectations.expectations as gxe

    if family == "numeric":
        return gxe.ExpectColumnValuesToBeInTypeList(
            column=column, type_list=list(NUMERIC_TYPES), severity=severity, meta={"why": why}
        )
    return gxe.ExpectColumnValuesToBeOfType(
        column=column, type_=FAMILY_TYPE[family], severity=severity, meta={"why": why}
    )


def _low_cardinality_values(non_null, max_categories: int, tol: InferenceTolerances, force=False):
    try:
        distinct = non_null.unique()
    except TypeError:  # unhashable values (lists, dicts)
        return None
    if not len(distinct) or len(distinct) > max_categories:
        return None
    if not force and len(distinct) > tol.max_value_set_share * len(non_null):
        return None
    values = [plain_value(v) for v in distinct]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        if set(values) <= {0, 1}:  # a binary label seen with one class only still allows both
            values = [0, 1]
        return sorted(values)
    return sorted(values, key=str)


def _slack_range(non_null, slack: float) -> tuple[float, float] | None:
    lo, hi = float(non_null.min()), float(non_null.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    span = hi - lo or abs(hi) or 1.0
    new_lo, new_hi = lo - slack * span, hi + slack * span
    if lo >= 0:
        new_lo = max(0.0, new_lo)
    from pandas.api import types as ptypes

    if ptypes.is_integer_dtype(non_null.dtype):
        return float(math.floor(new_lo)), float(math.ceil(new_hi))
    return _round_sig(new_lo, math.floor), _round_sig(new_hi, math.ceil)


def _round_sig(value: float, rounding) -> float:
    """Round outward to 4 significant digits, so the suite stays readable."""
    if value == 0:
        return 0.0
    scale = 10 ** (math.floor(math.log10(abs(value))) - 3)
    return float(rounding(value / scale) * scale)


def _round_down(value: float) -> float:
    return max(0.0, math.floor(value * 1000) / 1000)


def config_tolerances(config: PipelineConfig) -> InferenceTolerances:
    """The tolerances of this deployment: the defaults, overridden by ``extra.validation``."""
    overrides = (config.extra or {}).get("validation") or {}
    known = {f.name for f in dataclasses.fields(InferenceTolerances)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"unknown extra.validation setting(s): {', '.join(unknown)}")
    try:
        return InferenceTolerances(**{k: float(v) for k, v in overrides.items()})
    except (TypeError, ValueError) as exc:  # a setting that is not a number
        raise ConfigError(f"extra.validation settings must be numbers: {exc}") from exc


def format_number(value: Any) -> str:
    """A number as a short string: integral floats without ``.0``, others to 4 digits."""
    value = plain_value(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def plain_value(value: Any) -> Any:
    """numpy scalars to Python ones, so they print and serialise plainly."""
    return value.item() if hasattr(value, "item") and not isinstance(value, (str, bytes)) else value
