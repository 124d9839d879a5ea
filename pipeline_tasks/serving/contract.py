"""The model's signature as an input contract: what ``/predict`` accepts, checked column by column.

Accepted bodies (JSON object):

- ``{"records": [{"col": value, ...}, ...]}`` (also MLflow's ``dataframe_records``);
- ``{"columns": {"col": [value, ...], ...}}``, the columnar form: no per-row keys to parse;
- ``{"dataframe_split": {"columns": [...], "data": [[...], ...]}}``, MLflow's split form.

Two optional keys go beside the rows, for monitoring (both land in the prediction log):

- ``"ids"``: one key per row (strings or integers, at most 128 characters), the client's name for
  what is predicted (an order, a flight). Late-arriving true outcomes are joined on it.
- ``"event_time"``: when the predicted events happen, an ISO-8601 timestamp (UTC when it has no
  offset). Default: the time of the request. Replays and backfills set it so the log (and the
  drift checks that read it) file the rows under the day they belong to.

Every refusal is a ``BadInput`` with an HTTP status and a short message that names the field and
the problem. Messages never contain the submitted values or the schema.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from operator import itemgetter
from typing import Any

import numpy as np
import pandas as pd

_NUMBER_TYPES = frozenset({int, float, type(None)})
_TEXT_TYPES = frozenset({str, type(None)})
_BOOL_TYPES = frozenset({bool, type(None)})
#: MLflow column types -> the kind the contract checks.
_KINDS = {"double": "float", "float": "float", "long": "int", "integer": "int",
          "string": "str", "boolean": "bool", "datetime": "datetime"}
_JSON_TYPE = {type(None): "null", bool: "boolean", int: "number", float: "number", str: "string",
              list: "array", dict: "object"}


class BadInput(ValueError):
    """A request the contract refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, kind: str):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # float | int | str | bool | datetime
    required: bool  # False: the training data had nulls in this column


OPTIONAL_KEYS = ("ids", "event_time")
MAX_ID_CHARS = 128


@dataclass(frozen=True)
class Request:
    """A checked ``/predict`` body: the rows as one array per model input (``columns``, in the
    model's order; the server's batcher and the prediction log take them as they are), and the
    optional row keys and event time. ``frame`` makes the DataFrame when one is wanted."""

    columns: dict[str, Any]
    ids: list[str] | None = None
    event_time: pd.Timestamp | None = None

    @cached_property
    def rows(self) -> int:
        return len(next(iter(self.columns.values())))

    @cached_property
    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.columns)


