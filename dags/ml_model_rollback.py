"""
# ml_model_rollback

Puts an earlier version of a model back in service, through the same path as a deploy.

1. `champion` moves to the chosen version (`previous`: the version that was live before the
   current one, from the deployment history).
2. That version starts beside the live one, must pass the canary (holdout rows predicted exactly
   as offline), then takes the endpoint; the current one stops. If it fails, nothing changes.

The rollback is recorded in the deployment history (`lake/deployments/<model>/`) and in the
registry tags, with the reason given here. Trigger it from the UI form or with
`make airflow ARGS="dags trigger ml_model_rollback -c '{\\"version\\": \\"previous\\", \\"reason\\": \\"...\\"}'"`.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, dag
from mlops_airflow.runtime import dag_args, pipeline_task, run_spec

from pipeline_tasks.stages import MODEL_NAME_PATTERN

PARAMS = {
    "model_name": Param(
        "flights_is_late",
        type="string",
        minLength=1,
        pattern=MODEL_NAME_PATTERN,
        title="Model",
        description="Registered model whose served version to roll back.",
    ),
    "version": Param(
        "previous",
        type="string",
        pattern=r"^(previous|[0-9]+)$",
        title="Version",
        description="A version number, or 'previous' for the version that was live before the "
        "current one.",
    ),
    "reason": Param(
        "",
        type="string",
        minLength=3,
        title="Reason",
        description="Who rolls back and why. Recorded in the deployment history and the registry.",
    ),
}


@dag(**dag_args(
    "ml_model_rollback", schedule=None, doc_md=__doc__, params=PARAMS, tags=["serving"],
    retry_delay=timedelta(seconds=30), execution_timeout=timedelta(minutes=30),
))
def ml_model_rollback():
    @pipeline_task
    def rollback(**context) -> dict:
        from pipeline_tasks import stages

        return stages.rollback(run_spec(context))

    rollback()


ml_model_rollback()
