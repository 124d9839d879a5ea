"""Every file in dags/ parses cleanly, follows the DAG policy, and parses cheaply.

Parsing runs in a fresh interpreter per file, so `sys.modules` shows exactly what parsing the file
imported. SQLAlchemy's cursor events and Airflow's connection lookup are watched (not replaced)
while the file is executed: any DB query or connection lookup at parse time fails the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline_tasks.core.config import DEMO_MODEL, load_config

ROOT = Path(__file__).resolve().parents[2]
DAG_FILES = sorted((ROOT / "dags").glob("*.py"))
HEAVY = {"pandas", "sklearn", "mlflow", "great_expectations", "evidently", "docker", "pyarrow"}

PROBE = r"""
import importlib.util, json, os, sys
sys.path[:0] = [os.environ["PLUGINS"], os.environ["DAGS"]]
import airflow.sdk  # the DAG file's own cost is measured after Airflow itself is loaded
from airflow.sdk import Connection
from sqlalchemy import event
from sqlalchemy.engine import Engine

queries, lookups = [], []
event.listen(Engine, "before_cursor_execute",
             lambda conn, cursor, statement, *a: queries.append(statement))
_get = Connection.get.__func__
def watched_get(cls, conn_id):
    lookups.append(conn_id)
    return _get(cls, conn_id)
Connection.get = classmethod(watched_get)

before = set(sys.modules)
path = sys.argv[1]
spec = importlib.util.spec_from_file_location("dag_under_test", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
new = sorted({m.split(".")[0] for m in set(sys.modules) - before})

from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=path, safe_mode=False)
dags = {}
for value in bag.dags.values():
    dags[value.dag_id] = {
        "catchup": value.catchup,
        "max_active_runs": value.max_active_runs,
        "tags": sorted(value.tags),
        "doc_md": bool(value.doc_md and len(value.doc_md) > 100),
        "start_date_tz": value.start_date is not None and value.start_date.tzinfo is not None,
        "schedule": getattr(value.timetable, "_expression", None) or str(value.timetable),
        "tasks": {t.task_id: {"retries": t.retries,
                              "inlets": sorted(getattr(i, "name", str(i)) for i in t.inlets),
                              "outlets": sorted(getattr(o, "name", str(o)) for o in t.outlets)}
                  for t in value.tasks},
        "order": [t.task_id for t in value.topological_sort()]
                 if hasattr(value, "topological_sort") else None,
        "params": {k: {"title": bool(p.schema.get("title")),
                       "description": bool(p.description or p.schema.get("description")),
                       "type": p.schema.get("type")}
                   for k, p in value.params.items()},
    }
print(json.dumps({"new_modules": new, "queries": queries, "lookups": lookups, "dags": dags,
                  "import_errors": {k: str(v) for k, v in bag.import_errors.items()}}))
"""


def parse(path: Path, tmp_path: Path) -> dict:
    env = dict(os.environ, PLUGINS=str(ROOT / "plugins"), DAGS=str(ROOT / "dags"),
               AIRFLOW_HOME=str(tmp_path / "airflow"), MLOPS_HOME=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", PROBE, str(path)], env=env, check=False,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{path.name} failed to import:\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module", params=DAG_FILES, ids=lambda p: p.name)
def parsed(request, tmp_path_factory):
    return parse(request.param, tmp_path_factory.mktemp("parse"))


def test_there_are_dags():
    assert DAG_FILES, "dags/ holds no DAG files"


def test_parsing_imports_nothing_heavy(parsed):
    assert HEAVY.isdisjoint(parsed["new_modules"]), parsed["new_modules"]


def test_parsing_makes_no_db_query_or_connection_lookup(parsed):
    assert parsed["queries"] == []
    assert parsed["lookups"] == []


def test_dag_policy(parsed):
    assert parsed["import_errors"] == {}
    assert parsed["dags"], "the file defines no DAG"
    for dag_id, dag in parsed["dags"].items():
        assert dag["catchup"] is False, dag_id
        # training: one run per model at a time in practice, so a run waiting for approval does
        # not hold the other models' runs (training_max_active_runs); the others: one at a time
        limit = load_config().training_max_active_runs if dag_id == "ml_training_pipeline" else 1
        assert dag["max_active_runs"] == limit, dag_id
        assert dag["tags"], dag_id
        assert dag["doc_md"], dag_id
        assert dag["start_date_tz"], dag_id
        for task_id, task in dag["tasks"].items():
            assert task["retries"] >= 2, f"{dag_id}.{task_id} retries {task['retries']}"
        for name, param in dag["params"].items():
            assert param["title"] and param["description"] and param["type"], f"{dag_id}:{name}"


def test_training_pipeline_shape(tmp_path):
    dag = parse(ROOT / "dags" / "ml_training_pipeline.py", tmp_path)["dags"]["ml_training_pipeline"]
    assert dag["order"] == ["ingest", "validate", "version", "train", "evaluate", "register",
                            "approval_gate", "approve", "deploy"]
    # nightly or on a retrain request from ml_drift_monitoring, whichever comes first
    assert "AssetOrTimeSchedule" in dag["schedule"], dag["schedule"]
    assert "expression='0 0 * * *'" in dag["schedule"]
    assert "mlops_retrain_requests" in dag["schedule"]
    assert {"source", "target", "task_type", "training_window_days", "model_name",
            "hyperparameter_search", "force_promote", "min_baseline_lift",
            "min_champion_delta"} <= set(dag["params"])


def test_the_monitoring_checks_read_the_champion_and_announce_their_reports(tmp_path):
    """Inlets and outlets are what Airflow's asset view draws: training -> champion ->
    monitoring (the checks read the monitored model's champion) -> drift reports."""
    dag = parse(ROOT / "dags" / "ml_drift_monitoring.py", tmp_path)["dags"]["ml_drift_monitoring"]
    champion = f"mlops.champion.{DEMO_MODEL}"
    assert dag["tasks"]["check_drift"]["inlets"] == [champion]
    assert dag["tasks"]["check_performance"]["inlets"] == [champion]
    assert dag["tasks"]["check_drift"]["outlets"] == ["mlops_drift_reports"]
    training = parse(ROOT / "dags" / "ml_training_pipeline.py",
                     tmp_path)["dags"]["ml_training_pipeline"]
    assert training["tasks"]["deploy"]["outlets"] == ["mlops_champions"]


def test_batch_scoring_shape(tmp_path):
    dag = parse(ROOT / "dags" / "ml_batch_scoring.py", tmp_path)["dags"]["ml_batch_scoring"]
    assert dag["order"] == ["resolve_model", "score", "export_scores"]
    # a daily cron timetable (config batch_scoring_schedule): backfills work, catchup is off
    assert "CronDataIntervalTimetable(expression='0 3 * * *'" in dag["schedule"]
    assert dag["catchup"] is False
    assert {"model_name", "model_ref", "source", "sql_conn_id", "id_column", "time_column",
            "max_reject_share", "output_conn_id", "output_table"} == set(dag["params"])
