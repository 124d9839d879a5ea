"""The artifact behind each pipeline task, as a URL built from what the task returned.

The Airflow plugin turns these into the tasks' extra links; the lineage page and the failure
summaries use the same functions, so every place points at the same thing. No URL leaves here
with a user or password in it (``pipeline_tasks.core.http.strip_userinfo``): a tracking server given
as ``https://user:pw@mlflow.example/`` is linked as ``https://mlflow.example``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from pipeline_tasks.core.config import PipelineConfig
from pipeline_tasks.core.http import model_url, strip_userinfo
from pipeline_tasks.lineage.reports import page_url, report_url


@dataclass(frozen=True)
class TaskLink:
    """One extra link of a pipeline task: its button name and how to find its URL."""

    task_id: str
    name: str  # the button in the Airflow UI
    build: Callable[[dict[str, Any], PipelineConfig, str], str | None] = field(
        compare=False, repr=False, default=lambda result, config, base_url: None)

    def url(self, result: dict[str, Any] | None, config: PipelineConfig,
            base_url: str = "") -> str | None:
        """The URL for this task's result, or None when the task produced nothing to open."""
        if not result:
            return None
        url = self.build(result, config, strip_userinfo(base_url))
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
    """The deployed model's metadata on its endpoint (which may serve other models too)."""
    endpoint = result.get("endpoint")
    if not endpoint:
        return None
    name = result.get("model_name")
    return (model_url(endpoint, str(name)) if name else endpoint.rstrip("/")) + "/metadata"


def _drift_report(result, config, base_url):
    return report_url(result.get("report_uri"), config, base_url)


def _model_card(result, config, base_url):
    if not result.get("model_name") or not result.get("version"):
        return None
    return page_url(base_url, "models", result["model_name"], "versions", result["version"],
                    "card")


def _batch_page(result, config, base_url):
    if not result.get("model_name") or not result.get("interval_key") \
            or result.get("status", "published") != "published":
        return None
    return page_url(base_url, "models", result["model_name"], "batch", result["interval_key"])


def _batch_rejects(result, config, base_url):
    page = _batch_page(result, config, base_url)
    return page + "#rejects" if page else None


def _batch_summary(result, config, base_url):
    return report_url(result.get("summary_uri"), config, base_url)


#: The links of each task that has an artifact (several for a task with several); the other
#: tasks get none.
TASK_LINKS: dict[str, tuple[TaskLink, ...]] = {}
for _link in (
    TaskLink("validate", "Data Docs", _data_docs),
    TaskLink("version", "Dataset manifest", _manifest),
    TaskLink("train", "MLflow run", _run),
    TaskLink("register", "Model version", _model_version),
    TaskLink("register", "Model card", _model_card),
    TaskLink("deploy", "Endpoint metadata", _endpoint),
    TaskLink("rollback", "Endpoint metadata", _endpoint),
    TaskLink("check_drift", "Drift report", _drift_report),
    TaskLink("resolve_model", "Model version", _model_version),
    TaskLink("score", "Scored partition", _batch_page),
    TaskLink("score", "Rejected rows", _batch_rejects),
    TaskLink("score", "Scoring summary", _batch_summary),
):
    TASK_LINKS[_link.task_id] = (*TASK_LINKS.get(_link.task_id, ()), _link)
del _link
