"""Failure summaries and notifications: what failed, where the report is, what to do."""

from __future__ import annotations

import urllib.error

import pytest

from pipeline_tasks.core import storage
from pipeline_tasks.core.config import load_config
from pipeline_tasks.core.errors import (
    DataValidationError,
    IngestError,
    ModelNotPromoted,
    RetrainWithheld,
)
from pipeline_tasks.lineage.failures import summarize_failure
from pipeline_tasks.ops.notifications import (
    failure_notification,
    promotion_notification,
    send_webhook,
)


def test_a_failed_validation_names_its_data_docs_and_what_to_do(tmp_path):
    config = load_config(home=str(tmp_path))
    docs = storage.join(config.reports_uri, "data_docs", "run", "page.html")
    exc = DataValidationError("flights: 1 critical expectation(s) failed: missing columns: "
                              "['dest']", result={"data_docs_uri": docs})
    summary = summarize_failure("validate", exc, config, "http://airflow:8080")
    lines = summary.text().splitlines()
    assert lines[0] == "=== validate stopped the run ==="
    assert lines[1].startswith("What failed: DataValidationError: flights: 1 critical")
    assert lines[2] == "Report:      http://airflow:8080/mlops/reports/data-docs/run/page.html"
    assert lines[3].startswith("What to do:  Open the Data Docs")


def test_a_model_that_was_not_promoted_points_at_its_version_page(tmp_path):
    exc = ModelNotPromoted("v4 was not promoted, so it is not deployed: not promoted: rejected",
                           result={"model_name": "flights", "version": "4", "promoted": False})
    summary = summarize_failure("deploy", exc, load_config(home=str(tmp_path)), "http://af")
    lines = summary.text().splitlines()
    assert lines[0] == "=== deploy stopped the run ==="
    assert lines[1] == ("What failed: ModelNotPromoted: v4 was not promoted, so it is not "
                        "deployed: not promoted: rejected")
    assert lines[2] == "Report:      http://af/mlops/models/flights/versions/4"
    assert lines[3].startswith("What to do:  Nothing was deployed; the champion keeps serving.")


def test_a_failure_without_a_report_says_so(tmp_path):
    summary = summarize_failure("ingest", IngestError("/data/x.csv: the file is empty"),
                                load_config(home=str(tmp_path)))
    assert summary.report is None and "none for this failure" in summary.text()
    assert "Check the 'Source' param" in summary.advice


def test_notifications_are_posted_as_json_with_a_text_line(make_webhook):
    receiver = make_webhook()
    note = failure_notification(dag_id="d", run_id="r/1", task_id="validate",
                                    summary_text="=== validate stopped the run ===",
                                    base_url="http://af")
    assert send_webhook(receiver.url, note) == 200
    body = receiver.received[0]
    assert body["event"] == "failure"
    assert body["url"] == "http://af/dags/d/runs/r%2F1/tasks/validate"
    assert body["text"].startswith("d: validate failed\n=== validate stopped the run ===")


def test_a_webhook_that_refuses_raises(make_webhook):
    receiver = make_webhook(status=500)
    note = failure_notification(dag_id="d", run_id="r", task_id="t", summary_text="x")
    with pytest.raises(urllib.error.HTTPError, match="500"):
        send_webhook(receiver.url, note)


def test_only_a_moved_champion_is_a_promotion():
    kw = {"dag_id": "d", "run_id": "r", "base_url": "http://af"}
    promoted = promotion_notification(task_id="register", result={
        "model_name": "m", "version": "3", "promoted": True, "reason": "better",
        "previous_champion": "2"}, **kw)
    assert promoted.title == "m: v3 promoted to champion"
    assert promoted.url == "http://af/mlops/models/m/versions/3"
    assert promoted.details["previous_champion"] == "2"
    assert promotion_notification(task_id="register", result={
        "model_name": "m", "version": "4", "promoted": False}, **kw) is None
    rolled = promotion_notification(task_id="rollback", result={
        "model_name": "m", "version": "1", "status": "live", "previous_version": "3"}, **kw)
    assert rolled.title == "m: champion rolled back to v1"
    assert promotion_notification(task_id="rollback", result={
        "model_name": "m", "version": "1", "status": "unchanged"}, **kw) is None
    # deploy promotes only a version that waited for approval
    approved = promotion_notification(task_id="deploy", result={
        "model_name": "m", "version": "5", "status": "live", "approval": {
            "model_name": "m", "version": "5", "promoted": True, "reason": "approved by a human",
            "previous_champion": "3"}}, **kw)
    assert approved.title == "m: v5 approved and promoted to champion"
    assert approved.details["previous_champion"] == "3"
    assert promotion_notification(task_id="deploy", result={
        "model_name": "m", "version": "5", "status": "live"}, **kw) is None


def test_a_retrain_held_back_by_the_cooldown_links_its_drift_report(tmp_path):
    config = load_config(home=str(tmp_path))
    report = storage.join(config.lake_uri, "monitoring", "m", "p", "report.html")
    exc = RetrainWithheld("no retraining: drift on 3 column(s); cool-down until 2013-07-31",
                          result={"model_name": "m", "report_uri": report})
    summary = summarize_failure("request_retrain", exc, config)
    assert summary.report == "/mlops/reports/monitoring/m/p/report.html"
    assert summary.advice.startswith("The live data drifted")


def test_a_failure_notification_never_carries_the_message(tmp_path):
    """The message can quote data (a bad value, a column name): notifications send the summary
    and the link, and the message stays in the task log."""
    from pipeline_tasks.core.config import load_config
    from pipeline_tasks.core.errors import DataValidationError
    from pipeline_tasks.lineage.failures import notification_text

    config = load_config(home=str(tmp_path))
    docs = storage.join(config.reports_uri, "data_docs", "run", "index.html")
    cause = DataValidationError("flights: column 'carrier': 5% of values not in {AA, UA}, e.g. "
                                "'<img src=x onerror=alert(1)>'", result={"data_docs_uri": docs})
    try:
        try:
            raise cause
        except DataValidationError as exc:
            raise RuntimeError(str(exc)) from exc  # what Airflow's fail-fast wrapper does
    except RuntimeError as failed:
        text = notification_text("validate", failed, config, "http://af")
    assert "onerror" not in text and "carrier" not in text
    assert "What failed: DataValidationError (the details are in the task log)" in text
    assert "Report:      http://af/mlops/reports/data-docs/run/index.html" in text
    assert "What to do:  Open the Data Docs" in text
