"""
# ml_training_pipeline

Trains a tabular model every night on the latest data and promotes it only when it is better.
It also runs when `ml_drift_monitoring` asks for a retrain (asset `mlops_retrain_requests`): such a
run trains the model named in the request, on the interval that drifted, and its MLflow run and
model version carry the reason (`retrain.*` tags).

`ingest` → `validate` → `version` → `train` → `evaluate` → `register` → (`approve`) → `deploy`

| task | what it does |
|---|---|
| **ingest** | reads the run's data interval plus `training_window_days` from `source` into the lake; a batch already validated, trained and judged (training cache) skips the rest |
| **validate** | checks it with Great Expectations; a critical failure quarantines the batch and stops the run |
| **version** | stores a content-addressed snapshot (same data, same version id) with its lineage |
| **train** | fits a scikit-learn pipeline, tracked as one MLflow run |
| **evaluate** | scores the candidate, the champion and a trivial baseline on the same holdout |
| **register** | new model version; `challenger` always moves to it, `champion` only if it was blessed |
| **approve** | only with `require_approval` and a blessed model: waits for a person (Required actions); Reject keeps the current champion serving |
| **deploy** | only for a new champion: blue/green onto the model server, canary-checked (skipped otherwise) |

Bad input (unreadable files, failed expectations) fails the task at once without retries.
Backfill with `make airflow ARGS="backfill create --dag-id ml_training_pipeline --from-date ... --to-date ..."`.
Every task body is one call into `pipeline_tasks.stages`, with its upstream results typed (the glue
converts the XCom dicts); see docs/pipeline.md for the params.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from airflow.sdk import dag, task
from mlops_airflow.approval import ModelApproval
from mlops_airflow.assets import CHAMPIONS, MODEL_VERSIONS, SNAPSHOTS
from mlops_airflow.params import dag_params
from mlops_airflow.runtime import dag_args, pipeline_task, run_spec, typed_args
from mlops_airflow.schedules import cron_or_asset

from pipeline_tasks import stages
from pipeline_tasks.core.config import load_config

if TYPE_CHECKING:  # the glue hands each body its upstream results typed (stages.XCOM_TYPES)
    from pipeline_tasks.data.ingest import IngestResult
    from pipeline_tasks.data.validate import ValidationResult
    from pipeline_tasks.data.versioning import DatasetVersion
    from pipeline_tasks.model.evaluate import EvaluationDecision
    from pipeline_tasks.model.registry import RegistrationResult
    from pipeline_tasks.model.train import TrainResult

CONFIG = load_config()  # stdlib only: paths and default thresholds, no I/O
#: The trigger form, from the one param schema (pipeline_tasks.core.params)
PARAMS = dag_params("ml_training_pipeline", CONFIG)


@dag(**dag_args(
    "ml_training_pipeline",
    # nightly (config training_schedule) or when ml_drift_monitoring asks for a retrain
    schedule=cron_or_asset(CONFIG.training_schedule),
    doc_md=__doc__, params=PARAMS, tags=["training"],
    retry_delay=timedelta(minutes=1), exponential_backoff=True,
    execution_timeout=timedelta(hours=2),
    # a run waiting for approval holds only its own model, not every other model's nightly run
    max_active_runs=CONFIG.training_max_active_runs,
))
def ml_training_pipeline():
    @pipeline_task
    def ingest(**context) -> dict:
        return stages.ingest(run_spec(context))

    @pipeline_task
    def validate(ingested: IngestResult, **context) -> dict:
        return stages.validate(run_spec(context), ingested)

    # each asset event names the run's model (mlops_airflow.assets): mlops://models/<model>/...
    @pipeline_task(outlets=[SNAPSHOTS])
    def version(ingested: IngestResult, validated: ValidationResult, **context) -> dict:
        return stages.version(run_spec(context), ingested, validated)

    # its own pool (made by the stack / profile), so long fits cannot take every worker slot
    @pipeline_task(pool=CONFIG.training_pool)
    def train(ingested: IngestResult, versioned: DatasetVersion, **context) -> dict:
        return stages.train(run_spec(context), ingested, versioned)

    @pipeline_task
    def evaluate(trained: TrainResult, **context) -> dict:
        return stages.evaluate(run_spec(context), trained)

    @pipeline_task(outlets=[MODEL_VERSIONS])
    def register(trained: TrainResult, decision: EvaluationDecision, **context) -> dict:
        return stages.register(run_spec(context), trained, decision)

    @task.branch
    @typed_args
    def approval_gate(registered: RegistrationResult, **context) -> str:
        return stages.approval_gate(run_spec(context), registered)

    approve = ModelApproval(
        task_id="approve",
        subject="Deploy {{ ti.xcom_pull(task_ids='register')['model_name'] }} "
        "v{{ ti.xcom_pull(task_ids='register')['version'] }}?",
        body="{{ ti.xcom_pull(task_ids='register')['reason'] }}\n\nApprove: it becomes "
        "champion and is deployed blue/green. Reject: the current champion keeps serving.",
        # unanswered by then: the task fails (and notifies), the champion keeps serving, and the
        # training runs queued behind this one go ahead
        response_timeout=timedelta(hours=CONFIG.approval_timeout_hours),
    )

    @pipeline_task(trigger_rule="none_failed_min_one_success", outlets=[CHAMPIONS])
    def deploy(trained: TrainResult, registered: RegistrationResult, **context) -> dict:
        return stages.deploy(run_spec(context), trained, registered)

    ingested = ingest()
    validated = validate(ingested)
    versioned = version(ingested, validated)
    trained = train(ingested, versioned)
    decision = evaluate(trained)
    registered = register(trained, decision)
    deployed = deploy(trained, registered)
    approval_gate(registered) >> [approve, deployed]
    approve >> deployed


ml_training_pipeline()
