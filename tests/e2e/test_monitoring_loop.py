"""End to end: monitoring closes the loop through the real scheduler.

A model trained on January serves July's flights (replayed the way clients send them, with the
flights' keys and times); ``ml_drift_monitoring`` finds the change, asks for a retrain through
the asset, the asset-triggered training run carries the reason, and the cool-down holds a second
request back. The tests in this module share one served model and run in file order.
"""

from __future__ import annotations

import time
import urllib.parse
from datetime import date
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from mlflow import MlflowClient

from pipeline_tasks.core import storage
from pipeline_tasks.core.http import free_port
from pipeline_tasks.monitoring import sources as monitoring
from pipeline_tasks.ops.airflow_api import StackError
from pipeline_tasks.ops.demo_data import flight_keys, flights_for_day, land_flights_feed
from pipeline_tasks.ops.replay import replay

MODEL = "flights_monitored"
TRAIN_DAY = date(2013, 1, 31)  # window of 30 days: January
DRIFTED = (date(2013, 7, 10), date(2013, 7, 11))  # July traffic against a January model
TRAINING = "ml_training_pipeline"
MONITORING = "ml_drift_monitoring"


def retrain_runs(api) -> list[dict]:
    runs = api.get(f"/api/v2/dags/{TRAINING}/dagRuns?limit=100")["dag_runs"]
    return [r for r in runs if r["run_type"] == "asset_triggered"]


def wait_logged(config, day: date, rows: int, timeout: float = 60) -> None:
    """The server writes its log every few seconds: wait until ``day``'s rows are there."""
    start = pd.Timestamp(day, tz="UTC").to_pydatetime()
    end = start + pd.Timedelta(days=1)
    deadline = time.monotonic() + timeout
    while len(monitoring.read_prediction_log(config, MODEL, start, end)) < rows:
        assert time.monotonic() < deadline, f"the prediction log of {day} did not fill"
        time.sleep(1)


@pytest.fixture(scope="module")
def client(pipeline):
    return MlflowClient(tracking_uri=pipeline.config.mlflow_tracking_uri,
                        registry_uri=pipeline.config.mlflow_registry_uri)


@pytest.fixture(scope="module")
def served(pipeline, client):
    config = pipeline.config
    land_flights_feed(config, date(2013, 1, 1), date(2013, 2, 1))
    land_flights_feed(config, date(2013, 6, 10), date(2013, 7, 31))  # for the retrain's window
    port = free_port()
    run = pipeline.run(TRAIN_DAY, {"training_window_days": 30, "model_name": MODEL,
                                   "serving_port": port})
    assert run["state"] == "success", pipeline.explain(run)
    assert pipeline.xcom(run, "deploy")["status"] == "live"
    here = config.with_overrides(serving_port=port)
    said: list[str] = []  # make replay shows each day as it is sent
    sent = replay(here, DRIFTED[0], DRIFTED[1], progress=said.append)
    assert sent.model_versions == {"1": sent.rows} and sent.outcome_files == 2
    assert [line.split(":")[0] for line in said] == [day.isoformat() for day in DRIFTED]
    assert f"{sent.rows_by_day[DRIFTED[0].isoformat()]} rows predicted" in said[0]
    for day in DRIFTED:
        wait_logged(here, day, sent.rows_by_day[day.isoformat()])
    v1 = client.get_model_version(MODEL, "1")
    return SimpleNamespace(config=here, port=port, v1=v1, rows=sent.rows,
                           by_day=sent.rows_by_day)


