"""One server, several models: each answers by name with its own contract, metrics labels and
prediction-log partition; the first is the default of ``/predict``."""

from __future__ import annotations

import mlflow.sklearn
import pandas as pd
import pytest
from starlette.testclient import TestClient

from pipeline_tasks.core import storage
from pipeline_tasks.core.errors import ConfigError
from pipeline_tasks.serving import model as serving_model
from pipeline_tasks.serving.app import create_app
from pipeline_tasks.serving.predlog import read_log_file

FLIGHTS, DIAMONDS = "flights_serving", "diamonds_serving"  # registered by conftest.py


@pytest.fixture(scope="module")
def both(served, other_registered, serving_config, tmp_path_factory):
    other = serving_model.load(serving_config, DIAMONDS, "1", tmp_path_factory.mktemp("work2"))
    return [served, other]


@pytest.fixture(scope="module")
def client(both, serving_config, predlog):
    app = create_app(both, max_body_bytes=serving_config.serving_max_body_bytes,
                     prediction_log=predlog, token="")
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def _records(rows: pd.DataFrame) -> list[dict]:
    return rows.to_dict(orient="records")


def _offline(model_uri: str, rows: pd.DataFrame) -> list:
    frame = pd.DataFrame(_records(rows)).astype({c: float for c in rows.columns
                                                 if rows[c].map(type).eq(float).any()})
    return mlflow.sklearn.load_model(model_uri).predict(frame).tolist()


def test_each_model_answers_by_name_with_its_offline_predictions(
        client, registered, other_registered, flights_rows, other_rows):
    ready = client.get("/ready").json()
    assert ready["models"] == {FLIGHTS: "1", DIAMONDS: "1"}
    assert ready["model_name"] == FLIGHTS  # the first is the default
    listed = client.get("/models").json()["models"]
    assert [m["model_name"] for m in listed] == [FLIGHTS, DIAMONDS]
    assert listed[1]["task_type"] == "regression"

    diamonds = other_rows.head(50)
    answer = client.post(f"/models/{DIAMONDS}/predict", json={"records": _records(diamonds)})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["model_name"], body["model_version"]) == (DIAMONDS, "1")
    assert body["predictions"] == pytest.approx(_offline(other_registered.model_uri, diamonds))
    assert "scores" not in body

    flights = flights_rows.head(50)
    default = client.post("/predict", json={"records": _records(flights)}).json()
    named = client.post(f"/models/{FLIGHTS}/predict", json={"records": _records(flights)}).json()
    assert default["model_name"] == named["model_name"] == FLIGHTS
    assert default["predictions"] == named["predictions"]
    assert client.get(f"/models/{DIAMONDS}/metadata").json()["model_name"] == DIAMONDS
    assert client.get("/metadata").json()["model_name"] == FLIGHTS

    # the V2 protocol by name, with the same answers
    tensors = [{"name": c, "shape": [len(diamonds)], "datatype": "FP64" if c in (
        "carat", "depth", "table", "x", "y", "z") else "BYTES", "data": diamonds[c].tolist()}
        for c in diamonds.columns]
    v2 = client.post(f"/v2/models/{DIAMONDS}/versions/1/infer", json={"inputs": tensors})
    assert v2.status_code == 200, v2.text
    assert v2.json()["outputs"][0]["data"] == pytest.approx(body["predictions"])


def test_each_model_keeps_its_own_contract_and_unknown_names_are_404(client, flights_rows):
    # flights rows sent to the diamonds model: its contract refuses them, naming a column
    wrong = client.post(f"/models/{DIAMONDS}/predict",
                        json={"records": _records(flights_rows.head(3))})
    assert wrong.status_code == 422 and "carat" in wrong.json()["error"], wrong.text
    for path in ("/models/no_such_model_here/predict", "/v2/models/no_such_model_here/infer"):
        missing = client.post(path, json={"records": [{"a": 1}]})
        assert missing.status_code == 404 and "no_such_model_here" not in missing.text
    assert client.get(f"/v2/models/{DIAMONDS}/versions/7").status_code == 404


