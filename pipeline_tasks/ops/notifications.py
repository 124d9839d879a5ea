"""Notifications of failures and promotions, as a JSON webhook (Slack-compatible ``text``).

Off by default. Set ``MLOPS_NOTIFY_CONN_ID`` to an Airflow connection that holds the webhook URL;
the Airflow notifier (``plugins/mlops_airflow/notify.py``) resolves it at run time and calls
``send_webhook``. The URL may carry a secret, so it is never logged.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import quote

from pipeline_tasks.lineage.reports import page_url

log = logging.getLogger(__name__)

EVENTS = ("failure", "promotion")
TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Notification:
    event: str  # failure | promotion
    dag_id: str
    run_id: str
    task_id: str
    title: str
    text: str
    url: str  # where to look: the failed task in the Airflow UI, or the promoted version's lineage
    details: dict

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def airflow_task_url(base_url: str, dag_id: str, run_id: str, task_id: str) -> str:
    return (f"{base_url.rstrip('/')}/dags/{quote(dag_id)}/runs/{quote(run_id, safe='')}/tasks/"
            f"{quote(task_id)}")


def failure_notification(*, dag_id: str, run_id: str, task_id: str, summary_text: str,
                         base_url: str = "") -> Notification:
    return Notification(
        event="failure", dag_id=dag_id, run_id=run_id, task_id=task_id,
        title=f"{dag_id}: {task_id} failed",
        text=summary_text,
        url=airflow_task_url(base_url, dag_id, run_id, task_id),
        details={},
    )


def promotion_notification(*, dag_id: str, run_id: str, task_id: str, result: dict,
                           base_url: str = "") -> Notification | None:
    """A notification for a task result that moved ``champion``, else None.

    ``register`` returns ``promoted``; ``rollback`` returns the version it put back live;
    ``deploy`` returns the ``approval`` that made a version champion, when it waited for one.
    """
    if task_id == "deploy":
        result = result.get("approval") or {}
        if not result.get("promoted"):
            return None
    model, version = result.get("model_name"), result.get("version")
    if not model or not version:
        return None
    if task_id == "rollback":
        if result.get("status") != "live":
            return None
        title = f"{model}: champion rolled back to v{version}"
    elif task_id == "deploy":
        title = f"{model}: v{version} approved and promoted to champion"
    elif result.get("promoted"):
        title = f"{model}: v{version} promoted to champion"
    else:
        return None
    return Notification(
        event="promotion", dag_id=dag_id, run_id=run_id, task_id=task_id, title=title,
        text=str(result.get("reason") or ""),
        url=page_url(base_url, "models", model, "versions", str(version)),
        details={"model_name": model, "version": str(version),
                 "previous_champion": result.get("previous_champion")
                 or result.get("previous_version")},
    )


def send_webhook(url: str, notification: Notification, timeout: float = TIMEOUT_S) -> int:
    """POST the notification as JSON to ``url``; returns the HTTP status. Errors propagate."""
    body = {**notification.to_dict(), "summary": notification.text,
            # ``text``: what chat webhooks (Slack, Mattermost, Teams) show
            "text": f"{notification.title}\n{notification.text}\n{notification.url}"}
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        status = resp.status
    log.info("sent %s notification %r (HTTP %d)", notification.event, notification.title, status)
    return status

