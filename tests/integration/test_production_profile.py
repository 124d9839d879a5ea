"""The production profile, proven on the local PostgreSQL and Redis (issue 5, section 2).

The tests share one stack (conftest) and run in file order: the full run makes the champion the
backfills are compared with; the lost-worker check kills a worker last.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import psycopg2
import pytest

from pipeline_tasks import storage
from pipeline_tasks.demo_data import land_flights_feed
from pipeline_tasks.locks import libpq_url
from pipeline_tasks.stack import AirflowAPI, StackError

DAG_ID = "ml_training_pipeline"
MODEL = "flights_is_late"
FULL_RUN_DAY = date(2013, 3, 10)
BACKFILL_FROM, BACKFILL_TO = date(2013, 3, 1), date(2013, 3, 7)
LOST_WORKER_DAY = date(2013, 3, 12)
# Backfills re-train history: they record models but must not move the champion (and so do not
# deploy); each reads only its own day.
BACKFILL_CONF = {"training_window_days": 0, "min_champion_delta": 1.0}


@pytest.fixture(scope="module")
def landed(production):
    land_flights_feed(production.config, date(2013, 2, 28), date(2013, 3, 12))
    return production.config.demo_source_uri


def trigger(api: AirflowAPI, day: date, conf: dict, run_id: str) -> str:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return api.trigger_interval(DAG_ID, start, start + timedelta(days=1), conf=conf,
                                run_id=run_id)["dag_run_id"]


def task_instances(api: AirflowAPI, run_id: str) -> dict[str, dict]:
    return {ti["task_id"]: ti for ti in api.task_instances(DAG_ID, run_id)}


def mlflow_db(production) -> str:
    return libpq_url(production.env["MLOPS_MLFLOW_BACKEND_STORE_URI"])


def lake_files(production) -> list[str]:
    root = storage.local_path(production.config.lake_uri)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_full_run_on_both_workers_registers_in_postgres(production, landed):
    api = production.api
    # login is on: no token, no API
    with pytest.raises(StackError, match="HTTP 401"):
        AirflowAPI(production.config.airflow_url, "admin", "not-the-password").get(
            "/api/v2/dags")
    run_id = trigger(api, FULL_RUN_DAY, {"training_window_days": 2}, "it_full_run")
    final = api.wait_for_run(DAG_ID, run_id, timeout=900)
    tis = task_instances(api, run_id)
    assert final["state"] == "success", {k: v["state"] for k, v in tis.items()}
    assert tis["deploy"]["state"] == "success"
    hosts = {ti["hostname"].split("@")[0] for ti in tis.values()}
    assert hosts == set(production.workers), hosts  # tasks ran on both workers
    assert tis["train"]["pool"] == production.config.training_pool
    registered = api.xcom(DAG_ID, run_id, "register")
    assert registered["promoted"] and registered["version"] == "1"
    # the registry lives in PostgreSQL, behind the MLflow server
    with psycopg2.connect(mlflow_db(production)) as conn, conn.cursor() as cur:
        cur.execute("SELECT name, version, run_id FROM model_versions")
        rows = cur.fetchall()
        cur.execute("SELECT alias, version FROM registered_model_aliases WHERE name = %s",
                    (MODEL,))
        aliases = dict(cur.fetchall())
    assert rows == [(MODEL, 1, api.xcom(DAG_ID, run_id, "train")["run_id"])]
    assert aliases == {"champion": 1, "challenger": 1}
    # artifacts went to the shared store every worker reaches
    shared_artifacts = storage.local_path(production.config.mlflow_artifact_uri)
    assert any(shared_artifacts.rglob("MLmodel"))
