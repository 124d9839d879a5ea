"""The pure parts of validation (suite refs and paths, run names, failure lines) without a GX run."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline_tasks.core import layout, storage
from pipeline_tasks.core.config import load_config
from pipeline_tasks.core.errors import ConfigError
from pipeline_tasks.core.schema import ModelContract
from pipeline_tasks.data import gx_runner, inference, suites_io, summaries, validate

PROJECT_DIR = Path(__file__).resolve().parents[3]


@pytest.fixture
def config(tmp_path):
    suites = tmp_path / "repo_suites"
    suites.mkdir()
    return load_config(home=str(tmp_path / "home")).with_overrides(repo_suites_dir=str(suites))


def test_the_suite_paths_come_from_the_layout(config):
    assert layout.inferred_suite(config, "m") == storage.join(config.suites_uri, "m.json")
    assert layout.proposed_suite(config, "m", "abc") == storage.join(config.suites_uri, "m",
                                                                     "abc.json")
    assert layout.repo_suite(config, "m.json") == storage.join(config.repo_suites_dir, "m.json")
    # a name can never lead out of its folder
    assert layout.repo_suite(config, "../x.json").startswith(config.repo_suites_dir + "/")
    assert "/../" not in layout.inferred_suite(config, "../../etc")


def test_the_snapshot_and_quarantine_paths_come_from_the_layout(config):
    root = storage.join(config.lake_uri, "snapshots", "v1")
    assert layout.snapshot_dir(config, "v1") == root
    assert layout.snapshot_data(config, "v1") == root + "/data.parquet"
    assert layout.snapshot_manifest(config, "v1") == root + "/manifest.json"
    assert layout.snapshot_lineage_record(config, "v1", "d/r") == root + "/lineage/d__r.json"
    assert layout.quarantine_result(config, "d/r") == storage.join(
        config.lake_uri, "quarantine", "d/r", "validation_result.json")


def test_find_suite_uri_order_and_refs(config):
    assert suites_io.find_suite_uri("m", config, dataset_name="feed_y") is None
    feed = Path(config.repo_suites_dir) / "feed_y.json"
    feed.write_text("{}")
    assert suites_io.find_suite_uri("m", config, dataset_name="feed_y") == str(feed)
    inferred = layout.inferred_suite(config, "m")
    storage.atomic_write_json(inferred, {"expectations": []})
    assert suites_io.find_suite_uri("m", config, dataset_name="feed_y") == inferred
    reviewed = Path(config.repo_suites_dir) / "m.json"
    reviewed.write_text("{}")
    found = suites_io.find_suite_uri("m", config, dataset_name="feed_y")
    assert found == str(reviewed)
    ref = suites_io.suite_ref(found, config)
    assert ref == "repo:m.json" and suites_io.resolve_suite_ref(ref, config) == found
    assert suites_io.suite_ref(inferred, config) == inferred  # a URI stays as it is

    gone = ModelContract(inputs={}, version="3", suite_uri="repo:gone.json")
    with pytest.raises(ConfigError, match="champion v3 of m was validated against the suite"):
        suites_io.find_suite_uri("m", config, gone)


def test_a_proposed_suite_is_named_by_its_content(config):
    first = suites_io.proposed_suite_uri("m", {"a": 1}, config)
    assert first == suites_io.proposed_suite_uri("m", {"a": 1}, config)
    assert first != suites_io.proposed_suite_uri("m", {"a": 2}, config)
    assert first.startswith(storage.join(config.suites_uri, "m") + "/")


def test_run_names_and_times_follow_the_run_key():
    key = "dag/interval_end=2013-03-02/run_id=scheduled__2013-03-01T00:00:00+00:00"
    assert gx_runner.run_name(key) == "scheduled__2013-03-01T00_00_00_00_00"
    assert gx_runner.run_time(key) == dt.datetime(2013, 3, 2, tzinfo=dt.UTC)
    assert gx_runner.run_name("/") == "run"


def test_failure_lines_and_schema_failures():
    entry = {"expectation": "expect_column_to_exist", "column": "x", "observed": "missing"}
    assert summaries.failure_line(entry) == "column 'x': missing"
    assert summaries.failure_line({**entry, "column": None}) == "missing"
    assert summaries.schema_failed([entry])
    assert not summaries.schema_failed([{**entry, "expectation": "expect_column_values_to_be_"
                                                                 "between"}])


def test_numbers_print_plainly():
    assert inference.format_number(3.0) == "3"
    assert inference.format_number(3.14159) == "3.142"
    assert inference.plain_value("a") == "a"


def test_unknown_tolerance_settings_are_a_config_error(config):
    assert inference.config_tolerances(config) == inference.InferenceTolerances()
    bad = config.with_overrides(extra={"validation": {"range_slak": 0.2}})
    with pytest.raises(ConfigError, match="range_slak"):
        inference.config_tolerances(bad)
    not_a_number = config.with_overrides(extra={"validation": {"range_slack": "wide"}})
    with pytest.raises(ConfigError, match="must be numbers"):
        inference.config_tolerances(not_a_number)


def test_a_broken_suite_file_says_what_to_fix(tmp_path):
    path = tmp_path / "s.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="is not valid JSON") as caught:
        suites_io.load_suite(str(path), default_name="s")
    assert "suite file" in caught.value.advice
    with pytest.raises(ConfigError, match="expectation #0 is not an object"):
        suites_io.suite_from_dict({"expectations": [1]}, default_name="s")


def test_the_names_callers_know_stay_on_validate():
    for name in validate.__all__:
        assert hasattr(validate, name), name


def test_importing_the_parts_is_cheap():
    code = (
        "import sys, pipeline_tasks.data.suites_io, pipeline_tasks.data.inference, "
        "pipeline_tasks.data.gx_runner, pipeline_tasks.data.summaries, "
        "pipeline_tasks.data.ingest, pipeline_tasks.data.versioning; "
        "heavy = {'great_expectations', 'pandas', 'airflow'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PROJECT_DIR)
