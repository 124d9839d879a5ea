"""Stored reports are built from untrusted data and cannot act as the user who opens them.

A categorical value a serving client sent travels through the prediction log into the Evidently
drift report, which embeds it raw inside an inline ``<script>``; a column name of a batch lands
raw in the Great Expectations Data Docs. Both reports are built here by the real code
(``PredictionLog`` -> ``monitoring.read_prediction_log`` -> ``drift.check_drift``;
``validate.validate_dataset``; ``versioning.snapshot_dataset``) from a value and a column name
that close the script and add ``<img src=x onerror=PROBE>``. PROBE tries what an attacker would:
read ``document.cookie`` and ``localStorage``, and call the Airflow API with the session; it
writes what it got into the page for the test to read.

Opened in headless Chromium, logged in to Airflow, the probe runs (the reports stay poisoned) but
in an opaque origin: the cookie jar throws SecurityError, the API call fails, and the browser's
own network log shows that no request to the Airflow API carried the session cookie. A clean
Evidently report still draws its charts, and the Data Docs still display, under the same sandbox.
Over plain HTTP, every report kind, the plots, the JSON API and their error answers carry
``Content-Security-Policy: sandbox allow-scripts`` and ``X-Content-Type-Options: nosniff``.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from pipeline_tasks.core import layout, storage
from pipeline_tasks.data import validate, versioning
from pipeline_tasks.lineage.reports import report_url
from pipeline_tasks.monitoring import drift
from pipeline_tasks.monitoring import sources as monitoring
from pipeline_tasks.serving.predlog import META_COLUMNS, PredictionLog

MODEL = "sandbox_probe"
SANDBOX = "sandbox allow-scripts"
#: What a script planted in a report would try; it leaves its findings in ``data-probe``.
PROBE = """(async () => {
  if (window.__probe) return; window.__probe = 1;
  const out = {origin: self.origin};
  try { out.cookie = document.cookie; } catch (e) { out.cookie = e.name; }
  try { out.storage = localStorage.length; } catch (e) { out.storage = e.name; }
  try {
    const r = await fetch('/api/v2/dags', {credentials: 'include'});
    out.api = r.status; out.api_body = (await r.text()).slice(0, 300);
  } catch (e) { out.api = e.name; }
  document.documentElement.setAttribute('data-probe', JSON.stringify(out));
})()"""
_code = base64.b64encode(PROBE.encode()).decode()
#: A value (and a column name) that leaves an inline script and runs PROBE.
POISON = f"</script><img src=x onerror=eval(atob('{_code}'))>"
INTERVAL_START = datetime(2020, 1, 1, tzinfo=UTC)


def wait(driver, timeout: float = 30) -> WebDriverWait:
    return WebDriverWait(driver, timeout)


def http(url: str, token: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """GET ``url`` as it is; status, headers (lower-case names) and body."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                         _NoRedirect())
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=60) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def _features(rows: int, seed: int, carriers: list[str]):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    return pd.DataFrame({"carrier": rng.choice(carriers, rows),
                         "dep_delay": rng.normal(0.0, 10.0, rows).round(1)})


@pytest.fixture(scope="module")
def reports(ui_stack) -> dict[str, str]:
    """The URLs of poisoned (and clean) reports of every kind, built by the pipeline's code."""
    config = ui_stack.config
    reference = _features(1200, 0, ["AA", "UA", "DL"])

    # 1. a serving client's value -> the prediction log -> the drift check's Evidently report
    traffic = _features(1200, 1, ["AA", "UA", POISON])
    log = PredictionLog(config.predictions_uri, flush_s=3600, max_rows=10**6)
    log.add("req-poison", MODEL, "1", traffic, {"predictions": [0] * len(traffic)},
            event_time=INTERVAL_START + timedelta(hours=12))
    assert log.flush() == len(traffic)
    logged = monitoring.read_prediction_log(config, MODEL, INTERVAL_START,
                                            INTERVAL_START + timedelta(days=1))
    current = logged[[c for c in logged.columns if c not in META_COLUMNS]]
    assert POISON in set(current["carrier"])
    out = {}
    for name, cur in (("poisoned", current), ("clean", _features(1200, 2, ["AA", "UA", "DL"]))):
        uri = storage.join(layout.monitoring_run_dir(config, MODEL, f"sandbox_{name}"),
                           "report.html")
        drift.check_drift(reference, cur, numeric_columns=["dep_delay"],
                          categorical_columns=["carrier"], min_rows=10, report_uri=uri,
                          config=config)
        out[f"drift_{name}"] = uri
    html = storage.local_path(out["drift_poisoned"]).read_text()
    assert POISON in html  # Evidently embeds the value raw: the report itself stays poisoned

    # 2. a batch with a poisoned column name (and value) -> validation, Data Docs, snapshot
    batch = _features(300, 3, ["AA", "UA", POISON]).rename(columns={"dep_delay": POISON})
    batch["is_late"] = [i % 2 for i in range(len(batch))]
    data_uri = storage.join(config.lake_uri, "raw", "sandbox_probe", "part.parquet")
    storage.atomic_write_parquet(batch, data_uri)
    result = validate.validate_dataset(data_uri, model_name=MODEL, target="is_late",
                                       config=config, run_key="sandbox_probe/run_id=poisoned")
    assert POISON in storage.local_path(result.data_docs_uri).read_text()  # GX leaves it raw
    snapshot = versioning.snapshot_dataset(data_uri, config=config,
                                           run_key="sandbox_probe/run_id=poisoned",
                                           source=data_uri, interval={},
                                           validation=result.to_dict())
    out.update(data_docs=result.data_docs_uri, validation=result.result_uri,
               manifest=snapshot.manifest_uri)
    return {name: report_url(uri, config, ui_stack.url) for name, uri in out.items()}


