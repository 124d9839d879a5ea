"""The production profile, proven on the local PostgreSQL and Redis (issue 5, section 2).

The tests share one stack (conftest) and run in file order: the full run makes the champion the
backfills are compared with; the lost-worker check kills a worker last.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from datetime import UTC, date, datetime, timedelta

import pandas as pd
import psutil
import psycopg2
import pytest

from pipeline_tasks.core import storage
from pipeline_tasks.core.locks import libpq_url
from pipeline_tasks.ops.airflow_api import AirflowAPI, StackError
from pipeline_tasks.ops.backfill import run_backfill
from pipeline_tasks.ops.demo_data import land_flights_feed

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
    # tasks ran on both workers (a skipped task, such as the approval step, ran nowhere)
    hosts = {ti["hostname"].split("@")[0] for ti in tis.values() if ti["state"] != "skipped"}
    assert hosts == set(production.workers), {k: (v["state"], v["hostname"])
                                              for k, v in tis.items()}
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


# ------------------------------------------------------------------------------ credentials

def test_the_model_server_of_the_profile_requires_its_token(production):
    """The profile's generated MLOPS_SERVING_TOKEN guards the server the full run deployed."""
    import urllib.error

    from pipeline_tasks.core import http

    url = f"http://127.0.0.1:{production.config.serving_port}/metadata"
    with pytest.raises(urllib.error.HTTPError) as refused:
        http.fetch_json(url)  # this process has no token
    assert refused.value.code == 401
    token = production.env["MLOPS_SERVING_TOKEN"]
    answer = http.fetch_json(url, headers={"Authorization": f"Bearer {token}"})
    assert answer["model_version"] == "1"


def test_no_secret_is_on_any_command_line(production):
    """Every process on this machine (the profile's Airflow components, Celery workers, the
    MLflow server, the serving supervisor and model server): no generated secret, no password
    in its /proc/<pid>/cmdline, which every local user can read."""
    from pipeline_tasks.ops.production import SECRET_NAME

    secrets = {k: v for k, v in production.env.items() if SECRET_NAME.search(k) and v}
    assert {"PG_PASSWORD", "REDIS_PASSWORD", "AIRFLOW__API_AUTH__JWT_SECRET",
            "AIRFLOW__API__SECRET_KEY", "AIRFLOW__CORE__FERNET_KEY",
            "MLOPS_SERVING_TOKEN"} <= set(secrets)
    seen: dict[int, str] = {}
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        leaked = sorted(k for k, v in secrets.items() if v in cmdline)
        assert not leaked, (proc.info["pid"], leaked, cmdline.split(" ")[:3])
        seen[proc.info["pid"]] = cmdline
    # the scan did see the profile's processes: every component the stack started (the MLflow
    # server among them), the serving supervisor and the model server the deploy started
    started = {name: proc.pid for name, proc in production.stack.procs.items()}
    assert "mlflow-ui" in started and set(started.values()) <= set(seen), started
    for part in ("pipeline_tasks.deploy.local", "-m pipeline_tasks.serving --model"):
        assert any(part in c for c in seen.values()), part


def test_connections_are_stored_encrypted_with_the_profile_s_fernet_key(production):
    import subprocess

    from cryptography.fernet import Fernet

    from pipeline_tasks.ops.airflow_home import run_airflow_cli

    plain = "it-plain-password"
    code = run_airflow_cli(production.config, [
        "connections", "add", "it_encrypted", "--conn-type", "postgres", "--conn-host", "db",
        "--conn-password", plain], production.env, stdout=subprocess.DEVNULL)
    assert code == 0
    url = libpq_url(production.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT is_encrypted, password FROM connection WHERE conn_id = %s",
                    ("it_encrypted",))
        encrypted, stored = cur.fetchone()
    conn.close()
    assert encrypted and plain not in stored
    key = production.env["AIRFLOW__CORE__FERNET_KEY"]
    assert Fernet(key).decrypt(stored.encode()).decode() == plain
    assert os.stat(production.config.home).st_mode & 0o777 == 0o700


# ---------------------------------------------------------------------------------- backfill

def backfill(production, reprocess: str | None = None, conf: dict | None = None) -> dict:
    """``airflow backfill create`` over the 7 days (the CLI, as a user runs it), to its end."""
    runs = run_backfill(production.config, production.api, DAG_ID, BACKFILL_FROM.isoformat(),
                        BACKFILL_TO.isoformat(), max_active_runs=3, conf=conf or BACKFILL_CONF,
                        reprocess=reprocess, extra_env=production.env, timeout=900)
    return {r["dag_run_id"]: r for r in runs}


def run_outputs(production, runs: dict) -> dict[str, dict]:
    api = production.api
    return {run_id: {"ingest": api.xcom(DAG_ID, run_id, "ingest"),
                     "version": api.xcom(DAG_ID, run_id, "version")} for run_id in runs}


def snapshot_ids(production) -> set[str]:
    root = storage.local_path(storage.join(production.config.lake_uri, "snapshots"))
    return {p.name for p in root.iterdir()}


