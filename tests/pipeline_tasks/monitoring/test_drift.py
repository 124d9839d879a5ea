"""The drift check with real Evidently runs: calibration of the sampled check (issue 4, section 6),
the edge cases, and its outputs (HTML report, drift.json, metrics, Prometheus text)."""

from __future__ import annotations

import dataclasses
import json
import logging
import math

import pandas as pd
import pytest
import synthetic_data as synthetic
from synthetic_data import drift_frames

from pipeline_tasks.core.config import load_config
from pipeline_tasks.core.errors import DriftInputError
from pipeline_tasks.monitoring.drift import DriftResult, check_drift, write_prometheus

SEEDS = range(20)
SHIFTED = ("num_01", "num_04", "num_08")  # 3 of 10 numeric columns move by 0.3 sigma
MIXED = ("cat_02",)  # 1 of 4 categorical columns changes its category mix
# Calibration sizes. Each side holds 5x the sample, so every check compares a seeded sample, the
# way the DAG compares its inputs above drift_sample_rows. The sample is smaller than that default
# (50,000), which keeps 80 Evidently runs fast and makes the test conservative: the tests' scores
# get noisier as samples shrink, so fewer rows can only lose detections and add false alarms.
CAL_SAMPLE = 2_000
CAL_ROWS = 5 * CAL_SAMPLE


def _calibrate(**frame_args) -> list[DriftResult]:
    results = []
    for seed in SEEDS:
        reference, current = drift_frames(CAL_ROWS, CAL_ROWS, seed=seed, **frame_args)
        results.append(check_drift(reference, current, sample_rows=CAL_SAMPLE, seed=seed))
    for result in results:  # the sampled run compared samples, with the full-data default tests
        assert (result.rows_compared_reference, result.rows_compared_current) == (CAL_SAMPLE,) * 2
        assert {c.method for c in result.columns.values()} <= {"wasserstein", "jensenshannon"}
        assert {c.threshold for c in result.columns.values()} == {0.1}
    return results


def test_a_03_sigma_shift_on_3_of_10_numeric_columns_is_found_in_19_of_20_seeds():
    results = _calibrate(numeric=10, shifted=SHIFTED, shift_sigma=0.3)
    exact = [r.drift_detected and r.drifted_columns == list(SHIFTED) for r in results]
    assert sum(exact) >= 19, [r.drifted_columns for r in results]
    assert all(r.drifted_share == pytest.approx(len(r.drifted_columns) / 10) for r in results)


def test_no_shift_on_numeric_columns_raises_drift_in_at_most_1_of_20_seeds():
    results = _calibrate(numeric=10)
    assert sum(r.drift_detected for r in results) <= 1, [r.drifted_columns for r in results]
    assert all(r.status == "no_drift" or r.drift_detected for r in results)


def test_a_changed_category_mix_is_found_in_19_of_20_seeds():
    results = _calibrate(numeric=0, categorical=4, mixed=MIXED)
    exact = [r.drift_detected and r.drifted_columns == list(MIXED) for r in results]
    assert sum(exact) >= 19, [r.drifted_columns for r in results]
    assert all(c.kind == "categorical" for r in results for c in r.columns.values())


def test_an_unchanged_category_mix_raises_drift_in_at_most_1_of_20_seeds():
    results = _calibrate(numeric=0, categorical=4)
    assert sum(r.drift_detected for r in results) <= 1, [r.drifted_columns for r in results]


