"""MLflow wiring: tracking/registry URIs from the config and experiments with the right artifact root.

With a ``sqlite:///`` tracking store MLflow's default artifact root is ``./mlruns`` in whatever
directory the task happens to run in, so every experiment is created here with an explicit
``artifact_location`` under ``config.mlflow_artifact_uri``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pipeline_tasks.core import storage
from pipeline_tasks.core.config import PipelineConfig
from pipeline_tasks.core.errors import ConfigError
from pipeline_tasks.core.names import safe_name

log = logging.getLogger(__name__)


def quiet_telemetry() -> None:
    """Turn MLflow's (and others') usage telemetry off unless the user decided otherwise."""
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def configure_mlflow(config: PipelineConfig) -> None:
    """Point the MLflow client at the configured tracking and registry stores."""
    quiet_telemetry()
    import mlflow

    for uri in (config.mlflow_tracking_uri, config.mlflow_registry_uri):
        # SQLite creates the database file but not its folder.
        if uri.startswith("sqlite:///"):
            Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(config.mlflow_tracking_uri)
    mlflow.set_registry_uri(config.mlflow_registry_uri)


def experiment_artifact_location(name: str, config: PipelineConfig) -> str:
    """``<mlflow_artifact_uri>/<name>``, with the name made safe as one path segment."""
    safe = safe_name(name).strip(".") or "experiment"
    return storage.join(config.mlflow_artifact_uri, safe)


def ensure_experiment(name: str, config: PipelineConfig) -> str:
    """Return the id of experiment ``name``, creating it (with our artifact root) if missing.

    Two tasks may create the same experiment at once; the loser gets MLflow's
    ``RESOURCE_ALREADY_EXISTS`` and simply reads the winner's experiment.
    """
    configure_mlflow(config)
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
    from mlflow.tracking import MlflowClient

    if not name or not name.strip():
        raise ConfigError("experiment (model) name must not be empty")
    client = MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = experiment_artifact_location(name, config)
        try:
            experiment_id = client.create_experiment(name, artifact_location=location)
            log.info("created MLflow experiment %r (id %s) at %s", name, experiment_id, location)
            return experiment_id
        except MlflowException as exc:
            if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
            log.info("experiment %r was created concurrently; using it", name)
            experiment = client.get_experiment_by_name(name)
            if experiment is None:  # created and deleted again in between: let the caller retry
                raise
    if experiment.lifecycle_stage == "deleted":
        raise ConfigError(
            f"MLflow experiment {name!r} (id {experiment.experiment_id}) is deleted. Restore it "
            f"(`mlflow experiments restore --experiment-id {experiment.experiment_id}`) or delete "
            "it permanently (`mlflow gc`) before training again."
        )
    return experiment.experiment_id
