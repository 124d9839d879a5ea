"""The artifact behind each pipeline task, as a URL built from what the task returned.

The Airflow plugin turns these into the tasks' extra links; the lineage page and the failure
summaries use the same functions, so every place points at the same thing. No URL leaves here
with a user or password in it (``pipeline_tasks.core.http.strip_userinfo``): a tracking server given
as ``https://user:pw@mlflow.example/`` is linked as ``https://mlflow.example``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from pipeline_tasks.core.config import PipelineConfig
from pipeline_tasks.core.http import strip_userinfo
from pipeline_tasks.lineage.reports import report_url


@dataclass(frozen=True)
class TaskLink:
    """The extra link of one pipeline task: its button name and how to find its URL."""

    task_id: str
    name: str  # the button in the Airflow UI

    def url(self, result: dict[str, Any] | None, config: PipelineConfig,
            base_url: str = "") -> str | None:
        """The URL for this task's result, or None when the task produced nothing to open."""
        if not result:
            return None
        url = _BUILDERS[self.task_id](result, config, strip_userinfo(base_url))
        return strip_userinfo(url) if url else None


def mlflow_ui_url(config: PipelineConfig) -> str:
    """The MLflow UI: the tracking server itself when it is one (production profile), else the
    UI the embedded stack starts beside Airflow. Never with the URI's user and password."""
    uri = config.mlflow_tracking_uri
    if uri.startswith(("http://", "https://")):
        return strip_userinfo(uri).rstrip("/")
    return strip_userinfo(config.mlflow_ui_url)


def mlflow_run_url(config: PipelineConfig, experiment_id: str, run_id: str) -> str:
    return f"{mlflow_ui_url(config)}/#/experiments/{quote(str(experiment_id))}/runs/{quote(run_id)}"


def mlflow_model_version_url(config: PipelineConfig, model_name: str, version: str) -> str:
    return f"{mlflow_ui_url(config)}/#/models/{quote(model_name)}/versions/{quote(str(version))}"


def _data_docs(result, config, base_url):
    return report_url(result.get("data_docs_uri"), config, base_url)


def _manifest(result, config, base_url):
    return report_url(result.get("manifest_uri"), config, base_url)


def _run(result, config, base_url):
    if not result.get("run_id") or not result.get("experiment_id"):
        return None
    return mlflow_run_url(config, result["experiment_id"], result["run_id"])


def _model_version(result, config, base_url):
    if not result.get("model_name") or not result.get("version"):
        return None
    return mlflow_model_version_url(config, result["model_name"], result["version"])


def _endpoint(result, config, base_url):
    endpoint = result.get("endpoint")
    return endpoint.rstrip("/") + "/metadata" if endpoint else None


def _drift_report(result, config, base_url):
    return report_url(result.get("report_uri"), config, base_url)


_BUILDERS = {
    "validate": _data_docs,
    "version": _manifest,
    "train": _run,
    "register": _model_version,
    "deploy": _endpoint,
    "rollback": _endpoint,
    "check_drift": _drift_report,
}

#: One link per task that has an artifact; the other tasks get none.
TASK_LINKS: dict[str, TaskLink] = {link.task_id: link for link in (
    TaskLink("validate", "Data Docs"),
    TaskLink("version", "Dataset manifest"),
    TaskLink("train", "MLflow run"),
    TaskLink("register", "Model version"),
    TaskLink("deploy", "Endpoint metadata"),
    TaskLink("rollback", "Endpoint metadata"),
    TaskLink("check_drift", "Drift report"),
)}
