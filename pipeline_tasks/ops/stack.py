"""The stack as local processes: Airflow (api-server, scheduler, dag-processor, triggerer) and the
MLflow server under ``$MLOPS_HOME``, plus a small client of Airflow's REST API.

The embedded default runs on SQLite with the LocalExecutor. With the production profile in the
environment (``docker/production.env.example``: PostgreSQL, ``CeleryExecutor``) the same code
also starts the Celery workers, and the MLflow server on the profile's backend store.

This module runs Airflow as programs; it never imports Airflow. ``make demo``, ``make airflow``
and the end-to-end tests use it, so the tests exercise the same start-up as a user.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from string import Template
from typing import Any, Self

from pipeline_tasks.core import http
from pipeline_tasks.core.config import PipelineConfig

log = logging.getLogger(__name__)

AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
TERMINAL_RUN_STATES = {"success", "failed"}


class StackError(RuntimeError):
    """A component did not start, or the API answered with an error."""


def venv_bin() -> Path:
    return Path(sys.executable).parent


def secure_home(config: PipelineConfig) -> Path:
    """``$MLOPS_HOME`` made private (mode 700): it holds the stack's secrets, the SQLite metadata
    DB (connection passwords), the logs and the lake. A home of another owner is left alone."""
    home = Path(config.home)
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = home.stat()
    if info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) != 0o700:
        home.chmod(0o700)
    return home


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def _token() -> str:
    import secrets

    return secrets.token_urlsafe(64)


def _local_secret(config: PipelineConfig, name: str, make=_token) -> str:
    """A random secret kept in the Airflow home (mode 600), made once per ``$MLOPS_HOME``.

    Components started separately must share the JWT secret, or the scheduler's workers are
    refused by the API server ("Invalid auth token"); the Fernet key must stay the same for as
    long as the metadata DB holds what it encrypted. Nothing secret is stored in the repo.
    """
    secure_home(config)
    path = Path(config.airflow_home) / f".{name}"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(make())
        tmp.replace(path)
    elif stat.S_IMODE(path.stat().st_mode) & 0o077:
        path.chmod(0o600)  # from a release that did not restrict it
    return path.read_text().strip()


def private_log(path: Path):
    """``path`` opened for appending, readable by its owner only (logs can quote secrets)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    if stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:
        os.fchmod(fd, 0o600)
    return os.fdopen(fd, "ab")


