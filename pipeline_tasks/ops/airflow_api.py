"""A small client of Airflow 3's REST API (``/api/v2``), and the one logged in to the local stack.

The stack's start-up, the backfill, the demos, the approval view of the plugin and the end-to-end
tests all talk to Airflow through it; it never imports Airflow.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline_tasks.core import http
from pipeline_tasks.core.config import PipelineConfig
from pipeline_tasks.ops.airflow_home import login_enabled, stack_env

TERMINAL_RUN_STATES = {"success", "failed"}


class StackError(RuntimeError):
    """A component of the stack did not start, or the API answered with an error."""


def stack_api(config: PipelineConfig, extra_env: dict[str, str] | None = None,
              user: str = "admin") -> AirflowAPI:
    """A REST client of the stack: anonymous when login is off, else ``user`` with the password
    the api-server generated into the Airflow home (it exists once the api-server started)."""
    if not login_enabled(stack_env(config, extra_env)):
        return AirflowAPI(config.airflow_url)
    path = Path(config.airflow_home) / "simple_auth_manager_passwords.json.generated"
    try:
        password = json.loads(path.read_text())[user]
    except (OSError, ValueError, KeyError) as exc:
        raise StackError(f"login is on but {path} has no password for {user!r}: start the "
                         "api-server first") from exc
    return AirflowAPI(config.airflow_url, user, password)


class AirflowAPI:
    """A small client of Airflow 3's REST API (``/api/v2``) with SimpleAuthManager tokens."""

    def __init__(self, base_url: str, username: str | None = None, password: str | None = None):
        self.base_url = base_url.rstrip("/")
        self.username, self.password = username, password
        self._token: str | None = None

    def _token_value(self) -> str:
        if self._token is None:
            if self.username and self.password:
                body = {"username": self.username, "password": self.password}
                self._token = self._request("POST", "/auth/token", body, auth=False)["access_token"]
            else:  # login turned off ([core] simple_auth_manager_all_admins)
                self._token = self._request("GET", "/auth/token", auth=False)["access_token"]
        return self._token

    def _request(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if auth:
            headers["Authorization"] = f"Bearer {self._token_value()}"
        req = urllib.request.Request(self.base_url + path, data=data, method=method,
                                     headers=headers)
        try:
            with http.opener().open(req, timeout=30) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise StackError(f"{method} {path}: HTTP {exc.code}: {detail}") from exc
        return json.loads(raw) if raw else None

    def get(self, path: str, auth: bool = True) -> Any:
        return self._request("GET", path, auth=auth)

    def post(self, path: str, body: Any) -> Any:
        return self._request("POST", path, body)

    def patch(self, path: str, body: Any) -> Any:
        return self._request("PATCH", path, body)

    # -- DAG helpers ---------------------------------------------------------------------------
    def wait_for_dag(self, dag_id: str, timeout: float = 180.0) -> dict:
        """Wait until the dag-processor has parsed and serialized ``dag_id``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.get(f"/api/v2/dags/{dag_id}/details")
            except StackError as exc:
                if "HTTP 404" not in str(exc) or time.monotonic() > deadline:
                    errors = self.get("/api/v2/importErrors").get("import_errors", [])
                    raise StackError(f"DAG {dag_id} not available: {exc}; import errors: "
                                     f"{errors}") from exc
            time.sleep(2.0)

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self.patch(f"/api/v2/dags/{dag_id}", {"is_paused": paused})

    def trigger_interval(self, dag_id: str, start: datetime, end: datetime,
                         logical_date: datetime | None = None, conf: dict | None = None,
                         run_id: str | None = None) -> dict:
        """Trigger a run for the data interval ``[start, end)``, stated explicitly.

        ``logical_date`` defaults to ``start``, the logical date the scheduler gives the run of
        that interval; the scheduler then sees the run exists and does not make a second one.
        """
        body: dict[str, Any] = {
            "logical_date": (logical_date or start).isoformat(),
            "data_interval_start": start.isoformat(),
            "data_interval_end": end.isoformat(),
            "conf": conf or {},
        }
        if run_id:
            body["dag_run_id"] = run_id
        return self.post(f"/api/v2/dags/{dag_id}/dagRuns", body)

    def run_at(self, dag_id: str, logical_date: datetime) -> dict | None:
        """The run with this logical date, if there is one."""
        stamp = urllib.parse.quote(logical_date.isoformat(), safe="")
        runs = self.get(f"/api/v2/dags/{dag_id}/dagRuns?logical_date_gte={stamp}"
                        f"&logical_date_lte={stamp}")["dag_runs"]
        return runs[0] if runs else None

    def run(self, dag_id: str, run_id: str) -> dict:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        rid = urllib.parse.quote(run_id, safe="")
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{rid}/taskInstances")["task_instances"]

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        rid = urllib.parse.quote(run_id, safe="")
        entry = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{rid}/taskInstances/{task_id}/"
                         f"xcomEntries/{key}?deserialize=true&stringify=false")
        return entry["value"]

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> str:
        rid = urllib.parse.quote(run_id, safe="")
        data = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{rid}/taskInstances/{task_id}/logs/"
                        f"{try_number}?full_content=true")
        content = data.get("content", "")
        if isinstance(content, list):
            return "\n".join(_log_line(c) for c in content)
        return str(content)

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 900.0,
                     on_change=None) -> dict:
        """Poll until the run ends; ``on_change(task_id, state)`` hears each task state change."""
        deadline = time.monotonic() + timeout
        seen: dict[str, str | None] = {}
        while True:
            run = self.run(dag_id, run_id)
            if on_change is not None:
                for ti in sorted(self.task_instances(dag_id, run_id),
                                 key=lambda t: t.get("start_date") or "9"):
                    if seen.get(ti["task_id"]) != ti["state"]:
                        seen[ti["task_id"]] = ti["state"]
                        on_change(ti["task_id"], ti["state"])
            if run["state"] in TERMINAL_RUN_STATES:
                return run
            if time.monotonic() > deadline:
                tasks = ", ".join(f"{ti['task_id']}={ti['state']} (try {ti.get('try_number')})"
                                  for ti in self.task_instances(dag_id, run_id))
                raise StackError(f"run {run_id} of {dag_id} still {run['state']} after "
                                 f"{timeout:.0f} s: {tasks}")
            time.sleep(1.0)


def _log_line(entry) -> str:
    """One structured Airflow log entry as text: its event, then any exception it carries."""
    if not isinstance(entry, dict):
        return str(entry)
    line = str(entry.get("event", ""))
    for err in entry.get("error_detail") or []:
        if isinstance(err, dict):
            line += f"\n{err.get('exc_type', '')}: {err.get('exc_value', '')}"
    return line
