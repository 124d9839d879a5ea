"""
# ml_training_pipeline

Trains a tabular model every night on the latest data and promotes it only when it is better.
It also runs when `ml_drift_monitoring` asks for a retrain (asset `mlops_retrain_requests`): such a
run trains the model named in the request, on the interval that drifted, and its MLflow run and
model version carry the reason (`retrain.*` tags).

`ingest` → `validate` → `version` → `train` → `evaluate` → `register` → (`approve`) → `deploy`

| task | what it does |
|---|---|
| **ingest** | reads the run's data interval plus `training_window_days` from `source` into the lake |
| **validate** | checks it with Great Expectations; a critical failure quarantines the batch and stops the run |
| **version** | stores a content-addressed snapshot (same data, same version id) with its lineage |
| **train** | fits a scikit-learn pipeline, tracked as one MLflow run |
| **evaluate** | scores the candidate, the champion and a trivial baseline on the same holdout |
| **register** | new model version; `challenger` always moves to it, `champion` only if it was blessed |
| **approve** | only with `require_approval` and a blessed model: waits for a person (Required actions); Reject keeps the current champion serving |
| **deploy** | only for a new champion: blue/green onto the model server, canary-checked (skipped otherwise) |

Bad input (unreadable files, failed expectations) fails the task at once without retries.
Backfill with `make airflow ARGS="backfill create --dag-id ml_training_pipeline --from-date ... --to-date ..."`.
Every task body is one call into `pipeline_tasks.stages`; see the README for the params.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, dag, task
from mlops_airflow.approval import ModelApproval
from mlops_airflow.runtime import dag_args, pipeline_task, run_spec
from mlops_airflow.schedules import cron_or_asset

from pipeline_tasks.core.config import load_config
from pipeline_tasks.stages import DEFAULT_PARAMS as DEFAULTS

CONFIG = load_config()  # stdlib only: paths and default thresholds, no I/O

PARAMS = {
    "source": Param(
        CONFIG.demo_source_uri,
        type="string",
        title="Source",
        description="URI of a CSV or Parquet file, a folder or glob of them (date-partitioned "
        "when file names carry YYYY-MM-DD), or a SQL query when 'SQL connection' is set. "
        "It must lie under the landing folder or a root the operator lists in "
        "allowed_source_roots (MLOPS_ALLOWED_SOURCE_ROOTS); anything else fails the first task. "
        "The default is the demo flights feed.",
    ),
    "sql_conn_id": Param(
        DEFAULTS["sql_conn_id"],
        type=["null", "string"],  # optional: the form must not require it
        title="SQL connection",
        description="Airflow connection id to run 'Source' against as a SQL query. The query may "
        "use :window_start, :interval_start and :interval_end. Only connections the operator "
        "lists in allowed_sql_conn_ids (MLOPS_ALLOWED_SQL_CONN_IDS; none by default) are "
        "accepted. Leave empty for files.",
    ),
    "target": Param(
        DEFAULTS["target"],
        type="string",
        minLength=1,
        title="Target column",
        description="The label column to predict.",
    ),
    "task_type": Param(
        DEFAULTS["task_type"],
        type="string",
        enum=["auto", "classification", "regression"],
        title="Task type",
        description="auto infers it from the target: few integer values or text "
        "means classification, otherwise regression.",
    ),
    "time_column": Param(
        DEFAULTS["time_column"],
        type=["null", "string"],  # optional: the form must not require it
        title="Time column",
        description="Timestamp column for the time-aware split and the window "
        "filter. Empty: detected (a datetime column, or time_hour, timestamp...).",
    ),
    "training_window_days": Param(
        DEFAULTS["training_window_days"],
        type="integer",
        minimum=0,
        maximum=3660,
        title="Training window (days)",
        description="Days of data before the interval's end to train "
        "on (date-partitioned sources and SQL).",
    ),
    "model_name": Param(
        DEFAULTS["model_name"],
        type=["null", "string"],  # optional: the form must not require it
        pattern=r"^([A-Za-z0-9][A-Za-z0-9._-]*)?$",
        title="Registered model name",
        description="Letters, digits, '.', '_' and '-'. Empty: derived from the source and "
        "target, e.g. flights_is_late.",
    ),
    "min_baseline_lift": Param(
        CONFIG.min_baseline_lift,
        type="number",
        minimum=0,
        maximum=1,
        title="Minimum lift over the trivial baseline",
        description="Relative improvement of the primary metric over a "
        "majority-class / mean model that the candidate must reach.",
    ),
    "min_champion_delta": Param(
        CONFIG.min_champion_delta,
        type="number",
        minimum=0,
        title="Minimum improvement over the champion",
        description="The candidate must beat the champion's primary "
        "metric by more than this (absolute; 0 means strictly better).",
    ),
    "min_primary_metric": Param(
        CONFIG.min_primary_metric,
        type=["null", "number"],
        title="Absolute primary-metric floor",
        description="Optional: a floor (ceiling for error metrics such "
        "as rmse) the candidate must meet.",
    ),
    "hyperparameter_search": Param(
        DEFAULTS["hyperparameter_search"],
        type="boolean",
        title="Hyperparameter search",
        description="Run a randomized search CV within the time budget below.",
    ),
    "search_time_budget_s": Param(
        CONFIG.search_time_budget_s,
        type="number",
        minimum=0,
        title="Search time budget (s)",
        description="Upper bound on the hyperparameter search time.",
    ),
    "force_promote": Param(
        DEFAULTS["force_promote"],
        type="boolean",
        title="Force promotion",
        description="Promote even if the gate rejects the candidate. "
        "Recorded on the model version with the reason below.",
    ),
    "force_reason": Param(
        DEFAULTS["force_reason"],
        type=["null", "string"],  # optional: the form must not require it
        title="Reason for forcing",
        description="Required when 'Force promotion' is on.",
    ),
    "allow_schema_change": Param(
        DEFAULTS["allow_schema_change"],
        type="boolean",
        title="Allow schema change",
        description="This run may change the model's inputs (another source, renamed or retyped "
        "columns): the batch is validated against a suite inferred from itself instead of the "
        "model's. A candidate whose inputs break the champion's clients is registered as a "
        "blocked challenger; it becomes champion only with 'Force promotion' and a reason, or "
        "through the approval step.",
    ),
    "require_approval": Param(
        CONFIG.require_approval,
        type="boolean",
        title="Require approval before deploying",
        description="A blessed model (or one that passes every gate but changes the inputs) "
        "waits at the 'approve' step (Required actions in the UI) and becomes champion and is "
        "deployed only when a person approves it.",
    ),
    "serving_target": Param(
        CONFIG.serving_target,
        type="string",
        enum=["local", "docker"],
        title="Deploy target",
        description="Where a new champion is served: a supervised local process, or a Docker "
        "container built from docker/serving.Dockerfile (needs a Docker engine).",
    ),
    "serving_port": Param(
        CONFIG.serving_port,
        type="integer",
        minimum=1,
        maximum=65535,
        title="Serving port",
        description="Stable port of the model's endpoint. One model per port: give each model "
        "its own port to serve several side by side.",
    ),
}


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
        from pipeline_tasks import stages

        return stages.ingest(run_spec(context))

    @pipeline_task
    def validate(ingested: dict, **context) -> dict:
        from pipeline_tasks import stages

        return stages.validate(run_spec(context), ingested)

    @pipeline_task
    def version(ingested: dict, validated: dict, **context) -> dict:
        from pipeline_tasks import stages

        return stages.version(run_spec(context), ingested, validated)

    # its own pool (made by the stack / profile), so long fits cannot take every worker slot
    @pipeline_task(pool=CONFIG.training_pool)
    def train(ingested: dict, versioned: dict, **context) -> dict:
        from pipeline_tasks import stages

        return stages.train(run_spec(context), ingested, versioned)

    @pipeline_task
    def evaluate(trained: dict, **context) -> dict:
        from pipeline_tasks import stages

        return stages.evaluate(run_spec(context), trained)

    @pipeline_task
    def register(trained: dict, decision: dict, **context) -> dict:
        from pipeline_tasks import stages

        return stages.register(run_spec(context), trained, decision)

    @task.branch
    def approval_gate(registered: dict, **context) -> str:
        from pipeline_tasks import stages

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

    @pipeline_task(trigger_rule="none_failed_min_one_success")
    def deploy(trained: dict, registered: dict, **context) -> dict:
        from pipeline_tasks import stages

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
