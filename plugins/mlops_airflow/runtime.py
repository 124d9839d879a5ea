"""What a DAG task needs from Airflow, as plain values for ``pipeline_tasks.stages``.

- ``run_spec(context)``: the run's identity, data interval and trigger params as a ``RunSpec``,
  with the SQL connection ids (source, batch output) resolved to URLs by their common.sql hooks
  (at run time, never while parsing), each checked against its allow-list first; the MLflow and
  lake connections (``connections.py``) are applied to the task's environment before that.
- ``dag_args``: what every pipeline DAG shares (no catchup, one active run, retries, owner).
- ``pipeline_task``: ``@task`` whose bad-input errors fail the task at once. Retrying a bad file
  or a failed quality gate cannot help, so a ``PipelineError`` that is not ``retryable`` becomes
  ``AirflowFailException``; ``StageSkipped`` (nothing to do) marks the task skipped; anything
  else (a flaky store, a lost worker) is retried. A failed gate's log shows a short summary first
  (what failed, where the report is, what to do: ``pipeline_tasks.lineage.failures``), and the task gets
  the extra link to its artifact (``links.py``) and the failure/promotion notifiers
  (``notify.py``, off unless configured).
- Stages take and return typed results; the glue alone converts: ``from_xcom`` turns the
  upstream XCom dicts a task body receives into the types its stage takes, ``to_xcom`` stores
  the stage's result as its XCom dict (``typed_args`` does the first for a ``@task.branch``).
- Before a task does anything, every secret it may print is registered with Airflow's secrets
  masker (``masking.py``), so task logs show ``***`` instead.
"""

from __future__ import annotations

import functools
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from mlops_airflow.connections import apply_connections, sql_url
from mlops_airflow.masking import mask_task_secrets

log = logging.getLogger(__name__)


#: The demo feed's first day: schedules and backfills may start from there.
START_DATE = datetime(2013, 1, 1, tzinfo=UTC)


def dag_args(dag_id: str, *, schedule: Any, doc_md: str | None, params: dict, tags: list[str],
             retry_delay: timedelta, execution_timeout: timedelta,
             exponential_backoff: bool = False, max_active_runs: int = 1) -> dict[str, Any]:
    """``@dag`` keyword arguments shared by the pipeline's DAGs. Every task, pipeline stage or
    not (the approval step, a branch), notifies on failure."""
    from mlops_airflow.notify import PipelineNotifier

    return {
        "dag_id": dag_id, "schedule": schedule, "start_date": START_DATE, "catchup": False,
        "max_active_runs": max_active_runs, "tags": ["mlops", *tags], "doc_md": doc_md, "params": params,
        "default_args": {
            "owner": "mlops", "retries": 2, "retry_delay": retry_delay,
            "retry_exponential_backoff": exponential_backoff,
            "execution_timeout": execution_timeout,
            "on_failure_callback": [PipelineNotifier("failure")],
        },
    }


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def run_spec(context: dict[str, Any]):
    """Build the ``RunSpec`` of the running task's DAG run."""
    from pipeline_tasks.stages import RunSpec

    mask_task_secrets()
    for source in apply_connections():  # MLflow and lake credentials: before any stage runs
        log.info("%s", source)
    dag_run = context["dag_run"]
    end = context.get("data_interval_end") or dag_run.run_after
    start = context.get("data_interval_start") or (end - timedelta(days=1))
    params = dict(context.get("params") or {})
    trigger = retrain_request(context)
    if trigger:  # a run the monitoring DAG asked for: its model, data and interval
        for key in ("model_name", "source", "target", "serving_target", "serving_port"):
            if trigger.get(key) and key not in (dag_run.conf or {}):  # an explicit conf wins
                params[key] = trigger[key]
        if trigger.get("interval_end"):
            end = datetime.fromisoformat(trigger["interval_end"])
            start = end - timedelta(days=1)
    sql_url, output_sql_url = resolve_sql_urls(params)
    return RunSpec(
        dag_id=dag_run.dag_id,
        run_id=dag_run.run_id,
        interval_start=_iso(start),
        interval_end=_iso(end),
        logical_date=_iso(context.get("logical_date")),
        params=params,
        sql_url=sql_url,
        output_sql_url=output_sql_url,
        trigger=trigger,
    )


