"""The model server through HTTP (Starlette's test client): answers, refusals, auth, metrics, log."""

from __future__ import annotations

import json
import random
import string
import subprocess
import sys

import mlflow.sklearn
import pandas as pd
import pytest
from starlette.testclient import TestClient

from pipeline_tasks.core import storage
from pipeline_tasks.serving import model as serving_model
from pipeline_tasks.serving.app import create_app
from pipeline_tasks.serving.predlog import read_log_file

MODEL = "flights_serving"  # registered by conftest.py


@pytest.fixture(scope="module")
def client(served, serving_config, predlog):
    app = create_app(served, max_body_bytes=serving_config.serving_max_body_bytes,
                     prediction_log=predlog, token="")
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def records(rows: pd.DataFrame) -> list[dict]:
    return rows.to_dict(orient="records")


def test_predictions_equal_the_model_offline(client, registered, flights_rows):
    offline = mlflow.sklearn.load_model(registered.model_uri)
    frame = flights_rows.head(200)
    expected = offline.predict(serving_model_frame(frame)).tolist()
    expected_scores = offline.predict_proba(serving_model_frame(frame))[:, 1].tolist()
    answer = client.post("/predict", json={"records": records(frame)})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["predictions"] == expected
    assert body["scores"] == pytest.approx(expected_scores, abs=1e-12)
    assert body["model_name"] == MODEL and body["model_version"] == "1"
    columnar = client.post("/predict", json={"columns": {c: frame[c].tolist()
                                                         for c in frame.columns}})
    assert columnar.json()["predictions"] == expected


