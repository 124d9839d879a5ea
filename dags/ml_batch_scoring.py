"""
# ml_batch_scoring

Scores one data interval of a table with a registered model version, nightly or on demand, and
puts the scores where the business reads them.

`resolve_model` → `score` → `export_scores`

| task | what it does |
|---|---|
| **resolve_model** | turns `model_ref` (default the `champion` alias) into a version once; the whole run scores with it |
| **score** | checks the source's columns against the model's signature (a missing or retyped input fails here, naming it), streams the rows a chunk at a time, rejects rows with a null required input or a value the model's suite calls critical (each with its reason), scores the rest and publishes `lake/scores/<model>/interval_end=.../` at once, with the rows in the prediction log for `ml_drift_monitoring` |
| **export_scores** | with `output_conn_id` and `output_table`: replaces the interval's rows of that table in one transaction (skipped otherwise) |

More rejected rows than `max_reject_share` fail the run and publish nothing (the rejects are kept
in the run's quarantine folder). A re-run of an interval replaces its partition exactly. Backfill
with `make airflow ARGS="backfill create --dag-id ml_batch_scoring --from-date ... --to-date ..."`;
see docs/batch.md.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from airflow.sdk import dag
from mlops_airflow.params import dag_params
from mlops_airflow.runtime import dag_args, pipeline_task, run_spec
from mlops_airflow.schedules import cron

from pipeline_tasks import stages
from pipeline_tasks.core.config import load_config

if TYPE_CHECKING:  # the glue hands each body its upstream results typed (stages.XCOM_TYPES)
    from pipeline_tasks.scoring.batch import BatchScoreResult, ScoringModel

CONFIG = load_config()  # stdlib only: no I/O
#: The trigger form, from the one param schema (pipeline_tasks.core.params)
PARAMS = dag_params("ml_batch_scoring", CONFIG)


@dag(**dag_args(
    "ml_batch_scoring", schedule=cron(CONFIG.batch_scoring_schedule), doc_md=__doc__,
    params=PARAMS, tags=["scoring"], retry_delay=timedelta(minutes=1),
    execution_timeout=timedelta(hours=4),
))
def ml_batch_scoring():
    @pipeline_task
    def resolve_model(**context) -> dict:
        return stages.resolve_scoring_model(run_spec(context))

    @pipeline_task
    def score(scoring_model: ScoringModel, **context) -> dict:
        return stages.score_batch(run_spec(context), scoring_model)

    @pipeline_task
    def export_scores(scored: BatchScoreResult, **context) -> dict:
        return stages.export_scores(run_spec(context), scored)

    export_scores(score(resolve_model()))


ml_batch_scoring()
