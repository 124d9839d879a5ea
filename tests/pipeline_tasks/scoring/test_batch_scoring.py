"""Batch scoring in the library: the contract at the door, rejects with reasons, what is
published, what a re-run and a killed run leave, and the prediction log it feeds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline_tasks.core import layout, storage
from pipeline_tasks.scoring.batch import TooManyRejects, score_interval
from pipeline_tasks.scoring.reader import BatchInputError

START, END = "2013-03-01T00:00:00+00:00", "2013-03-02T00:00:00+00:00"
KEY = "2013-03-02"


def write_source(frame: pd.DataFrame, folder: Path, name: str) -> str:
    path = folder / name
    if name.endswith(".csv"):
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return str(path)


def score(source: str, model, config, **kwargs):
    kwargs.setdefault("run_id", "run_1")
    return score_interval(source, model=model, interval_start=START, interval_end=END,
                          config=config, dag_id="ml_batch_scoring",
                          id_column=kwargs.pop("id_column", "flight_id"), **kwargs)


def read_partition(uri: str) -> pd.DataFrame:
    """The published scores as a reader of the folder sees them (underscored files left out)."""
    return pd.read_parquet(storage.local_path(uri)).sort_values("row_id").reset_index(drop=True)


def offline(model, config, frame: pd.DataFrame, tmp_path) -> np.ndarray:
    """Class probabilities of ``frame`` from the registered model, loaded as the server does."""
    from pipeline_tasks.serving.model import load

    served = load(config, model.model_name, model.version, tmp_path / "offline")
    return served.model.predict_proba(frame[served.contract.names])


def logged_rows(config) -> pd.DataFrame:
    """Every prediction-log row of the model whose event time falls in the sample's year (in
    UTC, its last flights are in January 2014)."""
    from pipeline_tasks.monitoring.sources import read_prediction_log

    return read_prediction_log(config, "batch_flights",
                               pd.Timestamp("2013-01-01", tz="UTC").to_pydatetime(),
                               pd.Timestamp("2014-02-01", tz="UTC").to_pydatetime())


def leftovers(config, model_name: str) -> list[str]:
    fs, path = storage.url_to_fs(layout.scores_staging(config, model_name, KEY))
    return fs.ls(path, detail=False) if fs.exists(path) else []


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_scores_match_the_model_and_feed_the_prediction_log(fmt, batch_source, scoring_model,
                                                            batch_config, tmp_path):
    from pipeline_tasks.monitoring.sources import read_prediction_log

    source = write_source(batch_source, tmp_path, f"flights.{fmt}")
    result = score(source, scoring_model, batch_config, chunk_rows=700)

    assert result.rows_read == result.rows_scored == len(batch_source)
    assert result.rows_rejected == 0 and result.model_version == scoring_model.version
    assert result.scores_uri == layout.scores_partition(batch_config, "batch_flights", KEY)
    assert len(result.parts) == -(-len(batch_source) // 1000)  # batch_part_rows=1000
    scores = read_partition(result.scores_uri)
    assert list(scores.columns) == ["row_id", "prediction", "proba_false", "proba_true",
                                    "event_time", "model_name", "model_version", "run_id"]
    assert sorted(scores["row_id"]) == sorted(batch_source["flight_id"])
    assert set(scores["model_version"]) == {scoring_model.version}
    assert set(scores["run_id"]) == {"run_1"}
    expected = offline(scoring_model, batch_config,
                       batch_source.set_index("flight_id").loc[scores["row_id"]].reset_index(),
                       tmp_path)
    # equal, not close: the scorer's faster path computes what the model's predict_proba does
    np.testing.assert_array_equal(scores[["proba_false", "proba_true"]].to_numpy(), expected)
    assert (scores["prediction"] == (expected[:, 1] > expected[:, 0])).all()

    # the same rows, in the prediction log's schema, under their event time's day
    day = batch_source["time_hour"].dt.floor("D").iloc[0]
    logged = read_prediction_log(batch_config, "batch_flights", day.to_pydatetime(),
                                 (day + pd.Timedelta(days=1)).to_pydatetime())
    on_day = batch_source[batch_source["time_hour"].dt.floor("D") == day]
    assert sorted(logged["row_id"]) == sorted(on_day["flight_id"])
    assert {"request_id", "predicted_at", "event_time", "model_version", "prediction", "score",
            "carrier", "distance"} <= set(logged.columns)
    assert len(result.prediction_log_files) == batch_source["time_hour"].dt.floor("D").nunique()
    assert leftovers(batch_config, "batch_flights") == []


@pytest.mark.parametrize("case", ["missing parquet", "retyped parquet", "retyped csv"])
def test_a_missing_or_retyped_column_fails_naming_it(case, batch_source, scoring_model,
                                                     batch_config, tmp_path):
    frame = batch_source.copy()
    if case.startswith("missing"):
        frame = frame.drop(columns=["distance"])
    elif case == "retyped parquet":
        frame["distance"] = frame["distance"].astype(str) + " miles"
    else:
        frame["distance"] = frame["distance"].astype(object)
        frame.loc[len(frame) - 1, "distance"] = "far"  # the last row: found only while reading
    fmt = case.rsplit(" ", 1)[1]
    source = write_source(frame, tmp_path, f"bad.{fmt}")
    partition = layout.scores_partition(batch_config, "batch_flights", "2099-01-01")
    with pytest.raises(BatchInputError, match="'distance'") as failed:
        score_interval(source, model=scoring_model, interval_start="2098-12-31",
                       interval_end="2099-01-01", config=batch_config,
                       dag_id="ml_batch_scoring", run_id="bad", id_column="flight_id")
    assert "far" not in str(failed.value) and "miles" not in str(failed.value)
    assert not storage.exists(partition)
    assert leftovers(batch_config, "batch_flights") == []


def test_rejected_rows_are_written_with_their_reasons(batch_source, scoring_model, batch_config,
                                                      tmp_path):
    frame = batch_source.copy()
    frame.loc[[0, 1], "dep_delay"] = np.nan  # a required input: null
    frame.loc[2, "distance"] = 0  # the suite: distance > 0 (critical)
    frame.loc[3, "origin"] = "XXX"  # the suite: origin in {EWR, JFK, LGA} (critical)
    frame.loc[4, ["distance", "origin"]] = [-5, "YYY"]  # two reasons
    frame.loc[5, "hour"] = 23  # only a warning says 5..6: not a reject
    source = write_source(frame, tmp_path, "some_bad.parquet")
    result = score(source, scoring_model, batch_config, chunk_rows=1000)

    assert result.rows_read == len(frame)
    assert result.rows_rejected == 5 and result.rows_scored == len(frame) - 5
    rejects = pd.read_parquet(storage.local_path(result.rejects_uri)).set_index("row_id")
    reasons = rejects["reason"].to_dict()
    assert set(reasons) == {"F00000", "F00001", "F00002", "F00003", "F00004"}
    assert reasons["F00000"].startswith("dep_delay: null")
    assert reasons["F00002"] == "distance: outside the suite's range (0, inf]"
    assert reasons["F00003"] == "origin: not one of the suite's values"
    assert "distance" in reasons["F00004"] and "origin" in reasons["F00004"]
    assert rejects.loc["F00003", "origin"] == "XXX"  # the row as it came, to look at
    assert result.reject_reasons["dep_delay: null (the model was trained without nulls here)"] == 2
    scored = read_partition(result.scores_uri)
    assert "F00005" in set(scored["row_id"]) and not set(reasons) & set(scored["row_id"])


def test_too_many_rejects_fail_and_publish_nothing(batch_source, scoring_model, batch_config,
                                                   tmp_path):
    frame = batch_source.copy()
    frame.loc[: len(frame) // 5, "origin"] = "XXX"  # a fifth of the rows
    source = write_source(frame, tmp_path, "many_bad.parquet")
    partition = layout.scores_partition(batch_config, "batch_flights", "2099-02-02")
    with pytest.raises(TooManyRejects, match="more than max_reject_share 5.00%") as failed:
        score_interval(source, model=scoring_model, interval_start="2099-02-01",
                       interval_end="2099-02-02", config=batch_config,
                       dag_id="ml_batch_scoring", run_id="many", max_reject_share=0.05)
    assert not storage.exists(partition)
    kept = failed.value.result
    assert kept["status"] == "rejected" and kept["rows_rejected"] == len(frame) // 5 + 1
    assert len(pd.read_parquet(storage.local_path(kept["rejects_uri"]))) == kept["rows_rejected"]
    assert "/quarantine/" in kept["rejects_uri"]


def test_a_rerun_replaces_the_interval_exactly(batch_source, scoring_model, batch_config,
                                               tmp_path):
    source = write_source(batch_source, tmp_path, "rerun.parquet")
    first = score(source, scoring_model, batch_config, run_id="first", chunk_rows=500)
    before = read_partition(first.scores_uri)
    again = score(source, scoring_model, batch_config, run_id="second", chunk_rows=500)
    after = read_partition(again.scores_uri)

    assert again.parts == first.parts and len(after) == len(before) == len(batch_source)
    pd.testing.assert_frame_equal(before.drop(columns="run_id"), after.drop(columns="run_id"))
    assert set(after["run_id"]) == {"second"}
    assert again.prediction_log_files == first.prediction_log_files
    year = logged_rows(batch_config)
    assert len(year) == len(batch_source) and year["row_id"].is_unique
    assert set(year["request_id"]) == {"second"}

    # a re-run on fewer rows (a corrected source) leaves none of the old rows behind
    smaller = write_source(batch_source.head(300), tmp_path, "smaller.parquet")
    third = score(smaller, scoring_model, batch_config, run_id="third")
    assert len(read_partition(third.scores_uri)) == 300 and len(third.parts) == 1
    year = logged_rows(batch_config)
    assert sorted(year["row_id"]) == sorted(batch_source.head(300)["flight_id"])


KILLED_SCORER = r"""
import sys
from pipeline_tasks.core.config import load_config
from pipeline_tasks.scoring.batch import ScoringModel, score_interval
import json
config = load_config(home=sys.argv[1], batch_part_rows=1000)
model = ScoringModel(**json.loads(sys.argv[3]))
score_interval(sys.argv[2], model=model, interval_start="2013-03-01", interval_end="2013-03-02",
               config=config, dag_id="ml_batch_scoring", run_id="killed", chunk_rows=1000,
               id_column="flight_id")
