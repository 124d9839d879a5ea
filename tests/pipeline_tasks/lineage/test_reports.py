"""Which stored reports the UI serves, and the refusal of every other path."""

from __future__ import annotations

import os

import pytest

from pipeline_tasks.core import storage
from pipeline_tasks.core.config import load_config
from pipeline_tasks.lineage.reports import (
    ReportNotFound,
    ReportPathRefused,
    read_report,
    report_location,
    report_url,
    resolve_report,
)


@pytest.fixture
def config(tmp_path):
    config = load_config(home=str(tmp_path / "home"))
    docs = storage.join(config.reports_uri, "data_docs", "dag", "run_id=r1", "ds", "page.html")
    storage.atomic_write_bytes(docs, b"<html>docs</html>")
    storage.atomic_write_json(storage.join(config.lake_uri, "snapshots", "abc", "manifest.json"),
                              {"version_id": "abc"})
    storage.atomic_write_bytes(storage.join(config.lake_uri, "snapshots", "abc", "data.parquet"),
                               b"PAR1")
    (tmp_path / "home" / "secret.html").write_text("secret")
    return config


def test_a_report_resolves_and_reads(config):
    report = resolve_report("data-docs", "dag/run_id=r1/ds/page.html", config)
    assert report.media_type == "text/html"
    assert read_report(report) == b"<html>docs</html>"
    manifest = resolve_report("snapshots", "abc/manifest.json", config)
    assert manifest.media_type == "application/json"


@pytest.mark.parametrize("path", [
    "../secret.html", "../../home/secret.html", "dag/../../../secret.html", "/etc/passwd",
    "dag//ds/page.html", "./dag/run_id=r1/ds/page.html", ".hidden.html", "dag\\..\\x.html",
    "file:///etc/passwd.html", "abc/data.parquet", "abc", "x.html\x00.json",
])
def test_anything_outside_the_report_roots_is_refused(config, path):
    kind = "snapshots" if path.startswith("abc") else "data-docs"
    with pytest.raises(ReportPathRefused, match="refused path"):
        resolve_report(kind, path, config)


def test_a_symlink_out_of_the_root_is_refused(config, tmp_path):
    link = storage.local_path(storage.join(config.reports_uri, "data_docs", "escape.html"))
    os.symlink(tmp_path / "home" / "secret.html", link)
    with pytest.raises(ReportPathRefused, match="leads outside the data-docs folder"):
        resolve_report("data-docs", "escape.html", config)


def test_unknown_kinds_and_missing_files_are_not_found(config):
    with pytest.raises(ReportNotFound, match="unknown report kind 'lake'"):
        resolve_report("lake", "x.json", config)
    with pytest.raises(ReportNotFound, match="no data-docs report at nope.html"):
        resolve_report("data-docs", "nope.html", config)


def test_report_urls_map_stored_uris_back_and_forth(config):
    uri = storage.join(config.reports_uri, "data_docs", "dag", "run_id=r1", "ds", "page.html")
    assert report_location(uri, config) == ("data-docs", "dag/run_id=r1/ds/page.html")
    url = report_url(uri, config, "http://airflow:8080/")
    assert url == "http://airflow:8080/mlops/reports/data-docs/dag/run_id=r1/ds/page.html"
    plain_path = str(storage.local_path(uri))  # a plain local path works the same
    assert report_url(plain_path, config) == "/mlops/reports/data-docs/dag/run_id=r1/ds/page.html"
    # outside the roots, or a type never served: no URL rather than a broken one
    assert report_url(storage.join(config.lake_uri, "raw", "part.parquet"), config) is None
    assert report_url(storage.join(config.lake_uri, "snapshots", "abc", "data.parquet"),
                      config) is None
    assert report_url("s3://elsewhere/x.html", config) is None
    assert report_url("", config) is None
