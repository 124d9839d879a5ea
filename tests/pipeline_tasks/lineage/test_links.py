"""Each task's link, from what the task returned; nothing returned, no link."""

from __future__ import annotations

from pipeline_tasks.core import storage
from pipeline_tasks.core.config import load_config
from pipeline_tasks.lineage.links import TASK_LINKS, mlflow_ui_url


def test_each_task_links_its_own_artifact(tmp_path):
    config = load_config(home=str(tmp_path), mlflow_port=5055)
    base = "http://airflow:8080"
    docs = storage.join(config.reports_uri, "data_docs", "d", "p.html")
    manifest = storage.join(config.lake_uri, "snapshots", "v1", "manifest.json")
    drift = storage.join(config.lake_uri, "monitoring", "m", "d", "report.html")
    expected = {
        "validate": ({"data_docs_uri": docs}, f"{base}/mlops/reports/data-docs/d/p.html"),
        "version": ({"manifest_uri": manifest},
                    f"{base}/mlops/reports/snapshots/v1/manifest.json"),
        "train": ({"run_id": "abc", "experiment_id": "3"},
                  "http://127.0.0.1:5055/#/experiments/3/runs/abc"),
        "register": ({"model_name": "m", "version": "2"}, "http://127.0.0.1:5055/#/models/m/versions/2"),
        "deploy": ({"endpoint": "http://127.0.0.1:8800", "model_name": "m"},
                   "http://127.0.0.1:8800/models/m/metadata"),
        "check_drift": ({"report_uri": drift}, f"{base}/mlops/reports/monitoring/m/d/report.html"),
    }
    for task_id, (result, url) in expected.items():
        assert TASK_LINKS[task_id][0].url(result, config, base) == url, task_id
        assert TASK_LINKS[task_id][0].url({}, config, base) is None, task_id
        assert TASK_LINKS[task_id][0].url(None, config, base) is None, task_id
    assert "ingest" not in TASK_LINKS and "evaluate" not in TASK_LINKS


def test_the_mlflow_ui_is_the_tracking_server_in_the_production_profile(tmp_path):
    embedded = load_config(home=str(tmp_path))
    assert mlflow_ui_url(embedded) == embedded.mlflow_ui_url
    prod = load_config(home=str(tmp_path), mlflow_tracking_uri="http://mlflow.internal:5000/")
    assert mlflow_ui_url(prod) == "http://mlflow.internal:5000"
    assert TASK_LINKS["register"][0].url({"model_name": "m", "version": "1"}, prod) \
        == "http://mlflow.internal:5000/#/models/m/versions/1"


def test_links_never_carry_the_tracking_uris_credentials(tmp_path):
    config = load_config(home=str(tmp_path), mlflow_tracking_uri="https://bob:s%2Fe%40cret@mlflow.x/",
                         mlflow_backend_store_uri="sqlite:////tmp/store.db")
    assert mlflow_ui_url(config) == "https://mlflow.x"
    for task_id, result in (("train", {"run_id": "r", "experiment_id": "1"}),
                            ("register", {"model_name": "m", "version": "1"}),
                            ("deploy", {"endpoint": "http://svc:tok3n@127.0.0.1:8800"})):
        url = TASK_LINKS[task_id][0].url(result, config, "http://ops:pw123@airflow:8080")
        assert "bob" not in url and "s%2Fe%40cret" not in url and "tok3n" not in url, url