def test_a_drifted_interval_triggers_exactly_one_retrain(pipeline, served, client):
    assert retrain_runs(pipeline.api) == []
    run = pipeline.run(DRIFTED[0], {"model_name": MODEL}, dag_id=MONITORING)
    assert run["state"] == "success", pipeline.explain(run)
    drift = pipeline.xcom(run, "check_drift")
    assert drift["status"] == "drift" and drift["drift_detected"]
    assert drift["model_version"] == "1" and drift["current_source"] == "prediction_log"
    assert drift["rows_current"] == served.by_day[DRIFTED[0].isoformat()]
    # the reference is the snapshot v1 was trained on, found through its lineage tags
    assert drift["reference_dataset_version"] == served.v1.tags["dataset_version"]
    assert {"temp", "dewp"} <= set(drift["drifted_columns"])  # January vs July weather
    assert drift["drifted_share"] >= drift["share_threshold"]

    # the outputs: report, verdict, Prometheus text, MLflow metrics
    folder = storage.local_path(drift["verdict_uri"]).parent
    assert f"monitoring/{MODEL}/{MONITORING}/interval_end=2013-07-11" in folder.as_posix()
    verdict = storage.read_json(drift["verdict_uri"])
    assert verdict["status"] == "drift" and verdict["rows_current"] == drift["rows_current"]
    temp = verdict["columns"]["temp"]
    assert temp["drifted"] and temp["method"] and temp["score"] >= temp["threshold"]
    html = Path(storage.local_path(drift["report_uri"])).read_text(encoding="utf-8")
    assert "Dataset Drift" in html and "Dataset Summary" in html  # Evidently's two presets
    prom = storage.local_path(drift["metrics_uri"]).read_text()
    assert 'model_name="flights_monitored"' in prom and "mlops_drift_detected" in prom
    mlflow_run = client.get_run(drift["mlflow_run_id"])
    assert mlflow_run.data.metrics["drift_detected"] == 1.0
    series = client.search_runs([mlflow_run.info.experiment_id],
                                "tags.mlflow.runName = 'drift-over-time'")
    assert len(series) == 1 and series[0].data.metrics["drift_share"] == drift["drifted_share"]

    # the task's extra link in the Airflow UI opens this report through the /mlops views
    link = pipeline.api.xcom(MONITORING, run["run_id"], "check_drift", key="_link_mlops_check_drift")
    assert "/mlops/" in link and link.endswith("report.html"), link

    requested = pipeline.xcom(run, "request_retrain")
    assert requested["retrain"] and requested["asset_extra"]["drift_run_id"] == run["run_id"]
    assert requested["asset_extra"]["serving_port"] == served.port

    # the asset event starts the training DAG once, for this model, with the reason attached
    deadline = time.monotonic() + 120
    while not retrain_runs(pipeline.api):
        assert time.monotonic() < deadline, "no training run was triggered by the asset"
        time.sleep(2)
    [retrain] = retrain_runs(pipeline.api)
    final = pipeline.api.wait_for_run(TRAINING, retrain["dag_run_id"], timeout=900)
    assert final["state"] == "success", final
    trained = pipeline.api.xcom(TRAINING, retrain["dag_run_id"], "train")
    tags = client.get_run(trained["run_id"]).data.tags
    assert tags["retrain.drift_run_id"] == run["run_id"]
    assert tags["retrain.drifted_columns"] == ",".join(drift["drifted_columns"])
    assert "drift on" in tags["retrain.reason"]
    assert tags["airflow.data_interval_end"].startswith("2013-07-11")
    registered = pipeline.api.xcom(TRAINING, retrain["dag_run_id"], "register")
    assert registered["model_name"] == MODEL and registered["version"] == "2"


def test_a_second_drift_inside_the_cooldown_does_not_retrain(pipeline, served, client):
    # a newer champion exists now; the July 11 traffic was still served by v1
    from pipeline_tasks.model.registry import set_champion

    set_champion(MODEL, "2", reason="e2e: a newer champion", config=pipeline.config)
    v2 = client.get_model_version(MODEL, "2")
    assert v2.tags["dataset_version"] != served.v1.tags["dataset_version"]
    # two outcomes nobody asked a prediction for: counted and reported, not dropped silently
    strays = pd.DataFrame({"row_id": ["no-such-flight-1", "no-such-flight-2"],
                           "event_time": ["2013-07-10T12:00:00Z", "2013-07-10T13:00:00Z"],
                           "is_late": [1.0, 0.0]})
    storage.atomic_write_bytes(
        storage.join(pipeline.config.outcomes_uri, "outcomes_strays_2013-07-11.csv"),
        strays.to_csv(index=False).encode())

    run = pipeline.run(DRIFTED[1], {"model_name": MODEL}, dag_id=MONITORING)
    assert run["state"] == "success", pipeline.explain(run)
    drift = pipeline.xcom(run, "check_drift")
    assert drift["status"] == "drift" and drift["model_version"] == "1"
    assert drift["reference_dataset_version"] == served.v1.tags["dataset_version"]
    assert run["tasks"]["request_retrain"]["state"] == "skipped"
    withheld = pipeline.log(run, "request_retrain")
    assert "=== request_retrain stopped the run ===" in withheld and "cool-down" in withheld
    assert "What failed: RetrainWithheld: no retraining: drift on" in withheld
    assert "/mlops/reports/monitoring/" in withheld and "What to do:  The live data" in withheld

    # delayed labels: July 10's outcomes landed a day later and join on the flights' keys
    performance = pipeline.xcom(run, "check_performance")
    day = flights_for_day(DRIFTED[0])
    start = pd.Timestamp(DRIFTED[0], tz="UTC").to_pydatetime()
    logged = monitoring.read_prediction_log(served.config, MODEL, start,
                                            start + pd.Timedelta(days=1))
    labelled = flight_keys(day[day["is_late"].notna()])
    assert performance["interval_start"].startswith("2013-07-10")
    assert performance["model_version"] == "1"
    assert performance["rows_predicted"] == len(logged) == served.by_day["2013-07-10"]
    assert performance["rows_labelled"] == logged["row_id"].isin(labelled).sum() > 200
    # outcomes of flights that were not sent (a null the model refuses) match no prediction
    not_sent = len(set(labelled) - set(logged["row_id"]))
    assert performance["unmatched_labels"] == 2 + not_sent
    assert set(performance["unmatched_examples"]) <= \
        {"no-such-flight-1", "no-such-flight-2"} | (set(labelled) - set(logged["row_id"]))
    assert 0.5 <= performance["served_metrics"]["accuracy"] <= 1.0
    assert "roc_auc" in performance["served_metrics"]
    assert performance["status"] in ("ok", "degraded")
    time.sleep(10)  # nothing more is triggered
    assert len(retrain_runs(pipeline.api)) == 1


