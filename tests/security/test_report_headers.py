"""Which responses of the ``/mlops`` app are sandboxed (issue 12, point 1).

Everything the app serves from stored or data-derived content (reports, plots, the JSON API,
and their error answers) gets ``Content-Security-Policy: sandbox allow-scripts``; only the
plugin's own pages, rendered from escaped templates, get a policy that allows no script at all.
A path the app does not know is sandboxed too, so a new route is safe until it is listed as a
page. The same headers on the real api-server are checked in
``tests/browser/test_report_sandbox.py``.
"""

from __future__ import annotations

import pytest

from pipeline_tasks.lineage.reports import PAGE_HEADERS, SANDBOXED_HEADERS, security_headers


@pytest.mark.parametrize("path", [
    "/reports/data-docs/run/model/index.html",
    "/reports/monitoring/model/run/report.html",
    "/reports/validation/run/model/validation_result.json",
    "/reports/snapshots/abc/manifest.json",
    "/reports/nothing",
    "/models/m/versions/1/plots/roc_curve.png",
    "/api/models/m",
    "/api/models/m/versions/1",
    "/models/m/versions/1/other",
    "/unknown",
    "/models//versions/1",
])
def test_stored_and_data_routes_are_sandboxed(path):
    headers = security_headers(path)
    assert headers == SANDBOXED_HEADERS
    assert headers["Content-Security-Policy"] == "sandbox allow-scripts"
    assert headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("path", ["/", "", "/models/m", "/models/m/", "/models/m/versions/3",
                                  "/models/m/champion"])
def test_the_plugins_own_pages_allow_no_script(path):
    headers = security_headers(path)
    assert headers == PAGE_HEADERS
    assert "script-src 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"


def test_each_call_gets_its_own_copy():
    security_headers("/api/x")["Content-Security-Policy"] = "changed"
    assert security_headers("/api/x")["Content-Security-Policy"] == "sandbox allow-scripts"
