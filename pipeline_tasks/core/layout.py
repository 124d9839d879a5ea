"""Where everything lives in the lake and the reports store: the one owner of those paths.

Every other module asks this one for a path instead of joining strings, so a writer and its
readers (the stages, monitoring, lineage, the UI) can never disagree on a folder. Paths derive
from the run (``run_key``: dag id, interval end, run id; see ``run_partition``), never from
``now()``, so a retry or a backfill rewrites the same place.

The lake (``config.lake_uri``)::

    raw/<run_key>/part.parquet                 ingested batch
    quarantine/<run_key>/part.parquet          a batch that failed a critical expectation
    quarantine/<run_key>/validation_result.json   and why
    holdout/<run_key>/holdout.parquet          the evaluation holdout of a training run
    snapshots/<sha256>/{data.parquet,manifest.json,lineage/}   content-addressed datasets
    predictions/date=YYYY-MM-DD/model=<model>/ the prediction log (config.predictions_uri), a
                                               partition per day and model; batch scoring's rows
                                               as part-batch-<model>-<interval>.parquet
    scores/<model>/interval_end=<key>/         batch scores: part-*.parquet, _rejects.parquet,
                                               _summary.json (underscored: not read as data)
    scores/_staging/<model>/<key>/<attempt>/   a scoring attempt's files until they are published
    monitoring/<model>/<run_key>/{drift.json,performance.json,report.html,metrics.prom}
    monitoring/<model>/retrain_requests/...    the retrain policy's memory
    deployments/<model>/...                    deployment records

The reports store (``config.reports_uri``)::

    data_docs/<run_key>/<model>/               Great Expectations Data Docs
    validation/<run_key>/<model>/validation_result.json

Expectation suites: ``config.suites_uri`` holds ``<model>.json`` (inferred on a model's first
run) and ``<model>/<digest>.json`` (proposed by a run allowed to change the schema); the reviewed
suites of the repository are ``<repo_suites_dir>/<name>.json``.
"""

from __future__ import annotations

from typing import Protocol

from pipeline_tasks.core import storage
from pipeline_tasks.core.names import safe_name


class Roots(Protocol):
    """What the layout needs of the configuration: its root URIs (``PipelineConfig`` has them).
    Structural, so the layout never imports the config module (which asks it for paths)."""

    lake_uri: str
    reports_uri: str
    suites_uri: str
    repo_suites_dir: str


def run_partition(dag_id: str, run_id: str, interval_end: str | None = None) -> str:
    """The relative folder of one DAG run: stable across retries and re-runs of the same run.

    ``run_id`` is deterministic for scheduled and backfill runs (it holds the logical date), so
    a retry or a re-run of a backfill rewrites the same place instead of adding a new one.
    """
    parts = [safe_name(dag_id, "_")]
    if interval_end:
        parts.append("interval_end=" + safe_name(interval_end[:10]))
    parts.append("run_id=" + safe_name(run_id))
    return "/".join(parts)


# -- the lake -------------------------------------------------------------------------------

def raw_batch(config: Roots, run_key: str) -> str:
    """The batch ``ingest`` landed for a run."""
    return storage.join(config.lake_uri, "raw", run_key, "part.parquet")


def quarantine_batch(config: Roots, run_key: str) -> str:
    """Where a batch that failed a critical expectation is kept (its result beside it)."""
    return storage.join(config.lake_uri, "quarantine", run_key, "part.parquet")


def quarantine_result(config: Roots, run_key: str) -> str:
    """The validation report kept beside a quarantined batch."""
    return storage.join(config.lake_uri, "quarantine", run_key, "validation_result.json")


def quarantine_file(config: Roots, run_key: str, name: str) -> str:
    """Another file kept in a run's quarantine folder (a refused batch's rejects, say)."""
    return storage.join(config.lake_uri, "quarantine", run_key, safe_name(name, "file"))


def holdout_file(config: Roots, run_key: str) -> str:
    """The holdout a training run set aside for the evaluation gate."""
    return storage.join(config.lake_uri, "holdout", safe_name(run_key, "run"), "holdout.parquet")


