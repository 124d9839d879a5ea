"""HTML pages of the lineage data (``pipeline_tasks.lineage.queries``): the model list, a model's
overview with its drift chart, and a version's lineage chain. Plain Jinja2, no Airflow; the UI
plugin only calls these and returns the text. Every value a template prints goes through
``_finalize``: a URL in it (a source, an error message, a link) loses its user and password.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from urllib.parse import quote

from pipeline_tasks.core.config import PipelineConfig
from pipeline_tasks.core.http import strip_userinfo, strip_userinfo_in_text
from pipeline_tasks.lineage.links import mlflow_model_version_url, mlflow_run_url, mlflow_ui_url
from pipeline_tasks.lineage.queries import BatchRunPage, DriftCheck, ModelOverview, VersionLineage
from pipeline_tasks.lineage.reports import page_url, report_url

TEMPLATES = Path(__file__).parent / "templates"


@cache
def template_env():
    """The Jinja2 environment of every generated page and the model card (autoescape, and
    credentials stripped from every printed value)."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    return Environment(loader=FileSystemLoader(str(TEMPLATES)),
                       autoescape=select_autoescape(["html"]), trim_blocks=True,
                       lstrip_blocks=True, finalize=_finalize)


def _finalize(value):
    """What a template prints: URLs in text lose their userinfo (credentials never reach a
    page, whatever field carried them)."""
    from markupsafe import Markup

    if isinstance(value, Markup):
        return Markup(strip_userinfo_in_text(str(value)))
    if isinstance(value, str):
        return strip_userinfo_in_text(value)
    return value


def fmt(value) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _render(template: str, base_url: str, config: PipelineConfig, **values) -> str:
    base_url = strip_userinfo(base_url)
    return template_env().get_template(template).render(
        home=page_url(base_url, ""), fmt=fmt,
        report_url=lambda uri: report_url(uri, config, base_url), **values)


def render_index(models: list[dict], config: PipelineConfig, base_url: str = "") -> str:
    """``models``: dicts with name, champion, challenger, latest (version numbers or None)."""
    rows = []
    for model in models:
        row = dict(model, url=page_url(base_url, "models", model["name"]))
        for role in ("champion", "challenger"):
            if model.get(role):
                row[f"{role}_url"] = page_url(base_url, "models", model["name"], "versions",
                                              model[role])
        rows.append(row)
    return _render("index.html", base_url, config, models=rows)


def render_model(overview: ModelOverview, config: PipelineConfig, base_url: str = "") -> str:
    name = overview.model_name
    return _render(
        "model.html", base_url, config, o=overview,
        version_url=lambda v: page_url(base_url, "models", name, "versions", v),
        batch_url=lambda key: page_url(base_url, "models", name, "batch", key),
        mlflow_model_url=f"{mlflow_ui_url(config)}/#/models/{quote(name)}",
        drift_chart=drift_chart_svg(overview.drift_checks),
    )


def render_version(lineage: VersionLineage, config: PipelineConfig, base_url: str = "") -> str:
    s = lineage.summary
    t = lineage.training
    airflow_run_url = None
    if lineage.airflow_dag_id and lineage.airflow_run_id:
        airflow_run_url = (f"{base_url.rstrip('/')}/dags/{quote(lineage.airflow_dag_id)}/runs/"
                           f"{quote(lineage.airflow_run_id, safe='')}")
    return _render(
        "version.html", base_url, config, l=lineage, s=s,
        model_url=page_url(base_url, "models", s.model_name),
        version_url=lambda v: page_url(base_url, "models", s.model_name, "versions", v),
        plot_url=lambda p: page_url(base_url, "models", s.model_name, "versions", s.version,
                                    "plots", p),
        airflow_run_url=airflow_run_url,
        mlflow_run_url=(mlflow_run_url(config, t["experiment_id"], t["run_id"])
                        if t.get("experiment_id") else None),
        mlflow_version_url=mlflow_model_version_url(config, s.model_name, s.version),
        card_url=page_url(base_url, "models", s.model_name, "versions", s.version, "card"),
    )


def render_batch(page: BatchRunPage, config: PipelineConfig, base_url: str = "") -> str:
    """One batch run's page: its summary, part files, first scores and rejected rows (every
    value from the data escaped by the template)."""
    r = page.run
    return _render(
        "batch.html", base_url, config, p=page, r=r,
        model_url=page_url(base_url, "models", r.model_name),
        version_url=page_url(base_url, "models", r.model_name, "versions", r.model_version),
        summary_url=report_url(r.summary_uri, config, base_url),
    )


def render_error(status: str, message: str, config: PipelineConfig, base_url: str = "") -> str:
    return _render("error.html", base_url, config, status=status, message=message)


def drift_chart_svg(checks: list[DriftCheck], width: int = 760, height: int = 220) -> str:
    """The drifted share of columns per checked interval as an inline SVG line chart, with the
    threshold as a dashed line and drifted intervals in red. Empty string without checks."""
    from markupsafe import Markup, escape

    points = [c for c in checks if c.drifted_share is not None]
    if not points:
        return ""
    left, right, top, bottom = 48, 16, 14, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    top_value = max([1e-9] + [c.drifted_share for c in points]
                    + [c.share_threshold or 0 for c in points])
    top_value = min(1.0, top_value * 1.15) if top_value < 0.87 else 1.0

    def x(i: int) -> float:
        return left + (plot_w * i / (len(points) - 1) if len(points) > 1 else plot_w / 2)

    def y(value: float) -> float:
        return top + plot_h * (1 - value / top_value)

    parts = [(f'<svg id="drift-chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{height}" role="img" aria-label="drifted share of columns per interval" '
             'style="background:#fff;border:1px solid #d9e2ec;border-radius:6px">')]
    for frac in (0, 0.5, 1):
        value = top_value * frac
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(value):.1f}" '
                     f'y2="{y(value):.1f}" stroke="#e4e7eb"/><text x="{left - 6}" '
                     f'y="{y(value) + 4:.1f}" font-size="11" text-anchor="end" '
                     f'fill="#616e7c">{value:.2f}</text>')
    thresholds = [c.share_threshold for c in points if c.share_threshold is not None]
    if thresholds:
        ty = y(thresholds[-1])
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{ty:.1f}" y2="{ty:.1f}" '
                     'stroke="#e03131" stroke-dasharray="5,4"/><text x="{0}" y="{1:.1f}" '
                     'font-size="11" text-anchor="end" fill="#e03131">threshold</text>'
                     .format(width - right, ty - 4))
    path = " ".join(f"{x(i):.1f},{y(c.drifted_share):.1f}" for i, c in enumerate(points))
    parts.append(f'<polyline fill="none" stroke="#017cee" stroke-width="2" points="{path}"/>')
    step = max(1, len(points) // 8)
    for i, c in enumerate(points):
        color = "#e03131" if c.drift_detected else "#2f9e44"
        label = escape(f"{c.interval_end[:10]} v{c.model_version}: {c.status}, "
                       f"share {c.drifted_share:.3f}")
        parts.append(f'<circle class="drift-point" cx="{x(i):.1f}" cy="{y(c.drifted_share):.1f}"'
                     f' r="4" fill="{color}"><title>{label}</title></circle>')
        if i % step == 0 or i == len(points) - 1:
            parts.append(f'<text x="{x(i):.1f}" y="{height - 12}" font-size="11" '
                         f'text-anchor="middle" fill="#616e7c">{escape(c.interval_end[:10])}'
                         '</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
