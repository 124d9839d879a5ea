"""The Open Inference Protocol (V2) routes beside ``/predict``: a real client (tritonclient) against
a real server process, the V2 refusals, and the OpenAPI document fuzzed with schemathesis."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from pipeline_tasks.core import http, storage
from pipeline_tasks.serving.app import create_app
from pipeline_tasks.serving.oip import DATATYPES
from pipeline_tasks.serving.predlog import read_log_file

MODEL = "flights_serving"  # registered by conftest.py
MARKER = "ZZ_ECHO_MARKER_V2"


@pytest.fixture(scope="module")
def app(served, serving_config, predlog):
    return create_app(served, max_body_bytes=serving_config.serving_max_body_bytes,
                      prediction_log=predlog, token="")


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def model_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows as the model saw them in training: missing values as NaN."""
    return frame.infer_objects().fillna(value=float("nan"))


def tensors(served, frame: pd.DataFrame, shape_2d: bool = False) -> list[dict]:
    """One V2 JSON tensor per model input column."""
    n = len(frame)
    return [{"name": c.name, "datatype": DATATYPES[c.kind][0],
             "shape": [n, 1] if shape_2d else [n], "data": frame[c.name].tolist()}
            for c in served.contract.columns]


@pytest.fixture(scope="module")
def server(registered, serving_config, tmp_path_factory):
    """``python -m pipeline_tasks.serving`` on a free port; its URL."""
    port = http.free_port()
    work = tmp_path_factory.mktemp("oip-server")
    env = {"MLOPS_HOME": serving_config.home, "MLOPS_LAKE_URI": (work / "lake").as_uri(),
           "PATH": "/usr/bin:/bin", "MLOPS_SERVING_MAX_ROWS": str(serving_config.serving_max_rows)}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline_tasks.serving", "--model", MODEL,
                             "--ref", "1", "--port", str(port), "--host", "127.0.0.1",
                             "--workdir", str(work)],
                            env=env, stderr=subprocess.PIPE, text=True)
    try:
        url = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while http.try_json(f"http://{url}/ready", timeout=2) is None:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_tritonclient_gets_the_offline_predictions(server, served, registered, flights_rows):
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    client = triton.InferenceServerClient(url=server)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, "1")
    meta = client.get_model_metadata(MODEL)
    assert meta["name"] == MODEL and meta["versions"] == ["1"]
    assert [t["name"] for t in meta["inputs"]] == registered.feature_columns
    assert [t["name"] for t in meta["outputs"]] == ["predictions", "scores"]
    assert client.get_model_metadata(MODEL, "1") == meta

    frame = flights_rows.head(120)
    rows = model_frame(frame)
    assert not rows.isna().any().any()  # JSON tensors carry no NaN: labelled rows have none
    inputs = []
    for column in meta["inputs"]:
        values = rows[column["name"]].to_numpy()
        values = values.astype(object) if column["datatype"] == "BYTES" else \
            values.astype({"FP64": np.float64, "INT64": np.int64, "BOOL": np.bool_}
                          [column["datatype"]])
        tensor = triton.InferInput(column["name"], [len(rows)], column["datatype"])
        inputs.append(tensor.set_data_from_numpy(values, binary_data=False))
    offline = mlflow.sklearn.load_model(registered.model_uri)
    expected = offline.predict(rows).tolist()
    expected_scores = offline.predict_proba(rows)[:, 1].tolist()

    result = client.infer(MODEL, inputs)
    assert result.as_numpy("predictions").tolist() == expected
    assert result.as_numpy("scores").tolist() == pytest.approx(expected_scores, abs=1e-12)
    versioned = client.infer(MODEL, inputs, model_version="1", request_id="order-7",
                             outputs=[triton.InferRequestedOutput("scores", binary_data=False)])
    response = versioned.get_response()
    assert response["model_version"] == "1" and response["id"] == "order-7"
    assert [o["name"] for o in response["outputs"]] == ["scores"]
    assert versioned.as_numpy("scores").tolist() == pytest.approx(expected_scores, abs=1e-12)

    for name, version in ((MODEL + "_nope", ""), (MODEL, "7")):
        with pytest.raises(InferenceServerException) as refused:
            client.infer(name, inputs, model_version=version)
        assert refused.value.status() == "404"
        assert "nope" not in refused.value.message()
        with pytest.raises(InferenceServerException) as refused:
            client.get_model_metadata(name, version)
        assert refused.value.status() == "404"
    assert not client.is_model_ready(MODEL, "7")
    # the binary tensor extension: refused, and it says how to send the data
    binary = [triton.InferInput(t.name(), [len(rows)], t.datatype()) for t in inputs]
    for tensor, column in zip(binary, meta["inputs"], strict=True):
        values = rows[column["name"]].to_numpy()
        tensor.set_data_from_numpy(values.astype(object) if column["datatype"] == "BYTES" else
                                   values.astype({"FP64": np.float64, "INT64": np.int64,
                                                  "BOOL": np.bool_}[column["datatype"]]))
    with pytest.raises(InferenceServerException) as refused:
        client.infer(MODEL, binary)
    assert refused.value.status() == "415" and "JSON tensors" in refused.value.message()
    client.close()