def serving_model_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows as the model saw them in training: missing values as NaN."""
    return frame.infer_objects().fillna(value=float("nan"))


def test_metadata_describes_the_version(client, registered, flights_frame):
    meta = client.get("/metadata").json()
    assert meta["model_name"] == MODEL and meta["model_version"] == "1"
    assert meta["run_id"] == registered.run_id and meta["dataset_version"] == "sha-serving"
    assert len(meta["artifact_sha256"]) == 64
    names = [c["name"] for c in meta["signature"]["inputs"]]
    assert names == registered.feature_columns
    nullable = {c["name"] for c in meta["signature"]["inputs"] if c["nullable"]}
    labelled = flights_frame[flights_frame["is_late"].notna()]
    assert nullable == {c for c in names if labelled[c].isna().any()}
    assert client.get("/health").json() == {"status": "alive"}
    assert client.get("/ready").json()["model_version"] == "1"


def test_refusals_are_short_and_leak_nothing(client, flights_rows, serving_config):
    row = records(flights_rows.head(1))[0]
    cases = [
        ({"records": [{**row, "carrier": 12345}]}, 422, "column 'carrier' row 0: expected a string"),
        ({"records": [{**row, "distance": None}]}, 422, "column 'distance' row 0: null"),
        ({"records": [row] * 501}, 413, "501 rows"),
    ]
    for body, status, words in cases:
        answer = client.post("/predict", json=body)
        assert answer.status_code == status and words in answer.json()["error"]
        assert "12345" not in answer.text and "Traceback" not in answer.text
    assert client.post("/predict", content=b'{"records": [NaN]}',
                       headers={"content-type": "application/json"}).status_code == 400
    assert client.post("/predict", content=b"{not json").json()["error"] == \
        "body is not valid JSON"
    assert client.post("/predict", content=b"x" * 300_000).status_code == 413
    assert client.post("/predict", content=b"{}", headers={"content-type": "text/csv"}) \
        .status_code == 415
    assert client.get("/predict").status_code == 405
    assert client.get("/../../etc/passwd").status_code == 404


def test_fuzzed_payloads_never_break_the_server(client, flights_rows):
    rng = random.Random(7)
    row = records(flights_rows.head(1))[0]
    marker = "ZZ_ECHO_MARKER"

    def junk(depth=0):
        pick = rng.randrange(9 if depth < 4 else 5)
        if pick == 0:
            return None
        if pick == 1:
            return rng.choice([0, -1, 10**rng.randrange(400), 1e308, -1e-308, 2**63])
        if pick == 2:
            return marker + "".join(rng.choices(string.printable, k=rng.randrange(20)))
        if pick == 3:
            return rng.choice([True, False])
        if pick == 4:
            return rng.random() * 10 ** rng.randrange(-5, 20)
        if pick in (5, 6):
            return [junk(depth + 1) for _ in range(rng.randrange(4))]
        return {rng.choice([*row, marker, "records", "columns"]): junk(depth + 1)
                for _ in range(rng.randrange(4))}

    for i in range(400):
        kind = i % 4
        if kind == 0:
            content = bytes(rng.randrange(256) for _ in range(rng.randrange(200)))
        elif kind == 1:
            content = json.dumps(junk()).encode()
        elif kind == 2:  # a valid row with one field broken
            broken = dict(row)
            broken[rng.choice(list(row))] = junk()
            content = json.dumps({"records": [broken]}).encode()
        else:
            content = ("[" * rng.randrange(1, 5000)).encode()
        answer = client.post("/predict", content=content,
                             headers={"content-type": "application/json"})
        assert answer.status_code in (200, 400, 413, 422), (i, answer.status_code)
        if answer.status_code != 200:
            assert set(answer.json()) == {"error", "request_id"}
            assert marker not in answer.text and "Traceback" not in answer.text
    assert client.post("/predict", json={"records": [row]}).status_code == 200


def test_metrics_count_requests_errors_and_rows(client, flights_rows):
    row = records(flights_rows.head(3))
    client.post("/predict", json={"records": row})
    client.post("/predict", json={"records": [{}]})
    text = client.get("/metrics").text
    assert 'mlops_serving_model_info{artifact_sha256=' in text and 'model_version="1"' in text
    assert ('mlops_serving_requests_total{endpoint="predict",model="flights_serving",'
            'status="200"}') in text
    assert 'mlops_serving_errors_total{kind="missing_column",model="flights_serving"}' in text
    assert "mlops_serving_request_seconds_bucket" in text
    rows = [line for line in text.splitlines()
            if line.startswith("mlops_serving_rows_predicted_total")]
    assert rows and float(rows[0].split()[-1]) >= 3


def test_bearer_token_guards_everything_but_health(served, serving_config):
    app = create_app(served, max_body_bytes=1000, prediction_log=None, token="s3cret-token")
    with TestClient(app) as guarded:
        assert guarded.get("/metadata").status_code == 401
        refused = guarded.get("/metadata", headers={"Authorization": "Bearer wrong"})
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert "s3cret" not in refused.text
        assert guarded.post("/predict", json={}).status_code == 401
        assert guarded.get("/metadata", headers={"Authorization": "Bearer s3cret-token"}) \
            .status_code == 200
        assert guarded.get("/health").status_code == 200
        assert guarded.get("/ready").status_code == 200


def test_prediction_log_holds_every_served_row(client, predlog, flights_rows, serving_config):
    frame = flights_rows.head(25)
    answer = client.post("/predict", json={"records": records(frame)},
                         headers={"X-Request-Id": "log-check-1"}).json()
    predlog.flush()
    root = storage.local_path(serving_config.predictions_uri)
    files = sorted(root.glob("date=*/model=*/part-*.parquet"))
    assert files
    logged = pd.concat([read_log_file(f) for f in files], ignore_index=True)
    mine = logged[logged["request_id"] == "log-check-1"].reset_index(drop=True)
    assert len(mine) == 25
    assert mine["prediction"].tolist() == answer["predictions"]
    assert mine["score"].tolist() == pytest.approx(answer["scores"])
    assert (mine["model_name"] == MODEL).all() and (mine["model_version"] == "1").all()
    assert str(mine["predicted_at"].dtype).endswith(", UTC]")
    assert mine["carrier"].tolist() == frame["carrier"].tolist()
    assert (mine["event_time"] == mine["predicted_at"]).all()  # no event_time given: now
    assert mine["row_id"].tolist() == [f"log-check-1-{i}" for i in range(25)]
    day = mine["predicted_at"].iloc[0].strftime("%Y-%m-%d")
    assert any(f.parent.parent.name == f"date={day}" and f.parent.name == f"model={MODEL}"
               for f in files)


def test_row_keys_and_event_time_file_rows_under_their_day(client, predlog, flights_rows,
                                                           serving_config):
    frame = flights_rows.head(3)
    ids = ["UA-1545-2013-01-01", "AA-1141-2013-01-01", 7]
    # two days back: inside the accepted window, on another day than the prediction itself
    when = (pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=2)).floor("h")
    answer = client.post("/predict", json={"columns": {c: frame[c].tolist() for c in frame},
                                           "ids": ids,
                                           "event_time": when.strftime("%Y-%m-%dT%H:%M:%S")},
                         headers={"X-Request-Id": "log-check-2"})
    assert answer.status_code == 200, answer.text
    predlog.flush()
    part = storage.local_path(serving_config.predictions_uri) / f"date={when:%Y-%m-%d}" / \
        f"model={MODEL}"
    logged = pd.concat([read_log_file(f) for f in part.glob("part-*.parquet")])
    mine = logged[logged["request_id"] == "log-check-2"]
    assert mine["row_id"].tolist() == ["UA-1545-2013-01-01", "AA-1141-2013-01-01", "7"]
    assert (mine["event_time"] == when).all()


@pytest.mark.parametrize("extra, field", [
    ({"ids": ["a"]}, "'ids'"), ({"ids": [1.5, "b", "c"]}, "ids[0]"),
    ({"ids": ["", "b", "c"]}, "ids[0]"), ({"ids": ["x" * 129, "b", "c"]}, "ids[0]"),
    ({"event_time": "yesterday"}, "'event_time'"), ({"event_time": 1357016400}, "'event_time'"),
])
def test_bad_ids_or_event_time_are_refused(client, flights_rows, extra, field):
    frame = flights_rows.head(3)
    answer = client.post("/predict", json={"records": records(frame), **extra})
    assert answer.status_code == 422 and field in answer.json()["error"]


def test_a_tampered_artifact_is_refused_at_start(registered, serving_config, tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(serving_config.mlflow_tracking_uri, serving_config.mlflow_registry_uri)
    source = client.get_model_version(MODEL, "1").source
    root = storage.local_path(client.get_logged_model(source.removeprefix("models:/"))
                              .artifact_location)
    target = root / "MLmodel"
    original = target.read_bytes()
    target.write_bytes(original + b"\n# edited\n")
    try:
        env = {"MLOPS_HOME": serving_config.home, "PATH": "/usr/bin:/bin"}
        done = subprocess.run([sys.executable, "-m", "pipeline_tasks.serving", "--model", MODEL,
                               "--ref", "1", "--port", "0", "--workdir", str(tmp_path)], env=env,
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 2
        assert "refusing to serve flights_serving@1" in done.stderr
        assert "does not match" in done.stderr and "recorded at registration" in done.stderr
    finally:
        target.write_bytes(original)


def test_concurrent_requests_batched_together_get_their_own_answers(served, registered,
                                                                    flights_rows):
    import asyncio

    import httpx

    offline = mlflow.sklearn.load_model(registered.model_uri)
    app = create_app(served, max_body_bytes=10**7, prediction_log=None, token="")
    slices = [flights_rows.iloc[i * 7:i * 7 + 1 + i % 5] for i in range(24)]

    async def fire():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return await asyncio.gather(*[
                http.post("/predict", json={"records": records(rows)}) for rows in slices])

    answers = asyncio.run(fire())
    for rows, answer in zip(slices, answers, strict=True):
        assert answer.status_code == 200
        assert answer.json()["predictions"] == offline.predict(serving_model_frame(rows)).tolist()


def test_requests_answered_by_one_call_are_logged_each_as_its_own(served, registered,
                                                                  flights_rows, tmp_path):
    """The batcher hands the log a whole model call at once (its combined columns): every
    request's rows still carry its own request id, row keys, event time and answer."""
    import asyncio

    import httpx

    from pipeline_tasks.serving.predlog import PredictionLog

    uri = (tmp_path / "predictions").as_uri()
    log = PredictionLog(uri, flush_s=3600, max_rows=10_000)
    app = create_app(served, max_body_bytes=10**7, prediction_log=log, token="")
    app.state.batcher.max_wait_s = 30.0  # the 12 requests in flight together share calls
    when = (pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=1)).floor("h")
    slices = [flights_rows.iloc[i * 5:i * 5 + 1 + i % 3] for i in range(12)]

    def body(i: int, rows: pd.DataFrame) -> dict:
        out: dict = {"records": records(rows)}
        if i % 2:  # half give their row keys and an event time, half do not
            out["ids"] = [f"key-{i}-{k}" for k in range(len(rows))]
            out["event_time"] = when.isoformat()
        return out

    async def fire():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return await asyncio.gather(*[
                http.post("/predict", json=body(i, rows), headers={"X-Request-Id": f"req-{i}"})
                for i, rows in enumerate(slices)])

    answers = asyncio.run(fire())
    assert app.state.batcher.calls < len(slices)  # some calls answered several requests
    assert log.flush() == sum(len(rows) for rows in slices)
    files = sorted(storage.local_path(uri).glob("date=*/model=*/part-*.parquet"))
    logged = pd.concat([read_log_file(f) for f in files], ignore_index=True)
    for i, (rows, answer) in enumerate(zip(slices, answers, strict=True)):
        mine = logged[logged["request_id"] == f"req-{i}"].sort_values("row_id")
        assert mine["prediction"].tolist() == answer.json()["predictions"]
        assert mine["distance"].tolist() == rows["distance"].tolist()
        if i % 2:
            assert mine["row_id"].tolist() == [f"key-{i}-{k}" for k in range(len(rows))]
            assert (mine["event_time"] == when).all()
        else:
            assert mine["row_id"].tolist() == [f"req-{i}-{k}" for k in range(len(rows))]
            assert (mine["event_time"] == mine["predicted_at"]).all()