def snapshots_root(config: Roots) -> str:
    """The folder of all content-addressed dataset snapshots."""
    return storage.join(config.lake_uri, "snapshots")


def snapshot_dir(config: Roots, version_id: str) -> str:
    """One snapshot's folder (``version_id`` is its sha256)."""
    return storage.join(snapshots_root(config), version_id)


#: The files of a snapshot folder (``snapshot_dir``).
SNAPSHOT_DATA = "data.parquet"
SNAPSHOT_MANIFEST = "manifest.json"


def snapshot_data(config: Roots, version_id: str) -> str:
    """A snapshot's rows."""
    return storage.join(snapshot_dir(config, version_id), SNAPSHOT_DATA)


def snapshot_manifest(config: Roots, version_id: str) -> str:
    """A snapshot's manifest (written last: a snapshot without one is incomplete)."""
    return storage.join(snapshot_dir(config, version_id), SNAPSHOT_MANIFEST)


def snapshot_lineage_record(config: Roots, version_id: str, run_key: str) -> str:
    """The record of one run that produced a snapshot's content (one file per run)."""
    return storage.join(snapshot_dir(config, version_id), "lineage",
                        run_key.replace("/", "__") + ".json")


def monitoring_root(config: Roots) -> str:
    """The folder of every model's monitoring results."""
    return storage.join(config.lake_uri, "monitoring")


def model_monitoring_dir(config: Roots, model_name: str) -> str:
    """One model's monitoring folder (drift and performance checks, retrain requests)."""
    return storage.join(monitoring_root(config), safe_name(model_name, "_"))


def monitoring_run_dir(config: Roots, model_name: str, run_key: str) -> str:
    """One monitoring run's results for a model."""
    return storage.join(model_monitoring_dir(config, model_name), run_key)


#: The files of one monitoring run (in ``monitoring_run_dir``): writers and readers use these.
DRIFT_VERDICT = "drift.json"
DRIFT_REPORT = "report.html"
DRIFT_METRICS = "metrics.prom"
PERFORMANCE_VERDICT = "performance.json"


def retrain_requests_dir(config: Roots, model_name: str) -> str:
    """The retrain policy's memory for a model: one record per retraining it asked for."""
    return storage.join(model_monitoring_dir(config, model_name), "retrain_requests")


def deployments_root(config: Roots) -> str:
    """The folder of every model's deployment records."""
    return storage.join(config.lake_uri, "deployments")


def deployments_dir(config: Roots, model_name: str) -> str:
    """One model's deployment records."""
    return storage.join(deployments_root(config), safe_name(model_name, "_"))


def predictions_root(config: Roots) -> str:
    """The prediction log (partitioned by day)."""
    return storage.join(config.lake_uri, "predictions")


def predictions_day_dir(config: Roots, day: str) -> str:
    """One day's partition of the prediction log (``day`` as ``YYYY-MM-DD``)."""
    return storage.join(predictions_root(config), f"date={day}")


def prediction_partition(root: str, day: str, model_name: str) -> str:
    """The partition of ``model_name``'s rows of ``day`` in the prediction log at ``root``
    (``config.predictions_uri``; the model server has only that URI)."""
    return storage.join(root, f"date={day}", f"model={safe_name(model_name, '_')}")


def predictions_model_dir(config: Roots, day: str, model_name: str) -> str:
    """One model's partition of one day of the prediction log."""
    return prediction_partition(predictions_root(config), day, model_name)


def interval_key(interval_end: str) -> str:
    """How an interval's end names its batch-scores partition: ``2013-03-02`` for midnight,
    else ``2013-03-02T06-00-00`` (hourly and other schedules keep one partition per run)."""
    stamp = interval_end.replace("+00:00", "").replace("Z", "")
    day, _, time = stamp.partition("T")
    time = time.split(".")[0]
    if not time or time in ("00:00:00", "00:00"):
        return safe_name(day)
    return safe_name(f"{day}T{time.replace(':', '-')}")