@pytest.fixture(scope="module")
def chromium(ui_stack, launch_chromium, log_in):
    """A headless Chromium of its own, logged in to Airflow, recording its network traffic."""
    with launch_chromium(network_log=True) as driver:
        log_in(driver, ui_stack)
        assert any(c["name"] == "_token" for c in driver.get_cookies())
        yield driver


def api_requests(driver, api_prefix: str) -> list[dict]:
    """The requests to the Airflow API in the browser's network log since the last call, each
    with the headers Chromium really sent (``Network.requestWillBeSentExtraInfo``)."""
    urls, sent = {}, {}
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        if message["method"] == "Network.requestWillBeSent":
            urls[params["requestId"]] = params["request"]["url"]
        elif message["method"] == "Network.requestWillBeSentExtraInfo":
            sent[params["requestId"]] = {k.lower(): v for k, v in params["headers"].items()}
    return [{"url": url, "headers": sent.get(rid, {})} for rid, url in urls.items()
            if url.startswith(api_prefix)]


@pytest.mark.parametrize("name", ["drift_poisoned", "data_docs"])
def test_a_poisoned_report_runs_its_script_in_an_opaque_origin(ui_stack, reports, chromium,
                                                             name):
    d = chromium
    api_prefix = ui_stack.url + "/api/"
    # the session is live: the same browser reads the API when it asks for it itself
    d.get(ui_stack.url + "/api/v2/dags")
    assert '"dags"' in d.find_element(By.TAG_NAME, "body").text
    api_requests(d, api_prefix)  # forget the traffic so far

    d.get(reports[name])
    probe = json.loads(wait(d).until(
        lambda drv: drv.execute_script(
            "return document.documentElement.getAttribute('data-probe')")))
    # the planted script ran (the report stays poisoned); it got nothing of the user's
    assert probe["origin"] == "null", probe
    assert probe["cookie"] == "SecurityError", probe
    assert probe["storage"] == "SecurityError", probe
    assert probe["api"] == "TypeError" and "api_body" not in probe, probe
    # and the browser never sent the session with the script's call to the API
    tried = api_requests(d, api_prefix)
    assert tried, "the probe's call to the Airflow API never left the browser"
    carried = [r for r in tried if "_token=" in r["headers"].get("cookie", "")]
    assert not carried, carried


def test_reports_still_render_under_the_sandbox(ui_stack, reports, chromium):
    d = chromium
    d.get(reports["drift_clean"])
    assert d.execute_script("return self.origin") == "null"
    wait(d, 60).until(lambda drv: drv.execute_script(
        "return document.querySelectorAll('.js-plotly-plot svg.main-svg').length") > 0)
    assert "Dataset Drift" in d.find_element(By.TAG_NAME, "body").text
    d.get(reports["data_docs"])
    assert d.execute_script("return self.origin") == "null"
    body = wait(d).until(EC.presence_of_element_located((By.TAG_NAME, "body"))).text
    assert "Expectation Validation Result" in body and "is_late" in body


def test_every_report_kind_and_data_route_is_served_sandboxed(ui_stack, reports):
    token = ui_stack.api._token_value()
    base = ui_stack.url + "/mlops"
    served = {
        "drift_poisoned": "text/html", "drift_clean": "text/html", "data_docs": "text/html",
        "validation": "application/json", "manifest": "application/json",
    }
    assert {reports[n].split("/mlops/reports/")[1].split("/")[0] for n in served} \
        == {"monitoring", "data-docs", "validation", "snapshots"}  # every kind
    answers = {name: http(reports[name], token) for name in served}
    # errors and login redirects of the same routes, the plots and the JSON API
    answers.update({
        "refused": http(base + "/reports/data-docs/x/.hidden.html", token),
        "missing": http(base + "/reports/monitoring/nothing/report.html", token),
        "unknown kind": http(base + "/reports/lake/x.json", token),
        "no login": http(reports["drift_poisoned"]),
        "plot": http(f"{base}/models/{MODEL}/versions/1/plots/roc_curve.png", token),
        "model json": http(f"{base}/api/models/{MODEL}", token),
        "version json": http(f"{base}/api/models/{MODEL}/versions/1", token),
    })
    expected_status = {"refused": 403, "missing": 404, "unknown kind": 404, "no login": 401,
                       "plot": 404, "model json": 404, "version json": 404}
    for name, (status, headers, _body) in answers.items():
        assert status == expected_status.get(name, 200), (name, status)
        if name in served:
            assert headers["content-type"].startswith(served[name]), (name, headers)
        assert headers.get("content-security-policy") == SANDBOX, (name, headers)
        assert headers.get("x-content-type-options") == "nosniff", (name, headers)

    # the plugin's own pages (escaped templates) run no script at all
    for path in ("/", f"/models/{MODEL}", f"/models/{MODEL}/versions/1"):
        status, headers, _body = http(base + path, token)
        policy = headers.get("content-security-policy", "")
        assert "script-src 'none'" in policy and "sandbox" not in policy, (path, headers)
        assert headers.get("x-content-type-options") == "nosniff", (path, headers)
