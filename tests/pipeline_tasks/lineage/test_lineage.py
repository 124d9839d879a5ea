"""The lineage chain and model overview as data and as pages: one real chain run (ingest to
register on a small CSV), then a deployment record and drift verdicts written in their layout."""

from __future__ import annotations

import re

import pytest

from pipeline_tasks import stages
from pipeline_tasks.core import layout, storage
from pipeline_tasks.lineage import pages as lineage_pages
from pipeline_tasks.lineage import queries as lineage
from pipeline_tasks.lineage.queries import LineageNotFound

MODEL = "lineage_diamonds"


@pytest.fixture(scope="module")
def chain(tmp_path_factory, regression_frame):
    # a name of its own: the inferred suite (saved per dataset name) must not meet other tests'
    path = tmp_path_factory.mktemp("lineage") / "lineage_gems.csv"
    regression_frame.to_csv(path, index=False)
    run = stages.RunSpec(dag_id="ml_training_pipeline", run_id="manual__lineage",
                         interval_start="2013-03-01T00:00:00+00:00",
                         interval_end="2013-03-02T00:00:00+00:00",
                         params={"source": str(path), "target": "price", "model_name": MODEL})
    return run, stages.run_all(run)


def write_drift(config, version: str, day: str, share: float, drifted: bool) -> str:
    """A drift verdict where the drift DAG puts it (issue 4's contract)."""
    partition = layout.run_partition("ml_drift_monitoring", f"scheduled__{day}",
                                      f"{day}T00:00:00+00:00")
    root = storage.join(config.lake_uri, "monitoring", MODEL, partition)
    storage.atomic_write_bytes(storage.join(root, "report.html"), b"<html>evidently</html>")
    return storage.atomic_write_json(storage.join(root, "drift.json"), {
        "model_name": MODEL, "model_version": version, "interval_start": f"{day}T00:00:00+00:00",
        "interval_end": f"{day}T23:00:00+00:00", "dag_id": "ml_drift_monitoring",
        "run_id": f"scheduled__{day}", "status": "drift" if drifted else "no_drift",
        "drift_detected": drifted, "drifted_share": share, "share_threshold": 0.5,
        "drifted_columns": ["carat"] if drifted else [], "columns": {}, "rows_current": 500,
        "rows_reference": 1600, "reference_dataset_version": "x", "created_at": f"{day}T01:00:00",
    })


def test_a_version_without_deployments_or_drift_shows_empty_sections(chain):
    run, results = chain
    version = results["register"].version
    data = lineage.version_lineage(MODEL, version, run.config)
    assert data.deployments == [] and data.drift_checks == []
    page = lineage_pages.render_version(data, run.config)
    assert "Never deployed." in page and "No drift checks yet." in page
    overview = lineage.model_overview(MODEL, run.config)
    assert overview.drift_checks == []
    assert 'id="no-drift"' in lineage_pages.render_model(overview, run.config)


def test_the_chain_reads_from_source_to_drift(chain):
    run, results = chain
    config = run.config
    version = results["register"].version
    storage.atomic_write_json(storage.join(config.lake_uri, "deployments", MODEL,
                                           "20130302T000000-v1-abc.json"), {
        "deployment_id": "abc", "action": "deploy", "model_name": MODEL, "version": version,
        "target": "local", "endpoint": "http://127.0.0.1:1", "previous": None,
        "reason": "promoted", "status": "live", "outcome": f"v{version} is live",
        "started_at": "2013-03-02T00:00:00+00:00", "finished_at": "2013-03-02T00:00:05+00:00"})
    write_drift(config, version, "2013-03-05", 0.2, False)
    write_drift(config, version, "2013-03-06", 0.75, True)
    write_drift(config, "999", "2013-03-07", 0.1, False)  # another version: not in this chain

    data = lineage.version_lineage(MODEL, version, config)
    assert data.source == str(run.source) and data.interval_start.startswith("2013-03-01")
    assert data.airflow_run_id == "manual__lineage"
    assert data.validation["success"] is True and data.validation["data_docs_uri"]
    assert data.dataset["version_id"] == results["version"].version_id
    assert data.dataset["rows"] == results["version"].rows
    assert data.training["run_id"] == results["train"].run_id
    assert data.training["metrics"] and data.training["params"]
    assert "residuals.png" in " ".join(data.training["plots"])
    assert data.evaluation["blessed"] is True and data.evaluation["reason"]
    assert [d.version for d in data.deployments] == [version]
    assert [c.interval_end[:10] for c in data.drift_checks] == ["2013-03-05", "2013-03-06"]
    assert data.to_dict()["drift_checks"][1]["drifted_columns"] == ["carat"]

    page = lineage_pages.render_version(data, config, "http://airflow:8080")
    steps = re.findall(r'<section class="step[^"]*" id="(step-[a-z]+)"', page)
    assert steps == ["step-source", "step-validation", "step-dataset", "step-training",
                     "step-evaluation", "step-deployments", "step-drift"]
    assert "http://airflow:8080/mlops/reports/data-docs/" in page
    assert "http://airflow:8080/mlops/reports/snapshots/" in page
    assert "http://airflow:8080/mlops/reports/monitoring/" in page
    assert f"/mlops/models/{MODEL}/versions/{version}/plots/" in page
    assert "http://airflow:8080/dags/ml_training_pipeline/runs/manual__lineage" in page
    # what decided the fit: the cache key on the run and the version, shown on the page
    key = results["train"].cache_key
    assert data.training["cache_key"] == key and data.summary.tags["mlops.cache_key"] == key
    assert f'<code id="cache-key">{key}</code>' in page

    overview = lineage.model_overview(MODEL, config)
    assert overview.champion is not None and overview.champion.version == version
    assert [c.drifted_share for c in overview.drift_checks] == [0.2, 0.75, 0.1]
    html = lineage_pages.render_model(overview, config)
    assert html.count('class="drift-point"') == 3
    assert 'fill="#e03131"><title>2013-03-06T23 v' not in html  # labels carry the date only
    assert "2013-03-06 v" in html and "drift, share 0.750" in html


