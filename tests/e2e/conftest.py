"""A real Airflow stack (api-server, scheduler, dag-processor) on a fresh $MLOPS_HOME.

The same ``pipeline_tasks.ops.stack.Stack`` that ``make demo`` uses starts it; DAG runs go through the
scheduler and the LocalExecutor exactly as for a user. The time schedules are switched off
(``training_schedule`` and ``drift_schedule`` "none"), so the only runs are those a test triggers
and the retrains that ``ml_drift_monitoring`` asks for through the asset.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from pipeline_tasks.core.config import PipelineConfig, load_config
from pipeline_tasks.core.http import free_port
from pipeline_tasks.ops.airflow_api import AirflowAPI, StackError
from pipeline_tasks.ops.stack import Stack

DAG_ID = "ml_training_pipeline"
OTHER_TEAM_DAG_ID = "other_team_on_new_champion"
OTHER_TEAM_DAGS = Path(__file__).resolve().parent / "dags"


@dataclass
class Pipeline:
    """Triggers runs of the training DAG and reads back what they did."""

    api: AirflowAPI
    config: PipelineConfig
    stack: Stack | None = None
    counter: int = 0
    postgres: str = ""  # host:port of the server behind the connection ``warehouse``

    def run(self, day: date, conf: dict | None = None, timeout: float = 900,
            dag_id: str = DAG_ID) -> dict:
        """Run a DAG for the data interval [day, day + 1) and wait for it to end."""
        self.counter += 1
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        self.api.wait_for_dag(dag_id)
        self.api.set_paused(dag_id, False)
        run_id = f"test_{self.counter:02d}_{day.isoformat()}"
        for attempt in range(3):
            try:
                self.api.trigger_interval(
                    dag_id, start, start + timedelta(days=1),
                    # logical dates are unique per DAG; a second run of the same interval sits a
                    # second later
                    logical_date=start + timedelta(seconds=self.counter),
                    conf=conf, run_id=run_id,
                )
                break
            except StackError as exc:
                # the embedded SQLite metadata DB can still time out on its lock (20 s, see
                # airflow.cfg.example) while other runs write (a 500, nothing created); the run
                # id makes a retry safe: 409 = it exists
                if attempt and "HTTP 409" in str(exc):  # the retried trigger had gone through
                    break
                if "HTTP 500" not in str(exc) or attempt == 2:
                    raise
        final = self.api.wait_for_run(dag_id, run_id, timeout=timeout)
        tis = {ti["task_id"]: ti for ti in self.api.task_instances(dag_id, run_id)}
        return {"dag_id": dag_id, "run_id": run_id, "state": final["state"], "tasks": tis}

    def trigger(self, dag_id: str, conf: dict, timeout: float = 600) -> dict:
        """Run an unscheduled DAG (logical date None) with ``conf`` and wait for it to end."""
        self.api.wait_for_dag(dag_id)
        self.api.set_paused(dag_id, False)
        run = self.api.post(f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})
        final = self.api.wait_for_run(dag_id, run["dag_run_id"], timeout=timeout)
        tis = {ti["task_id"]: ti for ti in self.api.task_instances(dag_id, run["dag_run_id"])}
        return {"dag_id": dag_id, "run_id": run["dag_run_id"], "state": final["state"],
                "tasks": tis}

    def xcom(self, run: dict, task_id: str) -> dict:
        return self.api.xcom(run.get("dag_id", DAG_ID), run["run_id"], task_id)

    def explain(self, run: dict) -> str:
        """Task states, and the end of each failed task's log: the message of a failed assert."""
        lines = [str({k: v["state"] for k, v in run["tasks"].items()})]
        for task_id, ti in run["tasks"].items():
            if ti["state"] == "failed":
                lines.append(f"--- {task_id} ---\n{self.log(run, task_id)[-3000:]}")
        return "\n".join(lines)

    def log(self, run: dict, task_id: str) -> str:
        ti = run["tasks"][task_id]
        return self.api.task_log(run.get("dag_id", DAG_ID), run["run_id"], task_id,
                                 max(1, ti["try_number"]))


