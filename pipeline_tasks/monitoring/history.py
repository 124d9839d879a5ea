"""The MLflow record of monitoring: one run per check in the experiment ``<model>-monitoring``,
and the same metrics on its ``drift-over-time`` run with the interval as the step (the chart)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pipeline_tasks.core import storage, tracking
from pipeline_tasks.core.config import PipelineConfig
from pipeline_tasks.core.names import safe_name


def log_check(model_name: str, kind: str, run_key: str, end: datetime,
              metrics: dict[str, float], tags: dict[str, Any], artifacts: list[str | None],
              config: PipelineConfig) -> str | None:
    """One MLflow run per check (re-used by a re-run of the same check), and the same metrics on
    the model's ``drift-over-time`` run with the interval's day as the step (MLflow charts them as
    a series). Returns the check's run id, or None when there is nothing to log."""
    if not metrics:
        return None
    tracking.configure_mlflow(config)
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    experiment_id = tracking.ensure_experiment(f"{model_name}-monitoring", config)
    stamp = int(end.timestamp() * 1000)
    step = int(end.timestamp() // 86400)
    name = f"{kind}-{safe_name(run_key)}"[:250]
    found = client.search_runs([experiment_id], f"tags.mlflow.runName = '{name}'", max_results=1)
    run_id = found[0].info.run_id if found else client.create_run(
        experiment_id, run_name=name, tags={k: str(v) for k, v in tags.items()}).info.run_id
    series = client.search_runs([experiment_id], "tags.mlflow.runName = 'drift-over-time'",
                                max_results=1)
    series_id = series[0].info.run_id if series else client.create_run(
        experiment_id, run_name="drift-over-time",
        tags={"mlflow.note.content": "Monitoring metrics by interval (step = days since "
                                     "1970-01-01 of the interval's end)."}).info.run_id
    batch = [Metric(k, float(v), stamp, step) for k, v in metrics.items()]
    client.log_batch(run_id, metrics=batch)
    client.log_batch(series_id, metrics=batch)
    for uri in artifacts:
        if uri and storage.is_local(uri):
            client.log_artifact(run_id, str(storage.local_path(uri)))
    client.set_terminated(run_id)
    return run_id