def test_a_damaged_verdict_is_skipped_not_fatal(chain):
    run, _ = chain
    bad = storage.join(run.config.lake_uri, "monitoring", MODEL, "broken", "drift.json")
    storage.atomic_write_bytes(bad, b"{not json")
    checks = lineage.drift_checks(MODEL, run.config)
    assert all("broken" not in c.verdict_uri for c in checks)


def test_unknown_models_and_versions_and_bad_names_are_not_found(chain):
    run, _ = chain
    with pytest.raises(LineageNotFound, match="has no version '77'"):
        lineage.version_lineage(MODEL, "77", run.config)
    with pytest.raises(LineageNotFound, match="no registered model 'nope'"):
        lineage.model_overview("nope", run.config)
    with pytest.raises(LineageNotFound, match="not a valid name"):
        lineage.drift_checks("../etc", run.config)


def test_the_index_lists_the_model_with_its_aliases(chain):
    run, results = chain
    entry = next(m for m in lineage.model_index(run.config) if m["name"] == MODEL)
    assert entry["champion"] == results["register"].version == entry["latest"]
    page = lineage_pages.render_index([entry], run.config)
    assert f"/mlops/models/{MODEL}" in page


def test_the_version_page_shows_the_schema_difference_escaped(chain):
    """A version promoted over a breaking change shows what changed against which champion;
    column names come from data, so they are escaped."""
    from mlflow.tracking import MlflowClient

    from pipeline_tasks.core.schema import SchemaDiff

    run, results = chain
    version = results["register"].version
    diff = SchemaDiff(against_version="7", removed=["depth", "<script>alert(1)</script>"],
                      added=["table_pct"], added_required=["table_pct"],
                      retyped={"cut": "string -> long"})
    client = MlflowClient(run.config.mlflow_tracking_uri)
    for key, value in diff.tags().items():
        client.set_model_version_tag(MODEL, version, key, value)
    data = lineage.version_lineage(MODEL, version, run.config)
    assert data.evaluation["breaking_change"] is True
    assert data.evaluation["schema_change"]["removed"] == ["depth", "<script>alert(1)</script>"]
    page = lineage_pages.render_version(data, run.config)
    start = page.index('id="schema-change"')
    row = page[start:page.index("</small>", start)]
    assert "breaking change" in row and "versions/7" in row
    assert "table_pct" in row and "cut (string -&gt; long)" in row
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in row


def test_the_pages_never_show_credentials_of_the_tracking_uri(chain):
    run, results = chain
    version = results["register"].version
    data = lineage.version_lineage(MODEL, version, run.config)
    overview = lineage.model_overview(MODEL, run.config)
    shown = run.config.with_overrides(
        mlflow_tracking_uri="https://carol:p%2Fw%40x9@mlflow.example/",
        mlflow_backend_store_uri="sqlite:////tmp/store.db")
    for page in (lineage_pages.render_version(data, shown, "http://ops:pw123@airflow:8080"),
                 lineage_pages.render_model(overview, shown)):
        assert "https://mlflow.example/#/models/" in page
        assert "carol" not in page and "p%2Fw%40x9" not in page and "pw123" not in page