def test_verdicts_are_evidently_default_verdicts_on_the_full_data():
    """Without sampling, each column's method, threshold, score and verdict are those of a plain
    ``DataDriftPreset()`` report, and the drifted share is Evidently's ``DriftedColumnsCount``."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    reference, current = drift_frames(3_000, 2_000, numeric=4, categorical=2,
                                      shifted=("num_00",), mixed=("cat_01",), seed=7)
    ours = check_drift(reference, current, sample_rows=0, share_threshold=0.5)
    definition = DataDefinition(numerical_columns=[f"num_0{i}" for i in range(4)],
                                categorical_columns=["cat_00", "cat_01"])
    snapshot = Report([DataDriftPreset(drift_share=0.5)], include_tests=True).run(
        current_data=Dataset.from_pandas(current, data_definition=definition),
        reference_data=Dataset.from_pandas(reference, data_definition=definition))
    found = snapshot.dict()
    failed = {t["metric_config"]["params"]["column"] for t in found["tests"]
              if t["status"] == "FAIL" and "column" in t["metric_config"]["params"]}
    scores = {m["config"]["column"]: m["value"] for m in found["metrics"]
              if m["config"]["type"].endswith(":ValueDrift")}
    share = next(m["value"]["share"] for m in found["metrics"]
                 if m["config"]["type"].endswith(":DriftedColumnsCount"))

    assert set(ours.drifted_columns) == failed == {"num_00", "cat_01"}
    assert {c: col.score for c, col in ours.columns.items()} == pytest.approx(scores)
    assert ours.drifted_share == pytest.approx(share) == pytest.approx(2 / 6)
    assert {c.method for c in ours.columns.values()} == {"wasserstein", "jensenshannon"}
    assert ours.status == "no_drift"  # 2 of 6 is below 0.5


def test_a_sample_keeps_the_tests_evidently_picks_for_the_full_data():
    """Evidently's default switches to K-S / chi-square at 1,000 reference rows or fewer: a sample
    below that size must not switch, and a small reference must keep them."""
    reference, current = drift_frames(4_000, 4_000, numeric=2, categorical=1, seed=1)
    reference["few_values"] = reference["num_00"].round().clip(-1, 1)  # 3 distinct numbers
    current["few_values"] = current["num_00"].round().clip(-1, 1)
    big = check_drift(reference, current, sample_rows=800)
    assert big.rows_compared_reference == 800
    assert {c: col.method for c, col in big.columns.items()} == {
        "num_00": "wasserstein", "num_01": "wasserstein", "cat_00": "jensenshannon",
        "few_values": "jensenshannon"}

    small = check_drift(reference.head(900), current.head(900), sample_rows=0)
    assert {c: (col.method, col.threshold) for c, col in small.columns.items()} == {
        "num_00": ("ks", 0.05), "num_01": ("ks", 0.05), "cat_00": ("chisquare", 0.05),
        "few_values": ("chisquare", 0.05)}


def test_fewer_rows_than_min_rows_is_insufficient_data_not_drift(tmp_path):
    reference, current = drift_frames(2_000, 120, numeric=3, shifted=("num_00",), shift_sigma=3)
    report = (tmp_path / "report.html").as_uri()
    result = check_drift(reference, current, min_rows=500, report_uri=report)
    assert result.status == "insufficient_data"
    assert result.drift_detected is False
    assert (result.rows_current, result.rows_compared_current, result.columns) == (120, 0, {})
    assert "120 current row(s), fewer than min_rows 500" in result.reason
    assert result.report_uri is None and not (tmp_path / "report.html").exists()
    assert result.metrics()["insufficient_data"] == 1.0


def test_an_interval_without_traffic_is_insufficient_data():
    reference, current = drift_frames(1_000, 0, numeric=3)
    with_schema = check_drift(reference, current)  # 0 rows, the expected columns
    untyped = check_drift(reference, pd.DataFrame(columns=reference.columns))  # object dtypes
    nothing = check_drift(reference, pd.DataFrame())  # nothing read at all
    for result in (with_schema, untyped, nothing):
        assert result.status == "insufficient_data" and not result.drift_detected
        assert result.rows_current == 0
        assert result.missing_columns == [] and result.unexpected_columns == []
    assert with_schema.min_rows == load_config().drift_min_rows


def test_a_column_the_reference_lacks_is_reported_and_the_shared_ones_compared(caplog):
    reference, current = drift_frames(3_000, 3_000, numeric=4, seed=3)
    current = current.drop(columns=["num_02"]).assign(request_id="r", new_feature=1.5)
    with caplog.at_level(logging.WARNING, logger="pipeline_tasks.monitoring.drift"):
        result = check_drift(reference, current)
    assert result.unexpected_columns == ["request_id", "new_feature"]
    assert result.missing_columns == ["num_02"]
    assert list(result.columns) == ["num_00", "num_01", "num_03"]
    assert result.status == "no_drift"
    assert "'request_id', 'new_feature'" in caplog.text and "'num_02'" in caplog.text


def test_no_shared_column_is_an_error_naming_the_columns():
    reference, _ = drift_frames(1_000, 10, numeric=2)
    current = pd.DataFrame({"foo": [1.0] * 600, "bar": ["x"] * 600})
    with pytest.raises(DriftInputError, match=r"no column.*'num_00', 'num_01'.*'foo', 'bar'"):
        check_drift(reference, current)


def test_bad_columns_and_settings_are_errors_naming_them():
    reference, current = drift_frames(1_000, 1_000, numeric=2)
    with pytest.raises(DriftInputError, match=r"'num_01' \(reference float64, current object\)"):
        check_drift(reference, current.assign(num_01="high"))
    with pytest.raises(DriftInputError, match=r"'nope'.* not in the reference"):
        check_drift(reference, current, numeric_columns=["nope"])
    with pytest.raises(DriftInputError, match="share_threshold must be in"):
        check_drift(reference, current, share_threshold=0)


def test_an_empty_column_is_reported_not_compared():
    reference, current = drift_frames(1_500, 1_500, numeric=3, seed=4)
    for no_value in (float("nan"), None):  # None: an all-null column read back as object
        result = check_drift(reference, current.assign(num_01=no_value))
        assert result.empty_columns == ["num_01"]
        assert list(result.columns) == ["num_00", "num_02"]
        assert result.metrics()["columns_empty"] == 1.0


def test_columns_and_types_can_be_given_explicitly():
    reference, current = drift_frames(2_000, 2_000, numeric=3, categorical=1, seed=5)
    reference["when"] = pd.Timestamp("2026-01-01")
    current["when"] = pd.Timestamp("2026-01-02")
    inferred = check_drift(reference, current)
    assert inferred.ignored_columns == ["when"]
    explicit = check_drift(reference, current, numeric_columns=["num_00"],
                           categorical_columns=["num_02", "cat_00"])
    assert {c: col.kind for c, col in explicit.columns.items()} == {
        "num_00": "numeric", "num_02": "categorical", "cat_00": "categorical"}
    assert explicit.ignored_columns == ["num_01", "when"]


def test_settings_come_from_the_config():
    config = load_config(drift_share_threshold=0.5, drift_min_rows=3_000, drift_sample_rows=900)
    reference, current = drift_frames(2_000, 2_000, numeric=2, seed=6)
    result = check_drift(reference, current, config=config)
    assert (result.share_threshold, result.min_rows) == (0.5, 3_000)
    assert result.status == "insufficient_data"
    sampled = check_drift(reference, current, config=config, min_rows=10, seed=2)
    assert (sampled.rows_compared_reference, sampled.sample_rows) == (900, 900)
    again = check_drift(reference, current, config=config, min_rows=10, seed=2)
    assert again == sampled  # the sample is seeded: same data, same seed, same verdict


@pytest.fixture(scope="module")
def drifted(tmp_path_factory):
    """One drifted check with its HTML report: 2 of 5 columns drift (share 0.4)."""
    folder = tmp_path_factory.mktemp("drift-report")
    reference, current = drift_frames(6_000, 4_000, numeric=3, categorical=2,
                                      shifted=("num_02",), mixed=("cat_00",), seed=11)
    result = check_drift(reference, current, report_uri=(folder / "report.html").as_uri(),
                         sample_rows=3_000)
    return result, folder, (reference, current)


def test_the_html_report_is_an_evidently_drift_and_summary_report(drifted):
    result, folder, _ = drifted
    assert result.report_uri == (folder / "report.html").as_uri()
    assert sorted(p.name for p in folder.iterdir()) == ["report.html"]  # no temp file left
    html = (folder / "report.html").read_text(encoding="utf-8")
    assert html.lstrip().startswith("<!DOCTYPE html>")
    assert "Dataset Drift" in html and "Dataset Summary" in html
    assert "Drift is detected for 40.0% of columns (2 out of 5)" in html
    assert all(column in html for column in result.columns)


def test_without_a_report_the_verdicts_are_the_same(drifted):
    """Without ``report_uri`` only the preset's ValueDrift metrics run (no drift table, no
    summary): the calibration tests use that path, so it must give the same verdicts."""
    result, _, (reference, current) = drifted
    bare = check_drift(reference, current, sample_rows=3_000)
    assert bare.report_uri is None
    assert bare.columns == result.columns
    assert dataclasses.replace(bare, report_uri=result.report_uri) == result


def test_drift_json_round_trips(drifted):
    result, _, _ = drifted
    assert result.status == "drift" and result.drift_detected
    assert result.drifted_columns == ["num_02", "cat_00"]
    text = json.dumps(result.to_dict(), allow_nan=False)
    loaded = json.loads(text)
    assert loaded["columns"]["num_02"] == {
        "column": "num_02", "kind": "numeric", "method": "wasserstein",
        "score": result.columns["num_02"].score, "threshold": 0.1, "drifted": True}
    assert (loaded["rows_reference"], loaded["rows_compared_reference"]) == (6_000, 3_000)
    assert DriftResult.from_dict(loaded) == result


def test_metrics_have_flat_names(drifted):
    result, _, _ = drifted
    metrics = result.metrics()
    assert metrics["drift_detected"] == 1.0
    assert metrics["drift_share"] == pytest.approx(0.4)
    assert (metrics["rows_current"], metrics["rows_compared_current"]) == (4_000.0, 3_000.0)
    assert metrics["drift_score.num_02"] == result.columns["num_02"].score
    assert metrics["drifted.cat_00"] == 1.0 and metrics["drifted.num_00"] == 0.0
    assert {k for k in metrics if k.startswith("drift_score.")} == {
        f"drift_score.{c}" for c in ("num_00", "num_01", "num_02", "cat_00", "cat_01")}
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())


def test_prometheus_text_parses(drifted, tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    result, _, _ = drifted
    path = tmp_path / "drift.prom"
    write_prometheus(result, path.as_uri(), {"model_name": "flights", "model_version": "3"})
    families = {f.name: f for f in text_string_to_metric_families(path.read_text())}
    assert families["mlops_drift_detected"].samples[0].value == 1.0
    assert families["mlops_drift_detected"].samples[0].labels == {
        "model_name": "flights", "model_version": "3"}
    assert families["mlops_drift_share"].samples[0].value == pytest.approx(0.4)
    scores = {s.labels["column"]: (s.labels["method"], s.value)
              for s in families["mlops_drift_column_score"].samples}
    assert scores == {c: (col.method, pytest.approx(col.score))
                      for c, col in result.columns.items()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drift.prom"]
    with pytest.raises(ValueError, match="column.*reserved"):
        write_prometheus(result, path.as_uri(), {"column": "x"})


def test_the_generator_plants_exactly_the_drift_asked_for():
    reference, current = drift_frames(20_000, 20_000, numeric=3, categorical=2,
                                      shifted=("num_01",), shift_sigma=0.5, mixed=("cat_01",))
    assert current["num_01"].mean() - reference["num_01"].mean() == pytest.approx(1.0, abs=0.05)
    assert abs(current["num_00"].mean() - reference["num_00"].mean()) < 0.05
    share = current["cat_01"].value_counts(normalize=True)["red"]
    assert share == pytest.approx(synthetic.CATEGORY_MIX_SHIFTED[0], abs=0.01)
    with pytest.raises(ValueError, match="num_09"):
        drift_frames(10, 10, numeric=3, shifted=("num_09",))
