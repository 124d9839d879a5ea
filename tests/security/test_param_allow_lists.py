"""Issue 12, point 2 (and 11): what a trigger param can reach.

Trigger-form users are not trusted with the worker's file system, network or connections. A param
naming data (the training DAG's ``source``, the drift DAG's ``current`` and ``labels``) must lie
under ``landing_uri`` or a root the operator lists in ``allowed_source_roots``; ``sql_conn_id``
must be in ``allowed_sql_conn_ids`` (none by default). Anything else fails the first task of the
run with an error naming the param and the setting, and nothing downstream runs.

The unit tests use real files, symlinks and the real stages; the last tests trigger real runs on
a real Airflow stack (scheduler, dag-processor, api-server) with the default allow-lists.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from pipeline_tasks import stages
from pipeline_tasks.core.allowlists import check_source_param, check_sql_conn_id
from pipeline_tasks.core.config import load_config
from pipeline_tasks.core.errors import ConfigError, IngestError

ROOT = Path(__file__).resolve().parents[2]
SETTING = r"outside allowed_source_roots \(MLOPS_ALLOWED_SOURCE_ROOTS\)"
INTERVAL = ("2013-03-01T00:00:00+00:00", "2013-03-02T00:00:00+00:00")


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh home whose landing folder holds one good CSV, beside folders outside it; the
    allow-list settings are the defaults (none listed), whatever the environment said."""
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLOPS_ALLOWED_SOURCE_ROOTS", raising=False)
    monkeypatch.delenv("MLOPS_ALLOWED_SQL_CONN_IDS", raising=False)
    landing = tmp_path / "home" / "landing"
    (landing / "flights").mkdir(parents=True)
    frame().to_csv(landing / "flights" / "data.csv", index=False)
    outside = tmp_path / "outside"
    outside.mkdir()
    frame().to_csv(outside / "secret.csv", index=False)
    return tmp_path


def frame() -> pd.DataFrame:
    return pd.DataFrame({"x": range(40), "y": [i % 2 for i in range(40)]})


def refused(param: str, value: str, config=None) -> str:
    config = config or load_config()
    with pytest.raises(ConfigError, match=rf"param {param}: .* {SETTING}") as caught:
        check_source_param(param, value, config)
    return str(caught.value)


# ------------------------------------------------------------------------------ the check itself

def test_the_default_allows_the_landing_folder_only(home):
    config = load_config()
    assert config.allowed_source_roots == () and config.allowed_sql_conn_ids == ()
    landing = home / "home" / "landing"
    for ok in (str(landing / "flights"), (landing / "flights" / "data.csv").as_uri(),
               config.demo_source_uri, str(landing / "flights" / "*.csv"), str(landing)):
        check_source_param("source", ok, config)
    message = refused("source", "/etc/passwd")
    assert "/etc/passwd" in message and "Allowed: " + landing.as_uri() in message
    refused("source", str(home / "outside" / "secret.csv"))  # readable data, still outside


def test_dot_dot_and_symlinks_out_of_a_root_are_refused(home):
    landing = home / "home" / "landing"
    assert "resolves to" in refused("source", f"{landing}/../outside/secret.csv")
    assert "resolves to" in refused("current", f"file://{landing}/flights/../../outside")
    (landing / "linked").symlink_to(home / "outside", target_is_directory=True)
    (landing / "flights" / "passwd.csv").symlink_to("/etc/passwd")
    message = refused("source", str(landing / "linked" / "secret.csv"))
    assert f"it resolves to {home / 'outside' / 'secret.csv'}" in message
    refused("source", str(landing / "linked"))
    assert "resolves to /etc/passwd" in refused("labels", str(landing / "flights" / "passwd.csv"))
    # a symlink that stays inside the root is fine
    (landing / "alias").symlink_to(landing / "flights", target_is_directory=True)
    check_source_param("source", str(landing / "alias" / "data.csv"), load_config())


def test_roots_are_compared_by_whole_path_components(home):
    landing2 = home / "home" / "landing2"
    landing2.mkdir()
    refused("source", str(landing2))
    refused("source", str(home / "home" / "landingX" / "a.csv"))
    # an operator's root: its own folder and below, not a sibling sharing the prefix
    config = load_config(allowed_source_roots=[str(home / "outside")])
    check_source_param("source", str(home / "outside" / "secret.csv"), config)
    (home / "outside2").mkdir()
    refused("source", str(home / "outside2"), config)