def test_an_interval_without_traffic_is_insufficient_data(pipeline, served):
    run = pipeline.run(date(2013, 7, 20), {"model_name": MODEL}, dag_id=MONITORING)
    assert run["state"] == "success", pipeline.explain(run)
    drift = pipeline.xcom(run, "check_drift")
    assert drift["status"] == "insufficient_data" and not drift["drift_detected"]
    assert drift["rows_current"] == 0
    assert pipeline.xcom(run, "check_performance")["status"] == "insufficient_labels"
    assert run["tasks"]["request_retrain"]["state"] == "skipped"


def test_a_file_with_a_column_the_reference_lacks_is_reported(pipeline, served, tmp_path):
    features = pipeline.api.xcom(TRAINING, retrain_runs(pipeline.api)[0]["dag_run_id"],
                                 "train")["feature_columns"]
    frame = flights_for_day(date(2013, 7, 12))[features].copy()
    frame["booking_channel"] = "web"
    current = tmp_path / "current.parquet"
    frame.to_parquet(current)
    run = pipeline.run(date(2013, 7, 12), {"model_name": MODEL, "current": current.as_uri()},
                       dag_id=MONITORING)
    assert run["tasks"]["check_drift"]["state"] == "success"
    drift = pipeline.xcom(run, "check_drift")
    assert drift["unexpected_columns"] == ["booking_channel"]
    assert drift["current_source"] == current.as_uri()
    assert drift["model_version"] == "2"  # no model_version column: the champion's reference
    assert "booking_channel" in pipeline.log(run, "check_drift")


def test_a_corrupt_log_partition_fails_the_run_and_names_the_file(pipeline, served):
    folder = storage.local_path(served.config.predictions_uri) / "date=2013-07-26"
    folder.mkdir(parents=True, exist_ok=True)
    bad = folder / "part-broken.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    run = pipeline.run(date(2013, 7, 26), {"model_name": MODEL}, dag_id=MONITORING)
    assert run["state"] == "failed"
    ti = run["tasks"]["check_drift"]
    assert ti["state"] == "failed" and ti["try_number"] == 1  # bad input: not retried
    assert str(bad) in urllib.parse.unquote(pipeline.log(run, "check_drift"))
    # nothing else was touched: the other days' logs are all there
    start = pd.Timestamp(DRIFTED[0], tz="UTC").to_pydatetime()
    kept = monitoring.read_prediction_log(served.config, MODEL, start,
                                          start + pd.Timedelta(days=2))
    assert len(kept) == served.rows
    assert bad.exists()


def _fail_if_unfinished(api, dag_id: str, run_id: str) -> None:
    """A run this test left waiting would hold the DAG (one active run) for the next tests."""
    if api.run(dag_id, run_id)["state"] not in ("success", "failed"):
        api.patch(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}", {"state": "failed"})


