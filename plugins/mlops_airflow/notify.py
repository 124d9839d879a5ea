"""Failure and promotion notifications through Airflow's notifier interface (``BaseNotifier``).

Off by default: nothing is sent unless ``MLOPS_NOTIFY_CONN_ID`` names an Airflow connection. Its
URL is the webhook (``extra.webhook_url`` wins, e.g. a Slack incoming webhook), so the secret
stays in Airflow's connection store or secrets backend. ``pipeline_task`` attaches the notifiers
to every pipeline task; a DAG may also pass them as its own callbacks.
"""

from __future__ import annotations

from airflow.sdk import BaseNotifier


def webhook_url(conn) -> str:
    """The webhook URL of an Airflow connection: ``extra.webhook_url``, else the connection URI
    (``http``/``https`` connection types)."""
    extra = conn.extra_dejson or {}
    if extra.get("webhook_url"):
        return str(extra["webhook_url"])
    uri = conn.get_uri()
    scheme, _, rest = uri.partition("://")
    if scheme not in ("http", "https"):
        raise ValueError(f"connection {conn.conn_id!r} is of type {conn.conn_type!r}; give it an "
                         "http(s) URL or extra.webhook_url")
    return f"{scheme}://{rest}"


class PipelineNotifier(BaseNotifier):
    """Sends a ``failure`` (task failed, with the gate's summary) or ``promotion`` (champion
    moved) notification to the configured webhook."""

    def __init__(self, event: str):
        super().__init__()
        from pipeline_tasks.ops.notifications import EVENTS

        if event not in EVENTS:
            raise ValueError(f"event must be one of {EVENTS}, got {event!r}")
        self.event = event

    def notify(self, context) -> None:
        from pipeline_tasks.core.config import load_config

        config = load_config()
        if not config.notify_conn_id:
            return
        notification = self.build(context)
        if notification is None:
            return
        from airflow.sdk import Connection

        from mlops_airflow.masking import mask_url
        from pipeline_tasks.ops.notifications import send_webhook

        url = webhook_url(Connection.get(config.notify_conn_id))
        mask_url(url)  # its path or userinfo is the webhook's secret
        send_webhook(url, notification)

    def build(self, context):
        from mlops_airflow.links import ui_base_url
        from pipeline_tasks.ops import notifications

        ti = context["ti"]
        ids = {"dag_id": ti.dag_id, "run_id": ti.run_id, "task_id": ti.task_id,
               "base_url": ui_base_url()}
        if self.event == "failure":
            from pipeline_tasks.core.config import load_config
            from pipeline_tasks.lineage.failures import notification_text

            # a summary and a link, never the raw message: it can quote the data
            text = notification_text(ti.task_id, context.get("exception"), load_config(),
                                     ids["base_url"])
            return notifications.failure_notification(summary_text=text, **ids)
        result = ti.xcom_pull(task_ids=ti.task_id)
        if not isinstance(result, dict):
            return None
        return notifications.promotion_notification(result=result, **ids)