def stack_env(config: PipelineConfig, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of every process of the stack."""
    env = dict(os.environ)
    env.setdefault("AIRFLOW__API_AUTH__JWT_SECRET", _local_secret(config, "jwt_secret"))
    env.setdefault("AIRFLOW__API__SECRET_KEY", _local_secret(config, "api_secret_key"))
    # connection passwords and variables are stored encrypted in the metadata DB
    env.setdefault("AIRFLOW__CORE__FERNET_KEY", _local_secret(config, "fernet_key", _fernet_key))
    env.update({
        "MLOPS_HOME": config.home,
        # where deploy tasks put the model server
        "MLOPS_SERVING_HOST": config.serving_host,
        "MLOPS_SERVING_PORT": str(config.serving_port),
        "MLOPS_SERVING_TARGET": config.serving_target,
        # where the UI's links point (pipeline_tasks.lineage.links): the MLflow UI beside Airflow
        "MLOPS_MLFLOW_HOST": config.mlflow_host,
        "MLOPS_MLFLOW_PORT": str(config.mlflow_port),
        "AIRFLOW_HOME": config.airflow_home,
        "AIRFLOW_CONFIG": str(Path(config.airflow_home) / "airflow.cfg"),
        # Airflow starts its own components by the bare name ``airflow``.
        "PATH": f"{venv_bin()}{os.pathsep}{env.get('PATH', '')}",
        "GX_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "true",
        "MLFLOW_TRACKING_URI": config.mlflow_tracking_uri,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra or {})
    return env


def render_airflow_cfg(config: PipelineConfig) -> str:
    template = Template((Path(config.project_dir) / "airflow.cfg.example").read_text())
    return template.substitute(
        MLOPS_HOME=config.home,
        AIRFLOW_HOME=config.airflow_home,
        PROJECT_DIR=config.project_dir,
        AIRFLOW_HOST=config.airflow_host,
        AIRFLOW_PORT=str(config.airflow_port),
    )


def prepare_airflow_home(config: PipelineConfig, extra_env: dict[str, str] | None = None) -> Path:
    """Write ``airflow.cfg`` from ``airflow.cfg.example`` (when it changed), migrate the metadata
    DB and create the training pool, once per (settings, database, pool)."""
    secure_home(config)
    home = Path(config.airflow_home)
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "airflow.cfg"
    text = render_airflow_cfg(config)
    if not cfg.exists() or cfg.read_text() != text:
        tmp = cfg.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(cfg)
    env = stack_env(config, extra_env)
    marker = home / ".migrated"
    # the database may come from the environment (the production profile), not from the file
    stamp = hashlib.sha256("\n".join([
        text, env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", ""), config.training_pool,
        str(config.training_pool_slots)]).encode()).hexdigest()
    if not marker.exists() or marker.read_text() != stamp:
        log.info("migrating the Airflow metadata database of %s", home)
        airflow = str(venv_bin() / "airflow")
        subprocess.run([airflow, "db", "migrate"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        # Training runs in its own pool, so long fits cannot take every worker slot.
        subprocess.run([airflow, "pools", "set", config.training_pool,
                        str(config.training_pool_slots), "model training (ml_training_pipeline)"],
                       env=env, check=True, stdout=subprocess.DEVNULL)
        marker.write_text(stamp)
    return cfg


def worker_hostname() -> str:
    """``[core] hostname_callable`` of the workers the stack starts: the worker's name and the
    machine's, so the task instances show which of several workers on one machine ran them."""
    import socket

    name = os.environ.get("MLOPS_WORKER_NAME")
    return f"{name}@{socket.getfqdn()}" if name else socket.getfqdn()


def executor(env: dict[str, str]) -> str:
    """The executor the components will use (``AIRFLOW__CORE__EXECUTOR`` or the cfg's)."""
    return env.get("AIRFLOW__CORE__EXECUTOR", "LocalExecutor").rsplit(".", 1)[-1]


def run_airflow_cli(config: PipelineConfig, args: list[str],
                    extra_env: dict[str, str] | None = None, **popen: Any) -> int:
    """Run one Airflow CLI command against the stack's metadata DB (the embedded default, or
    the profile in the environment / ``extra_env``)."""
    prepare_airflow_home(config, extra_env)
    return subprocess.call([str(venv_bin() / "airflow"), *args], env=stack_env(config, extra_env),
                           **popen)


@dataclass
class Stack:
    """The processes of the embedded stack. Each runs in its own session, so stopping it stops
    the children it forked too (LocalExecutor workers, gunicorn workers)."""

    config: PipelineConfig
    components: tuple[str, ...] = AIRFLOW_COMPONENTS
    mlflow_ui: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    #: names of the Celery workers started when the executor is CeleryExecutor
    #: (default: worker1..worker<config.celery_workers>)
    worker_names: tuple[str, ...] = ()

    @property
    def log_dir(self) -> Path:
        return Path(self.config.logs_dir)

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        out = private_log(self.log_dir / f"{name}.log")
        self.procs[name] = subprocess.Popen(
            argv, env=stack_env(self.config, {**self.extra_env, **(env or {})}), stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.config.project_dir,
        )
        out.close()
        log.info("started %s (pid %d), log: %s", name, self.procs[name].pid,
                 self.log_dir / f"{name}.log")

    def start(self, timeout: float = 180.0) -> Stack:
        if not login_enabled(stack_env(self.config, self.extra_env)) and \
                not is_loopback(self.config.airflow_host):
            raise StackError(
                f"login is off ([core] simple_auth_manager_all_admins: everyone who reaches the "
                f"UI is an admin), so the UI may only listen on a loopback address, not "
                f"{self.config.airflow_host!r}. Turn login on "
                "(AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=False) or keep "
                "MLOPS_AIRFLOW_HOST=127.0.0.1")
        for port, what in ((self.config.airflow_port, "Airflow API"),
                           (self.config.mlflow_port, "MLflow UI")):
            if what == "MLflow UI" and not self.mlflow_ui:
                continue
            if _port_open(self.config.airflow_host, port):
                raise StackError(f"port {port} for the {what} is already in use; stop what uses "
                                 f"it or set MLOPS_{'AIRFLOW' if 'Airflow' in what else 'MLFLOW'}"
                                 "_PORT")
        prepare_airflow_home(self.config, self.extra_env)
        airflow = str(venv_bin() / "airflow")
        try:
            for component in self.components:
                self._spawn(component, [airflow, component])
            for worker in self.celery_worker_names:
                # Logs go to the shared log folder, so the api-server reads them there: no
                # per-worker log server (several on one machine would fight for its port).
                self._spawn(f"celery-{worker}", [
                    airflow, "celery", "worker", "--celery-hostname", f"{worker}@%h",
                    "--skip-serve-logs",
                ], env={"MLOPS_WORKER_NAME": worker,
                        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "pipeline_tasks.ops.stack.worker_hostname"})
            if self.mlflow_ui:
                artifacts = self.config.mlflow_artifact_uri
                Path(self.config.home, "mlflow").mkdir(parents=True, exist_ok=True)
                if not self.config.mlflow_backend_store_uri:
                    raise StackError("the tracking URI is a server; set MLOPS_MLFLOW_BACKEND_STORE_"
                                     "URI to the store the MLflow server should use")
                # The store URIs can hold passwords: through the environment (the CLI's
                # envvar options), never on the command line every local user can read.
                self._spawn("mlflow-ui", [
                    str(venv_bin() / "mlflow"), "server",
                    "--host", self.config.mlflow_host, "--port", str(self.config.mlflow_port),
                    "--workers", "1",
                ], env={"MLFLOW_BACKEND_STORE_URI": self.config.mlflow_backend_store_uri,
                        "MLFLOW_DEFAULT_ARTIFACT_ROOT": artifacts})
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def celery_worker_names(self) -> tuple[str, ...]:
        if executor(stack_env(self.config, self.extra_env)) != "CeleryExecutor":
            return ()
        return self.worker_names or tuple(f"worker{i + 1}"
                                          for i in range(self.config.celery_workers))

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = _tail(self.log_dir / f"{name}.log")
                raise StackError(f"{name} exited with code {proc.returncode}; last log lines:\n"
                                 f"{tail}")

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        api = AirflowAPI(self.config.airflow_url)
        while True:
            self.check_alive()
            try:
                health = api.get("/api/v2/monitor/health", auth=False)
                if health.get("metadatabase", {}).get("status") == "healthy" and (
                    "scheduler" not in self.components
                    or health.get("scheduler", {}).get("status") == "healthy"
                ):
                    break
            except (StackError, OSError):
                pass
            if time.monotonic() > deadline:
                raise StackError(f"Airflow was not healthy after {timeout:.0f} s; see "
                                 f"{self.log_dir}")
            time.sleep(1.0)
        # The api-server builds its execution API (what task processes talk to) on the first
        # request, which takes seconds; ask for it now rather than in the first task.
        if not http.ok(self.config.airflow_url + "/execution/health", timeout=60):
            raise StackError(f"the Airflow execution API did not answer; see {self.log_dir}")
        if self.mlflow_ui:
            while not http.ok(self.config.mlflow_ui_url + "/health"):
                self.check_alive()
                if time.monotonic() > deadline:
                    raise StackError(f"the MLflow UI did not answer after {timeout:.0f} s")
                time.sleep(1.0)

    def stop(self, grace: float = 20.0) -> None:
        """Stop the model servers deploy tasks started, then SIGTERM every process group and
        SIGKILL what is left after ``grace`` seconds."""
        from pipeline_tasks.deploy.local import SupervisorError, shutdown_all

        try:
            shutdown_all(self.config)
        except SupervisorError as exc:
            log.error("%s", exc)
        for proc in self.procs.values():
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in self.procs.values():
            _signal_group(proc, signal.SIGKILL)  # the group may hold children that ignored TERM
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                log.error("process %d did not stop", proc.pid)
        self.procs.clear()

    def crash(self, component: str) -> None:
        """SIGKILL ``component`` and every process of its group, as a crash or the OOM killer
        would (for fault injection; ``restart`` brings it back)."""
        proc = self.procs[component]
        _signal_group(proc, signal.SIGKILL)
        proc.wait(timeout=30)
        log.warning("crashed %s (pid %d) on purpose", component, proc.pid)

    def restart(self, component: str) -> None:
        """Start an Airflow ``component`` of the stack again (after ``crash``)."""
        if component not in self.components:
            raise StackError(f"{component!r} is not a component of this stack "
                             f"({', '.join(self.components)})")
        self._spawn(component, [str(venv_bin() / "airflow"), component])

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _port_open(host: str, port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: reachable from this machine only."""
    import ipaddress

    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def login_enabled(env: dict[str, str]) -> bool:
    """False when ``simple_auth_manager_all_admins`` turns login off (the embedded default)."""
    value = env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "True")
    return value.strip().lower() not in ("1", "true", "yes", "on")


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
                raise StackError(f"run {run_id} of {dag_id} still {run['state']} after "
                                 f"{timeout:.0f} s")
            time.sleep(1.0)


def run_backfill(config: PipelineConfig, api: AirflowAPI, dag_id: str, first_day: str,
                 last_day: str, *, max_active_runs: int = 3, conf: dict | None = None,
                 reprocess: str | None = None, extra_env: dict[str, str] | None = None,
                 log_path: Path | None = None, timeout: float = 1800.0) -> list[dict]:
    """``airflow backfill create`` (the CLI, as a user runs it), then wait until the scheduler
    has finished it; returns the DAG's backfill runs."""
    before = {b["id"] for b in api.get(f"/api/v2/backfills?dag_id={dag_id}")["backfills"]}
    args = ["backfill", "create", "--dag-id", dag_id, "--from-date", first_day,
            "--to-date", last_day, "--max-active-runs", str(max_active_runs)]
    if conf:
        args += ["--dag-run-conf", json.dumps(conf)]
    if reprocess:
        args += ["--reprocess-behavior", reprocess]
    log_path = log_path or Path(config.logs_dir) / "backfill-cli.log"
    for attempt in range(3):
        start = log_path.stat().st_size if log_path.exists() else 0
        with private_log(log_path) as out:
            code = run_airflow_cli(config, args, extra_env, stdout=out, stderr=subprocess.STDOUT)
        output = log_path.read_bytes()[start:].decode(errors="replace")
        created = [b for b in api.get(f"/api/v2/backfills?dag_id={dag_id}")["backfills"]
                   if b["id"] not in before]
        # SQLite (the embedded default) refuses a writer while the scheduler holds its lock;
        # the CLI's transaction is rolled back, so trying again is safe.
        if code == 0 or created or "database is locked" not in output or attempt == 2:
            break
        log.warning("backfill create: the SQLite database was locked; trying again")
        time.sleep(5.0)
    if code != 0:
        raise StackError(f"airflow backfill create failed ({code}):\n{_tail(log_path)}")
    deadline = time.monotonic() + timeout
    while True:
        new = [b for b in api.get(f"/api/v2/backfills?dag_id={dag_id}")["backfills"]
               if b["id"] not in before]
        if len(new) > 1:
            raise StackError(f"more than one new backfill of {dag_id}: {new}")
        if new and new[0]["completed_at"]:
            break
        if time.monotonic() > deadline:
            raise StackError(f"backfill of {dag_id} not finished after {timeout:.0f} s")
        time.sleep(2.0)
    return api.get(f"/api/v2/dags/{dag_id}/dagRuns?run_type=backfill&limit=1000")["dag_runs"]


def _log_line(entry) -> str:
    """One structured Airflow log entry as text: its event, then any exception it carries."""
    if not isinstance(entry, dict):
        return str(entry)
    line = str(entry.get("event", ""))
    for err in entry.get("error_detail") or []:
        if isinstance(err, dict):
            line += f"\n{err.get('exc_type', '')}: {err.get('exc_value', '')}"
    return line