def test_a_blessed_model_waits_for_approval(pipeline, client, request, cpu_load):
    land_flights_feed(pipeline.config, date(2013, 2, 1), date(2013, 3, 8))
    name, port = "flights_approved", free_port()
    run = pipeline.api.trigger_interval(
        TRAINING, pd.Timestamp("2013-03-08", tz="UTC").to_pydatetime(),
        pd.Timestamp("2013-03-09", tz="UTC").to_pydatetime(),
        conf={"model_name": name, "training_window_days": 28, "require_approval": True,
              "serving_port": port}, run_id="test_approval")
    run_id = run["dag_run_id"]
    request.addfinalizer(lambda: _fail_if_unfinished(pipeline.api, TRAINING, run_id))
    path = f"/api/v2/dags/{TRAINING}/dagRuns/{run_id}/taskInstances/approve/-1/hitlDetails"
    def states_until(*wanted: str, reached=("success", "awaiting_input", "deferred")) -> dict:
        deadline = time.monotonic() + 600
        while True:
            states = {ti["task_id"]: ti["state"]
                      for ti in pipeline.api.task_instances(TRAINING, run_id)}
            if any(states.get(task) in reached for task in wanted):
                return states
            assert "failed" not in states.values(), states
            ended = pipeline.api.run(TRAINING, run_id)["state"]
            assert ended not in ("success", "failed"), (
                f"the run ended {ended} without waiting for approval: "
                f"{pipeline.api.xcom(TRAINING, run_id, 'register')}")
            assert time.monotonic() < deadline, states
            time.sleep(0.1)

    # A person answers as soon as the task parks, under CPU load, while the parked attempt's
    # process may still be exiting. If the scheduler has not seen that exit yet, it queues the
    # resumed task, then reads the stale "success", fails it ("executor reports success, state is
    # queued") and retries it: the retry must go on with the answer, not ask again.
    states_until("approval_gate")
    with cpu_load(processes=4):
        states = states_until("approve")
        pipeline.api.patch(path, {"chosen_options": ["Approve"]})
        try:
            final = pipeline.api.wait_for_run(TRAINING, run_id, timeout=600)
        except StackError as exc:  # say what each attempt of the approval did
            tries = {ti["task_id"]: ti for ti in
                     pipeline.api.task_instances(TRAINING, run_id)}["approve"]["try_number"]
            logs = "\n".join(f"--- approve, try {n}:\n"
                             f"{pipeline.api.task_log(TRAINING, run_id, 'approve', n)}"
                             for n in range(1, tries + 1))
            raise AssertionError(f"{exc}\n{logs}") from exc
    assert states["deploy"] in (None, "none", "scheduled")  # it waited, and deployed nothing
    assert final["state"] == "success", {ti["task_id"]: ti["state"] for ti in
                                         pipeline.api.task_instances(TRAINING, run_id)}
    registered = pipeline.api.xcom(TRAINING, run_id, "register")
    assert registered["awaiting_approval"] and not registered["promoted"]
    assert registered["champion_version"] is None  # register did not make it champion
    deployed = pipeline.api.xcom(TRAINING, run_id, "deploy")
    assert deployed["status"] == "live" and deployed["version"] == "1"
    # the approval made it champion (and is what the promotion notification reports)
    assert deployed["approval"]["promoted"] and deployed["approval"]["previous_champion"] is None
    assert client.get_registered_model(name).aliases["champion"] in (1, "1")
    assert client.get_model_version(name, "1").tags["promotion_reason"].startswith(
        "approved by a human")
    # the answer came while the parked attempt was exiting: Airflow retried the task, and the
    # retry went on with the answer
    approve = {ti["task_id"]: ti for ti in pipeline.api.task_instances(TRAINING, run_id)}["approve"]
    for attempt in range(2, approve["try_number"] + 1):
        log = pipeline.api.task_log(TRAINING, run_id, "approve", attempt)
        assert "goes on with it instead of asking again" in log

    # Cleared on purpose after a try acted on the answer and succeeded: the person is asked again
    pipeline.api.post(f"/api/v2/dags/{TRAINING}/clearTaskInstances",
                      {"dry_run": False, "dag_run_id": run_id, "task_ids": ["approve"],
                       "include_downstream": False, "only_failed": False,
                       "reset_dag_runs": True})
    states_until("approve", reached=("awaiting_input",))
    again = {ti["task_id"]: ti for ti in pipeline.api.task_instances(TRAINING, run_id)}["approve"]
    assert again["try_number"] > approve["try_number"], again
    assert not pipeline.api.get(path)["response_received"]
    _fail_if_unfinished(pipeline.api, TRAINING, run_id)
