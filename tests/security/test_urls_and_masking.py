"""Issue 12 points 6 and 14: credentials in URLs never reach the UI, printed settings or task logs.

- ``pipeline_tasks.core.http``: one urlsplit-based parser of a URL's userinfo (passwords with ``/``,
  ``@``, ``:``, percent-encoding, IPv6 hosts; plain paths untouched), used by the extra links, the
  ``/mlops`` pages and ``PipelineConfig.to_dict``.
- A real stack (api-server, scheduler, dag-processor, MLflow server) whose MLflow tracking URI
  carries a user and a password with ``/@:`` in it, whose registry lock is a PostgreSQL URL with a
  password, with a serving token and a webhook whose path is its token, trains, registers and
  deploys through the scheduler. No task log in the log folder, no extra link and no ``/mlops``
  page (served by the real plugin app in the api-server) holds a password, the token or the
  tracking user; MLflow's own "View run ... at: <tracking URI>" line shows ``***`` instead.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest

from pipeline_tasks.core import http
from pipeline_tasks.core.config import load_config
from pipeline_tasks.core.http import redact_url, split_userinfo, strip_userinfo, url_secrets

USER = "sec-alice-user"
PASSWORD = "Pw/@x-7Kq9:zz"  # a raw "/", "@" and ":" in the password
LOCK_PASSWORD = "Lk/@pw-91b2c3"
TOKEN = "tok-3f9a8b7c6d5e4f21"
WEBHOOK_TOKEN = "hook-7a6b5c4d3e2f1a"
SECRETS = [PASSWORD, quote(PASSWORD, safe=""), LOCK_PASSWORD, quote(LOCK_PASSWORD, safe=""),
           TOKEN, WEBHOOK_TOKEN]


def leaks(text: str, extra: tuple[str, ...] = ()) -> list[str]:
    return [s for s in [*SECRETS, *extra] if s in text]


# --- the parser --------------------------------------------------------------------------------

@pytest.mark.parametrize("url, stripped, redacted, secret", [
    ("postgresql://user:p/@ss@db.internal:5432/mlflow", "postgresql://db.internal:5432/mlflow",
     "postgresql://user:***@db.internal:5432/mlflow", "p/@ss"),
    ("postgresql+psycopg2://user:p%2F%40ss@db:5432/m?sslmode=require",
     "postgresql+psycopg2://db:5432/m?sslmode=require",
     "postgresql+psycopg2://user:***@db:5432/m?sslmode=require", "p/@ss"),
    ("https://alice:a:b@c@mlflow.example/", "https://mlflow.example/",
     "https://alice:***@mlflow.example/", "a:b@c"),
    ("http://u:pa/ss@[::1]:5000/x", "http://[::1]:5000/x", "http://u:***@[::1]:5000/x", "pa/ss"),
    ("postgresql://u:pw%3A1@[fd00::5]:5432/db", "postgresql://[fd00::5]:5432/db",
     "postgresql://u:***@[fd00::5]:5432/db", "pw:1"),
    ("https://TOKENabc123@hooks.example/x", "https://hooks.example/x",
     "https://***@hooks.example/x", "TOKENabc123"),
    ("s3://key:se/cr@t@bucket/prefix/", "s3://bucket/prefix/", "s3://key:***@bucket/prefix/",
     "se/cr@t"),
])
def test_userinfo_is_stripped_redacted_and_listed_for_masking(url, stripped, redacted, secret):
    assert strip_userinfo(url) == stripped
    assert redact_url(url) == redacted
    forms = url_secrets(url)
    assert secret in forms and quote(secret, safe="") in forms
    assert secret not in stripped and secret not in redacted


def test_json_answers_lose_userinfo_at_every_depth():
    url = "postgresql://alice:Pw%2F%40x@db.example:5432/mlflow"
    body = {"source": url, "runs": [{"note": f"read from {url} at 5"}, ("s3://k:s@b/x", 3)]}
    clean = http.strip_userinfo_deep(body)
    assert "alice" not in json.dumps(clean) and "Pw" not in json.dumps(clean)
    assert clean["source"] == "postgresql://db.example:5432/mlflow"
    assert clean["runs"][0]["note"] == "read from postgresql://db.example:5432/mlflow at 5"
    assert clean["runs"][1] == ["s3://b/x", 3]


@pytest.mark.parametrize("plain", [
    "/srv/data/flights@2013.csv", "file:///tmp/a@b/c.csv", "sqlite:////x/mlflow.db",
    "https://host/users/@me", "https://host:8080/a@b", "mailto:ops@example.org", "",
    "relative/path:with@signs", "http://127.0.0.1:8800",
])
def test_values_without_userinfo_are_left_alone(plain):
    assert split_userinfo(plain) is None
    assert strip_userinfo(plain) == plain and redact_url(plain) == plain
    assert url_secrets(plain) == []


def test_printed_settings_redact_passwords_with_slash_and_at(tmp_path):
    config = load_config(
        home=str(tmp_path),
        mlflow_tracking_uri=f"http://{USER}:{PASSWORD}@mlflow.internal:5000",
        mlflow_backend_store_uri=f"postgresql://mlflow:{LOCK_PASSWORD}@db:5432/mlflow",
        registry_lock_url=f"postgresql://postgres:{quote(LOCK_PASSWORD, safe='')}@db/postgres",
        model_labels={"m": f"s3://key:{TOKEN}@bucket/labels/"},
    )
    text = json.dumps(config.to_dict())
    assert leaks(text) == [], text
    data = config.to_dict()
    assert data["mlflow_tracking_uri"] == f"http://{USER}:***@mlflow.internal:5000"
    assert data["mlflow_backend_store_uri"] == "postgresql://mlflow:***@db:5432/mlflow"
    assert data["registry_lock_url"] == "postgresql://postgres:***@db/postgres"
    assert data["model_labels"] == {"m": "s3://key:***@bucket/labels/"}


def test_links_and_pages_never_carry_credentials(tmp_path):
    from pipeline_tasks.core import storage
    from pipeline_tasks.lineage import pages as lineage_pages
    from pipeline_tasks.lineage.links import TASK_LINKS

    tracking = f"https://{USER}:{quote(PASSWORD, safe='')}@mlflow.example:5000/"
    config = load_config(home=str(tmp_path), mlflow_tracking_uri=tracking,
                         mlflow_backend_store_uri="sqlite:////tmp/x.db")
    base = f"https://ops:{TOKEN}@airflow.example"
    results = {
        "validate": {"data_docs_uri": storage.join(config.reports_uri, "data_docs", "p.html")},
        "version": {"manifest_uri": storage.join(config.lake_uri, "snapshots", "v", "m.json")},
        "train": {"run_id": "abc", "experiment_id": "3"},
        "register": {"model_name": "m", "version": "2"},
        "deploy": {"endpoint": f"http://svc:{WEBHOOK_TOKEN}@127.0.0.1:8800"},
        "check_drift": {"report_uri": storage.join(config.lake_uri, "monitoring", "r.html")},
    }
    urls = {task: TASK_LINKS[task][0].url(result, config, base) for task, result in results.items()}
    assert urls["train"] == "https://mlflow.example:5000/#/experiments/3/runs/abc"
    assert urls["deploy"] == "http://127.0.0.1:8800/metadata"
    assert urls["validate"] == "https://airflow.example/mlops/reports/data-docs/p.html"
    assert leaks(json.dumps(urls), (USER, "ops:")) == [], urls
    pages = [
        lineage_pages.render_index([{"name": "m", "champion": "1", "challenger": None}], config,
                                   base),
        lineage_pages.render_error("Not found", f"no run at {tracking}api/2.0 for source "
                                   f"postgresql://u:{LOCK_PASSWORD}@db/x", config, base),
    ]
    for page in pages:
        assert leaks(page, (USER, "ops:")) == [], page
    assert "https://mlflow.example:5000/api/2.0" in pages[1]


# --- a real stack ----------------------------------------------------------------------------

DAG_ID = "ml_training_pipeline"
DAY = date(2013, 3, 14)
MODEL = "sec_masked"


@pytest.fixture(scope="module")
def secured(tmp_path_factory, make_webhook, postgres_server):
    from pipeline_tasks.ops.airflow_api import AirflowAPI
    from pipeline_tasks.ops.demo_data import land_flights_feed
    from pipeline_tasks.ops.stack import Stack

    home: Path = tmp_path_factory.mktemp("sec-home")
    webhook = make_webhook()
    mlflow_port = http.free_port()
    tracking = f"http://{USER}:{quote(PASSWORD, safe='')}@127.0.0.1:{mlflow_port}"
    store = f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    lock = f"postgresql://postgres:{quote(LOCK_PASSWORD, safe='')}@{postgres_server}/postgres"
    config = load_config(home=str(home), airflow_port=http.free_port(), mlflow_port=mlflow_port,
                         serving_port=http.free_port(), mlflow_tracking_uri=tracking,
                         mlflow_backend_store_uri=store, registry_lock_url=lock)
    stack = Stack(config, components=("api-server", "scheduler", "dag-processor"),
                  mlflow_ui=True, extra_env={
                      "MLOPS_TRAINING_SCHEDULE": "none", "MLOPS_DRIFT_SCHEDULE": "none",
                      "MLOPS_MLFLOW_TRACKING_URI": tracking,
                      "MLOPS_MLFLOW_BACKEND_STORE_URI": store,
                      "MLOPS_REGISTRY_LOCK_URL": lock,
                      "MLOPS_SERVING_TOKEN": TOKEN,
                      "MLOPS_NOTIFY_CONN_ID": "sec_notify",
                      "AIRFLOW_CONN_SEC_NOTIFY": json.dumps({
                          "conn_type": "http",
                          "extra": {"webhook_url": f"{webhook.url}/{WEBHOOK_TOKEN}"}}),
                  })
    land_flights_feed(config, DAY - timedelta(days=3), DAY)
    stack.start()
    try:
        api = AirflowAPI(config.airflow_url)
        api.wait_for_dag(DAG_ID)
        api.set_paused(DAG_ID, False)
        start = datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC)
        run = api.trigger_interval(DAG_ID, start, start + timedelta(days=1),
                                   conf={"model_name": MODEL, "training_window_days": 3},
                                   run_id="sec_masked_run")
        final = api.wait_for_run(DAG_ID, run["dag_run_id"], timeout=1200)
        tasks = {t["task_id"]: t for t in api.task_instances(DAG_ID, run["dag_run_id"])}
        yield {"config": config, "api": api, "run_id": run["dag_run_id"], "state": final["state"],
               "tasks": tasks, "webhook": webhook}
    finally:
        stack.stop()


def ui_get(secured, path: str) -> tuple[int, str]:
    api = secured["api"]
    req = urllib.request.Request(secured["config"].airflow_url + path, headers={
        "Accept": "text/html", "Authorization": f"Bearer {api._token_value()}"})
    try:
        with http.opener().open(req, timeout=60) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_the_run_succeeds_with_credentials_in_every_url(secured):
    states = {k: v["state"] for k, v in secured["tasks"].items()}
    assert secured["state"] == "success", states
    assert states["deploy"] == "success"  # the canary spoke to the token-protected server
    # the promotion went to the webhook whose path is its token
    secured["webhook"].wait_for(lambda body: body.get("event") == "promotion")


def test_task_logs_mask_every_secret(secured):
    logs = Path(secured["config"].airflow_home) / "logs" / f"dag_id={DAG_ID}"
    files = sorted(p for p in logs.rglob("*") if p.is_file())
    assert {p.parent.name for p in files} >= {"task_id=train", "task_id=register",
                                              "task_id=deploy"}, files
    for path in files:
        text = path.read_text(errors="replace")
        assert leaks(text) == [], f"{path}: {leaks(text)}"
    train = "\n".join(p.read_text() for p in files if p.parent.name == "task_id=train")
    # MLflow prints the tracking URI when a run ends: the password is masked there
    assert f"{USER}:***@127.0.0.1:" in train, train[-3000:]


def test_extra_links_and_mlops_pages_show_no_credentials(secured):
    config, api, run_id = secured["config"], secured["api"], secured["run_id"]
    rid = urllib.parse.quote(run_id, safe="")
    links = {}
    for task in ("validate", "version", "train", "register", "deploy"):
        links[task] = api.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{rid}/taskInstances/{task}/"
                              "links")["extra_links"]
    text = json.dumps(links)
    assert leaks(text, (USER,)) == [], text
    mlflow_ui = f"http://127.0.0.1:{config.mlflow_port}"
    assert any(str(u).startswith(f"{mlflow_ui}/#/experiments/")
               for u in links["train"].values()), links["train"]
    assert any(str(u).startswith(f"{mlflow_ui}/#/models/{MODEL}/versions/1")
               for u in links["register"].values()), links["register"]

    pages = {path: ui_get(secured, path) for path in (
        "/mlops/", f"/mlops/models/{MODEL}", f"/mlops/models/{MODEL}/versions/1",
        f"/mlops/models/{MODEL}/versions/999", f"/mlops/api/models/{MODEL}",
        f"/mlops/api/models/{MODEL}/versions/1", f"/mlops/api/models/{MODEL}/versions/999")}
    for path, (status, body) in pages.items():
        assert status == (404 if path.endswith("999") else 200), (path, body[:500])
        assert leaks(body, (USER,)) == [], (path, leaks(body, (USER,)))
    assert f'href="{mlflow_ui}/#/models/{MODEL}"' in pages[f"/mlops/models/{MODEL}"][1]
    assert f"{mlflow_ui}/#/models/{MODEL}/versions/1" in \
        pages[f"/mlops/models/{MODEL}/versions/1"][1]
