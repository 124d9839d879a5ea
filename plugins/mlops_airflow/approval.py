"""The approval step: Airflow's ``ApprovalOperator``, made safe against a lost answer.

Airflow 3.3 parks a human-in-the-loop task in ``awaiting_input``. An answer that arrives while the
parked attempt's process is still exiting makes the scheduler see "executor reports success,
state is queued" and retry the task. The retry's ``execute`` writes the request again, which
erases the answer (the response row follows the task instance to its new try), and waits again:
the person's Approve is lost and the run waits until the timeout.

``ModelApproval`` looks first (through Airflow's REST API: the task SDK cannot read an answer): a
retry whose request already holds an answer that no attempt has acted on goes straight on with
that answer. An answer that an attempt did act on (the task was cleared afterwards, on purpose)
is not reused: the person is asked again, as Airflow does. Which answers were acted on is kept in
the task's state store, which Airflow keeps across the tries of a run.
"""

from __future__ import annotations

import json
import logging
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
                        "%s); it was not acted on, so this attempt goes on with it instead of "
                        "asking again", answer["chosen_options"],
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
                _store(context, responded_at.isoformat())

    def _unconsumed_answer(self, context) -> dict[str, Any] | None:
        ti = context["task_instance"]
        if ti.try_number <= 1:
            return None
        detail = _answer_on_record(ti)
        if not detail or not detail.get("response_received") or not detail.get("responded_at"):
            return None
        responded_at = datetime.fromisoformat(detail["responded_at"])
        if _stored(context) == responded_at.isoformat():
            return None  # acted on by an earlier attempt: the task was cleared to ask again
        return {
            "chosen_options": list(detail.get("chosen_options") or []),
            "params_input": dict(detail.get("params_input") or {}),
            "responded_at": responded_at,
            "responded_by_user": detail.get("responded_by_user"),
        }


def _answer_on_record(ti) -> dict | None:
    """The task instance's human-in-the-loop detail, read through Airflow's REST API before this
    attempt writes its request again (which would erase the answer). A task cannot read it
    through the task SDK; the API needs a token: anonymous when login is off, else the
    SimpleAuthManager password file of this machine's Airflow home. Without either (another auth
    manager, a worker on another machine), the person is asked again, as Airflow does."""
    import urllib.parse

    from airflow.configuration import conf

    from pipeline_tasks.ops.airflow_api import AirflowAPI, StackError

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
    run_id = urllib.parse.quote(ti.run_id, safe="")
    path = (f"/api/v2/dags/{ti.dag_id}/dagRuns/{run_id}/taskInstances/{ti.task_id}/"
            f"{ti.map_index if ti.map_index is not None else -1}/hitlDetails")
    try:
        return AirflowAPI(base, user, password).get(path)
    except (StackError, OSError, ValueError) as exc:  # 404: no request was written yet
        log.info("no earlier answer to resume (%s)", exc)
        return None


def _stored(context) -> str | None:
    store = context.get("task_state_store")
    if store is None:
        return None
    try:
        value = store.get(CONSUMED_KEY)
    except AirflowRuntimeError as exc:  # the store did not answer: treat it as unconsumed
        log.info("task state store unavailable (%s)", exc)
        return None
    return value if isinstance(value, str) else None


def _store(context, responded_at: str) -> None:
    store = context.get("task_state_store")
    if store is None:
        return
    try:
        store.set(CONSUMED_KEY, responded_at)
    except (AirflowRuntimeError, ValueError) as exc:
        log.warning("could not record that this approval was acted on (%s): a later clear of "
                    "this task would reuse it", exc)