def retrain_request(context: dict[str, Any]) -> dict:
    """The newest retrain request among the asset events that triggered this run ({} if the run
    was not triggered by one)."""
    events = context.get("triggering_asset_events") or {}
    found = [event for evs in events.values() for event in evs
             if (event.extra or {}).get("drift_run_id")]
    if not found:
        return {}
    return dict(max(found, key=lambda event: event.timestamp).extra)


def resolve_sql_urls(params: dict[str, Any]) -> tuple[str | None, str | None]:
    """The SQLAlchemy URLs of the run's source (``sql_conn_id``) and batch output
    (``output_conn_id``) connections, each checked against its allow-list before the connection
    is read, and built by the connection's common.sql hook (``connections.sql_url``)."""
    from pipeline_tasks.core.allowlists import check_output_conn_id, check_sql_conn_id
    from pipeline_tasks.core.config import load_config

    urls: list[str | None] = []
    for field, check in (("sql_conn_id", check_sql_conn_id),
                         ("output_conn_id", check_output_conn_id)):
        if not params.get(field):
            urls.append(None)
            continue
        check(params[field], load_config())  # before reading the connection
        urls.append(sql_url(params[field], field))
    return urls[0], urls[1]


#: What a retry says first: Airflow may report a killed attempt as "likely out of memory".
RETRY_NOTE = ("attempt %s: an earlier attempt of this task did not finish (killed, out of memory or "
              "a lost worker; Airflow may say 'likely out of memory'). This attempt cleans up after "
              "it: partial files it left are removed, an MLflow run it left RUNNING is marked "
              "KILLED, a model server it was starting is stopped by the serving supervisor, and a "
              "model version it registered is reused; each is logged below.")

#: Tasks whose success may move ``champion`` (a promotion notification).
PROMOTING_TASKS = ("register", "deploy", "rollback")


def gate_summary(task_id: str, exc: Exception) -> str:
    """The gate's summary (what failed, the report, what to do) as text for the task log."""
    from mlops_airflow.links import ui_base_url
    from pipeline_tasks.core.config import load_config
    from pipeline_tasks.lineage.failures import summarize_failure

    return summarize_failure(task_id, exc, load_config(), ui_base_url()).text()


def fail_with_summary(task_id: str, exc: Exception) -> AirflowFailException:
    """Log the gate's summary and leave its result for the task's extra link; returns the
    exception that fails the task without retries."""
    from mlops_airflow.links import FAILURE_RESULT_KEY

    summary = gate_summary(task_id, exc)
    log.error("%s\n(bad input or a failed gate: not retried)", summary)
    result = getattr(exc, "result", None)
    if isinstance(result, dict) and result:
        from airflow.sdk import get_current_context

        get_current_context()["ti"].xcom_push(FAILURE_RESULT_KEY, result)
    return AirflowFailException(summary)


def to_xcom(result: Any) -> Any:
    """A stage's result as its XCom payload: a typed (dataclass) result becomes its dict
    (``to_xcom()``, else ``to_dict()``: the keys the UI links, notifications and tests read);
    a dict or a branch's task id is stored as it is. The one place results leave the types."""
    import dataclasses

    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        convert = getattr(result, "to_xcom", None) or getattr(result, "to_dict", None)
        return convert() if convert else dataclasses.asdict(result)
    return result