def test_v2_refusals_name_the_column_and_echo_nothing(client, served, flights_rows):
    frame = flights_rows.head(3)
    good = tensors(served, frame)
    url = f"/v2/models/{MODEL}/infer"
    assert client.post(url, json={"inputs": good}).status_code == 200
    by_kind = {c.kind: c.name for c in served.contract.columns}
    number = by_kind.get("float") or by_kind["int"]
    text = by_kind["str"]
    required = next(c.name for c in served.contract.columns if c.required)

    def swap(column, **change):
        return [{**t, **change} if t["name"] == column else t for t in good]

    cases = [
        ([t for t in good if t["name"] != required], 422, f"missing input tensor '{required}'"),
        (swap(text, datatype="FP64", data=[1.5, 2.5, 3.5]), 422, f"input '{text}': datatype"),
        (swap(number, datatype="BYTES", data=[MARKER] * 3), 422, f"input '{number}': datatype"),
        (swap(text, data=[MARKER, 12345, MARKER]), 422, f"column '{text}' row 1: expected"),
        (swap(number, shape=[2], data=frame[number].tolist()[:2]), 422,
         "rows, but the other inputs have"),
        (swap(number, shape=[3, 1]), 200, None),
        (swap(number, data=frame[number].tolist()[:2] + [None]) if number == required else
         swap(required, data=[None, *frame[required].tolist()[1:]]), 422,
         f"column '{required}'"),
        (swap(number, shape=[4]), 422, "input '"),
        (swap(text, name=MARKER), 422, "a tensor the model does not take"),
        (swap(text, datatype=MARKER), 422, f"input '{text}': datatype must be BYTES, got an"),
        (swap(number, shape=[3, 2]), 422, f"input '{number}': shape must be [n] or [n, 1]"),
        ([{**t, "shape": [501], "data": t["data"] * 167} for t in good], 413, "501 rows"),
    ]
    for inputs, status, words in cases:
        answer = client.post(url, json={"inputs": inputs, "id": f"{MARKER} id"})
        assert answer.status_code == status, (words, answer.text)
        if status != 200:
            body = answer.json()
            assert set(body) == {"error"} and words in body["error"], (words, body)
            assert MARKER not in answer.text and "12345" not in answer.text
            assert "Traceback" not in answer.text
    assert client.post(url, content=b"{not json").json() == {"error": "body is not valid JSON"}
    assert client.post(url, json={"inputs": good, "parameters": {"content_type": "np"}}) \
        .status_code == 422
    assert client.post(f"/v2/models/{MARKER}/infer", json={"inputs": good}).json() == \
        {"error": "no such model"}
    assert client.post(f"/v2/models/{MODEL}/versions/{MARKER}/infer", json={"inputs": good}) \
        .json() == {"error": "no such model version"}
    assert client.get(url).status_code == 405


