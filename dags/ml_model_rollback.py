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

from airflow.sdk import dag
from mlops_airflow.assets import CHAMPIONS
from mlops_airflow.params import dag_params
from mlops_airflow.runtime import dag_args, pipeline_task, run_spec

from pipeline_tasks import stages
from pipeline_tasks.core.config import load_config

#: The trigger form, from the one param schema (pipeline_tasks.core.params)
PARAMS = dag_params("ml_model_rollback", load_config())


@dag(**dag_args(
    "ml_model_rollback", schedule=None, doc_md=__doc__, params=PARAMS, tags=["serving"],
    retry_delay=timedelta(seconds=30), execution_timeout=timedelta(minutes=30),
))
def ml_model_rollback():
    @pipeline_task(outlets=[CHAMPIONS])  # a new champion of the model: mlops_airflow.assets
    def rollback(**context) -> dict:
        return stages.rollback(run_spec(context))

    rollback()


ml_model_rollback()