def test_a_lone_client_never_waits_and_concurrent_requests_share_calls(served, registered,
                                                                        flights_rows):
    """Adaptive batching: with a waiting window far longer than any test, one client sending
    request after request never makes a call wait (there is never another request to wait
    for); eight at once go to the model in fewer calls than requests."""
    import asyncio

    import httpx

    offline = mlflow.sklearn.load_model(registered.model_uri)
    app = create_app(served, max_body_bytes=10**7, prediction_log=None, token="")
    batcher = app.state.batcher
    batcher.max_wait_s = 30.0
    rows = [flights_rows.iloc[i:i + 1] for i in range(8)]

    async def one_by_one():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return [await http.post("/predict", json={"records": records(r)}) for r in rows]

    async def all_at_once():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return await asyncio.gather(*[http.post("/predict", json={"records": records(r)})
                                          for r in rows])

    expected = [offline.predict(serving_model_frame(r)).tolist() for r in rows]
    answers = asyncio.run(one_by_one())
    assert [a.json()["predictions"] for a in answers] == expected
    assert batcher.calls == 8 and batcher.waits == 0
    answers = asyncio.run(all_at_once())
    assert [a.json()["predictions"] for a in answers] == expected
    assert batcher.calls < 16
    metrics = TestClient(app).get("/metrics").text
    assert "mlops_serving_batch_requests_count" in metrics


