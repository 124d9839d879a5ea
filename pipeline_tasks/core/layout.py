"""Where everything lives in the lake and the reports store: the one owner of those paths.

Every other module asks this one for a path instead of joining strings, so a writer and its
readers (the stages, monitoring, lineage, the UI) can never disagree on a folder. Paths derive
from the run (``run_key``: dag id, interval end, run id; see ``run_partition``), never from
``now()``, so a retry or a backfill rewrites the same place.

The lake (``config.lake_uri``)::

    raw/<run_key>/part.parquet                 ingested batch
    quarantine/<run_key>/part.parquet          a batch that failed a critical expectation
    holdout/<run_key>/holdout.parquet          the evaluation holdout of a training run
    snapshots/<sha256>/{data.parquet,manifest.json,lineage/}   content-addressed datasets
    predictions/date=YYYY-MM-DD/...            the prediction log (config.predictions_uri)
    monitoring/<model>/<run_key>/{drift.json,performance.json,report.html,metrics.prom}
    monitoring/<model>/retrain_requests/...    the retrain policy's memory
    deployments/<model>/...                    deployment records

The reports store (``config.reports_uri``)::

    data_docs/<run_key>/<model>/               Great Expectations Data Docs
    validation/<run_key>/<model>/validation_result.json
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline_tasks.core import storage
from pipeline_tasks.core.names import safe_name

if TYPE_CHECKING:
    from pipeline_tasks.core.config import PipelineConfig


def run_partition(dag_id: str, run_id: str, interval_end: str | None = None) -> str:
    """The relative folder of one DAG run: stable across retries and re-runs of the same run.

    ``run_id`` is deterministic for scheduled and backfill runs (it holds the logical date), so
    a retry or a re-run of a backfill rewrites the same place instead of adding a new one.
    """
    parts = [safe_name(dag_id)]
    if interval_end:
        parts.append("interval_end=" + safe_name(interval_end[:10]))
    parts.append("run_id=" + safe_name(run_id))
    return "/".join(parts)


# -- the lake -------------------------------------------------------------------------------

def raw_batch(config: PipelineConfig, run_key: str) -> str:
    """The batch ``ingest`` landed for a run."""
    return storage.join(config.lake_uri, "raw", run_key, "part.parquet")


def quarantine_batch(config: PipelineConfig, run_key: str) -> str:
    """Where a batch that failed a critical expectation is kept (its result beside it)."""
    return storage.join(config.lake_uri, "quarantine", run_key, "part.parquet")


def holdout_file(config: PipelineConfig, run_key: str) -> str:
    """The holdout a training run set aside for the evaluation gate."""
    return storage.join(config.lake_uri, "holdout", safe_name(run_key, "run"), "holdout.parquet")


def snapshots_root(config: PipelineConfig) -> str:
    """The folder of all content-addressed dataset snapshots."""
    return storage.join(config.lake_uri, "snapshots")


def snapshot_dir(config: PipelineConfig, version_id: str) -> str:
    """One snapshot's folder (``version_id`` is its sha256)."""
    return storage.join(snapshots_root(config), version_id)


def monitoring_root(config: PipelineConfig) -> str:
    """The folder of every model's monitoring results."""
    return storage.join(config.lake_uri, "monitoring")


def model_monitoring_dir(config: PipelineConfig, model_name: str) -> str:
    """One model's monitoring folder (drift and performance checks, retrain requests)."""
    return storage.join(monitoring_root(config), safe_name(model_name))


def monitoring_run_dir(config: PipelineConfig, model_name: str, run_key: str) -> str:
    """One monitoring run's results for a model."""
    return storage.join(model_monitoring_dir(config, model_name), run_key)


def deployments_root(config: PipelineConfig) -> str:
    """The folder of every model's deployment records."""
    return storage.join(config.lake_uri, "deployments")


def deployments_dir(config: PipelineConfig, model_name: str) -> str:
    """One model's deployment records."""
    return storage.join(deployments_root(config), safe_name(model_name))


def predictions_root(config: PipelineConfig) -> str:
    """The prediction log (partitioned by day)."""
    return storage.join(config.lake_uri, "predictions")


# -- reports -------------------------------------------------------------------------------

def data_docs_root(config: PipelineConfig) -> str:
    return storage.join(config.reports_uri, "data_docs")


def data_docs_dir(config: PipelineConfig, run_key: str, model_name: str) -> str:
    """The Great Expectations Data Docs of one run's validation."""
    return storage.join(data_docs_root(config), run_key, model_name)


def validation_root(config: PipelineConfig) -> str:
    return storage.join(config.reports_uri, "validation")


def validation_result(config: PipelineConfig, run_key: str, model_name: str) -> str:
    """The full Great Expectations result of one run's validation."""
    return storage.join(validation_root(config), run_key, model_name, "validation_result.json")


def report_roots(config: PipelineConfig) -> dict[str, str]:
    """The URI of each kind of stored report the UI may serve, by the name in its URLs."""
    return {
        "data-docs": data_docs_root(config),
        "validation": validation_root(config),
        "snapshots": snapshots_root(config),
        "monitoring": monitoring_root(config),
    }