def test_metrics_and_the_prediction_log_are_per_model(client, predlog, other_rows, flights_rows,
                                                      serving_config):
    client.post(f"/models/{DIAMONDS}/predict", json={"records": _records(other_rows.head(7))},
                headers={"X-Request-Id": "multi-diamonds-1"})
    client.post("/predict", json={"records": _records(flights_rows.head(5))},
                headers={"X-Request-Id": "multi-flights-1"})
    client.post("/models/no_such_model_here/predict", json={"records": []})
    text = client.get("/metrics").text
    assert 'mlops_serving_model_info{artifact_sha256=' in text
    assert f'model_name="{DIAMONDS}"' in text and f'model_name="{FLIGHTS}"' in text
    assert (f'mlops_serving_requests_total{{endpoint="predict",model="{DIAMONDS}",'
            'status="200"}') in text
    assert f'mlops_serving_rows_predicted_total{{model="{DIAMONDS}"}}' in text
    # a name the server does not serve never becomes a label
    assert "no_such_model_here" not in text
    assert 'mlops_serving_requests_total{endpoint="predict",model="",status="404"}' in text

    predlog.flush()
    root = storage.local_path(serving_config.predictions_uri)
    for model, request_id, rows, column in ((DIAMONDS, "multi-diamonds-1", 7, "carat"),
                                            (FLIGHTS, "multi-flights-1", 5, "carrier")):
        files = sorted(root.glob(f"date=*/model={model}/part-*.parquet"))
        logged = pd.concat([read_log_file(f) for f in files], ignore_index=True)
        mine = logged[logged["request_id"] == request_id]
        assert len(mine) == rows and (mine["model_name"] == model).all()
        assert column in logged.columns  # each partition holds its own model's columns
        assert set(logged["model_name"]) == {model}


def test_several_versions_of_one_model_answer_by_version(
        both, train_and_register, regression_frame, other_registered, other_rows,
        serving_config, tmp_path):
    trained, registration = train_and_register(
        regression_frame.sample(frac=0.5, random_state=7), "serving-diamonds-b", serving_config,
        blessed=True, model_name=DIAMONDS, target="price")
    newer = registration.version
    loaded = serving_model.load(serving_config, DIAMONDS, newer, tmp_path)
    app = create_app([*both, loaded], max_body_bytes=serving_config.serving_max_body_bytes,
                     prediction_log=None, token="")
    rows = other_rows.head(20)
    tensors = [{"name": c, "shape": [len(rows)], "datatype": "FP64" if c in (
        "carat", "depth", "table", "x", "y", "z") else "BYTES", "data": rows[c].tolist()}
        for c in rows.columns]
    with TestClient(app, raise_server_exceptions=False) as client:
        ready = client.get("/ready").json()
        assert ready["models"][DIAMONDS] == "1"  # the first given is the name's own
        assert ready["versions"][DIAMONDS] == ["1", newer]
        assert client.get(f"/v2/models/{DIAMONDS}").json()["versions"] == ["1", newer]
        by_name = client.post(f"/models/{DIAMONDS}/predict", json={"records": _records(rows)})
        assert by_name.json()["model_version"] == "1"
        answers = {}
        for version in ("1", newer):
            answer = client.post(f"/v2/models/{DIAMONDS}/versions/{version}/infer",
                                 json={"inputs": tensors})
            assert answer.status_code == 200 and answer.json()["model_version"] == version
            answers[version] = answer.json()["outputs"][0]["data"]
    assert answers["1"] == pytest.approx(_offline(other_registered.model_uri, rows))
    assert answers[newer] == pytest.approx(_offline(trained.model_uri, rows))
    assert answers["1"] != pytest.approx(answers[newer])


def test_a_model_version_is_served_once(served):
    with pytest.raises(ConfigError, match="each model version is served once"):
        create_app([served, served], max_body_bytes=1000, prediction_log=None, token="")
    with pytest.raises(ConfigError, match="at least one model"):
        create_app([], max_body_bytes=1000, prediction_log=None, token="")