def test_v2_requests_are_logged_and_counted_like_predict(client, predlog, served, flights_rows,
                                                         serving_config):
    frame = flights_rows.head(10)
    body = {"inputs": tensors(served, frame, shape_2d=True),
            "parameters": {"content_type": "pd"}}
    for tensor in body["inputs"][:2]:  # [n, 1] row-major nested data is the same tensor
        tensor["data"] = [[value] for value in tensor["data"]]
    answer = client.post(f"/v2/models/{MODEL}/versions/1/infer", json=body,
                         headers={"X-Request-Id": "v2-log-1"})
    assert answer.status_code == 200, answer.text
    out = {o["name"]: o for o in answer.json()["outputs"]}
    assert answer.json()["id"] == "v2-log-1" and out["predictions"]["shape"] == [10]
    same = client.post("/predict", json={"records": frame.to_dict(orient="records")}).json()
    assert out["predictions"]["data"] == same["predictions"]
    assert out["scores"]["data"] == pytest.approx(same["scores"], abs=1e-12)
    predlog.flush()
    files = sorted(storage.local_path(serving_config.predictions_uri).glob("date=*/model=*/*.parquet"))
    logged = pd.concat([read_log_file(f) for f in files], ignore_index=True)
    mine = logged[logged["request_id"] == "v2-log-1"]
    assert mine["prediction"].tolist() == same["predictions"]
    metrics = client.get("/metrics").text
    assert ('mlops_serving_requests_total{endpoint="v2_infer",model="flights_serving",'
            'status="200"}') in metrics


def test_openapi_documents_every_route(client, app, served):
    document = client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.")
    for route in app.routes:
        assert isinstance(route, Route)
        methods = {m.lower() for m in route.methods} - {"head"}
        assert methods <= set(document["paths"][route.path]), route.path
    assert set(document["paths"]) == {r.path for r in app.routes}
    tensor_names = [t["properties"]["name"]["const"] for t in
                    document["paths"]["/v2/models/{model_name}/infer"]["post"]["requestBody"]
                    ["content"]["application/json"]["schema"]["properties"]["inputs"]["items"]
                    ["oneOf"]]
    assert tensor_names == served.contract.names


def _strings(value, found: set[str]) -> set[str]:
    if isinstance(value, str):
        found.add(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _strings(key, found)
            _strings(item, found)
    elif isinstance(value, list):
        for item in value:
            _strings(item, found)
    return found


def test_schemathesis_fuzzes_the_openapi_document(app, served):
    """Every operation of /openapi.json, with bodies that fit the schema and bodies that do not:
    never a 5xx, a traceback or a submitted string in the answer."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    # the answers are the documented ones: status codes, media types, bodies
    conformance = [status_code_conformance, content_type_conformance, response_schema_conformance]

    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    document_text = json.dumps(schema.raw_schema)
    operations = [result.ok() for result in schema.get_all_operations()]
    # every path but the document itself (schemathesis leaves its own source out)
    assert {o.path for o in operations} == set(schema.raw_schema["paths"]) - {"/openapi.json"}
    seen: dict[int, int] = {}
    started = time.monotonic()

    for operation in operations:
        # nothing to break in a request without a body or a path parameter
        breakable = operation.method == "post" or "{" in operation.path
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)[:2 if breakable else 1]:
            @settings(max_examples=40 if operation.method == "post" else 5, deadline=None,
                      database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def check(case):
                response = case.call()
                seen[response.status_code] = seen.get(response.status_code, 0) + 1
                case.validate_response(response, checks=[not_a_server_error, *conformance])
                text = response.text
                assert "Traceback" not in text and 'File "' not in text
                body = case.body if isinstance(case.body, dict) else {}
                params = body.get("parameters") if isinstance(body.get("parameters"), dict) \
                    else {}
                # returned by design: V2's request ``id`` (a plain token), and the parsed
                # ``event_time`` a refusal names beside the accepted window (app.py)
                allowed = [body.get("id"), body.get("event_time"), params.get("event_time")]
                submitted = _strings([case.body, case.path_parameters, case.query], set())
                echoed = [s for s in submitted if len(s) >= 8 and s in text and
                          s not in allowed and s not in document_text]
                assert not echoed, (case.method, case.path, response.status_code, echoed)

            check()
    assert seen.get(200) and seen.get(422) and seen.get(404)
    assert not [code for code in seen if code >= 500]
    print("schemathesis: answers by status", dict(sorted(seen.items())))
    assert time.monotonic() - started < 60