@contextmanager
def _cpu_load(processes: int | None = None):
    """Busy loops on every core while the block runs: scheduler races show up under load."""
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(processes or os.cpu_count() or 2)]
    try:
        yield
    finally:
        for proc in busy:
            proc.kill()
        for proc in busy:
            proc.wait()


@pytest.fixture
def cpu_load():
    """``with cpu_load(): ...`` keeps every core busy for the block."""
    return _cpu_load


#: The password of the e2e PostgreSQL source connection: it must never reach a task log.
WAREHOUSE_PASSWORD = "e2e-Warehouse-pw-7731"


@pytest.fixture(scope="session")
def warehouse_password() -> str:
    return WAREHOUSE_PASSWORD


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory, docker_engine, postgres_server) -> Pipeline:
    """One stack for the session; the Docker engine first, so its workers can reach it.

    MLflow's tracking store comes from the Airflow connection ``mlflow_default`` while
    ``MLOPS_MLFLOW_TRACKING_URI`` (and MLflow's own variable) name another store, ``wrong_store``:
    every run of the session proves the connection wins (nothing may ever create that store).
    A PostgreSQL server holds the SQL source of the connection ``warehouse`` (a password that the
    trust-auth server ignores, so that the test can look for it in the logs)."""
    home: Path = tmp_path_factory.mktemp("e2e-home")
    config = load_config(home=str(home), airflow_port=free_port(), mlflow_port=free_port(),
                         serving_port=free_port())
    wrong = f"sqlite:///{home / 'wrong_store' / 'mlflow.db'}"
    host, port = postgres_server.rsplit(":", 1)
    stack = Stack(
        config,
        components=("api-server", "scheduler", "dag-processor"),
        mlflow_ui=False,
        # no time schedules (only the runs a test triggers, and the asset-triggered retrains)
        extra_env={"MLOPS_TRAINING_SCHEDULE": "none", "MLOPS_DRIFT_SCHEDULE": "none",
                   "MLOPS_BATCH_SCORING_SCHEDULE": "none",
                   # where the batch-scoring test writes its SQL output (an allowed connection)
                   "AIRFLOW_CONN_BATCH_SCORES": f"sqlite:///{home / 'batch_scores.db'}",
                   "MLOPS_ALLOWED_OUTPUT_CONN_IDS": "batch_scores",
                   # MLflow through an Airflow connection, which wins over the MLOPS_ setting
                   "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps({
                       "conn_type": "generic",
                       "extra": {"tracking_uri": config.mlflow_tracking_uri}}),
                   "MLOPS_MLFLOW_TRACKING_URI": wrong, "MLFLOW_TRACKING_URI": wrong,
                   # an SQL source on PostgreSQL (the provider's hook builds its URL)
                   "AIRFLOW_CONN_WAREHOUSE": json.dumps({
                       "conn_type": "postgres", "host": host, "port": int(port),
                       "login": "postgres", "password": WAREHOUSE_PASSWORD,
                       "schema": "postgres"}),
                   "MLOPS_ALLOWED_SQL_CONN_IDS": "warehouse",
                   # the tests' sources live in pytest's temporary folder: list it (the default
                   # allows only the landing folder)
                   "MLOPS_ALLOWED_SOURCE_ROOTS": str(tmp_path_factory.getbasetemp()),
                   # a task whose worker died (the scheduler-crash trial) is retried after a
                   # minute, not five; a live task's supervisor heartbeats every few seconds
                   "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
                   # the monitoring loop replays 2013's flights with their own event times
                   "MLOPS_SERVING_EVENT_TIME_WINDOW": "none",
                   # the package's DAGs, and another team's DAG that runs on a new champion
                   "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps([
                       {"name": "dags-folder", "kwargs": {}, "classpath":
                        "airflow.dag_processing.bundles.local.LocalDagBundle"},
                       {"name": "other-team", "kwargs": {"path": str(OTHER_TEAM_DAGS)},
                        "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle"}])},
    )
    stack.start()
    try:
        api = AirflowAPI(config.airflow_url)
        api.wait_for_dag(DAG_ID)
        api.set_paused(DAG_ID, False)
        # parsed (so its asset is active) before any champion is announced
        api.wait_for_dag(OTHER_TEAM_DAG_ID)
        yield Pipeline(api, config, stack, postgres=postgres_server)
    finally:
        stack.stop()
