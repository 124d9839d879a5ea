"""
# ml_drift_monitoring

Watches what the served model sees and how well it does, one data interval per run, and asks for
retraining when the change is real.

`check_drift` + `check_performance` → `request_retrain`

| task | what it does |
|---|---|
| **check_drift** | the interval's prediction log (or the file in `current`) against the training snapshot of the model version that served it: an Evidently report (`report.html`), the verdict (`drift.json`), metrics in MLflow (`<model>-monitoring`) and for Prometheus (`metrics.prom`) |
| **check_performance** | true outcomes that landed late, joined on `row_id` to the predictions of the interval `label_delay_days` back: the served model's real metrics against its offline ones. A model with no labels source is recorded as `no_labels` and the task is skipped (not failed) |
| **request_retrain** | (runs whether or not the performance check could run) drift (drifted share ≥ threshold, enough rows) or a performance drop emits the `mlops_retrain_requests` asset event that starts `ml_training_pipeline`, at most once per `retrain_cooldown_days`; skipped otherwise |

Too little traffic is recorded as `insufficient_data`: not drift, not an error. A prediction-log
file that cannot be read fails the run with its name. Backfill with
`make airflow ARGS="backfill create --dag-id ml_drift_monitoring --from-date ... --to-date ..."`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from airflow.sdk import dag
from mlops_airflow.assets import DRIFT_REPORTS, champion_asset
from mlops_airflow.params import dag_params
from mlops_airflow.runtime import dag_args, pipeline_task, run_spec
from mlops_airflow.schedules import RETRAIN_REQUESTS, cron

from pipeline_tasks import stages
from pipeline_tasks.core.config import DEMO_MODEL, load_config

if TYPE_CHECKING:  # the glue hands the body the checks typed (stages.XCOM_TYPES)
    from pipeline_tasks.monitoring.drift_check import DriftCheck
    from pipeline_tasks.monitoring.performance import PerformanceCheck

CONFIG = load_config()  # stdlib only: no I/O
#: The trigger form, from the one param schema (pipeline_tasks.core.params)
PARAMS = dag_params("ml_drift_monitoring", CONFIG)
#: The champion of the model monitored by default (a run's param may name another)
MONITORED = champion_asset(DEMO_MODEL)


@dag(**dag_args(
    "ml_drift_monitoring", schedule=cron(CONFIG.drift_schedule), doc_md=__doc__,
    params=PARAMS, tags=["monitoring"], retry_delay=timedelta(minutes=1),
    execution_timeout=timedelta(hours=1),
))
def ml_drift_monitoring():
    # inlets: the checks read the configured model's champion, so the asset view draws
    # training -> champion -> monitoring (its "data" graph follows inlets and outlets)
    @pipeline_task(inlets=[MONITORED], outlets=[DRIFT_REPORTS])  # .../<model>/drift-reports
    def check_drift(**context) -> dict:
        return stages.check_drift(run_spec(context))

    @pipeline_task(inlets=[MONITORED])
    def check_performance(**context) -> dict:
        return stages.check_performance(run_spec(context))

    # a skipped performance check (no labels) must not skip the retrain decision
    @pipeline_task(outlets=[RETRAIN_REQUESTS], trigger_rule="none_failed")
    def request_retrain(drift: DriftCheck | None, performance: PerformanceCheck | None,
                        **context) -> dict:
        return stages.request_retrain(run_spec(context), drift, performance)

    request_retrain(check_drift(), check_performance())


ml_drift_monitoring()