def raw_partitions(production) -> dict[str, int]:
    """Each raw partition file of the backfill runs and its row count."""
    root = storage.local_path(storage.join(production.config.lake_uri, "raw", DAG_ID))
    return {str(p.relative_to(root)): len(pd.read_parquet(p))
            for p in root.rglob("*.parquet") if "backfill" in str(p)}


@pytest.fixture(scope="module")
def first_backfill(production, landed):
    runs = backfill(production)
    return runs, run_outputs(production, runs), snapshot_ids(production), raw_partitions(production)


def test_backfill_of_seven_days_gives_seven_versions_each_of_its_own_day(production,
                                                                         first_backfill):
    runs, outputs, snapshots, raw = first_backfill
    assert len(runs) == 7
    assert {r["state"] for r in runs.values()} == {"success"}, {
        k: r["state"] for k, r in runs.items()}
    days = sorted(r["data_interval_start"][:10] for r in runs.values())
    assert days == [(BACKFILL_FROM + timedelta(days=i)).isoformat() for i in range(7)]
    versions = {out["version"]["version_id"] for out in outputs.values()}
    assert len(versions) == 7 and versions <= snapshots
    for run_id, out in outputs.items():
        day = runs[run_id]["data_interval_start"][:10]
        ingested = out["ingest"]
        # only its own interval: one day's file, every row inside [start, end)
        assert [f.rsplit("/", 1)[-1] for f in ingested["files"]] == [f"flights_{day}.csv"]
        rows = storage.read_parquet(ingested["uri"])
        start = pd.Timestamp(day, tz="UTC")
        assert rows["time_hour"].min() >= start
        assert rows["time_hour"].max() < start + pd.Timedelta(days=1)
        assert len(rows) == ingested["rows"] == out["version"]["rows"]
    assert len(raw) == 7


def test_rerunning_the_backfill_gives_the_same_snapshots_and_no_copies(production,
                                                                      first_backfill):
    runs, outputs, snapshots, raw = first_backfill
    # no_cache: every stage runs again (the training cache would stop a run whose batch was
    # judged before at ingest, and this test is about the data path writing nothing twice)
    again = backfill(production, reprocess="completed", conf={**BACKFILL_CONF, "no_cache": True})
    assert set(again) == set(runs)  # the same runs (same run ids), processed again
    assert {r["state"] for r in again.values()} == {"success"}
    assert all(again[k]["end_date"] > runs[k]["end_date"] for k in runs)
    rerun = run_outputs(production, again)
    assert {k: o["version"]["version_id"] for k, o in rerun.items()} == {
        k: o["version"]["version_id"] for k, o in outputs.items()}
    assert not any(o["version"]["created"] for o in rerun.values())
    assert snapshot_ids(production) == snapshots  # no second copy
    assert raw_partitions(production) == raw  # the same partitions, no duplicated rows
    for out in rerun.values():
        data = storage.read_parquet(out["version"]["data_uri"])
        assert len(data) == out["version"]["rows"]


# ------------------------------------------------------------------ concurrent registrations

def _register_and_promote(env: dict, spec: dict, trained: dict, go, results) -> None:
    """What the DAG's evaluate + register tasks do, in a process of its own (a worker)."""
    os.environ.update(env)
    from pipeline_tasks import stages
    from pipeline_tasks.model.train import TrainResult

    run = stages.RunSpec(**spec)
    trained = TrainResult.from_xcom(trained)  # as the glue hands it to the task
    go.wait(120)  # start together
    try:
        decision = stages.evaluate(run, trained)
        results.put(stages.register(run, trained, decision).to_xcom())
    except BaseException as exc:
        results.put({"error": f"{type(exc).__name__}: {exc}"})
        raise


def _candidates(production, n: int = 8):
    """``n`` logged models of different quality (label noise) and one shared holdout."""
    import mlflow
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from pipeline_tasks.core import model_artifacts, tracking
    from pipeline_tasks.model.train import SKOPS_TRUSTED_TYPES

    rng = np.random.default_rng(5)
    features = [f"f{i}" for i in range(6)]

    def frame(rows: int) -> pd.DataFrame:
        x = rng.normal(size=(rows, len(features)))
        y = (x @ np.linspace(1.5, 0.2, len(features)) + rng.normal(scale=0.8, size=rows) > 0)
        return pd.DataFrame(x, columns=features).assign(y=y.astype(int))

    train, holdout = frame(3000), frame(1500)
    holdout_uri = storage.join(production.config.lake_uri, "it_concurrent", "holdout.parquet")
    storage.atomic_write_parquet(holdout, holdout_uri)
    tracking.configure_mlflow(production.config)
    experiment = tracking.ensure_experiment("it_concurrent", production.config)
    out = []
    for i in range(n):
        noisy = train["y"].where(rng.random(len(train)) >= 0.05 * i, 1 - train["y"])
        model = make_pipeline(StandardScaler(), LogisticRegression()).fit(train[features], noisy)
        with mlflow.start_run(experiment_id=experiment) as mlflow_run:
            info = mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"],
                                            serialization_format="skops",
                                            skops_trusted_types=SKOPS_TRUSTED_TYPES,
                                            input_example=train[features].head(2))
        # as training does: evaluation and registration check the files against it
        model_artifacts.record_training_digest(info.model_id, info.model_uri)
        auc = roc_auc_score(holdout["y"], model.predict_proba(holdout[features])[:, 1])
        out.append(({"run_id": mlflow_run.info.run_id, "model_uri": info.model_uri,
                     "holdout_uri": holdout_uri, "task_type": "classification",
                     "primary_metric": "roc_auc", "greater_is_better": True,
                     "dataset_version": f"synthetic-{i}",
                     # the rest of a TrainResult (unused by evaluate and register)
                     "experiment_id": experiment, "target": "y", "time_column": None,
                     "metrics": {}, "feature_columns": features, "n_train": len(train),
                     "n_holdout": len(holdout), "best_params": {}}, auc))
    return out