@dataclass(frozen=True)
class Contract:
    columns: tuple[Column, ...]
    max_rows: int
    max_abs: float

    @classmethod
    def from_inputs(cls, specs: Any, *, max_rows: int, max_abs: float) -> Contract:
        """The contract of a model signature's inputs: its column specs as the MLmodel file
        holds them (``[{"type": "double", "name": "distance", "required": true}, ...]``)."""
        if not specs:
            raise ValueError("the model has no input signature: it cannot be served safely")
        if not isinstance(specs, list):
            raise ValueError("the model's input signature is not a list of columns")  # noqa: TRY004
        columns = []
        for spec in specs:
            spec = spec if isinstance(spec, dict) else {}
            name, type_name = spec.get("name"), spec.get("type")
            if not isinstance(name, str) or not isinstance(type_name, str) \
                    or type_name not in _KINDS:
                raise ValueError(f"input column {name!r} has type {type_name!r}, which the "
                                 "server does not support")
            columns.append(Column(name, _KINDS[type_name], bool(spec.get("required", True))))
        return cls(tuple(columns), max_rows, max_abs)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def request(self, body: Any) -> Request:
        """The whole body checked: rows, then the optional ``ids`` and ``event_time``."""
        data = self.arrays(body)
        rows = len(next(iter(data.values())))
        ids = _ids(body["ids"], rows) if "ids" in body else None
        when = _event_time(body["event_time"]) if "event_time" in body else None
        return Request(data, ids, when)

    def frame(self, body: Any) -> pd.DataFrame:
        """The request body's rows as a DataFrame in the model's column order and dtypes. An
        optional column (the training data had nulls in it) may be left out: it is null."""
        return pd.DataFrame(self.arrays(body), columns=self.names)

    def arrays(self, body: Any) -> dict[str, Any]:
        """The request body's rows checked, as one array per model input, in the model's order
        (what ``frame`` makes its DataFrame of)."""
        columns = self._columns_of(body)
        n_rows = None
        for col in self.columns:
            values = columns.get(col.name)
            if values is None and not col.required:
                continue
            if not isinstance(values, list):
                raise BadInput(422, f"column '{col.name}': expected an array of values", "shape")
            if n_rows is None:
                n_rows = len(values)
            elif len(values) != n_rows:
                raise BadInput(422, f"column '{col.name}': {len(values)} values, but the other "
                                    f"columns have {n_rows}", "shape")
        if not n_rows:
            raise BadInput(422, "no rows to predict", "shape")
        if n_rows > self.max_rows:
            raise BadInput(413, f"{n_rows} rows: more than the limit of {self.max_rows} per "
                                "request", "too_large")
        return {col.name: self._check(col, columns[col.name] if col.name in columns
                                      else [None] * n_rows)
                for col in self.columns}

    # -- body shapes ---------------------------------------------------------------------------
    def _columns_of(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise BadInput(422, "body must be a JSON object with 'records' or 'columns'", "shape")
        forms = [k for k in ("records", "dataframe_records", "columns", "dataframe_split")
                 if k in body]
        extra = sorted(set(body) - {"records", "dataframe_records", "columns", "dataframe_split",
                                    *OPTIONAL_KEYS})
        if len(forms) != 1 or extra:
            raise BadInput(422, "body must have exactly one of 'records', 'columns', "
                                "'dataframe_records' or 'dataframe_split' (and optionally "
                                "'ids', 'event_time')", "shape")
        form = forms[0]
        if form in ("records", "dataframe_records"):
            return self._from_records(body[form], form)
        if form == "columns":
            given = body["columns"]
            if not isinstance(given, dict):
                raise BadInput(422, "'columns' must be an object of column name -> array",
                               "shape")
            self._same_names(given.keys(), "columns")
            return given
        split = body["dataframe_split"]
        if not isinstance(split, dict) or not isinstance(split.get("columns"), list) \
                or not isinstance(split.get("data"), list):
            raise BadInput(422, "'dataframe_split' must have 'columns' and 'data' arrays",
                           "shape")
        names = split["columns"]
        if not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
            raise BadInput(422, "'dataframe_split.columns' must be distinct names", "shape")
        self._same_names(names, "dataframe_split.columns")
        rows = split["data"]
        self._row_limit(len(rows))
        for i, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != len(names):
                raise BadInput(422, f"dataframe_split.data[{i}]: expected an array of "
                                    f"{len(names)} values", "shape")
        return {name: [row[j] for row in rows] for j, name in enumerate(names)}

    def _from_records(self, records: Any, form: str) -> dict[str, list]:
        if not isinstance(records, list):
            raise BadInput(422, f"'{form}' must be an array of objects", "shape")
        self._row_limit(len(records))
        expected = self.names
        keys = set(expected)
        every_key = True
        for i, record in enumerate(records):
            if not isinstance(record, dict):
                raise BadInput(422, f"{form}[{i}] is not an object", "shape")
            if record.keys() != keys:
                self._same_names(record.keys(), f"{form}[{i}]")
                every_key = False
        if every_key and len(expected) > 1 and records:  # the usual case: transposed in C
            return dict(zip(expected, map(list, zip(*map(itemgetter(*expected), records),
                                                    strict=True)), strict=True))
        # an optional column a record leaves out is null in that row
        return {name: [r.get(name) for r in records] for name in expected}

    def _row_limit(self, n: int) -> None:
        if n > self.max_rows:
            raise BadInput(413, f"{n} rows: more than the limit of {self.max_rows} per request",
                           "too_large")

    def _same_names(self, given, where: str) -> None:
        """Every required column present, and no column the model does not take."""
        given = set(given)
        expected = set(self.names)
        missing = [c.name for c in self.columns if c.required and c.name not in given]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise BadInput(422, f"{where}: missing column '{missing[0]}'{more}", "missing_column")
        unexpected = sorted(given - expected, key=str)
        if unexpected:
            name = str(unexpected[0])[:64]
            more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
            raise BadInput(422, f"{where}: unexpected column '{name}'{more}", "unexpected_column")

    # -- values --------------------------------------------------------------------------------
    def _check(self, col: Column, values: list) -> Any:
        """The column's values as the array the model takes, or a 422 naming the first bad row.
        The usual case is checked column-wise (the set of value types, then NumPy over the
        column); anything it does not clear goes through the row-by-row check below, which finds
        and names the bad row."""
        fast = self._check_column(col, values)
        return fast if fast is not None else self._check_rows(col, values)

    def _check_column(self, col: Column, values: list) -> Any:
        """The array for a column of valid values, or None when a value may be bad."""
        kind = col.kind
        types = set(map(type, values))
        has_null = type(None) in types
        if has_null and col.required:
            return None
        if kind in ("float", "int"):
            if not types <= _NUMBER_TYPES:
                return None
            try:
                if kind == "int" and not has_null and types == {int}:
                    array = np.array(values, dtype="int64")
                    inside = array.min(initial=0) >= -self.max_abs and \
                        array.max(initial=0) <= self.max_abs
                    return array if inside else None
                # None -> NaN (JSON has no NaN of its own: the parser refuses it)
                array = np.array(values, dtype="float64")
            except (OverflowError, ValueError, TypeError):  # an int beyond any float
                return None
            present = array if not has_null else array[~np.isnan(array)]
            if not np.isfinite(present).all() or np.abs(present).max(initial=0) > self.max_abs:
                return None
            if kind == "int":
                if (present % 1).any():
                    return None
                if not has_null:
                    return array.astype("int64")
            return array
        if kind == "str" and types <= _TEXT_TYPES:
            if has_null:
                return np.array([np.nan if v is None else v for v in values], dtype=object)
            return np.array(values, dtype=object)
        if kind == "bool" and types <= _BOOL_TYPES:
            return np.array(values, dtype=object if has_null else bool)
        return None

    def _check_rows(self, col: Column, values: list) -> Any:
        kind = col.kind
        has_null = False
        for i, value in enumerate(values):
            if value is None:
                if col.required:
                    raise BadInput(422, f"column '{col.name}' row {i}: null, but the model was "
                                        "trained without nulls in this column", "null")
                has_null = True
                continue
            vtype = type(value)
            if kind == "float" or kind == "int":
                if vtype is not int and vtype is not float:
                    raise self._wrong_type(col, i, value, "a number")
                if vtype is float:
                    if not math.isfinite(value):
                        raise BadInput(422, f"column '{col.name}' row {i}: NaN or infinite",
                                       "not_finite")
                    if kind == "int" and not value.is_integer():
                        raise self._wrong_type(col, i, value, "an integer")
                if abs(value) > self.max_abs:
                    raise BadInput(422, f"column '{col.name}' row {i}: magnitude above the limit "
                                        f"of {self.max_abs:g}", "magnitude")
            elif kind == "str":
                if vtype is not str:
                    raise self._wrong_type(col, i, value, "a string")
            elif kind == "bool":
                if vtype is not bool:
                    raise self._wrong_type(col, i, value, "a boolean")
            elif vtype is not str:  # datetime: ISO 8601 strings
                raise self._wrong_type(col, i, value, "an ISO 8601 date-time string")
        if kind == "float":
            return np.array([np.nan if v is None else v for v in values] if has_null else values,
                            dtype="float64")
        if kind == "int":
            if has_null:  # the column was float in training (nulls), values are integral
                return np.array([np.nan if v is None else v for v in values], dtype="float64")
            return np.array(values, dtype="int64")
        if kind == "str":
            return np.array([np.nan if v is None else v for v in values] if has_null else values,
                            dtype=object)
        if kind == "bool":
            return np.array(values, dtype=object if has_null else bool)
        try:
            return pd.to_datetime(pd.Series(values, dtype=object), utc=True, format="ISO8601")
        except (ValueError, TypeError):
            raise BadInput(422, f"column '{col.name}': not an ISO 8601 date-time",
                           "wrong_type") from None

    @staticmethod
    def _wrong_type(col: Column, row: int, value: Any, expected: str) -> BadInput:
        got = _JSON_TYPE.get(type(value), "value")
        return BadInput(422, f"column '{col.name}' row {row}: expected {expected}, got {got}",
                        "wrong_type")

    def describe(self) -> list[dict]:
        return [{"name": c.name, "type": c.kind, "nullable": not c.required}
                for c in self.columns]


def _ids(ids: Any, n_rows: int) -> list[str]:
    if not isinstance(ids, list) or len(ids) != n_rows:
        raise BadInput(422, f"'ids' must be an array with one key per row ({n_rows})", "shape")
    out = []
    for i, key in enumerate(ids):
        if isinstance(key, bool) or not isinstance(key, (str, int)):
            raise BadInput(422, f"ids[{i}]: expected a string or an integer", "type")
        key = str(key)
        if not key or len(key) > MAX_ID_CHARS:
            raise BadInput(422, f"ids[{i}]: must have 1 to {MAX_ID_CHARS} characters", "shape")
        out.append(key)
    return out


def _event_time(value: Any) -> pd.Timestamp:
    if not isinstance(value, str) or len(value) > 40:
        raise BadInput(422, "'event_time': expected an ISO-8601 timestamp string", "type")
    try:
        when = pd.Timestamp(value)
    except (ValueError, OverflowError):
        raise BadInput(422, "'event_time': not an ISO-8601 timestamp", "type") from None
    if pd.isna(when):
        raise BadInput(422, "'event_time': not an ISO-8601 timestamp", "type")
    return when.tz_localize("UTC") if when.tzinfo is None else when.tz_convert("UTC")