def test_sigterm_writes_every_answered_row(registered, serving_config, flights_rows, tmp_path):
    """A clean stop (SIGTERM: a switch, a rollback, Ctrl-C of the demo) loses no logged row,
    though uvicorn re-raises the signal once it has shut down."""
    import signal
    import time

    from pipeline_tasks.core import http

    port = http.free_port()
    lake = (tmp_path / "lake").as_uri()
    env = {"MLOPS_HOME": serving_config.home, "MLOPS_LAKE_URI": lake, "PATH": "/usr/bin:/bin",
           "MLOPS_PREDICTION_LOG_FLUSH_S": "3600",  # nothing is written before the signal
           "MLOPS_SERVING_EVENT_TIME_WINDOW": "none"}  # a replay of 2013's traffic
    server = subprocess.Popen([sys.executable, "-m", "pipeline_tasks.serving", "--model", MODEL,
                               "--ref", "1", "--port", str(port), "--workdir", str(tmp_path)],
                              env=env, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while http.try_json(url + "/ready", timeout=2) is None:
            assert server.poll() is None and time.monotonic() < deadline, server.stderr.read()
            time.sleep(0.3)
        rows = records(flights_rows.head(100))
        for i, row in enumerate(rows):
            http.fetch_json(url + "/predict", {"records": [row], "ids": [f"row-{i}"],
                                               "event_time": "2013-01-01T05:00:00"})
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
    logged = pd.concat(read_log_file(p) for p in
                       storage.local_path(lake).glob("predictions/date=2013-01-01/model=*/*.parquet"))
    assert sorted(logged["row_id"]) == sorted(f"row-{i}" for i in range(100))


def test_a_baked_in_folder_whose_mlmodel_names_pickle_is_refused(registered, serving_config,
                                                                 tmp_path):
    """The docker image's loader (``load_dir``): the files match the sha256 it is given, but
    the MLmodel names a pickle format: refused, whatever the folder's digest says."""
    from pipeline_tasks.core import model_artifacts

    folder = model_artifacts.download(f"models:/{MODEL}/1", tmp_path / "model")
    mlmodel = folder / "MLmodel"
    mlmodel.write_text(mlmodel.read_text().replace("serialization_format: skops",
                                                   "serialization_format: cloudpickle"))
    with pytest.raises(model_artifacts.UntrustedModel,
                       match="serialization format 'cloudpickle' is refused"):
        serving_model.load_dir(serving_config, folder, model_artifacts.folder_digest(folder))
