"""The input contract: every bad payload gets a 4xx naming the field, and nothing leaks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline_tasks.serving.contract import BadInput, Column, Contract

CONTRACT = Contract((Column("distance", "int", True), Column("temp", "float", False),
                     Column("carrier", "str", True), Column("late", "bool", True),
                     Column("at", "datetime", True)), max_rows=3, max_abs=1e6)
ROW = {"distance": 1000, "temp": 51.5, "carrier": "UA", "late": False,
       "at": "2013-03-01T08:00:00Z"}


def refuse(body) -> BadInput:
    with pytest.raises(BadInput) as caught:
        CONTRACT.frame(body)
    return caught.value


def test_records_columns_and_split_give_the_same_frame():
    by_records = CONTRACT.frame({"records": [ROW, {**ROW, "temp": None}]})
    by_columns = CONTRACT.frame({"columns": {k: [v, v if k != "temp" else None]
                                             for k, v in ROW.items()}})
    by_split = CONTRACT.frame({"dataframe_split": {"columns": list(ROW), "data": [
        list(ROW.values()), [None if k == "temp" else v for k, v in ROW.items()]]}})
    for frame in (by_columns, by_split):
        assert frame.equals(by_records)
    assert list(by_records.columns) == ["distance", "temp", "carrier", "late", "at"]
    assert by_records["distance"].dtype == np.int64 and np.isnan(by_records["temp"][1])
    assert str(by_records["at"].dtype) == "datetime64[ns, UTC]"


def test_an_optional_column_may_be_left_out():
    # temp had nulls in the training data: a client that does not send it gets answers
    without = {k: v for k, v in ROW.items() if k != "temp"}
    by_records = CONTRACT.frame({"records": [without, ROW]})
    assert np.isnan(by_records["temp"][0]) and by_records["temp"][1] == 51.5
    by_columns = CONTRACT.frame({"columns": {k: [v] for k, v in without.items()}})
    by_split = CONTRACT.frame({"dataframe_split": {"columns": list(without),
                                                   "data": [list(without.values())]}})
    for frame in (by_columns, by_split):
        assert frame.equals(by_records.head(1))
    assert list(by_columns.columns) == ["distance", "temp", "carrier", "late", "at"]


@pytest.mark.parametrize("body, status, words", [
    ([ROW], 422, "JSON object"),
    ({"rows": [ROW]}, 422, "exactly one of"),
    ({"records": [{k: v for k, v in ROW.items() if k != "carrier"}]}, 422,
     "records[0]: missing column 'carrier'"),
    ({"records": [{**ROW, "secret_col": 1}]}, 422, "records[0]: unexpected column 'secret_col'"),
    ({"records": [{**ROW, "distance": "far"}]}, 422,
     "column 'distance' row 0: expected a number, got string"),
    ({"records": [{**ROW, "distance": 10.5}]}, 422, "column 'distance' row 0: expected an integer"),
    ({"records": [{**ROW, "late": 1}]}, 422, "column 'late' row 0: expected a boolean"),
    ({"records": [ROW, {**ROW, "carrier": None}]}, 422,
     "column 'carrier' row 1: null, but the model was trained without nulls"),
    ({"records": [{**ROW, "temp": float("nan")}]}, 422, "column 'temp' row 0: NaN or infinite"),
    ({"records": [{**ROW, "temp": float("inf")}]}, 422, "NaN or infinite"),
    ({"records": [{**ROW, "temp": 1e300}]}, 422, "column 'temp' row 0: magnitude above"),
    ({"records": [{**ROW, "distance": 10**30}]}, 422, "column 'distance' row 0: magnitude"),
    ({"records": [{**ROW, "at": "yesterday-ish"}]}, 422, "column 'at': not an ISO 8601"),
    ({"records": [ROW] * 4}, 413, "4 rows: more than the limit of 3"),
    ({"records": []}, 422, "no rows"),
    ({"columns": {**{k: [v] for k, v in ROW.items()}, "temp": [1.0, 2.0]}}, 422,
     "column 'temp': 2 values, but the other columns have 1"),
    ({"dataframe_split": {"columns": list(ROW), "data": [[1, 2]]}}, 422,
     "dataframe_split.data[0]: expected an array of 5 values"),
])
def test_bad_payloads_name_the_field_and_the_problem(body, status, words):
    error = refuse(body)
    assert error.status == status
    assert words in error.message
    for leaked in ("far", "secret_value", "1e+300", "yesterday", "float64", "int64"):
        assert leaked not in error.message


def test_a_long_unexpected_column_name_is_cut():
    error = refuse({"records": [{**ROW, "x" * 5000: 1}]})
    assert len(error.message) < 200


COLUMNS = {"int": Column("n", "int", True), "int?": Column("n", "int", False),
           "float": Column("x", "float", True), "float?": Column("x", "float", False),
           "str": Column("s", "str", True), "str?": Column("s", "str", False),
           "bool": Column("b", "bool", True), "bool?": Column("b", "bool", False)}
VALUES = [[1, 2, 3], [1, None, 3], [1.0, 2.0], [1.5, 2], [True, 1], [1e300, 2.0], [10**400],
          [-(2**63)], [2**63], [5_000_000], [-5_000_000.0], [float("inf")], ["a", "b"],
          ["a", None], [True, False], [True, None], [None, None], [], [1, "a"], [[1]], [{}]]


@pytest.mark.parametrize("kind", sorted(COLUMNS))
def test_the_column_wise_check_agrees_with_the_row_by_row_one(kind):
    """The fast column check takes only what the row-by-row check takes, to the same array;
    whatever it declines gets the row-by-row check's answer (the 422 naming the row)."""
    col = COLUMNS[kind]
    for values in VALUES:
        try:
            slow = CONTRACT._check_rows(col, values)
        except BadInput as exc:
            slow = exc
        fast = CONTRACT._check_column(col, values)
        if isinstance(slow, BadInput):
            assert fast is None, (kind, values)
            with pytest.raises(BadInput) as caught:
                CONTRACT._check(col, values)
            assert caught.value.message == slow.message
        elif fast is not None:
            assert fast.dtype == slow.dtype, (kind, values)
            assert pd.Series(fast).equals(pd.Series(slow)), (kind, values)  # NaN equals NaN


def test_the_contract_is_read_from_the_signature_s_column_specs():
    specs = [{"type": "double", "name": "distance", "required": True},
             {"type": "long", "name": "hour", "required": False},
             {"type": "string", "name": "origin"}]  # MLflow leaves "required" out: required
    contract = Contract.from_inputs(specs, max_rows=10, max_abs=1e9)
    assert contract.columns == (Column("distance", "float", True), Column("hour", "int", False),
                                Column("origin", "str", True))


@pytest.mark.parametrize("specs, words", [
    (None, "no input signature"),
    ([], "no input signature"),
    ({"type": "double"}, "not a list of columns"),
    ([{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, 3]}}],
     "None has type 'tensor'"),
    ([{"type": "double"}], "None has type 'double'"),
    ([{"type": {"type": "array", "items": {"type": "double"}}, "name": "xs"}], "'xs' has type"),
    (["distance"], "None has type None"),
])
def test_a_signature_the_server_cannot_check_is_refused(specs, words):
    with pytest.raises(ValueError, match=words):
        Contract.from_inputs(specs, max_rows=10, max_abs=1e9)
