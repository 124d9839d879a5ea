"""Summaries: turn a GX validation result into short, human lines and a JSON-able report.

``summarise`` splits the failed expectations by severity and writes one line per critical problem
(a missing or retyped column is named once, not once per check it breaks); ``result_json`` is the
full result without the data itself.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pipeline_tasks.data.inference import (
    FAMILY_LABEL,
    FAMILY_TYPE,
    NUMERIC_TYPES,
    format_number,
    plain_value,
)

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

_TYPE_EXPECTATIONS = (
    "expect_column_values_to_be_in_type_list",
    "expect_column_values_to_be_of_type",
)


def summarise(
    gx_result, df: pd.DataFrame, target: str
) -> tuple[list[dict], list[dict], list[str]]:
    """Failed expectations split by severity, plus one message line per critical problem."""
    critical: list[dict] = []
    warning: list[dict] = []
    columns = {str(c) for c in df.columns}
    reported_missing: set[str] = set()
    for item in gx_result.results:
        if item.success:
            continue
        config = item.expectation_config
        severity = _severity(config)
        column = config.kwargs.get("column")
        entry = {
            "expectation": config.type,
            "column": column,
            "severity": severity,
            "observed": _observed(item, df, target),
        }
        if severity == "critical":
            critical.append(entry)
            if config.type == "expect_table_columns_to_match_set":
                reported_missing |= set(_mismatch(item).get("missing") or [])
        elif severity == "warning":
            warning.append(entry)
        else:
            log.info("Validation info: %s", failure_line(entry))
    # A missing or wrongly typed column makes its other checks fail too: name the cause once.
    type_failed = {
        e["column"] for e in critical if e["expectation"] in _TYPE_EXPECTATIONS and e["column"]
    }
    lines: list[str] = []
    for entry in critical:
        column = entry["column"]
        if column is not None and column not in columns and column in reported_missing:
            continue  # already named in "missing columns: [...]"
        if column in type_failed and entry["expectation"] not in _TYPE_EXPECTATIONS:
            continue
        line = failure_line(entry)
        if line not in lines:
            lines.append(line)
    return critical, warning, lines


def schema_failed(failed: list[dict]) -> bool:
    """Whether a failed check is about the columns or their types (the input contract)."""
    kinds = {"expect_table_columns_to_match_set", "expect_column_to_exist", *_TYPE_EXPECTATIONS}
    return any(item["expectation"] in kinds for item in failed)


def failure_line(entry: dict) -> str:
    """One failed expectation as a short phrase, naming its column."""
    if entry["column"] is None:
        return entry["observed"]
    return f"column {entry['column']!r}: {entry['observed']}"


def result_json(gx_result) -> dict:
    """The full GX result as JSON, with the in-memory DataFrame left out."""
    data = gx_result.to_json_dict()
    meta = data.get("meta") or {}
    params = meta.get("batch_parameters")
    if isinstance(params, dict) and "dataframe" in params:  # never serialise the data itself
        meta["batch_parameters"] = {**params, "dataframe": "<in-memory DataFrame>"}
    return data


def _severity(config) -> str:
    value = getattr(config, "severity", None) or "critical"
    return str(getattr(value, "value", value))


def _mismatch(item) -> dict:
    return ((item.result or {}).get("details") or {}).get("mismatched") or {}


def _observed(item, df: pd.DataFrame, target: str) -> str:
    """One short phrase saying what was expected and what was found."""
    config = item.expectation_config
    kind = config.type
    kwargs = config.kwargs
    result = item.result or {}
    column = kwargs.get("column")
    if column is not None and column not in df.columns:
        role = " (the target of this run)" if column == target else ""
        return f"column is missing from the data{role}"
    error = _exception_message(item)
    if error and "element_count" not in result and "observed_value" not in result:
        return f"could not be evaluated: {error}"
    mostly = kwargs.get("mostly")
    bad_share = _share(result)
    examples = _examples(result)

    if kind == "expect_table_columns_to_match_set":
        mismatch = _mismatch(item)
        parts = []
        if mismatch.get("missing"):
            parts.append(f"missing columns: {sorted(mismatch['missing'])}")
        if mismatch.get("unexpected"):
            parts.append(f"unexpected columns: {sorted(mismatch['unexpected'])}")
        return "; ".join(parts) or f"columns {result.get('observed_value')}"
    if kind in _TYPE_EXPECTATIONS:
        expected = kwargs.get("type_list") or [kwargs.get("type_")]
        label = (
            FAMILY_LABEL["numeric"]
            if expected == NUMERIC_TYPES
            else next(
                (FAMILY_LABEL[f] for f, t in FAMILY_TYPE.items() if [t] == expected),
                f"type in {expected}",
            )
        )
        found = str(df[column].dtype)
        text = f"expected {label}, found {found}"
        if bad_share is not None and found == "object":
            text += f" ({bad_share:.0%} of values{examples})"
        return text
    if kind == "expect_column_values_to_not_be_null":
        allowed = 1 - (mostly if mostly is not None else 1.0)
        null_share = bad_share if bad_share is not None else 1.0
        return f"{_pct(null_share)} null, at most {_pct(allowed)} allowed"
    if kind == "expect_column_values_to_be_in_set":
        allowed = _values(kwargs.get("value_set"))
        return f"{_pct(bad_share)} of values not in {allowed}{examples}{_mostly(mostly)}"
    if kind == "expect_column_values_to_not_be_in_set":
        return f"{_pct(bad_share)} of values in the forbidden set{examples}"
    if kind == "expect_column_values_to_be_between":
        return f"{_pct(bad_share)} of values {_outside(kwargs)}{examples}{_mostly(mostly)}"
    if kind == "expect_column_to_exist":
        return "column is missing from the data"
    if kind in ("expect_table_row_count_to_be_between", "expect_table_row_count_to_equal"):
        return f"{result.get('observed_value')} rows, expected {_bounds(kwargs, 'value')}"
    if "observed_value" in result and ("min_value" in kwargs or "max_value" in kwargs):
        return f"observed {format_number(result['observed_value'])}, expected {_bounds(kwargs)}"
    if "observed_value" in result:
        return f"observed {result['observed_value']!s:.120}"
    if bad_share is not None:
        return f"{_pct(bad_share)} of values unexpected{examples}{_mostly(mostly)}"
    return f"could not be evaluated: {error}" if error else "failed"


def _share(result: dict) -> float | None:
    """Share of the non-null rows that failed (what GX compares ``mostly`` with)."""
    count, total = result.get("unexpected_count"), result.get("element_count")
    if count is None or not total:
        return None
    nonmissing = total - (result.get("missing_count") or 0)
    return count / (nonmissing or total)


def _examples(result: dict) -> str:
    counts = result.get("partial_unexpected_counts") or []
    values = [c.get("value") for c in counts[:3]] or (result.get("partial_unexpected_list") or [])[
        :3
    ]
    values = [v for v in values if v is not None]
    return f", e.g. {', '.join(repr(plain_value(v)) for v in values)}" if values else ""


def _values(values: Any) -> str:
    values = list(values or [])
    shown = ", ".join(str(plain_value(v)) for v in values[:8])
    return "{" + shown + (", ..." if len(values) > 8 else "") + "}"


def _bounds(kwargs: dict, prefix: str = "") -> str:
    lo = kwargs.get("min_value" if not prefix else f"min_{prefix}")
    hi = kwargs.get("max_value" if not prefix else f"max_{prefix}")
    lo_op = ">" if kwargs.get("strict_min") else ">="
    hi_op = "<" if kwargs.get("strict_max") else "<="
    if lo is not None and hi is not None:
        return f"[{format_number(lo)}, {format_number(hi)}]"
    if lo is not None:
        return f"{lo_op} {format_number(lo)}"
    return f"{hi_op} {format_number(hi)}"


def _outside(kwargs: dict) -> str:
    lo, hi = kwargs.get("min_value"), kwargs.get("max_value")
    if lo is not None and hi is not None:
        return f"outside {_bounds(kwargs)}"
    if lo is not None:
        return f"{'at or below' if kwargs.get('strict_min') else 'below'} {format_number(lo)}"
    return f"{'at or above' if kwargs.get('strict_max') else 'above'} {format_number(hi)}"


def _mostly(mostly: float | None) -> str:
    return f" (at most {_pct(1 - mostly)} allowed)" if mostly is not None and mostly < 1 else ""


def _pct(share: float | None) -> str:
    if share is None:
        return "some"
    pct = share * 100
    return f"{pct:.0f}%" if pct >= 1 or pct == 0 else f"{pct:.2g}%"


def _exception_message(item) -> str:
    info = item.exception_info or {}
    candidates = [info] + [v for v in info.values() if isinstance(v, dict)]
    for entry in candidates:
        message = entry.get("exception_message")
        if message:
            return str(message).strip().splitlines()[0][:200]
    return ""
