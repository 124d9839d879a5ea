"""Each stage's typed result travels as the same XCom dict as before, and reads back from it."""

from __future__ import annotations

import pytest

from pipeline_tasks import stages
from pipeline_tasks.core.results import typed
from pipeline_tasks.data.ingest import IngestResult
from pipeline_tasks.data.validate import ValidationResult
from pipeline_tasks.data.versioning import DatasetVersion
from pipeline_tasks.deploy.records import DeploymentRecord
from pipeline_tasks.model.evaluate import EvaluationDecision
from pipeline_tasks.model.registry import RegistrationResult
from pipeline_tasks.model.train import TrainResult
from pipeline_tasks.monitoring.drift_check import DriftCheck
from pipeline_tasks.monitoring.performance import PerformanceCheck
from pipeline_tasks.monitoring.retrain import RetrainDecision
from pipeline_tasks.scoring.batch import BatchScoreResult, ScoringModel
from pipeline_tasks.scoring.sql_export import SqlExportResult

REGISTERED = RegistrationResult(
    model_name="m", version="3", run_id="r3", promoted=True, reason="promoted from v2: better",
    champion_version="3", previous_champion="2", aliases=["challenger", "champion"])

#: One result of each stage, and the keys its XCom payload has always had.
CASES = [
    (IngestResult(uri="file:///lake/raw/x.parquet", rows=40, columns=["a", "y"], source="/d",
                  interval_start="2013-03-01", interval_end="2013-03-02",
                  window_start="2013-02-01", partitioned=True, files=["/d/a.csv"],
                  time_column="time_hour", rows_outside_window=2),
     ["uri", "rows", "columns", "source", "interval_start", "interval_end", "window_start",
      "partitioned", "files", "time_column", "rows_outside_window", "nothing_new"]),
    (ValidationResult(success=True, suite_name="m", suite_uri="file:///s.json",
                      suite_inferred=False, evaluated=12,
                      failed_warning=[{"expectation": "x", "column": "a"}],
                      data_docs_uri="file:///docs", result_uri="file:///r.json",
                      suite_ref="repo:m.json", champion_version="2"),
     ["success", "suite_name", "suite_uri", "suite_inferred", "evaluated", "failed_critical",
      "failed_warning", "data_docs_uri", "result_uri", "quarantine_uri", "suite_ref",
      "champion_version", "reused_from"]),
    (DatasetVersion(version_id="ab12", uri="file:///snap/ab12", data_uri="file:///snap/d",
                    manifest_uri="file:///snap/m.json", rows=40, columns=["a", "y"],
                    created=True, suite_uri="repo:m.json"),
     ["suite_uri", "version_id", "uri", "data_uri", "manifest_uri", "rows", "columns",
      "created"]),
    (TrainResult(run_id="r3", experiment_id="1", model_uri="models:/m-1", task_type="regression",
                 target="y", time_column=None, primary_metric="rmse", greater_is_better=False,
                 metrics={"rmse": 1.5}, holdout_uri="file:///h.parquet", feature_columns=["a"],
                 n_train=30, n_holdout=10, dataset_version="ab12", best_params={"alpha": 0.1},
                 suite_uri="repo:m.json"),
     ["run_id", "experiment_id", "model_uri", "task_type", "target", "time_column",
      "primary_metric", "greater_is_better", "metrics", "holdout_uri", "feature_columns",
      "n_train", "n_holdout", "dataset_version", "best_params", "suite_uri", "cache_key",
      "cache_hit", "nothing_new"]),
    (EvaluationDecision(blessed=True, reason="better", primary_metric="rmse",
                        greater_is_better=False, candidate_metrics={"rmse": 1.5},
                        baseline_metrics={"rmse": 3.0}, champion_metrics={"rmse": 1.6},
                        champion_version="2", deltas={"rmse": -0.1}, thresholds={"lift": 0.1},
                        forced=False, force_reason=None, gate_passed=True,
                        schema_change={"removed": []}),
     ["blessed", "reason", "primary_metric", "greater_is_better", "candidate_metrics",
      "baseline_metrics", "champion_metrics", "champion_version", "deltas", "thresholds",
      "forced", "force_reason", "gate_passed", "breaking_change", "schema_change", "slices",
      "fairness"]),
    (REGISTERED,
     ["model_name", "version", "run_id", "promoted", "reason", "champion_version",
      "previous_champion", "aliases", "awaiting_approval", "breaking_change"]),
    (DeploymentRecord.begin(model_name="m", version="3", target="local",
                            endpoint="http://127.0.0.1:8000", reason="promoted")
     .update(previous={"model_name": "m", "version": "2", "pid": 7}, status="live",
             outcome="switched", pid=11, private_port=9001, canary_rows=20,
             record_uri="file:///lake/deployments/m/x.json"),
     ["deployment_id", "model_name", "version", "target", "endpoint", "status", "pid",
      "private_port", "previous_version", "reason", "canary_rows", "record_uri",
      "breaking_change"]),
    (DriftCheck(model_name="m", model_version="3", interval_start="2013-03-01",
                interval_end="2013-03-02", dag_id="ml_drift_monitoring", run_id="r",
                current_source="prediction_log", status="drift", reason="2 of 4 drifted",
                drift_detected=True, drifted_share=0.5, share_threshold=0.25,
                drifted_columns=["a", "b"], columns={"a": {"score": 0.3}}, rows_current=500,
                rows_reference=900, versions_seen={"3": 500}, skipped_columns={},
                missing_columns=[], unexpected_columns=[], reference_dataset_version="ab12",
                report_uri="file:///report.html", verdict_uri="file:///drift.json",
                metrics_uri="file:///metrics.prom", mlflow_run_id="x",
                created_at="2013-03-02T00:00:00+00:00"),
     ["model_name", "model_version", "interval_start", "interval_end", "dag_id", "run_id",
      "current_source", "status", "reason", "drift_detected", "drifted_share",
      "share_threshold", "drifted_columns", "columns", "rows_current", "rows_reference",
      "versions_seen", "skipped_columns", "missing_columns", "unexpected_columns",
      "reference_dataset_version", "report_uri", "verdict_uri", "metrics_uri", "mlflow_run_id",
      "created_at"]),
    (PerformanceCheck(model_name="m", model_version="3", interval_start="2013-02-27",
                      interval_end="2013-02-28", status="degraded", degraded=True,
                      primary_metric="rmse", offline_metric=1.5, served_metrics={"rmse": 2.5},
                      rows_predicted=100, rows_labelled=90, labels_read=95, unmatched_labels=5,
                      unmatched_examples=["x1"], reason="rmse 2.5 vs 1.5 offline",
                      verdict_uri="file:///performance.json", mlflow_run_id=None),
     ["model_name", "model_version", "interval_start", "interval_end", "status", "degraded",
      "primary_metric", "offline_metric", "served_metrics", "rows_predicted", "rows_labelled",
      "labels_read", "unmatched_labels", "unmatched_examples", "reason", "verdict_uri",
      "mlflow_run_id"]),
    (RetrainDecision(model_name="m", retrain=True, reason="drift", interval_end="2013-03-02",
                     drift_run_id="r", drifted_columns=["a"], cooldown_until="2013-03-09",
                     last_request=None, asset_extra={"model_name": "m", "drift_run_id": "r"}),
     ["model_name", "retrain", "reason", "interval_end", "drift_run_id", "drifted_columns",
      "cooldown_until", "last_request", "asset_extra"]),
    (ScoringModel(model_name="m", version="3", ref="champion", model_run_id="r3",
                  artifact_sha256="ab", resolved_at="2013-03-02T00:05:00+00:00"),
     ["model_name", "version", "ref", "model_run_id", "artifact_sha256", "resolved_at"]),
    (BatchScoreResult(model_name="m", model_version="3", run_id="scheduled__2013-03-01",
                      interval_start="2013-03-01", interval_end="2013-03-02",
                      interval_key="2013-03-02", scores_uri="file:///lake/scores/m/x",
                      summary_uri="file:///s.json", rejects_uri="file:///r.parquet",
                      rows_read=10, rows_scored=9, rows_rejected=1, reject_share=0.1,
                      reject_reasons={"a: null": 1}, parts=["file:///p0"], classes=[0, 1]),
     ["model_name", "model_version", "run_id", "interval_start", "interval_end", "interval_key",
      "scores_uri", "summary_uri", "rejects_uri", "rows_read", "rows_scored", "rows_rejected",
      "reject_share", "rows_outside_interval", "reject_reasons", "parts", "prediction_log_files",
      "source", "files", "task_type", "classes", "seconds", "status"]),
    (SqlExportResult(table="s.t", model_name="m", interval_end="2013-03-02", rows=9,
                     replaced_rows=9, created=False),
     ["table", "model_name", "interval_end", "rows", "replaced_rows", "created"]),
]


