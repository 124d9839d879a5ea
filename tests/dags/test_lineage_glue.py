"""The glue's OpenLineage datasets and asset names of each stage (no scheduler: the end-to-end
run in tests/e2e/test_training_pipeline.py checks the events the provider sends and the asset
events Airflow stores)."""

from __future__ import annotations

PROBE = r"""
import json
from mlops_airflow import assets
from mlops_airflow.lineage_events import facets_on_complete, record, stage_datasets
from pipeline_tasks.core.results import typed
from pipeline_tasks.data.ingest import IngestResult
from pipeline_tasks.data.versioning import DatasetVersion
from pipeline_tasks.deploy.records import DeploymentRecord
from pipeline_tasks.model.registry import RegistrationResult
from pipeline_tasks.model.train import TrainResult

ingested = typed(IngestResult, {"uri": "file:///lake/raw/run=1/part.parquet", "rows": 4,
    "columns": ["a", "y"], "source": "file:///landing/flights/", "interval_start": "a",
    "interval_end": "b", "window_start": "c", "partitioned": True, "files": [],
    "time_column": None, "rows_outside_window": 0})
versioned = typed(DatasetVersion, {"version_id": "abc", "uri": "file:///lake/snapshots/abc",
    "data_uri": "file:///lake/snapshots/abc/data.parquet", "manifest_uri": "m", "rows": 4,
    "columns": ["a", "y"], "created": True})
trained = typed(TrainResult, {"run_id": "r1", "experiment_id": "1", "model_uri": "models:/m-123",
    "task_type": "classification", "target": "y", "time_column": None, "primary_metric": "auc",
    "greater_is_better": True, "metrics": {}, "holdout_uri": "file:///lake/holdout.parquet",
    "feature_columns": ["a"], "n_train": 3, "n_holdout": 1, "dataset_version": "abc",
    "best_params": {}})
registered = RegistrationResult(model_name="m.x", version="3", run_id="r1", promoted=True,
                                reason="better", champion_version="3", previous_champion=None,
                                aliases=["champion"])
deployed = typed(DeploymentRecord, {"deployment_id": "d1", "action": "deploy",
    "model_name": "m.x", "version": "3", "target": "local",
    "endpoint": "http://127.0.0.1:5001", "previous": None, "reason": "r", "lineage": {},
    "started_at": "t", "status": "live"})

def names(refs):
    return [[r.namespace, r.name, r.version] for r in refs]

out = {}
for task_id, inputs, result, params in [
        ("ingest", {}, ingested, {}),
        ("ingest", {}, ingested, {"sql_conn_id": "warehouse"}),
        ("version", {"ingested": ingested}, versioned, {}),
        ("train", {"ingested": ingested, "versioned": versioned}, trained, {}),
        ("register", {"trained": trained}, registered, {}),
        ("deploy", {"trained": trained, "registered": registered}, deployed, {}),
        ("deploy", {"trained": trained, "registered": registered}, None, {})]:
    ins, outs = stage_datasets(task_id, inputs, result, params)
    out.setdefault(task_id, []).append([names(ins), names(outs)])

class TI:
    dag_id, task_id, run_id, map_index = "d", "version", "r", -1

record("version", {"ingested": ingested}, versioned, {"ti": TI(), "params": {}})
record("train", {"versioned": object()}, trained, {"ti": TI(), "params": {}})  # a bad input
lineage = facets_on_complete(TI())
out["facets"] = [[d.namespace, d.name, sorted(d.facets)] for d in lineage.outputs]
champion = assets.champion_asset("flights_is_late")
out["asset"] = [champion.name, champion.uri, assets.asset_for("versions", "a/b").uri]
print(json.dumps(out))
"""


def test_each_stage_names_its_datasets_from_the_layout(run_probe):
    out = run_probe(PROBE)
    raw = ["file", "/lake/raw/run=1/part.parquet", None]
    snapshot = ["file", "/lake/snapshots/abc/data.parquet", "abc"]
    version = ["mlflow", "models:/m.x/3", "3"]
    assert out["ingest"] == [[[["file", "/landing/flights", None]], [raw]],
                             [[["airflow-connection://warehouse", "query", None]], [raw]]]
    assert out["version"] == [[[raw], [snapshot]]]
    assert out["train"] == [[[snapshot], [["mlflow", "models:/m-123", None]]]]
    assert out["register"] == [[[["mlflow", "models:/m-123", None]], [version]]]
    # a deploy that did not return (failed) still names what it read
    assert out["deploy"] == [[[version], [["http://127.0.0.1:5001", "/", None]]], [[version], []]]
    # what the provider gets: the recorded datasets with their facets; a stage whose lineage
    # could not be derived (a bad input) leaves the earlier record and does not raise
    assert out["facets"] == [["file", "/lake/snapshots/abc/data.parquet", ["schema", "version"]]]
    assert out["asset"] == ["mlops.champion.flights_is_late",
                            "mlops://models/flights_is_late/champion",
                            "mlops://models/a%2Fb/versions"]
