"""Model versions in the MLflow registry: the registered model, one version per training run
(found again on a retry, its number never raced for), and the tags that say what it is.

The registry lock is held by the callers (``registry``); nothing here moves an alias.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)

CREATE_ATTEMPTS = 4
CREATE_BACKOFF_S = 0.5
TAG_VALUE_LIMIT = 5000
# What SqlAlchemyStore raises after its own retries when two writers pick the same version number.
_VERSION_COLLISION = "Model Version creation error"


def ensure_registered_model(client, model_name: str) -> None:
    """Create the registered model unless it exists (on this or another machine)."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import (
        RESOURCE_ALREADY_EXISTS,
        RESOURCE_DOES_NOT_EXIST,
        ErrorCode,
    )

    try:
        client.get_registered_model(model_name)
        return
    except MlflowException as exc:
        if exc.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise
    try:
        client.create_registered_model(
            model_name, description=f"{model_name}: versions registered by the MLOps pipeline"
        )
    except MlflowException as exc:  # another machine created it between our read and write
        if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise


def version_for_run(client, model_name: str, run_id: str) -> str | None:
    """The lowest version registered from ``run_id``, or None."""
    if "'" in run_id or "'" in model_name:  # both are checked names by then: a caller's bug
        raise ValueError("model_name and run_id must not contain quotes")
    found = client.search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'")
    versions = sorted(int(mv.version) for mv in found)
    return str(versions[0]) if versions else None


def find_or_create_version(client, model_name, run_id, model_uri, tags, decision,
                            lineage) -> tuple[str, bool]:
    """The run's version, and whether an earlier call (a retried or cleared task) made it."""
    from mlflow.exceptions import MlflowException

    existing = version_for_run(client, model_name, run_id)
    if existing is not None:
        log.info("run %s is already registered as %s v%s: reusing it", run_id, model_name,
                 existing)
        for key, value in tags.items():  # a retry may carry a fresher decision
            client.set_model_version_tag(model_name, existing, key, value)
        return existing, True
    model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    description = (
        f"Trained by run {run_id} on dataset {lineage.get('dataset_version', '?')}. "
        f"Evaluation: {decision['reason']}"
    )
    for attempt in range(CREATE_ATTEMPTS):
        try:
            created = client.create_model_version(
                name=model_name, source=model_uri, run_id=run_id, tags=tags,
                description=clip(description), model_id=model_id,
            )
            log.info("created %s v%s from %s", model_name, created.version, model_uri)
            return str(created.version), False
        except MlflowException as exc:
            if _VERSION_COLLISION not in exc.message or attempt == CREATE_ATTEMPTS - 1:
                raise
            wait = CREATE_BACKOFF_S * 2**attempt
            log.warning("model version number collision for %s (attempt %d); retrying in "
                        "%.1f s", model_name, attempt + 1, wait)
            time.sleep(wait)
            existing = version_for_run(client, model_name, run_id)
            if existing is not None:  # a concurrent call for the same run made it
                return existing, False
    raise AssertionError("unreachable")


def version_tags(run_id: str, decision: dict, lineage: dict[str, str]) -> dict[str, str]:
    """The tags of a run's version: its lineage and the evaluation decision behind it."""
    metric = decision["primary_metric"]
    value = decision["candidate_metrics"].get(metric)
    tags = {str(k): clip(str(v)) for k, v in (lineage or {}).items()}
    tags.update({
        "run_id": run_id,
        "blessed": str(bool(decision["blessed"])).lower(),
        "evaluation_reason": clip(str(decision["reason"])),
        "primary_metric": str(metric),
        "primary_metric_value": "" if value is None else repr(float(value)),
        "evaluated_against_champion": str(decision.get("champion_version") or "none"),
        "forced": str(bool(decision.get("forced"))).lower(),
        "breaking_change": str(bool(decision.get("breaking_change"))).lower(),
    })
    if decision.get("schema_change"):
        from pipeline_tasks.core.schema import SchemaDiff

        diff = SchemaDiff.from_dict(decision["schema_change"])
        tags.update({k: clip(v) for k, v in diff.tags().items()})
    if decision.get("forced"):
        tags["force_reason"] = clip(str(decision.get("force_reason") or ""))
    return tags


def clip(text: str) -> str:
    """``text`` cut to what MLflow accepts as a tag value."""
    return text if len(text) <= TAG_VALUE_LIMIT else text[: TAG_VALUE_LIMIT - 3] + "..."
