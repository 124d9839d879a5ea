"""The approval step: Airflow's ``ApprovalOperator``, made safe against a lost answer.

Airflow 3.3 parks a human-in-the-loop task in ``awaiting_input``. An answer that arrives while the
parked attempt's process is still exiting makes the scheduler see "executor reports success,
state is queued" and retry the task. The retry's ``execute`` writes the request again, which
erases the answer (the response row follows the task instance to its new try), and waits again:
the person's Approve is lost and the run waits until the timeout.

``ModelApproval`` looks first (through Airflow's REST API: the task SDK cannot read an answer): a
retry whose request already holds an answer goes straight on with it, unless an attempt that acted
on that answer *succeeded*: then the task was cleared afterwards, on purpose, and the person is
asked again, as Airflow does. Which answer was acted on, and by which try, is kept in the task's
state store (Airflow keeps it across the tries of a run); whether that try succeeded is read from
the task's tries. An attempt can act on the answer and still fail: under load the resumed attempt
can reach ``execute_complete`` before the scheduler's stale "success" fails it, and its retry must
not ask again (the answer would be erased and the run would wait until the timeout).
"""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk.exceptions import AirflowRuntimeError

log = logging.getLogger(__name__)

#: Key in the task's state store (kept across tries of one run) naming the answer acted on.
CONSUMED_KEY = "mlops.approval.consumed"


class ModelApproval(ApprovalOperator):
    """``ApprovalOperator`` whose retry finds an answer already given (see the module doc)."""

    def execute(self, context):
        answer = self._unconsumed_answer(context)
        if answer is not None:
            log.warning("An answer was given while an earlier attempt was parked (%s by %s at "
                        "%s); no attempt that acted on it succeeded, so this attempt goes on with "
                        "it instead of asking again", answer["chosen_options"],
                        (answer["responded_by_user"] or {}).get("name", "?"),
                        answer["responded_at"])
            return self.execute_complete(context, answer)
        return super().execute(context)

    def execute_complete(self, context, event: dict[str, Any]) -> Any:
        responded_at = event.get("responded_at")
        try:
            return super().execute_complete(context, event)
        finally:
            if responded_at is not None and "error" not in event:
                _store(context, {"responded_at": responded_at.isoformat(),
                                 "try_number": context["task_instance"].try_number})

    def _unconsumed_answer(self, context) -> dict[str, Any] | None:
        ti = context["task_instance"]
        if ti.try_number <= 1:
            return None
        api = _api()
        if api is None:
            return None
        prefix = (f"/api/v2/dags/{ti.dag_id}/dagRuns/{urllib.parse.quote(ti.run_id, safe='')}/"
                  f"taskInstances/{ti.task_id}/"
                  f"{ti.map_index if ti.map_index is not None else -1}")
        detail = _read(api, f"{prefix}/hitlDetails")  # before this attempt writes it again
        acted_on = _stored(context)
        acted_try = None
        if _acted_on_this(acted_on, detail) and isinstance(acted_on.get("try_number"), int):
            acted_try = _read(api, f"{prefix}/tries/{acted_on['try_number']}")
        return answer_to_resume(detail, acted_on, acted_try)


def answer_to_resume(detail: dict | None, acted_on: dict | None,
                     acted_try: dict | None) -> dict[str, Any] | None:
    """The answer a retry goes on with, or None to ask again.

    ``detail`` is the task instance's human-in-the-loop detail (REST), ``acted_on`` what the task's
    state store says an attempt acted on (``responded_at``, ``try_number``), ``acted_try`` that
    try's task instance (REST) when it acted on this very answer. An answer acted on by a try that
    succeeded is not reused (the task was cleared on purpose); one acted on by a try that did not
    succeed (killed, failed by the scheduler) is, as is one no try acted on. If the acting try's
    state cannot be read, the person is asked again, as Airflow does."""
    if not detail or not detail.get("response_received") or not detail.get("responded_at"):
        return None
    if _acted_on_this(acted_on, detail):
        state = (acted_try or {}).get("state")
        if state in ("success", "unknown", None):
            return None
        log.warning("try %s acted on this answer but ended %s: going on with it",
                    acted_on.get("try_number"), state)
    return {
        "chosen_options": list(detail.get("chosen_options") or []),
        "params_input": dict(detail.get("params_input") or {}),
        "responded_at": datetime.fromisoformat(_instant(detail)),
        "responded_by_user": detail.get("responded_by_user"),
    }


def _acted_on_this(acted_on: dict | None, detail: dict | None) -> bool:
    """Whether what the state store says an attempt acted on is this very answer."""
    return bool(acted_on and detail and detail.get("responded_at")
                and acted_on.get("responded_at") == _instant(detail))


def _instant(detail: dict) -> str | None:
    """The detail's ``responded_at`` as ``datetime.isoformat`` writes it (the REST API may end it
    in ``Z``; the state store holds the event's own ``isoformat``)."""
    value = detail.get("responded_at")
    return datetime.fromisoformat(value).isoformat() if value else None


def _api():
    """A REST client for this task: anonymous when login is off, else the SimpleAuthManager
    password file of this machine's Airflow home. Without either (another auth manager, a worker
    on another machine), None: the person is asked again, as Airflow does."""
    from airflow.configuration import conf

    from pipeline_tasks.ops.airflow_api import AirflowAPI

    base = conf.get("api", "base_url", fallback="").rstrip("/")
    if not base:
        return None
    user = password = None
    if not conf.getboolean("core", "simple_auth_manager_all_admins", fallback=False):
        try:
            passwords = json.loads(Path(conf.get("core", "simple_auth_manager_passwords_file",
                                                 fallback="")).read_text())
            user, password = next(iter(passwords.items()))
        except (OSError, ValueError, StopIteration) as exc:
            log.warning("cannot read an earlier answer (no API credentials on this worker: %s); "
                        "asking again", exc)
            return None
    return AirflowAPI(base, user, password)


def _read(api, path: str, attempts: int = 4) -> dict | None:
    """GET ``path``; None when it does not exist (404: no request was written yet). A busy
    api-server is asked again a few times: giving up asks the person again, which erases the
    answer."""
    from pipeline_tasks.ops.airflow_api import StackError

    for attempt in range(attempts):
        try:
            return api.get(path)
        except (StackError, OSError, ValueError) as exc:
            if "HTTP 404" in str(exc) or attempt == attempts - 1:
                log.info("cannot read %s (%s)", path, exc)
                return None
            time.sleep(2 ** attempt)
    return None


def _stored(context) -> dict | None:
    store = context.get("task_state_store")
    if store is None:
        return None
    try:
        value = store.get(CONSUMED_KEY)
    except AirflowRuntimeError as exc:  # the store did not answer: treat it as unconsumed
        log.info("task state store unavailable (%s)", exc)
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, dict) else None


def _store(context, acted_on: dict) -> None:
    store = context.get("task_state_store")
    if store is None:
        return
    try:
        store.set(CONSUMED_KEY, json.dumps(acted_on))
    except (AirflowRuntimeError, ValueError) as exc:
        log.warning("could not record that this approval was acted on (%s): a later clear of "
                    "this task would reuse it", exc)
