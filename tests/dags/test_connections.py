"""Credentials through Airflow Connections (plugins/mlops_airflow/connections.py).

Every connection here is an ``AIRFLOW_CONN_*`` variable: the real lookup through Airflow's secrets
backends (``Connection.get``), as a task or the API server does it. MLflow's client talks to a
real HTTP server that records what it receives; SQL URLs come from the installed providers' hooks.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from pipeline_tasks.core.config import load_config
from pipeline_tasks.core.errors import ConfigError

#: What the glue may set in the process environment: restored after each test.
TOUCHED = ("MLOPS_MLFLOW_TRACKING_URI", "MLOPS_MLFLOW_REGISTRY_URI", "MLOPS_LAKE_STORAGE_OPTIONS",
           "MLOPS_LAKE_URI", "MLOPS_MLFLOW_CONN_ID", "MLOPS_LAKE_CONN_ID",
           "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
           "MLFLOW_TRACKING_URI", "AIRFLOW_CONN_MLFLOW_DEFAULT", "AIRFLOW_CONN_MLOPS_LAKE")


@pytest.fixture(autouse=True)
def env(monkeypatch):
    import os

    before = {name: os.environ.get(name) for name in TOUCHED}
    for name in TOUCHED:
        monkeypatch.delenv(name, raising=False)
    yield monkeypatch
    monkeypatch.undo()
    # the glue writes os.environ itself, and undo may restore what it wrote: back to before
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    load_config()  # the process-wide fsspec options follow the restored environment


def conn_env(monkeypatch, conn_id: str, **fields) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))


def masked(text: str) -> str:
    from airflow.sdk.log import _secrets_masker

    return _secrets_masker().redact(text)


class Recorder(BaseHTTPRequestHandler):
    """A stand-in MLflow server: answers an empty experiment search, keeps each request's
    Authorization header."""

    seen: ClassVar[list[tuple[str, str | None]]] = []

    def _answer(self):
        self.seen.append((self.path, self.headers.get("Authorization")))
        body = json.dumps({"experiments": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._answer()

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer()

    def log_message(self, *args):
        pass


@pytest.fixture
def recorder():
    Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def search_experiments() -> None:
    from mlflow.tracking import MlflowClient

    from pipeline_tasks.core.tracking import configure_mlflow

    configure_mlflow(load_config())
    MlflowClient().search_experiments()


def test_without_connections_the_mlops_settings_stay(env, tmp_path):
    from mlops_airflow.connections import apply_connections

    env.setenv("MLOPS_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'own.db'}")
    before = load_config()
    assert (before.mlflow_conn_id, before.lake_conn_id) == ("mlflow_default", "mlops_lake")
    assert apply_connections() == []
    after = load_config()
    assert after.mlflow_tracking_uri == before.mlflow_tracking_uri
    assert after.lake_storage_options == {}


def test_the_mlflow_connection_wins_over_the_mlops_setting(env, tmp_path):
    from mlops_airflow.connections import apply_connections

    store = tmp_path / "store" / "mlflow.db"
    env.setenv("MLOPS_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'wrong.db'}")
    conn_env(env, "mlflow_default", conn_type="generic",
             extra={"tracking_uri": f"sqlite:///{store}"})
    assert apply_connections() == ["MLflow tracking: Airflow connection 'mlflow_default'"]
    config = load_config()
    assert config.mlflow_tracking_uri == config.mlflow_registry_uri == f"sqlite:///{store}"

    from pipeline_tasks.core.tracking import ensure_experiment

    ensure_experiment("conn_wins", config)  # a real store: the connection's, not the wrong one
    assert store.exists() and not (tmp_path / "wrong.db").exists()


def test_an_operator_named_connection_id_is_used_and_empty_turns_lookups_off(env, tmp_path):
    from mlops_airflow.connections import apply_connections

    env.setenv("MLOPS_MLFLOW_CONN_ID", "tracking.prod")
    env.setenv("AIRFLOW_CONN_TRACKING.PROD", json.dumps({
        "conn_type": "generic", "extra": {"tracking_uri": f"sqlite:///{tmp_path / 'a.db'}"}}))
    apply_connections()
    assert load_config().mlflow_tracking_uri == f"sqlite:///{tmp_path / 'a.db'}"

    env.delenv("MLOPS_MLFLOW_TRACKING_URI")
    env.setenv("MLOPS_MLFLOW_CONN_ID", "")
    env.setenv("MLOPS_LAKE_CONN_ID", "")
    assert apply_connections() == []
    with pytest.raises(ConfigError, match="mlflow_conn_id .*not an Airflow connection id"):
        load_config(mlflow_conn_id="no spaces")


def test_basic_auth_credentials_reach_the_server_and_are_masked(env, recorder):
    from mlops_airflow.connections import apply_connections

    password = "s3cr3t-basic-pw"
    host, port = recorder.server_address
    env.setenv("MLFLOW_TRACKING_TOKEN", "an-old-token")  # a credential of the other kind: dropped
    conn_env(env, "mlflow_default", conn_type="http", host=host, port=port, login="ml-user",
             password=password)
    apply_connections()
    assert load_config().mlflow_tracking_uri == f"http://{host}:{port}"  # no credentials in it
    search_experiments()
    import base64

    expected = "Basic " + base64.b64encode(f"ml-user:{password}".encode()).decode()
    assert Recorder.seen and {auth for _, auth in Recorder.seen} == {expected}
    assert password not in masked(f"login failed for ml-user:{password}")


def test_a_token_connection_sends_a_bearer_token(env, recorder):
    from mlops_airflow.connections import apply_connections

    host, port = recorder.server_address
    env.setenv("MLFLOW_TRACKING_USERNAME", "someone-else")
    conn_env(env, "mlflow_default", conn_type="generic",
             extra={"tracking_uri": f"http://{host}:{port}", "token": "tok-0123456789"})
    apply_connections()
    search_experiments()
    assert {auth for _, auth in Recorder.seen} == {"Bearer tok-0123456789"}
    assert "tok-0123456789" not in masked("token tok-0123456789")


def test_tracking_uri_from_the_connection_fields(env):
    from airflow.sdk import Connection
    from mlops_airflow.connections import tracking_uri

    def uri(**fields):
        conn_env(env, "probe", **fields)
        return tracking_uri(Connection.get("probe"))

    assert uri(conn_type="http", host="mlflow.internal", port=5000) == "http://mlflow.internal:5000"
    assert uri(conn_type="http", host="mlflow.example", schema="https") == "https://mlflow.example"
    assert uri(conn_type="generic", host="https://u:p@ml.example/", port=443,
               schema="mlflow") == "https://ml.example:443/mlflow"
    with pytest.raises(ConfigError, match="'probe' .*names no MLflow tracking server"):
        uri(conn_type="http", password="hidden-pw")


def test_the_lake_connection_gives_the_store_options(env):
    from mlops_airflow.connections import apply_connections

    from pipeline_tasks.core import storage

    secret = "lake-secret-0123"
    env.setenv("MLOPS_LAKE_URI", "memory://lake-conn-test/lake")
    conn_env(env, "mlops_lake", conn_type="generic", extra={
        "key": "AKIAEXAMPLE", "secret": secret, "client_kwargs": {"endpoint_url": "http://s3"}})
    assert apply_connections() == ["lake storage options: Airflow connection 'mlops_lake'"]
    config = load_config()
    assert config.lake_storage_options["secret"] == secret
    fs, _ = storage.url_to_fs(config.lake_uri + "/raw/part.parquet")  # fsspec's own defaults
    assert fs.storage_options["secret"] == secret
    assert fs.storage_options["client_kwargs"] == {"endpoint_url": "http://s3"}
    shown = config.to_dict()["lake_storage_options"]
    assert shown == {"key": "***", "secret": "***", "client_kwargs": {"endpoint_url": "http://s3"}}
    assert secret not in masked(f"403 for secret {secret}")


def test_s3_login_and_password_are_the_access_key(env):
    from airflow.sdk import Connection
    from mlops_airflow.connections import lake_options

    conn_env(env, "mlops_lake", conn_type="aws", login="AKIA1", password="pw-123456",
             extra={"client_kwargs": {"endpoint_url": "http://minio:9000"}})
    conn = Connection.get("mlops_lake")
    assert lake_options(conn, load_config(lake_uri="s3://bucket/lake")) == {
        "key": "AKIA1", "secret": "pw-123456", "client_kwargs": {"endpoint_url": "http://minio:9000"}}
    assert "key" not in lake_options(conn, load_config(lake_uri="gs://bucket/lake"))


def test_without_a_lake_connection_the_mlops_options_stay(env):
    from mlops_airflow.connections import apply_connections

    from pipeline_tasks.core import storage

    env.setenv("MLOPS_LAKE_URI", "memory://lake-env-test/lake")
    env.setenv("MLOPS_LAKE_STORAGE_OPTIONS", json.dumps({"token": "env-token-123"}))
    apply_connections()
    fs, _ = storage.url_to_fs("memory://lake-env-test/lake/x")
    assert fs.storage_options["token"] == "env-token-123"
    env.delenv("MLOPS_LAKE_STORAGE_OPTIONS")
    load_config()  # options of the last config only: taken back
    fs, _ = storage.url_to_fs("memory://lake-env-test/lake/x")
    assert "token" not in fs.storage_options


def test_sql_urls_come_from_the_providers_hooks(env, tmp_path):
    from mlops_airflow.connections import sql_url

    password = "pg-pass/with@chars"
    conn_env(env, "warehouse", conn_type="postgres", host="db.internal", port=5433,
             login="reader", password=password, schema="sales",
             extra={"sqlalchemy_query": {"sslmode": "require"}})
    url = sql_url("warehouse")
    assert url == ("postgresql+psycopg://reader:pg-pass%2Fwith%40chars@db.internal:5433/sales"
                   "?sslmode=require")
    import sqlalchemy as sa

    assert sa.make_url(url).password == password  # what the engine is given
    assert "pg-pass" not in masked(f"could not connect to {url}")

    db = tmp_path / "scores.db"
    env.setenv("AIRFLOW_CONN_SCORES", f"sqlite:///{db}")
    engine = sa.create_engine(sql_url("scores", "output_conn_id"))
    with engine.begin() as conn:
        conn.execute(sa.text("create table t (x int)"))
    engine.dispose()
    assert db.exists()


@pytest.mark.parametrize("fields, words", [
    ({"conn_type": "http", "host": "h", "password": "never-shown-pw"},
     "'api' has type 'http', which has no SQL hook"),
    ({"conn_type": "fs", "extra": {"path": "/tmp"}, "password": "never-shown-pw"},
     "'api' has type 'fs', which is not an SQL database"),
])
def test_a_connection_without_an_sql_hook_is_refused(env, fields, words):
    from mlops_airflow.connections import sql_url

    conn_env(env, "api", **fields)
    with pytest.raises(ConfigError, match=words) as err:
        sql_url("api")
    assert str(err.value).startswith("param sql_conn_id: Airflow connection 'api'")
    assert "never-shown-pw" not in str(err.value)
    with pytest.raises(ConfigError, match="'nowhere' is not defined"):
        sql_url("nowhere", "output_conn_id")