def test_concurrent_register_and_promote_calls(production):
    candidates = _candidates(production)
    env = {k: v for k, v in production.env.items() if k.startswith("MLOPS_")}
    ctx = multiprocessing.get_context("spawn")
    go, queue = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_register_and_promote, args=(env, {
        "dag_id": DAG_ID, "run_id": f"it_concurrent_{i}", "interval_start": "2013-03-01",
        "interval_end": "2013-03-02", "params": {"model_name": "it_concurrent", "target": "y",
                                                 "source": "synthetic"},
    }, trained, go, queue)) for i, (trained, _auc) in enumerate(candidates)]
    for proc in procs:
        proc.start()
    try:
        time.sleep(5)  # let every process start
        go.set()
        results = [queue.get(timeout=600) for _ in procs]
    finally:
        for proc in procs:
            proc.join(60)
            if proc.is_alive():
                proc.kill()
    errors = [r["error"] for r in results if "error" in r]
    assert not errors, errors  # no IntegrityError, nor anything else
    assert sorted(int(r["version"]) for r in results) == list(range(1, 9))
    best = max(range(len(candidates)), key=lambda i: candidates[i][1])
    by_run = {r["run_id"]: r for r in results}
    champion = by_run[candidates[best][0]["run_id"]]["version"]
    with psycopg2.connect(mlflow_db(production)) as conn, conn.cursor() as cur:
        cur.execute("SELECT alias, version FROM registered_model_aliases WHERE name = %s",
                    ("it_concurrent",))
        aliases = dict(cur.fetchall())
        cur.execute("SELECT count(*) FROM model_versions WHERE name = %s", ("it_concurrent",))
        assert cur.fetchone()[0] == 8
    assert aliases["champion"] == int(champion)
    promoted = [r for r in results if r["promoted"]]
    assert promoted and all(r["reason"].startswith("promoted") for r in promoted)


# -------------------------------------------------------------------------------- lost worker

def test_a_killed_worker_s_task_is_retried_on_the_other(production, landed):
    api = production.api
    run_id = trigger(api, LOST_WORKER_DAY, {"training_window_days": 7,
                                            "min_champion_delta": 1.0}, "it_lost_worker")
    deadline = time.monotonic() + 600
    while True:
        train = task_instances(api, run_id).get("train", {})
        if train.get("state") == "running" and train.get("hostname"):
            break
        assert time.monotonic() < deadline, f"train never ran: {train}"
        time.sleep(0.3)
    victim = train["hostname"].split("@")[0]
    worker = psutil.Process(production.workers[victim])
    tree = [worker, *worker.children(recursive=True)]
    for proc in tree:  # the machine is gone: no process of it gets to clean up
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(tree, timeout=30)
    final = api.wait_for_run(DAG_ID, run_id, timeout=900)
    tis = task_instances(api, run_id)
    assert final["state"] == "success", {k: (v["state"], v["try_number"]) for k, v in tis.items()}
    survivor = (set(production.workers) - {victim}).pop()
    assert tis["train"]["try_number"] >= 2
    assert tis["train"]["hostname"].split("@")[0] == survivor
    # every task after the kill ran on the survivor
    later = [ti for ti in tis.values() if ti["start_date"] and ti["task_id"] in
             ("evaluate", "register")]
    assert all(ti["hostname"].split("@")[0] == survivor for ti in later)
    # no partial output stays in the lake: no temporary files, every file whole
    files = lake_files(production)
    assert not [f for f in files if ".tmp-" in f]
    for name in files:
        path = storage.local_path(production.config.lake_uri) / name
        if name.endswith(".parquet"):
            pd.read_parquet(path)
        elif name.endswith(".json"):
            json.loads(path.read_text())
    trained = api.xcom(DAG_ID, run_id, "train")
    assert storage.read_parquet(trained["holdout_uri"]).shape[0] == trained["n_holdout"]
    # and no MLflow run is left RUNNING by the killed attempt
    from mlflow.tracking import MlflowClient

    from pipeline_tasks.core import tracking

    tracking.configure_mlflow(production.config)
    assert not MlflowClient().search_runs([trained["experiment_id"]],
                                          "attributes.status = 'RUNNING'")