def from_xcom(fn, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """``fn``'s arguments with each upstream XCom dict turned into the typed result its stage
    takes, by argument name (``pipeline_tasks.stages.XCOM_TYPES``: ``ingested`` becomes an
    ``IngestResult``, ...); None (a skipped upstream task) and other arguments stay as they are.
    The one place results enter the types. The types are imported here, at run time, never
    while a DAG file is parsed."""
    import inspect

    from pipeline_tasks.core.results import typed
    from pipeline_tasks.stages import xcom_type

    bound = inspect.signature(fn).bind_partial(*args, **kwargs)
    for name, value in bound.arguments.items():
        cls = xcom_type(name)
        if cls is not None:
            bound.arguments[name] = typed(cls, value)
    return bound.args, bound.kwargs


def typed_args(fn):
    """Decorate a task body so that it receives its upstream results typed (``from_xcom``):
    for a task that is not a ``pipeline_task`` (a ``@task.branch``)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        args, kwargs = from_xcom(fn, args, kwargs)
        return fn(*args, **kwargs)

    return wrapper


def stage_inputs(fn, args: tuple, kwargs: dict) -> dict[str, Any]:
    """The typed upstream results among ``fn``'s arguments, by name (for lineage)."""
    import inspect

    from pipeline_tasks.stages import XCOM_TYPES

    bound = inspect.signature(fn).bind_partial(*args, **kwargs)
    return {name: value for name, value in bound.arguments.items()
            if name in XCOM_TYPES and value is not None}


def skip_the_rest(result: dict[str, Any], context: dict[str, Any]) -> None:
    """Store ``result`` as the task's XCom, then skip every task downstream of it at once, the
    way Airflow's short-circuit does (``DownstreamTasksSkipped``): no task process starts and
    no skip cascades through the scheduler one level per loop. The task itself succeeds."""
    from airflow.sdk.exceptions import DownstreamTasksSkipped

    context["ti"].xcom_push("return_value", result)
    log.info("every task after this one is skipped: %s", result["nothing_new"])
    raise DownstreamTasksSkipped(
        tasks=sorted(context["task"].get_flat_relative_ids(upstream=False)))


def pipeline_task(func=None, **task_kwargs):
    """``@task`` for a pipeline stage: input errors fail fast, other errors are retried.

    The body receives its upstream results typed (``from_xcom``) and its typed result is stored
    as its XCom dict (``to_xcom``). With ``outlets``, the result's ``asset_extra`` becomes the
    extra of the asset events the task emits, and an ``AssetAlias`` outlet gets the event of the
    run's model (``assets.announce``; a task that is skipped emits none). The stage's datasets go
    to the OpenLineage provider's events (``lineage_events``)."""

    def decorate(fn):
        from mlops_airflow import lineage_events
        from mlops_airflow.assets import announce
        from mlops_airflow.links import links_for
        from mlops_airflow.notify import PipelineNotifier

        task_id = fn.__name__

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            from pipeline_tasks.core.errors import PipelineError, StageSkipped

            mask_task_secrets()  # before anything this task does can print a secret
            ti = kwargs.get("ti")
            if ti is not None and (getattr(ti, "try_number", 1) or 1) > 1:
                log.warning(RETRY_NOTE, ti.try_number)
            try:
                call_args, call_kwargs = from_xcom(fn, args, kwargs)
                inputs = stage_inputs(fn, call_args, call_kwargs)
                lineage_events.record(task_id, inputs, None, kwargs)  # a FAIL event's inputs
                typed_result = fn(*call_args, **call_kwargs)
                result = to_xcom(typed_result)
                lineage_events.record(task_id, inputs, typed_result, kwargs)
                announce(task_kwargs.get("outlets") or (), typed_result, result, kwargs)
                if result.get("nothing_new"):  # the rest of the run has nothing to do
                    skip_the_rest(result, kwargs)
                return result
            except StageSkipped as exc:
                if exc.result:  # a gate stopped the run without failing it: say why, up front
                    log.warning("%s", gate_summary(task_id, exc))
                else:
                    log.info("%s skipped: %s", fn.__name__, exc)
                raise AirflowSkipException(str(exc)) from exc
            except PipelineError as exc:
                if exc.retryable:  # a service that may answer next time: Airflow retries
                    raise
                raise fail_with_summary(task_id, exc) from exc

        task_kwargs.setdefault("on_failure_callback", [PipelineNotifier("failure")])
        if task_id in PROMOTING_TASKS:
            task_kwargs.setdefault("on_success_callback", [PipelineNotifier("promotion")])
        decorated = task(task_id=task_id, **task_kwargs)(wrapper)
        links = links_for(task_id)

        @functools.wraps(fn)
        def make_task(*args, **kwargs):
            out = decorated(*args, **kwargs)
            if links:  # links are per task instance: only this task's artifact
                out.operator.operator_extra_links = links
            # the OpenLineage provider's DefaultExtractor asks the operator for its datasets
            out.operator.get_openlineage_facets_on_complete = lineage_events.facets_on_complete
            return out

        return make_task

    return decorate(func) if func is not None else decorate
