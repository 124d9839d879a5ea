"""``core.layout`` owns every lake and report path: the paths are the documented ones, names are
made safe, and no other module builds a path from the store roots itself."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline_tasks.core import layout
from pipeline_tasks.core.config import load_config

LIBRARY = Path(layout.__file__).resolve().parents[1]


@pytest.fixture
def config(tmp_path):
    return load_config(home=str(tmp_path))


def test_the_lake_paths_are_the_documented_ones(config):
    lake, reports = config.lake_uri, config.reports_uri
    key = layout.run_partition("ml_training_pipeline", "manual__2013-01-02", "2013-01-02T00:00:00")
    assert key == "ml_training_pipeline/interval_end=2013-01-02/run_id=manual__2013-01-02"
    assert layout.raw_batch(config, key) == f"{lake}/raw/{key}/part.parquet"
    assert layout.quarantine_batch(config, key) == f"{lake}/quarantine/{key}/part.parquet"
    assert layout.snapshot_manifest(config, "ab12") == f"{lake}/snapshots/ab12/manifest.json"
    assert layout.monitoring_run_dir(config, "m", key) == f"{lake}/monitoring/m/{key}"
    assert layout.deployments_dir(config, "m") == f"{lake}/deployments/m"
    assert layout.predictions_root(config) == config.predictions_uri == f"{lake}/predictions"
    assert layout.validation_result(config, key, "m") == \
        f"{reports}/validation/{key}/m/validation_result.json"
    assert layout.data_docs_dir(config, key, "m") == f"{reports}/data_docs/{key}/m"
    assert set(layout.report_roots(config)) == {"data-docs", "validation", "snapshots", "monitoring",
                                                "scores"}
    assert layout.interval_key("2013-03-02T00:00:00+00:00") == "2013-03-02"
    assert layout.interval_key("2013-03-02T06:00:00+00:00") == "2013-03-02T06-00-00"
    assert layout.scores_partition(config, "m", "2013-03-02") == \
        f"{lake}/scores/m/interval_end=2013-03-02"
    assert layout.batch_predictions_file(config, "2013-03-01", "m", "2013-03-02") == \
        f"{lake}/predictions/date=2013-03-01/model=m/part-batch-m-2013-03-02.parquet"


@pytest.mark.parametrize("name", ["../../etc", "a/b", "..", "x..y", "/abs"])
def test_a_name_never_leaves_its_folder(config, name):
    for path, folder, segments in (
            (layout.model_monitoring_dir(config, name), "monitoring", 2),
            (layout.deployments_dir(config, name), "deployments", 2),
            (layout.model_scores_dir(config, name), "scores", 2),
            (layout.holdout_file(config, name), "holdout", 3)):
        parts = path[len(config.lake_uri) + 1:].split("/")
        # the name is one plain segment right under its folder: no '..', no extra level
        assert parts[0] == folder and len(parts) == segments, path
        assert parts[1] not in ("", ".", "..") and ".." not in parts[1], path


def test_no_other_module_joins_a_store_root_itself():
    """A writer and its readers cannot disagree on a folder when only the layout joins paths
    onto ``lake_uri``, ``reports_uri`` or ``suites_uri``."""
    joins = re.compile(r"(join\(|\+|f\"|f')[^\n]*\b(config|self)\.(lake_uri|reports_uri|suites_uri)\b"
                       r"|\b(lake_uri|reports_uri|suites_uri)\b[^\n]*(\+ *\"/|/\w)")
    offenders = []
    for module in sorted(LIBRARY.rglob("*.py")):
        if module.name == "layout.py" or module.name == "config.py":
            continue  # config defines the roots themselves
        for number, line in enumerate(module.read_text().splitlines(), 1):
            if joins.search(line) and not line.lstrip().startswith("#"):
                offenders.append(f"{module.relative_to(LIBRARY)}:{number}: {line.strip()}")
    assert offenders == []
