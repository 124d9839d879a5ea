"""Which stored reports the Airflow UI may serve, and the one place that maps their URIs to URLs.

The UI plugin serves files from a few fixed roots only (Data Docs, validation results, snapshot
manifests, drift reports, batch-scoring summaries), never an arbitrary path: ``resolve_report`` refuses ``..``, absolute
paths, hidden files, unexpected file types and symlinks that leave the root. ``report_url`` is the
inverse, used by the task links, the lineage page and the failure summaries.

``security_headers`` says how the browser must treat each response of the UI app. Reports are
built from untrusted data (a value sent to the model server reaches the Evidently report, a
column name reaches the Data Docs), and neither library escapes everything it embeds; so every
stored report, plot and JSON answer is served sandboxed (``Content-Security-Policy: sandbox
allow-scripts``): the browser gives it a unique opaque origin, its scripts still draw the charts,
but they cannot read the Airflow UI's cookies or storage nor call its API with the user's session.
``X-Content-Type-Options: nosniff`` keeps the browser from reading a JSON or image as HTML.
"""

from __future__ import annotations

import mimetypes
import os
import posixpath
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from pipeline_tasks.core import layout, storage
from pipeline_tasks.core.config import PipelineConfig
from pipeline_tasks.core.errors import PipelineError

#: Where the Airflow plugin mounts its FastAPI app (``url_prefix``).
UI_PREFIX = "/mlops"
#: File types a report may consist of (HTML pages and what they load, JSON results).
ALLOWED_SUFFIXES = frozenset({".html", ".json", ".css", ".js", ".png", ".jpg", ".svg", ".gif",
                              ".ico", ".woff", ".woff2", ".ttf", ".map"})

#: Every response with stored or data-derived content (reports, plots, JSON): an opaque origin.
SANDBOXED_HEADERS = {
    "Content-Security-Policy": "sandbox allow-scripts",
    "X-Content-Type-Options": "nosniff",
}
#: The plugin's own pages (escaped templates, no script at all): no script may run in them
#: either, and only the Airflow UI itself may frame them.
PAGE_HEADERS = {
    "Content-Security-Policy": "script-src 'none'; object-src 'none'; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'self'",
    "X-Content-Type-Options": "nosniff",
}
#: The routes of the plugin's own pages (relative to ``UI_PREFIX``); everything else is sandboxed.
_PAGE_ROUTE = re.compile(r"/|/models/[^/]+(/versions/[^/]+|/batch/[^/]+|/champion)?/?")


class ReportPathRefused(PipelineError):
    """The requested path is outside what the UI serves (traversal, hidden file, file type)."""


class ReportNotFound(PipelineError):
    """No such report (yet)."""


@dataclass(frozen=True)
class Report:
    """A report file the UI may serve."""

    kind: str
    path: str  # relative to the kind's root, '/'-separated
    uri: str
    media_type: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "uri": self.uri,
                "media_type": self.media_type}


def check_relative_path(path: str) -> str:
    """``path`` if it is a plain relative path of visible segments with an allowed suffix."""
    if not path or "\\" in path or "\x00" in path or path.startswith("/") or "://" in path:
        raise ReportPathRefused(f"refused path {path!r}: not a plain relative path")
    for part in path.split("/"):
        if part in ("", ".", "..") or part.startswith("."):
            raise ReportPathRefused(f"refused path {path!r}: segment {part!r} is not allowed")
    suffix = posixpath.splitext(path)[1].lower()
    if suffix not in ALLOWED_SUFFIXES:
        raise ReportPathRefused(f"refused path {path!r}: {suffix or 'no suffix'} files are not "
                                "served")
    return path


def resolve_report(kind: str, path: str, config: PipelineConfig) -> Report:
    """The report ``path`` under the root of ``kind``, or ``ReportPathRefused``/``ReportNotFound``."""
    roots = layout.report_roots(config)
    if kind not in roots:
        raise ReportNotFound(f"unknown report kind {kind!r}; known: {', '.join(sorted(roots))}")
    check_relative_path(path)
    root = roots[kind]
    uri = storage.join(root, path)
    if storage.is_local(uri):
        # A symlink inside the root must not lead out of it.
        real_root = os.path.realpath(storage.local_path(root))
        real = os.path.realpath(storage.local_path(uri))
        if os.path.commonpath([real_root, real]) != real_root:
            raise ReportPathRefused(f"refused path {path!r}: it leads outside the {kind} folder")
    if not storage.exists(uri):
        raise ReportNotFound(f"no {kind} report at {path}")
    media_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    return Report(kind=kind, path=path, uri=uri, media_type=media_type)


def read_report(report: Report) -> bytes:
    fs, fs_path = storage.url_to_fs(report.uri)
    return fs.cat_file(fs_path)


def _normal(uri: str) -> str:
    """A comparable form of a URI: local paths as absolute paths, others as they are."""
    if storage.is_local(uri):
        return os.path.abspath(str(storage.local_path(uri)))
    return uri.rstrip("/")


def report_location(uri: str | None, config: PipelineConfig) -> tuple[str, str] | None:
    """``(kind, relative path)`` of a stored report URI, or None when the UI does not serve it."""
    if not uri:
        return None
    target = _normal(uri)
    for kind, root in layout.report_roots(config).items():
        base = _normal(root)
        if target.startswith(base + "/"):
            rel = target[len(base) + 1:]
            try:
                check_relative_path(rel)
            except ReportPathRefused:
                return None
            return kind, rel
    return None


def report_url(uri: str | None, config: PipelineConfig, base_url: str = "") -> str | None:
    """The URL under which the UI plugin serves the stored report ``uri`` (None if it does not).

    ``base_url`` is the Airflow UI's base URL (``[api] base_url``); empty gives a root-relative
    URL.
    """
    location = report_location(uri, config)
    if location is None:
        return None
    kind, rel = location
    return f"{base_url.rstrip('/')}{UI_PREFIX}/reports/{kind}/{quote(rel, safe='/=:')}"


def security_headers(route_path: str) -> dict[str, str]:
    """The security headers of the UI app's response at ``route_path`` (relative to ``UI_PREFIX``).

    Only the plugin's own pages (index, model, version, champion and their error pages) get
    ``PAGE_HEADERS``; any other path (reports, plots, the JSON API, unknown paths and their
    errors) gets ``SANDBOXED_HEADERS``, so a new route is sandboxed until it is listed as a page.
    """
    return dict(PAGE_HEADERS if _PAGE_ROUTE.fullmatch(route_path or "/") else SANDBOXED_HEADERS)


def page_url(base_url: str, *parts: str) -> str:
    """A page of the UI plugin, e.g. ``page_url(base, "models", name, "versions", "3")``."""
    return base_url.rstrip("/") + UI_PREFIX + "/" + "/".join(quote(str(p), safe="") for p in parts)