"""


def test_a_killed_scoring_leaves_nothing_visible(batch_source, scoring_model, batch_config,
                                                 tmp_path):
    import json

    published = score(write_source(batch_source, tmp_path, "before.parquet"), scoring_model,
                      batch_config, run_id="before")
    big = pd.concat([batch_source] * 60, ignore_index=True)
    big["flight_id"] = [f"B{i:07d}" for i in range(len(big))]
    source = write_source(big, tmp_path, "big.parquet")
    proc = subprocess.Popen([sys.executable, "-c", KILLED_SCORER, batch_config.home, source,
                             json.dumps(scoring_model.to_dict())])
    staging = storage.local_path(layout.scores_staging(batch_config, "batch_flights", KEY))
    deadline = time.monotonic() + 300
    while not list(staging.glob("attempt-*/partition/part-00002.parquet")):
        assert proc.poll() is None, "the scorer ended before it could be killed"
        assert time.monotonic() < deadline, "the scorer wrote no part within 300 s"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)

    # what readers see is still the earlier run's partition and log, whole
    scores = read_partition(published.scores_uri)
    assert set(scores["run_id"]) == {"before"} and len(scores) == len(batch_source)
    assert storage.read_json(published.summary_uri)["run_id"] == "before"
    year = logged_rows(batch_config)
    assert set(year["request_id"]) == {"before"} and len(year) == len(batch_source)
    assert leftovers(batch_config, "batch_flights")  # the dead attempt's files, out of sight

    # the retry removes them and publishes its own result
    retried = score(source, scoring_model, batch_config, run_id="retried")
    assert retried.rows_scored == len(big)
    assert leftovers(batch_config, "batch_flights") == []
    assert len(read_partition(retried.scores_uri)) == len(big)


def test_the_lineage_pages_list_batch_runs_and_escape_their_rows(batch_source, scoring_model,
                                                                 batch_config, tmp_path):
    """The model's page lists its batch runs; a run's page shows its rejects, every value from
    the data escaped."""
    from pipeline_tasks.lineage import pages, queries

    frame = batch_source.copy()
    frame.loc[7, "origin"] = "<script>alert(1)</script>"  # rejected: not one of the suite's values
    result = score_interval(write_source(frame, tmp_path, "lineage.parquet"),
                            model=scoring_model, interval_start="2013-04-01",
                            interval_end="2013-04-02", config=batch_config,
                            dag_id="ml_batch_scoring", run_id="lineage_run",
                            id_column="flight_id")
    runs = {r.interval_key: r for r in queries.batch_runs("batch_flights", batch_config)}
    assert runs["2013-04-02"].rows_rejected == 1 and runs["2013-04-02"].run_id == "lineage_run"
    overview = queries.model_overview("batch_flights", batch_config)
    model_page = pages.render_model(overview, batch_config, "http://ui")
    assert 'href="http://ui/mlops/models/batch_flights/batch/2013-04-02"' in model_page

    page = queries.batch_run("batch_flights", "2013-04-02", batch_config)
    assert page.run.rows_scored == result.rows_scored and page.rejects[0]["row_id"] == "F00007"
    assert sum(part["rows"] for part in page.parts) == result.rows_scored
    html = pages.render_batch(page, batch_config, "http://ui")
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'id="reject-rows"' in html and "origin: not one of the suite&#39;s values" in html
    with pytest.raises(queries.LineageNotFound):
        queries.batch_run("batch_flights", "2099-09-09", batch_config)