def test_urls_are_refused_unless_their_root_is_listed(home):
    for url in ("http://169.254.169.254/latest/meta-data/", "https://example.org/data.csv",
                "s3://bucket/data/x.parquet", "memory://x.csv", "ftp://host/x.csv",
                "simplecache::file:///etc/passwd"):
        refused("source", url)
    config = load_config(allowed_source_roots="s3://bucket/data/, https://files.example.org/pub")
    assert config.allowed_source_roots == ("s3://bucket/data/", "https://files.example.org/pub")
    for ok in ("s3://bucket/data/x.parquet", "s3://bucket/data", "s3://bucket/data/2013/*.csv",
               "https://files.example.org/pub/x.csv?version=2", "HTTPS://Files.Example.org/pub/a"):
        check_source_param("source", ok, config)
    for bad in ("s3://bucket/data2/x.parquet", "s3://bucket/x.parquet", "s3://other/data/x",
                "s3://bucket/data/../private/x", "https://files.example.org/pub/%2e%2e/admin",
                "http://files.example.org/pub/x.csv",  # another scheme
                "https://files.example.org@169.254.169.254/pub/x",  # another host
                "https://files.example.org.evil.test/pub/x", "s3a://bucket/data/x"):
        refused("source", bad, config)


def test_sql_connections_are_refused_unless_listed(home, monkeypatch):
    with pytest.raises(ConfigError, match=r"param sql_conn_id: 'airflow_db' is not in "
                                          r"allowed_sql_conn_ids \(MLOPS_ALLOWED_SQL_CONN_IDS\)"):
        check_sql_conn_id("airflow_db", load_config())
    monkeypatch.setenv("MLOPS_ALLOWED_SQL_CONN_IDS", '["warehouse_ro", "sales.ro"]')
    config = load_config()
    check_sql_conn_id("warehouse_ro", config)
    check_sql_conn_id("sales.ro", config)
    with pytest.raises(ConfigError, match="param sql_conn_id: 'airflow_db'"):
        check_sql_conn_id("airflow_db", config)


def test_bad_allow_list_settings_are_refused_when_the_config_is_made(home):
    for bad, words in (("s3://", "needs a host or bucket"), ("relative/data", "not an absolute"),
                       ("file://localhost/data", "not an absolute"),
                       ("zip://x::file:///data.zip", "chained")):
        with pytest.raises(ConfigError, match=rf"allowed_source_roots \(MLOPS_ALLOWED_SOURCE_ROOTS"
                                              rf"\): .*{words}"):
            load_config(allowed_source_roots=[bad])
    with pytest.raises(ConfigError, match="allowed_sql_conn_ids .*not an Airflow connection id"):
        load_config(allowed_sql_conn_ids="ok, not ok")


# ------------------------------------------------------------------- the stages (first tasks)

def spec(dag_id: str = "ml_training_pipeline", **params) -> stages.RunSpec:
    return stages.RunSpec(dag_id=dag_id, run_id="manual__security", interval_start=INTERVAL[0],
                          interval_end=INTERVAL[1], params={"target": "y", **params})


def test_the_first_training_task_refuses_before_reading_anything(home):
    config = load_config()
    for params, words in (
            ({"source": "/etc/passwd"}, rf"param source: /etc/passwd is {SETTING}"),
            ({"source": str(home / "outside" / "secret.csv")}, "param source: "),
            ({"source": "http://127.0.0.1:9/x.csv"}, "param source: http://127.0.0.1:9/x.csv"),
            ({"source": "select * from secrets", "sql_conn_id": "airflow_db"},
             r"param sql_conn_id: 'airflow_db' is not in allowed_sql_conn_ids"),
            # a trigger param cannot widen the operator's allow-lists
            ({"source": "/etc/passwd", "allowed_source_roots": "/"}, "param source: "),
    ):
        with pytest.raises(ConfigError, match=words):
            stages.ingest(spec(model_name="security_m", **params))
    lake_raw = Path(config.lake_uri.removeprefix("file://")) / "raw"
    assert not lake_raw.exists()  # nothing was ingested
    # the landing folder still works
    out = stages.ingest(spec(source=str(home / "home" / "landing" / "flights"),
                             model_name="security_m", training_window_days=0))
    assert out.rows == 40


