"""The Airflow glue hands a task body its upstream XCom dicts as the types its stage takes."""

from __future__ import annotations

PROBE = r"""
import json
from mlops_airflow.runtime import from_xcom, typed_args
from pipeline_tasks.model.registry import RegistrationResult

registered = RegistrationResult(model_name="m", version="3", run_id="r3", promoted=False,
                                reason="awaiting approval: better", champion_version="2",
                                previous_champion="2", aliases=["challenger"],
                                awaiting_approval=True).to_xcom()
ingested = {"uri": "file:///raw.parquet", "rows": 40, "columns": ["a", "y"], "source": "/d",
            "interval_start": "a", "interval_end": "b", "window_start": "c",
            "partitioned": False, "files": [], "time_column": None, "rows_outside_window": 0,
            "nothing_new": ""}


def version(ingested, validated, **context):
    return ingested, validated, context


def request_retrain(drift, performance, **context):
    return drift, performance


args, kwargs = from_xcom(version, (ingested,), {"validated": {"success": True, "suite_name": "m",
    "suite_uri": "s", "suite_inferred": False, "evaluated": 3}, "ti": "the ti"})
got_ingested, got_validated, context = version(*args, **kwargs)
drift, performance = request_retrain(*from_xcom(request_retrain, (None, None), {})[0])


@typed_args
def approval_gate(registered, **context):
    return type(registered).__name__, registered.awaiting_approval, sorted(context)


print(json.dumps({
    "ingested": [type(got_ingested).__name__, got_ingested.rows, got_ingested.to_xcom() == ingested],
    "validated": [type(got_validated).__name__, got_validated.success, got_validated.suite_ref],
    "context": context,
    "skipped": [drift, performance],
    "branch": approval_gate(registered, params={}),
}))
"""


def test_the_glue_turns_upstream_xcom_dicts_into_the_stage_types(run_probe):
    assert run_probe(PROBE) == {
        "ingested": ["IngestResult", 40, True],
        "validated": ["ValidationResult", True, ""],  # keys it lacks take their defaults
        "context": {"ti": "the ti"},  # the task's context is left alone
        "skipped": [None, None],  # a skipped upstream task gives None, as before
        "branch": ["RegistrationResult", True, ["params"]],
    }
