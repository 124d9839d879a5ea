"""Extra links of the pipeline tasks: each opens the artifact *that* task instance produced.

In Airflow 3 a link's URL is computed on the worker when the task finishes (``get_link`` runs in
the task runner's ``finalize``) and stored as an XCom the UI reads. Here ``get_link`` reads the
task's own return value (or, for a failed gate, the result it left under ``failure_result``) and
asks ``pipeline_tasks.lineage.links`` for the URL. A task that produced nothing stores an empty link, which
the UI does not offer.
"""

from __future__ import annotations

from airflow.sdk import BaseOperatorLink

#: XCom key under which a failed gate leaves its result (e.g. the Data Docs of a failed validation).
FAILURE_RESULT_KEY = "failure_result"


def ui_base_url() -> str:
    """The Airflow UI's base URL (``[api] base_url``), where the plugin's views live; never
    with a user or password (links and notifications carry it)."""
    from airflow.configuration import conf

    from pipeline_tasks.core.http import strip_userinfo

    return strip_userinfo(conf.get("api", "base_url", fallback="") or "")


class StageArtifactLink(BaseOperatorLink):
    """One link of a pipeline task (see ``pipeline_tasks.lineage.links.TASK_LINKS``; ``index``:
    which of the task's links)."""

    task_id = ""
    name = ""
    index = 0

    @property
    def xcom_key(self) -> str:
        suffix = f"_{self.index}" if self.index else ""
        return f"_link_mlops_{self.task_id}{suffix}"

    def get_link(self, operator, *, ti_key) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        from pipeline_tasks.core.config import load_config
        from pipeline_tasks.lineage.links import TASK_LINKS

        result = XCom.get_value(ti_key=ti_key, key="return_value")
        if not isinstance(result, dict):
            result = XCom.get_value(ti_key=ti_key, key=FAILURE_RESULT_KEY)
        if not isinstance(result, dict):
            return ""
        link = TASK_LINKS[self.task_id][self.index]
        return link.url(result, load_config(), ui_base_url()) or ""


def _link_class(task_id: str, name: str, index: int) -> type[StageArtifactLink]:
    cls_name = "".join(part.title() for part in task_id.split("_")) + "ArtifactLink" \
        + (str(index) if index else "")
    return type(cls_name, (StageArtifactLink,), {"task_id": task_id, "name": name,
                                                 "index": index, "__module__": __name__})


def _build() -> dict[str, list[type[StageArtifactLink]]]:
    from pipeline_tasks.lineage.links import TASK_LINKS

    return {task_id: [_link_class(task_id, link.name, i) for i, link in enumerate(links)]
            for task_id, links in TASK_LINKS.items()}


LINK_CLASSES = _build()


def links_for(task_id: str) -> list[BaseOperatorLink]:
    """The extra links of the task ``task_id`` (none for tasks without an artifact)."""
    return [cls() for cls in LINK_CLASSES.get(task_id, ())]