def test_the_first_monitoring_tasks_refuse_current_and_labels(home):
    for params in ({"current": "/etc/passwd"}, {"labels": "/etc/passwd"},
                   {"labels": "https://169.254.169.254/"}):
        run = spec("ml_drift_monitoring", model_name="security_m", **params)
        name = next(iter(params))
        # either first task refuses, so request_retrain never runs
        for stage in (stages.check_drift, stages.check_performance):
            with pytest.raises(ConfigError, match=rf"param {name}: .* {SETTING}"):
                stage(run)


def test_labels_from_the_config_are_the_operators(home, monkeypatch):
    """``model_labels`` is operator-trusted: it is not checked against the allow-list (only the
    ``labels`` trigger param is)."""
    outcomes = home / "outside" / "outcomes"
    outcomes.mkdir()
    monkeypatch.setenv("MLOPS_MODEL_LABELS", json.dumps({"security_m": outcomes.as_uri()}))
    run = spec("ml_drift_monitoring", model_name="security_m")
    stages.check_monitoring_params(run)
    assert run.config.labels_for("security_m") == outcomes.as_uri()


def test_a_source_folder_cannot_lead_out_through_a_symlinked_entry(home):
    from pipeline_tasks.data.ingest import ingest_interval
    from pipeline_tasks.monitoring import performance as monitoring

    folder = home / "home" / "landing" / "flights"
    (folder / "zz_secret.csv").symlink_to(home / "outside" / "secret.csv")
    config = load_config()
    check_source_param("source", str(folder), config)  # the folder itself is inside
    for source in (str(folder), f"{folder}/*.csv", folder.as_uri()):
        with pytest.raises(IngestError, match=rf"entry .*zz_secret.csv resolves to "
                                              rf"{home / 'outside' / 'secret.csv'}, outside "
                                              rf"{folder}: symlinks out of a source folder"):
            ingest_interval(source, interval_start=INTERVAL[0], interval_end=INTERVAL[1],
                            training_window_days=0, config=config, run_key="security/x")
    (folder / "zz_secret.csv").unlink()
    assert ingest_interval(str(folder), interval_start=INTERVAL[0], interval_end=INTERVAL[1],
                           training_window_days=0, config=config,
                           run_key="security/y").rows == 40
    # a labels folder likewise
    labels = home / "home" / "landing" / "outcomes"
    labels.mkdir()
    (labels / "outcomes_2013-03-01.csv").symlink_to(home / "outside" / "secret.csv")
    start, end = (datetime.fromisoformat(t) for t in INTERVAL)
    with pytest.raises(IngestError, match="outcomes_2013-03-01.csv resolves to"):
        monitoring.read_labels(labels.as_uri(), "y", start, end, 1)


# ------------------------------------------------------------------ point 11: rollback names

ROLLBACK_PROBE = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag

bag = DagBag(dag_folder=sys.argv[1], safe_mode=False)
assert not bag.import_errors, bag.import_errors
param = bag.dags["ml_model_rollback"].params.get_param("model_name")
out = {}
for name in json.loads(sys.argv[2]):
    try:
        param.resolve(value=name)
        out[name] = "accepted"
    except Exception as exc:
        out[name] = str(exc)
