"""A flights model registered with a validation suite, and batch sources made from its data."""

from __future__ import annotations

import json

import pytest

MODEL = "batch_flights"

#: The suite the model version records: two critical row rules on inputs, a warning (not applied
#: to rows) and a critical rule on the target (not an input: not applied either).
SUITE = {
    "name": MODEL,
    "expectations": [
        {"type": "expect_column_values_to_be_between", "severity": "critical",
         "kwargs": {"column": "distance", "min_value": 0, "strict_min": True}},
        {"type": "expect_column_values_to_be_in_set", "severity": "critical",
         "kwargs": {"column": "origin", "value_set": ["EWR", "JFK", "LGA"]}},
        {"type": "expect_column_values_to_be_between", "severity": "warning",
         "kwargs": {"column": "hour", "min_value": 5, "max_value": 6}},
        {"type": "expect_column_values_to_be_in_set", "severity": "critical",
         "kwargs": {"column": "is_late", "value_set": [0, 1]}},
    ],
}


@pytest.fixture(scope="module")
def batch_config(tmp_path_factory):
    from pipeline_tasks.core.config import load_config

    return load_config(home=str(tmp_path_factory.mktemp("batch-home")), batch_part_rows=1000)


@pytest.fixture(scope="module")
def scoring_model(flights_frame, batch_config, train_and_register, tmp_path_factory):
    """``batch_flights`` v1, champion, trained on the flights sample with ``SUITE`` recorded."""
    from pipeline_tasks.core.schema import SUITE_TAG
    from pipeline_tasks.scoring.batch import resolve_model

    suite = tmp_path_factory.mktemp("batch-suite") / "suite.json"
    suite.write_text(json.dumps(SUITE))
    train_and_register(flights_frame, "batch", batch_config, blessed=True, model_name=MODEL,
                       lineage={SUITE_TAG: suite.as_uri()})
    return resolve_model(MODEL, "champion", batch_config)


@pytest.fixture(scope="module")
def batch_source(flights_frame):
    """The flights sample as it arrives to be scored: no label, a flight id column."""
    frame = flights_frame[flights_frame["dep_delay"].notna()].drop(columns=["is_late"])
    frame = frame.reset_index(drop=True)
    frame.insert(0, "flight_id", [f"F{i:05d}" for i in range(len(frame))])
    return frame
