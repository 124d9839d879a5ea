"""Monitoring's plain parts on a real lake folder: the prediction-log reader, late labels, the
served metrics and the retrain decision with its cool-down. (The drift check and the loop through
Airflow are in tests/e2e/test_monitoring_loop.py; the drift engine in test_drift.py.)"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from pipeline_tasks.core import layout, storage
from pipeline_tasks.core.config import load_config
from pipeline_tasks.monitoring import drift_check, performance, retrain, sources


@pytest.fixture
def config(tmp_path):
    return load_config(home=str(tmp_path), retrain_cooldown_days=7)


def log_rows(day: str, model: str = "m", version: str = "1", n: int = 3) -> pd.DataFrame:
    at = pd.Timestamp(f"{day}T10:00:00Z")
    return pd.DataFrame({
        "request_id": ["r"] * n, "row_id": [f"{day}-{i}" for i in range(n)],
        "predicted_at": [pd.Timestamp.now(tz="UTC")] * n, "event_time": [at] * n,
        "model_name": [model] * n, "model_version": [version] * n, "x": np.arange(n, dtype=float),
        "prediction": [1.0] * n, "score": [0.9] * n})


def write_log(config, day: str, frame: pd.DataFrame, name: str = "part-a.parquet") -> str:
    uri = f"{config.predictions_uri}/date={day}/{name}"
    storage.atomic_write_parquet(frame, uri)
    return uri


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_the_log_reader_takes_the_interval_of_one_model(config):
    write_log(config, "2013-07-10", pd.concat([log_rows("2013-07-10"),
                                               log_rows("2013-07-10", model="other")]))
    write_log(config, "2013-07-11", log_rows("2013-07-11"))
    rows = sources.read_prediction_log(config, "m", utc("2013-07-10"), utc("2013-07-11"))
    assert len(rows) == 3 and set(rows["model_name"]) == {"m"}
    assert sources.read_prediction_log(config, "m", utc("2013-07-12"),
                                       utc("2013-07-13")).empty


def test_a_corrupt_log_file_is_named_and_left_in_place(config):
    write_log(config, "2013-07-10", log_rows("2013-07-10"))
    bad = storage.local_path(f"{config.predictions_uri}/date=2013-07-10/part-bad.parquet")
    bad.write_bytes(b"PAR1 garbage")
    with pytest.raises(sources.MonitoringInputError, match="part-bad.parquet"):
        sources.read_prediction_log(config, "m", utc("2013-07-10"), utc("2013-07-11"))
    assert bad.exists()


def test_late_labels_are_read_for_the_interval_only(config, tmp_path):
    folder = tmp_path / "outcomes"
    folder.mkdir()
    pd.DataFrame({"row_id": ["2013-07-10-0", "2013-07-09-0"],
                  "event_time": ["2013-07-10T10:00:00Z", "2013-07-09T10:00:00Z"],
                  "y": [1.0, 0.0]}).to_csv(folder / "outcomes_2013-07-11.csv", index=False)
    pd.DataFrame({"row_id": ["2013-07-10-1"], "event_time": ["2013-07-10T11:00:00Z"],
                  "y": [None]}).to_csv(folder / "outcomes_2013-07-12.csv", index=False)
    pd.DataFrame({"row_id": ["x"], "event_time": ["2013-07-10T11:00:00Z"],
                  "y": [1.0]}).to_csv(folder / "outcomes_2013-08-30.csv", index=False)
    labels = performance.read_labels(folder.as_uri(), "y", utc("2013-07-10"),
                                     utc("2013-07-11"), lookahead_days=3)
    # the 07-09 outcome is another interval's, the null is no outcome, 08-30 is not looked at
    assert labels["row_id"].tolist() == ["2013-07-10-0"]


def test_a_labels_file_without_the_key_is_named(config, tmp_path):
    bad = tmp_path / "outcomes_2013-07-11.csv"
    pd.DataFrame({"flight": ["a"], "y": [1]}).to_csv(bad, index=False)
    with pytest.raises(sources.MonitoringInputError, match=r"outcomes_2013-07-11.csv lacks "
                                                            r"column\(s\) \['row_id'"):
        performance.read_labels(bad.as_uri(), "y", utc("2013-07-10"), utc("2013-07-11"), 1)


def test_served_metrics():
    y = np.array([0.0, 1.0, 1.0, 0.0])
    out = performance.served_metrics(y, np.array([0.0, 1.0, 0.0, 0.0]),
                                     np.array([0.1, 0.9, 0.4, 0.2]), "classification")
    assert out["accuracy"] == 0.75 and out["roc_auc"] == 1.0 and 0 < out["f1"] < 1
    reg = performance.served_metrics(np.array([1.0, 2.0]), np.array([1.5, 2.0]), None,
                                     "regression")
    assert reg["mae"] == 0.25


def drift_verdict(columns=("temp",)) -> dict:
    return {"drift_detected": True, "drifted_columns": list(columns), "drifted_share": 0.5,
            "share_threshold": 0.25}


def test_retrain_requests_respect_the_cooldown(config):
    def decide(run_id: str, end: str, drift=None, performance=None):
        return retrain.decide_retrain(model_name="m", drift=drift, performance=performance,
                                      interval_end=end, dag_id="ml_drift_monitoring",
                                      run_id=run_id, config=config)

    quiet = decide("r0", "2013-07-10T00:00:00+00:00", drift={"drift_detected": False})
    assert not quiet.retrain and quiet.reason == "no drift and no performance drop"

    first = decide("r1", "2013-07-11T00:00:00+00:00", drift=drift_verdict())
    assert first.retrain and first.asset_extra["drift_run_id"] == "r1"
    assert first.asset_extra["drifted_columns"] == ["temp"]
    assert "drift on 1 column(s) (temp)" in first.reason

    held = decide("r2", "2013-07-14T00:00:00+00:00", drift=drift_verdict(("dewp",)))
    assert not held.retrain and "cool-down of 7" in held.reason and "r1" in held.reason
    assert held.cooldown_until.startswith("2013-07-18")

    again = decide("r1", "2013-07-11T00:00:00+00:00", drift=drift_verdict())
    assert again.retrain and again.asset_extra == first.asset_extra  # a re-run: same decision

    degraded = {"degraded": True, "reason": "roc_auc 0.60 (offline 0.70)"}
    later = decide("r3", "2013-07-18T00:00:00+00:00", performance=degraded)
    assert later.retrain and "performance drop: roc_auc 0.60" in later.reason
    records = storage.local_path(storage.join(config.lake_uri, "monitoring", "m",
                                              "retrain_requests"))
    assert len(list(records.glob("*.json"))) == 2


def test_id_like_categories_are_left_out_of_the_comparison(config):
    reference = pd.DataFrame({"temp": np.arange(200.0), "origin": ["EWR", "JFK"] * 100,
                              "tailnum": [f"N{i}" for i in range(200)]})
    numeric, categorical, skipped = drift_check.split_features(
        reference, ["temp", "origin", "tailnum"], config.with_overrides(drift_max_categories=50))
    assert (numeric, categorical) == (["temp"], ["origin"])
    assert skipped == {"tailnum": "200 distinct values in training, more than "
                                  "drift_max_categories=50"}
    # columns left out on purpose (calendar columns drift by construction)
    numeric, categorical, skipped = drift_check.split_features(
        reference, ["temp", "origin", "tailnum"],
        config.with_overrides(drift_ignore_columns=" temp, origin ,"))
    assert (numeric, categorical) == ([], [])
    assert skipped["temp"] == skipped["origin"] == "listed in drift_ignore_columns"


def test_a_model_without_labels_is_recorded_as_no_labels():
    from pipeline_tasks import stages
    from pipeline_tasks.core.errors import NoLabels

    run = stages.RunSpec(dag_id="ml_drift_monitoring", run_id="scheduled__2013-07-11",
                         interval_start="2013-07-10T00:00:00+00:00",
                         interval_end="2013-07-11T00:00:00+00:00",
                         params={"model_name": "diamonds_price"})
    with pytest.raises(NoLabels, match="no labels source for diamonds_price") as skipped:
        stages.check_performance(run)
    verdict = storage.read_json(skipped.value.result["verdict_uri"])
    assert verdict["status"] == "no_labels" and verdict["model_name"] == "diamonds_price"
    assert verdict["interval_end"] == "2013-07-10T00:00:00+00:00"  # label_delay_days back


def a_drift_check(config) -> drift_check.DriftCheck:
    out = layout.monitoring_run_dir(config, "m", "ml_drift_monitoring/run_id=r1")
    return drift_check.DriftCheck(
        model_name="m", model_version="3", interval_start="2013-07-10T00:00:00+00:00",
        interval_end="2013-07-11T00:00:00+00:00", dag_id="ml_drift_monitoring", run_id="r1",
        current_source="prediction_log", status="drift", reason="2 of 4 columns drifted",
        drift_detected=True, drifted_share=0.5, share_threshold=0.25,
        drifted_columns=["temp", "dewp"],
        columns={"temp": {"column": "temp", "kind": "numeric", "method": "wasserstein",
                          "score": 0.3, "threshold": 0.1, "drifted": True}},
        rows_current=500, rows_reference=1600, versions_seen={"3": 500, "2": 4},
        skipped_columns={"tailnum": "listed in drift_ignore_columns"}, missing_columns=[],
        unexpected_columns=["extra"], reference_dataset_version="abc",
        report_uri=storage.join(out, layout.DRIFT_REPORT),
        verdict_uri=storage.join(out, layout.DRIFT_VERDICT),
        metrics_uri=storage.join(out, layout.DRIFT_METRICS), mlflow_run_id="mlf",
        created_at="2013-07-11T01:00:00+00:00")


def test_a_drift_verdict_keeps_its_json_keys_and_reads_back(config):
    check = a_drift_check(config)
    data = check.to_dict()
    assert list(data) == [
        "model_name", "model_version", "interval_start", "interval_end", "dag_id", "run_id",
        "current_source", "status", "reason", "drift_detected", "drifted_share",
        "share_threshold", "drifted_columns", "columns", "rows_current", "rows_reference",
        "versions_seen", "skipped_columns", "missing_columns", "unexpected_columns",
        "reference_dataset_version", "report_uri", "verdict_uri", "metrics_uri",
        "mlflow_run_id", "created_at"]
    assert drift_check.DriftCheck.from_dict(data) == check
    assert drift_check.DriftCheck.from_dict(data, verdict_uri="x").verdict_uri == "x"


def test_a_partial_drift_verdict_reads_as_empty_values():
    check = drift_check.DriftCheck.from_dict({"model_version": 7, "drifted_share": "n/a",
                                              "rows_current": "12", "drift_detected": 1})
    assert check.model_version == "7" and check.drifted_share is None
    assert check.rows_current == 12 and check.drift_detected is True
    assert check.model_name == "" and check.drifted_columns == [] and check.columns == {}
    assert check.report_uri is None and check.created_at == ""


def test_lineage_reads_the_verdicts_monitoring_writes(config):
    from pipeline_tasks.lineage.queries import drift_checks

    check = a_drift_check(config)
    storage.atomic_write_json(check.verdict_uri, check.to_dict())
    (found,) = drift_checks("m", config)
    assert found == check  # the same type, folder and file names on both sides


def test_operator_tables_are_read_by_the_data_reader_with_monitoring_errors(tmp_path):
    table = tmp_path / "current.csv"
    pd.DataFrame({"x": [1, 2]}).to_csv(table, index=False)
    assert sources.read_table(table.as_uri())["x"].tolist() == [1, 2]
    with pytest.raises(sources.MonitoringInputError, match="expected a .csv or .parquet"):
        sources.read_table((tmp_path / "current.json").as_uri())
    with pytest.raises(sources.MonitoringInputError, match="no such file"):
        sources.read_table((tmp_path / "absent.csv").as_uri())
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(sources.MonitoringInputError, match="empty.csv"):
        sources.read_table((tmp_path / "empty.csv").as_uri())


def test_monitoring_paths_come_from_the_layout(config):
    assert layout.retrain_requests_dir(config, "m") == storage.join(
        config.lake_uri, "monitoring", "m", "retrain_requests")
    assert layout.predictions_day_dir(config, "2013-07-10") == (
        f"{config.predictions_uri}/date=2013-07-10")