print(json.dumps(out))
"""
TRAVERSAL_NAMES = ["../../etc", "..", "a/b", ".hidden", "x/../../y"]


def test_a_traversal_model_name_is_refused_by_the_rollback_form_and_stage(home, tmp_path):
    from pipeline_tasks.deploy.bluegreen import deployment_history, rollback

    env = dict(os.environ, AIRFLOW_HOME=str(tmp_path / "airflow"),
               PYTHONPATH=os.pathsep.join([str(ROOT / "plugins"), str(ROOT)]))
    proc = subprocess.run([sys.executable, "-c", ROLLBACK_PROBE, str(ROOT / "dags"),
                           json.dumps([*TRAVERSAL_NAMES, "flights_is_late"])], env=env,
                          capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    form = json.loads(proc.stdout.strip().splitlines()[-1])
    assert form.pop("flights_is_late") == "accepted"
    assert all("does not match" in why for why in form.values()), form

    config = load_config()
    for name in TRAVERSAL_NAMES:
        run = spec("ml_model_rollback", model_name=name, version="1", reason="security test")
        with pytest.raises(ConfigError, match="param 'model_name' must be letters"):
            stages.rollback(run)
        with pytest.raises(ConfigError, match="cannot name a folder"):
            rollback(model_name=name, to="1", config=config, reason="security test")
        with pytest.raises(ConfigError, match="cannot name a folder"):
            deployment_history(name, config)
    assert not (Path(config.lake_uri.removeprefix("file://")) / "deployments").exists()


# --------------------------------------------------------------------- real DAG runs (Airflow)

@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    """A real Airflow stack with the default allow-lists, and a secret file outside them."""
    from pipeline_tasks.core.http import free_port
    from pipeline_tasks.ops.airflow_api import AirflowAPI
    from pipeline_tasks.ops.stack import Stack

    home = tmp_path_factory.mktemp("allow-home")
    outside = tmp_path_factory.mktemp("allow-outside") / "secret.csv"
    frame().to_csv(outside, index=False)
    config = load_config(home=str(home), airflow_port=free_port(), mlflow_port=free_port(),
                         serving_port=free_port(), allowed_source_roots=(),
                         allowed_sql_conn_ids=())
    stack = Stack(config, components=("api-server", "scheduler", "dag-processor"),
                  mlflow_ui=False, extra_env={
                      "MLOPS_TRAINING_SCHEDULE": "none", "MLOPS_DRIFT_SCHEDULE": "none",
                      # the defaults, stated: nothing beyond the landing folder, no connection
                      "MLOPS_ALLOWED_SOURCE_ROOTS": "", "MLOPS_ALLOWED_SQL_CONN_IDS": "",
                      # a real connection a trigger user might try to name
                      "AIRFLOW_CONN_SECRET_DB": f"sqlite:///{home / 'secret.db'}",
                  })
    stack.start()
    try:
        yield AirflowAPI(config.airflow_url), outside
    finally:
        stack.stop()


RUNS = itertools.count(1)


def run_dag(api, dag_id: str, conf: dict, run_id: str) -> dict:
    start = datetime(2013, 3, 1, tzinfo=UTC)
    api.wait_for_dag(dag_id)
    api.set_paused(dag_id, False)
    # logical dates are unique per DAG: each run sits a second after the one before
    run = api.trigger_interval(dag_id, start, start + timedelta(days=1),
                               logical_date=start + timedelta(seconds=next(RUNS)), conf=conf,
                               run_id=run_id)
    final = api.wait_for_run(dag_id, run["dag_run_id"], timeout=600)
    tasks = {ti["task_id"]: ti for ti in api.task_instances(dag_id, run["dag_run_id"])}
    return {"state": final["state"], "tasks": tasks, "run_id": run["dag_run_id"]}


@pytest.mark.parametrize("case, conf, words", [
    ("passwd", {"source": "/etc/passwd"},
     "param source: /etc/passwd is outside allowed_source_roots (MLOPS_ALLOWED_SOURCE_ROOTS)"),
    ("sql", {"source": "select 1", "sql_conn_id": "secret_db"},
     ("param sql_conn_id: 'secret_db' is not in allowed_sql_conn_ids "
      "(MLOPS_ALLOWED_SQL_CONN_IDS)")),
])
def test_a_training_run_fails_in_its_first_task_and_nothing_downstream_runs(airflow, case, conf,
                                                                            words):
    api, _ = airflow
    run = run_dag(api, "ml_training_pipeline", conf, f"allow_list_{case}")
    assert run["state"] == "failed"
    ingest = run["tasks"]["ingest"]
    assert ingest["state"] == "failed" and ingest["try_number"] == 1  # refused, not retried
    assert words in api.task_log("ml_training_pipeline", run["run_id"], "ingest", 1)
    downstream = {k: v["state"] for k, v in run["tasks"].items() if k != "ingest"}
    assert set(downstream.values()) <= {"upstream_failed", "skipped", None}, downstream


def test_a_drift_run_with_current_outside_the_roots_fails_first(airflow):
    api, outside = airflow
    run = run_dag(api, "ml_drift_monitoring", {"current": str(outside)}, "allow_current")
    assert run["state"] == "failed"
    tasks = {k: v["state"] for k, v in run["tasks"].items()}
    assert tasks["check_drift"] == "failed" and tasks["check_performance"] == "failed", tasks
    assert tasks["request_retrain"] == "upstream_failed", tasks
    log = api.task_log("ml_drift_monitoring", run["run_id"], "check_drift", 1)
    assert f"param current: {outside} is outside allowed_source_roots" in log