def scores_root(config: Roots) -> str:
    """The folder of every model's batch scores."""
    return storage.join(config.lake_uri, "scores")


def model_scores_dir(config: Roots, model_name: str) -> str:
    """One model's batch-scores partitions."""
    return storage.join(scores_root(config), safe_name(model_name, "_"))


def scores_partition(config: Roots, model_name: str, key: str) -> str:
    """The published scores of one interval (``key`` from ``interval_key``)."""
    return storage.join(model_scores_dir(config, model_name), f"interval_end={safe_name(key)}")


#: The files of a scores partition beside its ``part-*.parquet`` (the leading underscore keeps
#: them out of what Parquet readers take as the partition's data).
SCORES_SUMMARY = "_summary.json"
SCORES_REJECTS = "_rejects.parquet"


def scores_staging(config: Roots, model_name: str, key: str) -> str:
    """Where the attempts of one interval's scoring write before they publish."""
    return storage.join(scores_root(config), "_staging", safe_name(model_name, "_"),
                        safe_name(key))


def batch_predictions_file(config: Roots, day: str, model_name: str, key: str) -> str:
    """The prediction-log file of one batch-scored interval's rows of ``day``: one name per
    (model, interval, day), so a re-run replaces it."""
    return storage.join(predictions_model_dir(config, day, model_name),
                        f"part-batch-{safe_name(model_name, '_')}-{safe_name(key)}.parquet")


# -- expectation suites ---------------------------------------------------------------------
# Reviewed suites are versioned in the repo (``config.repo_suites_dir``); baselines inferred by a
# run go to the suites store (``config.suites_uri``): ``<model>.json``, and ``<model>/<digest>.json``
# for a suite inferred for a schema change (named by its content).

def repo_suites_root(config: Roots) -> str:
    """The folder of reviewed suites versioned with the code."""
    return config.repo_suites_dir


def repo_suite(config: Roots, file_name: str) -> str:
    """A reviewed suite file in the repo (``file_name`` such as ``flights_is_late.json``)."""
    return storage.join(repo_suites_root(config), safe_name(file_name))


def suites_root(config: Roots) -> str:
    """The store of suites inferred by runs (baselines for review)."""
    return config.suites_uri


def inferred_suite(config: Roots, model_name: str) -> str:
    """The baseline suite inferred on a model's first run."""
    return storage.join(suites_root(config), f"{safe_name(model_name)}.json")


def proposed_suite(config: Roots, model_name: str, digest: str) -> str:
    """A suite inferred for a run that changes the model's inputs, named by its content."""
    return storage.join(suites_root(config), safe_name(model_name, "_"), f"{safe_name(digest, '_')}.json")


# -- reports -------------------------------------------------------------------------------

def data_docs_root(config: Roots) -> str:
    return storage.join(config.reports_uri, "data_docs")


def data_docs_dir(config: Roots, run_key: str, model_name: str) -> str:
    """The Great Expectations Data Docs of one run's validation."""
    return storage.join(data_docs_root(config), run_key, model_name)


def validation_root(config: Roots) -> str:
    return storage.join(config.reports_uri, "validation")


def validation_result(config: Roots, run_key: str, model_name: str) -> str:
    """The full Great Expectations result of one run's validation."""
    return storage.join(validation_root(config), run_key, model_name, "validation_result.json")


def validation_cache_entry(config: Roots, model_name: str, key: str) -> str:
    """A passed validation, by the key of what decided it (``data.validate``): the batch's
    content, the suite, the champion's contract and the validation code."""
    return storage.join(validation_root(config), "_cache", safe_name(model_name, "model"),
                        safe_name(key) + ".json")


def report_roots(config: Roots) -> dict[str, str]:
    """The URI of each kind of stored report the UI may serve, by the name in its URLs."""
    return {
        "data-docs": data_docs_root(config),
        "validation": validation_root(config),
        "snapshots": snapshots_root(config),
        "monitoring": monitoring_root(config),
        "scores": scores_root(config),
    }
