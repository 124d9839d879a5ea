"""OpenLineage datasets of each pipeline stage, for ``apache-airflow-providers-openlineage``.

The provider's listener runs in every task process and sends a START and a COMPLETE (or FAIL)
run event per task. A ``@task`` has no extractor of its own, so ``pipeline_task`` gives each
stage's operator ``get_openlineage_facets_on_complete`` (the provider's ``DefaultExtractor``
calls it, also on failure): it returns the inputs and outputs this module derived from the
stage's typed arguments and result (``record``). The events of one training run chain

    source ─ingest→ raw batch ─version→ snapshot ─train→ MLflow model ─register→ models:/<m>/<v>
           ─deploy→ endpoint

and monitoring adds ``check_drift``: prediction log + training snapshot + models:/<m>/<v> →
drift report; batch scoring: source + models:/<m>/<v> → scores partition.

Dataset naming (stable, from the layout; OpenLineage naming conventions):

- lake, landing and report files: namespace ``file`` and the absolute path (``s3://bucket`` and
  the key for a bucket, ``<scheme>://<host>`` and the path for other stores);
- a SQL source: namespace ``airflow-connection://<conn id>``, name ``query`` (never the URL: it
  may hold a password);
- MLflow models: namespace ``mlflow`` (``mlflow://<host>`` for a registry server), name the model
  URI: ``models:/<name>/<version>``, or the logged model's URI for a candidate;
- the serving endpoint: namespace ``http://<host>:<port>``, name its path (``/``).

Model names and sources come from trigger params: they enter dataset names as data only (a JSON
string; URIs are parsed, never evaluated), and user info in a URL is dropped. Lineage never fails
a task: ``record`` logs and returns on any error, and the provider catches and logs what goes
wrong while it extracts or sends (a broken transport costs a warning in the task log).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ref:
    """One OpenLineage dataset: ``namespace`` and ``name``; ``version`` and ``columns`` become
    the ``version`` and ``schema`` facets."""

    namespace: str
    name: str
    version: str | None = None
    columns: tuple[str, ...] = field(default_factory=tuple)


def storage_ref(uri: str, **facets: Any) -> Ref:
    """A file or object-store URI (or a plain local path) as a dataset."""
    import os

    parsed = urlparse(str(uri))
    host = parsed.hostname or ""
    if parsed.port:
        host = f"{host}:{parsed.port}"
    if parsed.scheme in ("", "file"):
        path = parsed.path if parsed.scheme else str(uri)
        return Ref("file", os.path.abspath(path), **facets)
    if parsed.scheme in ("s3", "s3a", "gs", "gcs"):
        scheme = "gs" if parsed.scheme == "gcs" else parsed.scheme.replace("s3a", "s3")
        return Ref(f"{scheme}://{host}", parsed.path.lstrip("/"), **facets)
    return Ref(f"{parsed.scheme}://{host}", parsed.path or "/", **facets)


def mlflow_namespace() -> str:
    """``mlflow``, or ``mlflow://<host>`` when the registry is a server (never its user info)."""
    from pipeline_tasks.core.config import load_config

    parsed = urlparse(load_config().mlflow_registry_uri or "")
    if parsed.scheme in ("http", "https") and parsed.hostname:
        return f"mlflow://{parsed.hostname}" + (f":{parsed.port}" if parsed.port else "")
    return "mlflow"


def model_ref(model_name: str, version: Any) -> Ref:
    from mlops_airflow.assets import model_uri

    return Ref(mlflow_namespace(), model_uri(model_name, version), version=str(version))


def endpoint_ref(url: str) -> Ref:
    parsed = urlparse(str(url))
    host = parsed.hostname or ""
    if parsed.port:
        host = f"{host}:{parsed.port}"
    return Ref(f"{parsed.scheme or 'http'}://{host}", parsed.path or "/")


def source_ref(source: str, params: dict[str, Any]) -> Ref:
    """The run's source: a SQL query on an (allow-listed) connection, else files."""
    conn_id = params.get("sql_conn_id")
    if conn_id:
        return Ref(f"airflow-connection://{conn_id}", "query")
    return storage_ref(source)


