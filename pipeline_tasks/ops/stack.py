"""The stack as local processes: Airflow (api-server, scheduler, dag-processor, triggerer) and the
MLflow server under ``$MLOPS_HOME``, each in its own process group, with its log and its port.

The embedded default runs on SQLite with the LocalExecutor. With the production profile in the
environment (``docker/production.env.example``: PostgreSQL, ``CeleryExecutor``) the same code
also starts the Celery workers, and the MLflow server on the profile's backend store.

This module runs Airflow as programs; it never imports Airflow. ``make demo``, ``make airflow``
and the end-to-end tests use it, so the tests exercise the same start-up as a user. The Airflow
home and environment are ``ops.airflow_home``'s, the REST client ``ops.airflow_api``'s, the
backfill ``ops.backfill``'s.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from pipeline_tasks.core import http
from pipeline_tasks.core.config import PipelineConfig
from pipeline_tasks.ops.airflow_api import AirflowAPI, StackError
from pipeline_tasks.ops.airflow_home import (
    executor,
    log_tail,
    login_enabled,
    prepare_airflow_home,
    private_log,
    stack_env,
    venv_bin,
)

log = logging.getLogger(__name__)

AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


def worker_hostname() -> str:
    """``[core] hostname_callable`` of the workers the stack starts: the worker's name and the
    machine's, so the task instances show which of several workers on one machine ran them."""
    import socket

    name = os.environ.get("MLOPS_WORKER_NAME")
    return f"{name}@{socket.getfqdn()}" if name else socket.getfqdn()


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
                tail = log_tail(self.log_dir / f"{name}.log")
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
