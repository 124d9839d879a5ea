"""The lineage of a registered model version, and a model's overview, as typed data.

A version reads as a chain: source and interval -> validation result -> dataset snapshot ->
training run -> evaluation decision -> deployments and rollbacks -> drift checks. Everything comes
from where the pipeline already records it (MLflow registry tags and the run, the snapshot
manifest, the deployment history and the drift verdicts in the lake), so the chain works the same
for the embedded SQLite store and an MLflow tracking server.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline_tasks.core import layout, storage
from pipeline_tasks.core.config import PipelineConfig
from pipeline_tasks.core.errors import PipelineError
from pipeline_tasks.deploy.records import DeploymentRecord, deployment_history
from pipeline_tasks.monitoring.drift_check import DriftCheck
from pipeline_tasks.scoring.batch import BatchScoreResult

log = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
PLOTS_DIR = "plots"


class LineageNotFound(PipelineError):
    """No such registered model or version."""


def check_name(kind: str, value: str) -> str:
    """A model name or version used in paths and queries: plain characters only."""
    if not value or not _NAME.fullmatch(value) or ".." in value:
        raise LineageNotFound(f"{kind} {value!r} is not a valid name")
    return value


@dataclass(frozen=True)
class VersionSummary:
    """A registered version and its gate decision, from the registry."""

    model_name: str
    version: str
    aliases: list[str]
    created_at: str
    run_id: str
    dataset_version: str
    blessed: bool | None
    evaluation_reason: str
    primary_metric: str
    primary_metric_value: float | None
    promotion_status: str
    promotion_reason: str
    forced: bool
    force_reason: str
    deployment_status: str
    tags: dict[str, str] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class VersionLineage:
    """The whole chain of one registered version."""

    summary: VersionSummary
    source: str
    interval_start: str
    interval_end: str
    airflow_dag_id: str
    airflow_run_id: str
    validation: dict[str, Any]
    dataset: dict[str, Any]
    training: dict[str, Any]
    evaluation: dict[str, Any]
    deployments: list[DeploymentRecord]
    drift_checks: list[DriftCheck]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["summary"] = self.summary.to_dict()
        data["deployments"] = [  # the lineage view of a record: what happened, not how
            {"deployment_id": d.deployment_id, "action": d.action, "version": d.version,
             "previous_version": d.previous_version, "status": d.status, "outcome": d.outcome,
             "reason": d.reason, "endpoint": d.endpoint, "started_at": d.started_at,
             "finished_at": d.finished_at} for d in self.deployments]
        data["drift_checks"] = [d.to_dict() for d in self.drift_checks]
        return data


@dataclass(frozen=True)
class ModelOverview:
    """A model at a glance: champion, challenger, recent decisions, drift over time."""

    model_name: str
    champion: VersionSummary | None
    challenger: VersionSummary | None
    versions: list[VersionSummary]
    drift_checks: list[DriftCheck]
    batch_runs: list[BatchScoreResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "champion": self.champion.to_dict() if self.champion else None,
            "challenger": self.challenger.to_dict() if self.challenger else None,
            "versions": [v.to_dict() for v in self.versions],
            "drift_checks": [d.to_dict() for d in self.drift_checks],
            "batch_runs": [b.to_dict() for b in self.batch_runs],
        }


@dataclass(frozen=True)
class BatchRunPage:
    """One published batch-scores partition: its summary, its part files and a first look at
    its scores and its rejected rows (each at most ``limit`` rows)."""

    run: BatchScoreResult
    parts: list[dict[str, Any]]
    score_columns: list[str]
    scores: list[dict[str, Any]]
    reject_columns: list[str]
    rejects: list[dict[str, Any]]
    published_at: str = ""


# --- MLflow ------------------------------------------------------------------------------------


def mlflow_client(config: PipelineConfig):
    """A client of the configured tracking and registry stores (no global MLflow state)."""
    from pipeline_tasks.core.tracking import quiet_telemetry

    quiet_telemetry()
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=config.mlflow_tracking_uri,
                        registry_uri=config.mlflow_registry_uri)


def _float(value: Any) -> float | None:
    try:
        return None if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return None


def _summary(mv) -> VersionSummary:
    tags = dict(mv.tags or {})
    blessed = tags.get("blessed")
    created = mv.creation_timestamp
    return VersionSummary(
        model_name=mv.name,
        version=str(mv.version),
        aliases=sorted(getattr(mv, "aliases", []) or []),
        created_at=_ms_iso(created),
        run_id=mv.run_id or tags.get("run_id", ""),
        dataset_version=tags.get("dataset_version", ""),
        blessed=None if blessed is None else blessed == "true",
        evaluation_reason=tags.get("evaluation_reason", ""),
        primary_metric=tags.get("primary_metric", ""),
        primary_metric_value=_float(tags.get("primary_metric_value")),
        promotion_status=tags.get("promotion_status", ""),
        promotion_reason=tags.get("promotion_reason", ""),
        forced=tags.get("forced") == "true",
        force_reason=tags.get("force_reason", ""),
        deployment_status=tags.get("deployment_status", ""),
        tags=tags,
    )


def _ms_iso(ms: Any) -> str:
    from datetime import UTC, datetime

    if not ms:
        return ""
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC).isoformat(timespec="seconds")


def model_index(config: PipelineConfig) -> list[dict[str, Any]]:
    """Every registered model with its champion, challenger and newest version, by name."""
    client = mlflow_client(config)
    out = []
    for model in sorted(client.search_registered_models(max_results=1000), key=lambda m: m.name):
        aliases = {alias: str(v) for alias, v in (model.aliases or {}).items()}
        newest = client.search_model_versions(f"name = '{model.name}'", max_results=1000,
                                              order_by=["version_number DESC"])
        out.append({"name": model.name, "champion": aliases.get("champion"),
                    "challenger": aliases.get("challenger"),
                    "latest": str(max(int(mv.version) for mv in newest)) if newest else None})
    return out


def _model_version(client, model_name: str, version: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(model_name, version)
    except MlflowException as exc:
        raise LineageNotFound(f"model {model_name!r} has no version {version!r}") from exc


def version_summaries(model_name: str, config: PipelineConfig, limit: int = 50,
                      client=None) -> list[VersionSummary]:
    """The newest ``limit`` versions of ``model_name``, newest first."""
    check_name("model", model_name)
    client = client or mlflow_client(config)
    found = client.search_model_versions(f"name = '{model_name}'", max_results=1000)
    # search results carry no aliases on every store: read them from the registered model
    aliases_by_version: dict[str, list[str]] = {}
    if found:
        for alias, version in (client.get_registered_model(model_name).aliases or {}).items():
            aliases_by_version.setdefault(str(version), []).append(alias)
    versions = sorted(found, key=lambda mv: int(mv.version), reverse=True)[:limit]
    out = []
    for mv in versions:
        summary = _summary(mv)
        out.append(VersionSummary(**{**asdict(summary),
                                     "aliases": sorted(aliases_by_version.get(summary.version,
                                                                              []))}))
    return out


# --- the lake ----------------------------------------------------------------------------------


def drift_checks(model_name: str, config: PipelineConfig,
                 version: str | None = None) -> list[DriftCheck]:
    """The drift verdicts of ``model_name`` (of one version if given), oldest interval first.

    Reads ``drift.json`` under ``layout.model_monitoring_dir`` (any depth); none yet gives an
    empty list. ``verdict_uri`` is where a verdict was found, ``report_uri`` the report beside it.
    """
    check_name("model", model_name)
    root = layout.model_monitoring_dir(config, model_name)
    fs, path = storage.url_to_fs(root)
    if not fs.exists(path):
        return []
    checks = []
    for found in fs.glob(path.rstrip("/") + "/**/" + layout.DRIFT_VERDICT):
        verdict_uri = _uri_of(fs, found)
        try:
            data = storage.read_json(verdict_uri)
        except (OSError, ValueError) as exc:  # a verdict being rewritten or damaged: say so, skip
            log.warning("unreadable drift verdict %s: %s", verdict_uri, exc)
            continue
        if version is not None and str(data.get("model_version")) != str(version):
            continue
        checks.append(DriftCheck.from_dict(
            {"model_name": model_name, **data}, verdict_uri=verdict_uri,
            report_uri=storage.join(verdict_uri.rsplit("/", 1)[0], layout.DRIFT_REPORT)))
    return sorted(checks, key=lambda c: (c.interval_end, c.created_at))


def batch_runs(model_name: str, config: PipelineConfig) -> list[BatchScoreResult]:
    """The published batch-scores partitions of ``model_name``, newest interval first (from
    each partition's ``_summary.json``)."""
    check_name("model", model_name)
    fs, path = storage.url_to_fs(layout.model_scores_dir(config, model_name))
    if not fs.exists(path):
        return []
    runs = []
    for found in fs.glob(path.rstrip("/") + "/interval_end=*/" + layout.SCORES_SUMMARY):
        try:
            runs.append(BatchScoreResult.from_xcom(storage.read_json(_uri_of(fs, found))))
        except (OSError, ValueError, TypeError) as exc:  # being replaced or damaged: skip it
            log.warning("unreadable batch summary %s: %s", found, exc)
    return sorted(runs, key=lambda r: r.interval_end, reverse=True)


def batch_run(model_name: str, key: str, config: PipelineConfig, limit: int = 200) -> BatchRunPage:
    """The published partition of ``model_name`` for the interval ``key`` (``LineageNotFound``
    when there is none)."""
    import pyarrow.parquet as pq

    check_name("model", model_name)
    check_name("interval", key)
    folder = layout.scores_partition(config, model_name, key)
    summary_uri = storage.join(folder, layout.SCORES_SUMMARY)
    if not storage.exists(summary_uri):
        raise LineageNotFound(f"{model_name} has no batch scores for the interval {key}")
    summary = storage.read_json(summary_uri)
    run = BatchScoreResult.from_xcom(summary)
    fs, path = storage.url_to_fs(folder)
    parts = []
    for found in sorted(fs.glob(path.rstrip("/") + "/part-*.parquet")):
        with fs.open(found, "rb") as handle:
            rows = pq.ParquetFile(handle).metadata.num_rows
        parts.append({"name": found.rsplit("/", 1)[-1], "rows": rows,
                      "bytes": fs.size(found)})

    def head(uri: str) -> tuple[list[str], list[dict[str, Any]]]:
        fs_, file_path = storage.url_to_fs(uri)
        if not fs_.exists(file_path):
            return [], []
        with fs_.open(file_path, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            columns = parquet.schema_arrow.names
            batch = next(parquet.iter_batches(batch_size=limit), None)
        return columns, (batch.to_pylist() if batch is not None else [])

    score_columns, scores = head(parts and storage.join(folder, parts[0]["name"]) or "")
    reject_columns, rejects = head(storage.join(folder, layout.SCORES_REJECTS))
    return BatchRunPage(run=run, parts=parts, score_columns=score_columns, scores=scores[:20],
                        reject_columns=reject_columns, rejects=rejects,
                        published_at=str(summary.get("published_at", "")))


def _uri_of(fs, path: str) -> str:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return f"file://{path}" if protocol in ("file", "local") else f"{protocol}://{path}"


def deployments(model_name: str, config: PipelineConfig,
                version: str | None = None) -> list[DeploymentRecord]:
    """Deploy and rollback attempts of ``model_name`` (involving ``version`` if given)."""
    check_name("model", model_name)
    return [record for record in deployment_history(model_name, config)
            if version is None or str(version) in (record.version, record.previous_version)]


# --- the chain ---------------------------------------------------------------------------------


def version_lineage(model_name: str, version: str, config: PipelineConfig) -> VersionLineage:
    """The lineage chain of ``model_name`` v``version``."""
    from pipeline_tasks.core.schema import change_from_tags
    from pipeline_tasks.data.versioning import load_manifest

    check_name("model", model_name)
    check_name("version", version)
    client = mlflow_client(config)
    mv = _model_version(client, model_name, version)
    aliases = [a for a, v in (client.get_registered_model(model_name).aliases or {}).items()
               if str(v) == str(version)]
    summary = VersionSummary(**{**asdict(_summary(mv)), "aliases": sorted(aliases)})
    tags = summary.tags

    dataset: dict[str, Any] = {"version_id": summary.dataset_version}
    validation: dict[str, Any] = {}
    manifest: dict[str, Any] = {}
    if summary.dataset_version:
        try:
            manifest = load_manifest(summary.dataset_version, config)
        except FileNotFoundError as exc:
            dataset["missing"] = str(exc)
    if manifest:
        dataset.update(rows=manifest.get("rows"), columns=len(manifest.get("schema") or {}),
                       schema=manifest.get("schema") or {}, first_run=manifest.get("first_run"),
                       manifest_uri=layout.snapshot_manifest(config, summary.dataset_version))
        validation = dict(manifest.get("validation") or {})

    training: dict[str, Any] = {"run_id": summary.run_id}
    if summary.run_id:
        from mlflow.exceptions import MlflowException

        try:
            run = client.get_run(summary.run_id)
            training.update(
                experiment_id=run.info.experiment_id,
                run_name=run.info.run_name,
                status=run.info.status,
                # what decided the fit (model.cache): data, training code, params, libraries
                cache_key=run.data.tags.get("mlops.cache_key", ""),
                code_key=run.data.tags.get("mlops.code_key", ""),
                libraries=run.data.tags.get("mlops.libraries", ""),
                params=dict(sorted(run.data.params.items())),
                metrics={k: round(v, 6) for k, v in sorted(run.data.metrics.items())},
                plots=sorted(a.path.rsplit("/", 1)[-1]
                             for a in client.list_artifacts(summary.run_id, PLOTS_DIR)
                             if not a.is_dir),
            )
        except MlflowException as exc:
            training["missing"] = f"run {summary.run_id} not found: {exc.message}"

    evaluation = {
        "blessed": summary.blessed,
        "reason": summary.evaluation_reason,
        "primary_metric": summary.primary_metric,
        "primary_metric_value": summary.primary_metric_value,
        "evaluated_against_champion": tags.get("evaluated_against_champion", ""),
        "forced": summary.forced,
        "force_reason": summary.force_reason,
        "promotion_status": summary.promotion_status,
        "promotion_reason": summary.promotion_reason,
        "replaced_by": tags.get("replaced_by", ""),
        "breaking_change": tags.get("breaking_change") == "true",
        "schema_change": change_from_tags(tags),
    }
    interval = (manifest.get("interval") or {}) if manifest else {}
    return VersionLineage(
        summary=summary,
        source=tags.get("source") or str(manifest.get("source", "")),
        interval_start=tags.get("airflow.data_interval_start")
        or str(interval.get("interval_start", "")),
        interval_end=tags.get("airflow.data_interval_end") or str(interval.get("interval_end", "")),
        airflow_dag_id=tags.get("airflow.dag_id", ""),
        airflow_run_id=tags.get("airflow.run_id", ""),
        validation=validation,
        dataset=dataset,
        training=training,
        evaluation=evaluation,
        deployments=deployments(model_name, config, version),
        drift_checks=drift_checks(model_name, config, version),
    )


def model_overview(model_name: str, config: PipelineConfig, limit: int = 20) -> ModelOverview:
    """Champion, challenger, the newest ``limit`` decisions and every drift check of a model."""
    check_name("model", model_name)
    client = mlflow_client(config)
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(model_name)
    except MlflowException as exc:
        raise LineageNotFound(f"no registered model {model_name!r}") from exc
    versions = version_summaries(model_name, config, limit=limit, client=client)
    by_alias = {alias: v for v in versions for alias in v.aliases}
    for alias in ("champion", "challenger"):  # an alias on a version older than `limit`
        if alias not in by_alias:
            try:
                mv = client.get_model_version_by_alias(model_name, alias)
            except MlflowException:
                continue
            by_alias[alias] = VersionSummary(**{**asdict(_summary(mv)), "aliases": [alias]})
    return ModelOverview(
        model_name=model_name,
        champion=by_alias.get("champion"),
        challenger=by_alias.get("challenger"),
        versions=versions,
        drift_checks=drift_checks(model_name, config),
        batch_runs=batch_runs(model_name, config),
    )