def stage_datasets(task_id: str, inputs: dict[str, Any], result: Any,
                   params: dict[str, Any]) -> tuple[list[Ref], list[Ref]]:
    """The input and output datasets of one stage: ``inputs`` are its typed upstream results by
    argument name, ``result`` its typed result (None: it has not returned)."""
    ins: list[Ref] = []
    outs: list[Ref] = []
    ingested, versioned, trained = (inputs.get(k) for k in ("ingested", "versioned", "trained"))
    registered = inputs.get("registered")
    if task_id == "ingest" and result is not None:
        ins.append(source_ref(result.source, params))
        outs.append(storage_ref(result.uri, columns=tuple(result.columns)))
    elif task_id == "validate" and ingested is not None:
        ins.append(storage_ref(ingested.uri))
        if result is not None and result.result_uri:
            outs.append(storage_ref(result.result_uri))
    elif task_id == "version" and ingested is not None:
        ins.append(storage_ref(ingested.uri))
        if result is not None:
            outs.append(storage_ref(result.data_uri, version=result.version_id,
                                    columns=tuple(result.columns)))
    elif task_id == "train" and versioned is not None:
        ins.append(storage_ref(versioned.data_uri, version=versioned.version_id))
        if result is not None:
            outs.append(Ref(mlflow_namespace(), result.model_uri))
    elif task_id == "evaluate" and trained is not None:
        ins += [Ref(mlflow_namespace(), trained.model_uri), storage_ref(trained.holdout_uri)]
    elif task_id == "register" and trained is not None:
        ins.append(Ref(mlflow_namespace(), trained.model_uri))
        if result is not None:
            outs.append(model_ref(result.model_name, result.version))
    elif task_id in ("deploy", "rollback"):
        if registered is not None:
            ins.append(model_ref(registered.model_name, registered.version))
        if result is not None:
            if task_id == "rollback":
                ins.append(model_ref(result.model_name, result.version))
            outs.append(endpoint_ref(result.endpoint))
    elif task_id == "check_drift" and result is not None:
        if result.current_source:
            ins.append(storage_ref(result.current_source))
        if result.reference_dataset_version:
            from pipeline_tasks.core import layout
            from pipeline_tasks.core.config import load_config

            ins.append(storage_ref(layout.snapshot_data(load_config(),
                                                        result.reference_dataset_version),
                                   version=result.reference_dataset_version))
        if result.model_version is not None:
            ins.append(model_ref(result.model_name, result.model_version))
        if result.report_uri:
            outs.append(storage_ref(result.report_uri))
    elif task_id == "resolve_model" and result is not None:
        ins.append(model_ref(result.model_name, result.version))
    elif task_id == "score" and result is not None:
        ins += [source_ref(result.source, params),
                model_ref(result.model_name, result.model_version)]
        outs.append(storage_ref(result.scores_uri))
    return ins, outs


#: what ``record`` derived, by task instance (one task runs per process; the key is a guard)
_RECORDED: dict[tuple, tuple[list[Ref], list[Ref]]] = {}


def _key(ti: Any) -> tuple:
    return (getattr(ti, "dag_id", None), getattr(ti, "task_id", None),
            getattr(ti, "run_id", None), getattr(ti, "map_index", -1))


def record(task_id: str, inputs: dict[str, Any], result: Any, context: dict[str, Any]) -> None:
    """Keep the stage's datasets for the provider's COMPLETE/FAIL event. Never raises."""
    try:
        ins, outs = stage_datasets(task_id, inputs, result, dict(context.get("params") or {}))
        _RECORDED[_key(context.get("ti"))] = (ins, outs)
    except Exception:  # lineage is a report: it must not fail the stage
        log.warning("OpenLineage: could not derive the datasets of %s", task_id, exc_info=True)


def _dataset(ref: Ref):
    from openlineage.client.event_v2 import Dataset
    from openlineage.client.facet_v2 import dataset_version_dataset, schema_dataset

    facets: dict[str, Any] = {}
    if ref.version:
        facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(
            datasetVersion=ref.version)
    if ref.columns:
        facets["schema"] = schema_dataset.SchemaDatasetFacet(
            fields=[schema_dataset.SchemaDatasetFacetFields(name=c) for c in ref.columns])
    return Dataset(namespace=ref.namespace, name=ref.name, facets=facets)


def facets_on_complete(task_instance):
    """``get_openlineage_facets_on_complete`` of a pipeline stage's operator: the datasets
    ``record`` kept (none for a task that recorded nothing)."""
    from airflow.providers.openlineage.extractors import OperatorLineage

    ins, outs = _RECORDED.get(_key(task_instance), ([], []))
    return OperatorLineage(inputs=[_dataset(r) for r in ins],
                           outputs=[_dataset(r) for r in outs])