@pytest.mark.parametrize("result, keys", CASES, ids=[type(r).__name__ for r, _ in CASES])
def test_each_result_round_trips_through_its_xcom_payload_with_the_same_keys(result, keys):
    payload = result.to_xcom()
    assert sorted(payload) == sorted(keys)
    again = type(result).from_xcom(payload)
    assert again.to_xcom() == payload
    # a payload with keys the type does not know (a newer or older release) still reads
    assert type(result).from_xcom({**payload, "added_later": 1}).to_xcom() == payload
    assert typed(type(result), payload).to_xcom() == payload
    assert typed(type(result), again) is again and typed(type(result), None) is None


def test_the_deploy_result_reads_back_and_carries_an_approval():
    record = CASES[6][0]
    payload = record.to_xcom()
    assert payload["previous_version"] == "2" and payload["canary_rows"] == 20
    again = DeploymentRecord.from_xcom(payload)
    assert (again.previous_version, again.record_uri, again.status) == ("2", record.record_uri,
                                                                       "live")
    approved = record.update(approval=REGISTERED.to_dict()).to_xcom()
    assert approved == {**payload, "approval": REGISTERED.to_dict()}
    assert DeploymentRecord.from_xcom(approved).to_xcom() == approved
    # the approval is the stage's result only, never part of the stored document
    assert "approval" not in record.update(approval=REGISTERED.to_dict()).to_dict()


def test_every_stage_argument_names_a_result_type_the_glue_can_import():
    assert set(stages.XCOM_TYPES) == {"ingested", "validated", "versioned", "trained",
                                      "decision", "registered", "drift", "performance",
                                      "scoring_model", "scored"}
    for name in stages.XCOM_TYPES:
        assert hasattr(stages.xcom_type(name), "from_xcom"), name
    assert stages.xcom_type("ti") is None
    assert stages.xcom_type("trained") is TrainResult
