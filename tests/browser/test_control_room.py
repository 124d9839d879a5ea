"""The Airflow UI as the control room, driven in headless Chromium against a running stack:
log in, open the DAG, trigger it from the form with non-default params, wait for success, follow
each task's extra link, open the lineage page and the reports; then a failed gate's log summary,
its notification, and the views' auth and path-traversal refusals.

The tests share one stack and one browser and run in file order (the first leaves its run).
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from pipeline_tasks.core import storage
from pipeline_tasks.lineage import queries as lineage
from pipeline_tasks.ops.demo_data import flights_for_day

DAG_ID = "ml_training_pipeline"
MODEL = "browser_flights"
LINKED_TASKS = {"validate": "Data Docs", "version": "Dataset manifest", "train": "MLflow run",
                "register": "Model version", "deploy": "Endpoint metadata"}


def wait(driver, timeout: float = 30) -> WebDriverWait:
    return WebDriverWait(driver, timeout)


def wait_for_graph(driver) -> None:
    """Until the graph view has drawn the DAG's seven task nodes."""
    wait(driver).until(lambda drv: len(drv.find_elements(
        By.CSS_SELECTOR, ".react-flow__node")) >= 7)


def quote(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def http(url: str, token: str | None = None) -> tuple[int, bytes]:
    """GET ``url`` as it is (no path normalisation), optionally with a bearer token."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def links(ui, run_id: str, task_id: str) -> dict:
    return ui.api.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id)}/taskInstances/{task_id}"
                      "/links")["extra_links"]


def set_text(element, text: str, tries: int = 3) -> None:
    """Replace the input's value with ``text`` and wait until it holds it: a React form that
    re-renders under CPU load can drop keystrokes (a CI run's form sent 1 for "0.01"), so a
    value that did not take is typed again."""
    for _ in range(tries):
        element.send_keys(Keys.CONTROL, "a")
        element.send_keys(Keys.DELETE)
        element.send_keys(text)
        try:
            WebDriverWait(element.parent, 5).until(
                lambda _: element.get_attribute("value") == text)
            return
        except TimeoutException:
            continue
    raise AssertionError(f"the input holds {element.get_attribute('value')!r}, not {text!r}")


def dialog_button(driver, text: str):
    """A button of the open dialog, looked up afresh (the form re-renders as it is edited)."""
    return next(b for b in driver.find_elements(By.CSS_SELECTOR, ".chakra-dialog__content button")
                if b.text == text)


def test_login_then_trigger_from_the_form_with_non_default_params(ui_stack, browser, log_in):
    ui, d = ui_stack, browser
    # 1. log in: the plugin's pages send a browser without a session to Airflow's login page,
    # which brings it back
    log_in(d, ui)
    assert d.current_url == ui.url + "/mlops/"
    assert d.find_element(By.ID, "no-models").text.startswith("No registered model yet")
    d.get(ui.url + "/")
    nav = wait(d).until(EC.presence_of_element_located((By.LINK_TEXT, "Models")))
    assert nav.get_attribute("href").endswith("/plugin/mlops")

    # 2. open the DAG, graph view
    d.get(f"{ui.url}/dags/{DAG_ID}")
    d.find_element(By.CSS_SELECTOR, "button[aria-label^='Show Graph']").click()
    wait(d).until(EC.presence_of_element_located((By.XPATH, "//*[text()='register']")))

    # 3. the trigger form: titles, descriptions, an enum as a drop-down
    d.find_element(By.CSS_SELECTOR, "button[aria-label='Trigger Dag']").click()
    dialog = wait(d).until(EC.visibility_of_element_located(
        (By.CSS_SELECTOR, ".chakra-dialog__content")))
    form_text = dialog.text
    for title in ("Source", "Target column", "Task type", "Training window (days)",
                  "Minimum lift over the trivial baseline", "Force promotion"):
        assert title in form_text
    assert "The label column to predict." in form_text
    assert dialog_button(d, "Trigger").is_enabled()  # the defaults are valid as they are

    def field(name):
        return d.find_element(By.CSS_SELECTOR,
                              f".chakra-dialog__content input[name='element_{name}']")

    set_text(field("model_name"), MODEL)
    set_text(field("training_window_days"), "1")
    set_text(field("min_baseline_lift"), "0.01")
    # the enum is a drop-down of its three values
    d.find_element(By.CSS_SELECTOR, "#element_task_type input[role=combobox]").click()
    options = wait(d).until(lambda drv: drv.find_elements(
        By.CSS_SELECTOR, "[id^='react-select'][id*='-option-']") or None)
    assert [o.text for o in options] == ["auto", "classification", "regression"]
    next(o for o in options if o.text == "classification").click()
    assert field("task_type").get_attribute("value") == "classification"
    field("model_name").click()
    ui.screenshot(d, "trigger-form")

    # a bad value is refused before any run starts
    runs_before = ui.api.get(f"/api/v2/dags/{DAG_ID}/dagRuns")["total_entries"]
    set_text(field("model_name"), "not a name!")
    dialog_button(d, "Trigger").click()
    wait(d).until(EC.presence_of_element_located(
        (By.XPATH, "//*[contains(text(), 'Failed to Trigger Dag')]")))
    assert ui.api.get(f"/api/v2/dags/{DAG_ID}/dagRuns")["total_entries"] == runs_before
    field("model_name").click()  # moves the pointer off the toast, which pauses under it
    set_text(field("model_name"), MODEL)
    # the error toast sits over the button until it fades
    wait(d).until(EC.invisibility_of_element_located((By.CSS_SELECTOR, "[data-scope=toast]")))
    dialog_button(d, "Trigger").click()

    # 4. the UI opens the new run; wait for it to succeed
    wait(d).until(EC.url_contains(f"/dags/{DAG_ID}/runs/"))
    run_id = urllib.parse.unquote(d.current_url.split("/runs/", 1)[1].split("/")[0].split("?")[0])
    run = ui.wait_for_run(run_id)
    assert run["state"] == "success", {t: ti["state"] for t, ti in run["tasks"].items()}
    conf = ui.api.run(DAG_ID, run_id)["conf"]
    assert conf["model_name"] == MODEL and conf["training_window_days"] == 1
    assert conf["task_type"] == "classification" and conf["min_baseline_lift"] == 0.01
    ui.state["run_id"] = run_id
    if ui.screenshots:  # the graph of the finished run, for docs/ui.md
        d.get(f"{ui.url}/dags/{DAG_ID}/runs/{quote(run_id)}")
        d.find_element(By.CSS_SELECTOR, "button[aria-label^='Show Graph']").click()
        wait_for_graph(d)
        ui.screenshot(d, "dag-graph")


def test_each_extra_link_opens_what_that_task_produced(ui_stack, browser):
    ui, d = ui_stack, browser
    run_id = ui.state["run_id"]
    results = {t: ui.api.xcom(DAG_ID, run_id, t) for t in LINKED_TASKS}
    for task_id in ("ingest", "evaluate"):  # nothing to open: no link at all
        assert links(ui, run_id, task_id) == {}
    opened = {}
    for task_id, name in LINKED_TASKS.items():
        d.get(f"{ui.url}/dags/{DAG_ID}/runs/{quote(run_id)}/tasks/{task_id}/details")
        anchor = wait(d).until(EC.presence_of_element_located((By.LINK_TEXT, name)))
        href = anchor.get_attribute("href")
        assert href == links(ui, run_id, task_id)[name]
        opened[task_id] = href
    if ui.screenshots:  # the task page with its link, for docs/ui.md
        d.get(f"{ui.url}/dags/{DAG_ID}/runs/{quote(run_id)}/tasks/train/details")
        wait(d).until(EC.presence_of_element_located((By.LINK_TEXT, "MLflow run")))
        wait_for_graph(d)
        ui.screenshot(d, "task-extra-link")

    # validate -> its Data Docs page, served by the plugin behind the UI's login
    d.get(opened["validate"])
    assert "/mlops/reports/data-docs/" in d.current_url
    wait(d).until(lambda drv: "flights_is_late" in drv.page_source)
    # version -> the snapshot's manifest
    d.get(opened["version"])
    manifest = json.loads(d.find_element(By.TAG_NAME, "body").text)
    assert manifest["version_id"] == results["version"]["version_id"]
    assert manifest["validation"]["success"] is True
    # train -> the MLflow run in the MLflow UI
    train = results["train"]
    assert opened["train"].endswith(f"/#/experiments/{train['experiment_id']}/runs/"
                                    f"{train['run_id']}")
    d.get(opened["train"])
    wait(d, 60).until(lambda drv: "train-" in drv.find_element(By.TAG_NAME, "body").text)
    # register -> the model version in the MLflow registry
    d.get(opened["register"])
    wait(d, 60).until(lambda drv: MODEL in drv.find_element(By.TAG_NAME, "body").text
                      and "Version 1" in drv.find_element(By.TAG_NAME, "body").text)
    # deploy -> the model's metadata on the live endpoint (which may serve other models too)
    assert opened["deploy"] == results["deploy"]["endpoint"] + f"/models/{MODEL}/metadata"
    d.get(opened["deploy"])
    metadata = json.loads(d.find_element(By.TAG_NAME, "body").text)
    assert metadata["model_name"] == MODEL and metadata["model_version"] == "1"


def test_the_lineage_page_and_the_reports(ui_stack, browser):
    ui, d = ui_stack, browser
    run_id = ui.state["run_id"]
    version = ui.api.xcom(DAG_ID, run_id, "version")
    # from the Airflow navigation to the model, then to its version
    d.get(ui.url + "/plugin/mlops")
    frame = wait(d).until(EC.presence_of_element_located((By.TAG_NAME, "iframe")))
    d.switch_to.frame(frame)
    wait(d).until(EC.element_to_be_clickable((By.LINK_TEXT, MODEL))).click()
    champion = wait(d).until(EC.presence_of_element_located((By.ID, "champion")))
    assert "v1" in champion.text and "blessed" in champion.text
    assert d.find_element(By.ID, "no-drift").text == "No drift checks yet."
    d.find_element(By.CSS_SELECTOR, "#champion a").click()
    wait(d).until(EC.presence_of_element_located((By.ID, "step-drift")))
    d.switch_to.default_content()
    ui.screenshot(d, "lineage")

    d.get(f"{ui.url}/mlops/models/{MODEL}/versions/1")
    steps = [s.get_attribute("id") for s in d.find_elements(By.CSS_SELECTOR, "section.step")]
    assert steps == ["step-source", "step-validation", "step-dataset", "step-training",
                     "step-evaluation", "step-deployments", "step-drift"]
    text = {s: d.find_element(By.ID, s).text for s in steps}
    assert run_id in text["step-source"] and "landing/flights" in text["step-source"]
    assert "passed" in text["step-validation"]
    assert version["version_id"] in text["step-dataset"]
    assert "roc_auc" in text["step-training"] and "blessed" in text["step-evaluation"]
    assert "deploy" in text["step-deployments"] and "live" in text["step-deployments"]
    plots = d.find_elements(By.CSS_SELECTOR, ".plots img")
    assert plots and all(d.execute_script("return arguments[0].naturalWidth", img) > 0
                         for img in plots)
    # the same chain read through an MLflow tracking server (the production profile's setup)
    server = ui.config.mlflow_ui_url
    via_http = lineage.version_lineage(MODEL, "1", ui.config.with_overrides(
        mlflow_tracking_uri=server, mlflow_registry_uri=server))
    assert via_http.to_dict() == lineage.version_lineage(MODEL, "1", ui.config).to_dict()
    assert via_http.training["plots"] and via_http.summary.aliases == ["challenger", "champion"]
    # the reports, from the lineage page
    d.get(d.find_element(By.ID, "data-docs-link").get_attribute("href"))
    wait(d).until(lambda drv: "flights_is_late" in drv.page_source)
    d.get(f"{ui.url}/mlops/models/{MODEL}/versions/1")
    d.get(d.find_element(By.ID, "manifest-link").get_attribute("href"))
    assert json.loads(d.find_element(By.TAG_NAME, "body").text)["version_id"] \
        == version["version_id"]


def test_the_model_card_renders_and_shows_the_slices(ui_stack, browser):
    """The stack slices every model by carrier and origin (as the demo model is by default): the
    first version's card, opened from the version page as a reader would, shows the per-slice
    table and chart."""
    ui, d = ui_stack, browser
    d.get(f"{ui.url}/mlops/models/{MODEL}/versions/1")
    card = d.find_element(By.CSS_SELECTOR, "#model-card a").get_attribute("href")
    assert card.endswith(f"/mlops/models/{MODEL}/versions/1/card")
    d.get(card)
    title = wait(d).until(EC.presence_of_element_located((By.ID, "card-title")))
    assert MODEL in title.text and "1" in title.text
    rows = d.find_elements(By.CSS_SELECTOR, "#slice-table tr.slice-row")
    names = {r.find_element(By.TAG_NAME, "td").text for r in rows}
    assert {"origin=EWR", "origin=JFK", "origin=LGA"} <= names
    assert any(n.startswith("carrier=") for n in names)
    bars = d.find_elements(By.CSS_SELECTOR, "#slice-chart g.slice-bar")
    assert len(bars) == len(rows)
    chart = d.find_element(By.ID, "slice-chart")
    assert chart.size["width"] > 300 and chart.size["height"] > 50  # drawn, not empty
    for section in ("training", "metrics", "decision", "limits", "lineage"):
        assert d.find_element(By.ID, section).text.strip(), section
    # v1 has no champion to compare with (and a day's holdout is small): nothing is gated
    assert all("not-gated" in r.get_attribute("class") for r in rows)
    ui.screenshot(d, "model-card")


def test_the_views_need_the_ui_login_and_never_serve_other_files(ui_stack):
    ui = ui_stack
    base = ui.url + "/mlops"
    docs = ui.api.xcom(DAG_ID, ui.state["run_id"], "validate")["data_docs_uri"]
    good = base + "/reports/data-docs/" + docs.split("/data_docs/", 1)[1]
    assert http(good)[0] == 401  # no login, no report
    assert http(base + "/")[0] == 401
    token = ui.api._token_value()
    status, body = http(good, token)
    assert status == 200 and b"flights_is_late" in body

    # a file beside the reports that must never be served, and a symlink to it inside them
    secret = Path(ui.config.airflow_home) / "airflow.cfg"
    data_docs = storage.local_path(storage.join(ui.config.reports_uri, "data_docs"))
    (data_docs / "escape.html").symlink_to(secret)
    refused = [
        "/reports/data-docs/../../airflow/airflow.cfg",
        "/reports/data-docs/%2e%2e/%2e%2e/airflow/airflow.cfg",
        "/reports/data-docs/..%2f..%2fairflow%2fairflow.cfg",
        "/reports/data-docs//etc/passwd",
        "/reports/data-docs/escape.html",
        "/reports/snapshots/" + ui.api.xcom(DAG_ID, ui.state["run_id"], "version")["version_id"]
        + "/data.parquet",
        "/reports/validation/.hidden.json",
    ]
    for path in refused:
        status, body = http(base + path, token)
        assert status in (403, 404), (path, status)
        assert b"[core]" not in body and b"root:" not in body, path
    assert http(base + "/reports/data-docs/../../airflow/airflow.cfg", token)[0] == 403
    assert http(base + "/reports/data-docs/escape.html", token)[0] == 403
    assert http(base + "/reports/lake/x.json", token)[0] == 404  # unknown kind
    assert http(base + "/models/..%2f..%2fetc", token)[0] == 404


def test_a_failed_gate_summarises_itself_links_its_report_and_notifies(ui_stack, browser,
                                                                     tmp_path):
    ui, d = ui_stack, browser
    # promotion of the form's run was notified
    promoted = ui.webhook.wait_for(lambda b: b["event"] == "promotion")
    assert promoted["title"] == f"{MODEL}: v1 promoted to champion"
    assert promoted["url"].endswith(f"/mlops/models/{MODEL}/versions/1")

    day = date(2013, 3, 1)
    folder = tmp_path / "flights"
    folder.mkdir()
    flights_for_day(day).head(300).rename(columns={"dest": "destination"}).to_csv(
        folder / f"flights_{day.isoformat()}.csv", index=False,
        date_format="%Y-%m-%dT%H:%M:%SZ")
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    run = ui.api.trigger_interval(DAG_ID, start, start + timedelta(days=1), conf={
        "source": str(folder), "training_window_days": 0, "model_name": "browser_bad"},
        run_id="browser_bad_data")
    run = ui.wait_for_run(run["dag_run_id"])
    assert run["state"] == "failed" and run["tasks"]["validate"]["state"] == "failed"
    assert run["tasks"]["validate"]["try_number"] == 1

    log = ui.api.task_log(DAG_ID, run["run_id"], "validate", 1)
    head = log.index("=== validate stopped the run ===")
    if "Traceback" in log:  # the summary comes before any traceback
        assert head < log.index("Traceback")
    summary = log[head:head + 3000]
    # a new model on the flights feed starts from the feed's reviewed suite
    assert re.search(r"What failed: DataValidationError: browser_bad: .*dest", summary)
    assert f"Report:      {ui.url}/mlops/reports/data-docs/" in summary
    assert "What to do:  Open the Data Docs" in summary

    # the failed validation still links its Data Docs; the tasks that never ran link nothing
    assert links(ui, run["run_id"], "version") == {"Dataset manifest": None}
    d.get(f"{ui.url}/dags/{DAG_ID}/runs/{run['run_id']}/tasks/validate/details")
    href = wait(d).until(EC.presence_of_element_located((By.LINK_TEXT, "Data Docs"))) \
        .get_attribute("href")
    d.get(href)
    wait(d).until(lambda drv: "dest" in drv.page_source and "flights_is_late" in drv.page_source)

    failure = ui.webhook.wait_for(lambda b: b["event"] == "failure"
                                  and b["run_id"] == run["run_id"])
    assert failure["task_id"] == "validate" and "What to do:" in failure["text"]
    assert failure["url"].endswith(f"/runs/{run['run_id']}/tasks/validate")
    assert not [b for b in ui.webhook.received if b["event"] == "promotion"
                and b["run_id"] == run["run_id"]]


@pytest.fixture(autouse=True)
def _needs_previous(request, ui_stack):
    """Later tests use the run of the first one: say so plainly if it did not get that far."""
    if request.node.name != "test_login_then_trigger_from_the_form_with_non_default_params" \
            and "run_id" not in ui_stack.state:
        pytest.fail("the form-triggered run of the first test is missing (it failed)",
                    pytrace=False)
