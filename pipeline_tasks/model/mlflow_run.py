"""What a training run records in MLflow: params, the dataset input, the model (skops, with a
signature and pinned requirements), metrics, the feature list and the plots.

Also closes the runs an earlier, killed attempt of the same task left ``RUNNING``.
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import Any

from pipeline_tasks.core import model_artifacts, tracking
from pipeline_tasks.core.names import safe_name
from pipeline_tasks.model.estimator import limit_threads
from pipeline_tasks.model.plots import log_plots

log = logging.getLogger(__name__)

# skops refuses to load types it does not know; these are what a fitted
# ColumnTransformer + HistGradientBoosting pipeline holds beyond skops' defaults. The loader
# trusts the same fixed list (model_artifacts.TRUSTED_TYPES), never the one in the MLmodel file.
SKOPS_TRUSTED_TYPES = list(model_artifacts.TRUSTED_TYPES)
_MAX_PARAM_LENGTH = 6000  # MLflow's limit for a param value


def log_run(*, pipe, snapshot, snapshot_uri, X_train, X_holdout, y_holdout, task_type, metric,
            metrics, params, tags, model_name, dataset_version, target, run_key,
            feature_columns, config) -> tuple[str, str, str]:
    """Record one fitted candidate as an MLflow run of experiment ``model_name``; returns
    ``(run_id, experiment_id, model_uri)``."""
    import mlflow
    from mlflow.models import infer_signature

    experiment_id = tracking.ensure_experiment(model_name, config)
    close_abandoned_runs(experiment_id, run_key)
    run_name = f"train-{safe_name(run_key, 'run')}"
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name,
                          tags=tags) as run, warnings.catch_warnings():
        # Two known-noise warnings: MLflow registers its local dataset source twice, and it hints
        # about integer columns, which stay integer on purpose (see normalize_features).
        warnings.filterwarnings("ignore", message="The specified dataset source can be")
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        mlflow.log_params(params)
        dataset = mlflow.data.from_pandas(
            snapshot, source=snapshot_uri, name=dataset_version, targets=target
        )
        mlflow.log_input(dataset, context="training")

        sample = X_train.head(min(len(X_train), 1000))
        signature = nulls_from_full_data(infer_signature(sample, pipe.predict(sample)),
                                          [X_train, X_holdout])
        started = time.perf_counter()
        model_info = mlflow.sklearn.log_model(
            pipe,
            name="model",
            signature=signature,
            input_example=X_train.head(5),
            pip_requirements=pinned_requirements(),
            serialization_format="skops",
            skops_trusted_types=SKOPS_TRUSTED_TYPES,
            tags={"dataset_version": dataset_version, "task_type": task_type},
        )
        log.info("model logged in %.1f s (%s)", time.perf_counter() - started,
                 model_info.model_uri)
        # what evaluation and registration check the files against before loading them
        model_artifacts.record_training_digest(model_info.model_id, model_info.model_uri)
        mlflow.log_metrics(metrics, model_id=model_info.model_id)
        mlflow.log_dict({"features": feature_columns}, "feature_columns.json")
        with limit_threads(config):
            log_plots(pipe, X_holdout, y_holdout, task_type, metric, config)
        return run.info.run_id, experiment_id, model_info.model_uri


def close_abandoned_runs(experiment_id: str, run_key: str) -> None:
    """Mark ``KILLED`` the runs an earlier attempt of this task left ``RUNNING``: a worker that
    was killed (SIGKILL, OOM, a lost machine) never ends its MLflow run, and the retry starts a
    new one. Airflow runs one attempt of a task at a time, so a run of the same ``run_key``
    still RUNNING now is dead."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    for run in client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'",
                                  max_results=1000):
        if run.data.tags.get("run_key") == run_key:
            client.set_tag(run.info.run_id, "mlops.abandoned",
                           "its attempt died before finishing; a later attempt replaced it")
            client.set_terminated(run.info.run_id, status="KILLED")
            log.warning("MLflow run %s of %s was left RUNNING by an attempt that died: marked "
                        "KILLED", run.info.run_id, run_key)


def pinned_requirements() -> list[str]:
    """Exact versions of what the logged model needs (saves MLflow's slow pip inference)."""
    from importlib.metadata import version

    return [f"{dist}=={version(dist)}"
            for dist in ("mlflow", "scikit-learn", "pandas", "numpy", "scipy", "skops")]



def truncate(text: str) -> str:
    """``text`` cut to what MLflow accepts as a param value."""
    return text if len(text) <= _MAX_PARAM_LENGTH else text[: _MAX_PARAM_LENGTH - 3] + "..."


def jsonable(value: Any) -> Any:
    """numpy scalars -> Python; anything else unknown -> str."""
    if hasattr(value, "item") and callable(value.item):
        try:
            return value.item()
        except (TypeError, ValueError):
            pass
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def nulls_from_full_data(signature, frames):
    """Mark a column optional iff the model's data (train and holdout) had a null in it, not
    only the sample the signature was inferred from.

    The signature is the serving contract: the model server refuses a null in a required column.
    """
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    nullable = {name for frame in frames for name in frame.columns[frame.isna().any()]}
    inputs = Schema([ColSpec(type=c.type, name=c.name, required=c.name not in nullable)
                     for c in signature.inputs.inputs])
    return ModelSignature(inputs=inputs, outputs=signature.outputs, params=signature.params)
