"""The model card: both formats carry every section in order, values from data are escaped
(HTML, the slice chart's SVG, Markdown as a real Markdown renderer reads it), the HTML is one
self-contained file, and the card survives a round trip through its dict."""

from __future__ import annotations

import copy
import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest

from pipeline_tasks.lineage.model_card import (
    ModelCard,
    md_escape,
    render_html,
    render_markdown,
    slice_chart_svg,
)

SCRIPT = "<script>alert(1)</script>"
TD_IMG = "</td><img src=x onerror=alert(1)>"
PIPE = "a|b"
MD_LINK = "[x](javascript:alert(1))"
HOSTILE = [SCRIPT, TD_IMG, PIPE, MD_LINK]

HTML_SECTIONS = ["card-title", "purpose", "training", "metrics", "slices", "fairness",
                 "decision", "limits", "lineage"]
MD_SECTIONS = ["# Model card: ", "## Purpose and target", "## Training data",
               "## Metrics overall", "## Per slice", "## Fairness", "## Gate decision",
               "## Known limits", "## Lineage"]


def realistic() -> dict:
    """A classifier's card: four slices (one regressed, one too small to gate), fairness on the
    carrier, a decision forced past a failed gate."""
    return {
        "model_name": "flight_delay", "version": "7", "created_at": "2024-05-02T03:14:00+00:00",
        "purpose": "Predicts whether a flight departs more than 15 minutes late.",
        "target": "is_late", "task_type": "classification", "primary_metric": "roc_auc",
        "greater_is_better": True,
        "training": {
            "snapshot": "9f2c4e1b7a0d3c5e8f6a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6",
            "interval_start": "2024-05-01T00:00:00+00:00",
            "interval_end": "2024-05-02T00:00:00+00:00",
            "window_start": "2024-04-02T00:00:00+00:00", "rows": 48210,
            "source": "/landing/flights.csv", "airflow_dag_id": "ml_training_pipeline",
            "airflow_run_id": "scheduled__2024-05-01T00:00:00+00:00",
            "columns": [{"name": "carrier", "type": "string"}, {"name": "origin", "type": "string"},
                        {"name": "distance", "type": "float64"},
                        {"name": "is_late", "type": "bool"}]},
        "metrics": {"candidate": {"roc_auc": 0.81234567, "accuracy": 0.7712},
                    "champion": {"roc_auc": 0.8011, "accuracy": 0.769},
                    "baseline": {"roc_auc": 0.5, "accuracy": 0.6801}},
        "slices": [
            {"column": "carrier", "value": "AA", "rows": 9120, "gated": True, "candidate": 0.824,
             "champion": 0.811, "baseline": 0.5, "candidate_ci": [0.815, 0.833],
             "difference_ci": [0.006, 0.02], "regressed": False},
            {"column": "carrier", "value": "DL", "rows": 7304, "gated": True, "candidate": 0.779,
             "champion": 0.803, "baseline": 0.5, "candidate_ci": [0.768, 0.79],
             "difference_ci": [-0.035, -0.013], "regressed": True},
            {"column": "carrier", "value": "HA", "rows": 12, "gated": False, "candidate": 0.69,
             "champion": 0.74, "baseline": 0.5, "candidate_ci": [0.41, 0.93],
             "difference_ci": [-0.3, 0.2], "regressed": False,
             "note": "12 rows, fewer than min_slice_rows 100: reported, not gated"},
            {"column": "origin", "value": "JFK", "rows": 3050, "gated": True, "candidate": 0.801,
             "champion": None, "baseline": 0.5, "candidate_ci": [0.786, 0.815],
             "difference_ci": None, "regressed": False},
        ],
        "fairness": [{
            "column": "carrier", "task_type": "classification", "metric": "selection_rate",
            "groups": [
                {"group": "AA", "rows": 9120, "selection_rate": 0.21, "accuracy": 0.78},
                {"group": "DL", "rows": 7304, "selection_rate": 0.25, "accuracy": 0.75},
                {"group": "HA", "rows": 12, "selection_rate": 0.5, "accuracy": 0.58}],
            "demographic_parity_difference": 0.04, "equalized_odds_difference": 0.031,
            "worst_group_gap": None, "gap": 0.04, "small_groups": ["HA"]}],
        "decision": {"blessed": True, "reason": "slice carrier=DL regressed by more than 0.01",
                     "forced": True, "force_reason": "accepted by the on-call lead (OPS-412)",
                     "gate_passed": False, "champion_version": "6",
                     "max_slice_regression": 0.01, "min_slice_rows": 100,
                     "max_fairness_gap": 0.1},
        "limits": ["carrier=HA: 12 rows, too few to judge (min_slice_rows 100)"],
        "lineage": [
            {"step": "source", "value": "/landing/flights.csv", "url": None},
            {"step": "validation", "value": "passed", "url": "http://ui.example/data_docs"},
            {"step": "snapshot", "value": "9f2c4e1b7a0d", "url": None},
            {"step": "training run", "value": "run 3f1a9c",
             "url": "https://mlflow.example/#/experiments/1/runs/3f1a9c"},
            {"step": "evaluation", "value": "blessed (forced)", "url": None},
            {"step": "model version", "value": "flight_delay v7",
             "url": "https://mlflow.example/#/models/flight_delay/versions/7"}],
    }


def hostile() -> dict:
    """The realistic card with attacks in every kind of field that comes from data."""
    data = realistic()
    data["model_name"] = SCRIPT
    data["purpose"] = "\n".join(HOSTILE)
    data["target"] = TD_IMG
    data["training"]["source"] = MD_LINK
    data["training"]["columns"].append({"name": TD_IMG, "type": PIPE})
    data["metrics"]["candidate"][SCRIPT] = 1.0
    data["slices"][0]["value"] = SCRIPT
    data["slices"][1]["value"] = TD_IMG
    data["slices"][2]["value"] = PIPE
    data["slices"][3]["column"] = MD_LINK
    data["slices"][2]["note"] = "note " + TD_IMG
    data["fairness"][0]["column"] = SCRIPT
    data["fairness"][0]["groups"][0]["group"] = TD_IMG
    data["fairness"][0]["groups"][1]["group"] = PIPE
    data["fairness"][0]["small_groups"] = [MD_LINK]
    data["decision"]["reason"] = f"{PIPE} {SCRIPT}\n# not a heading"
    data["decision"]["force_reason"] = MD_LINK
    data["limits"] = HOSTILE + ["# heading", "- list", "1. list", "> quote", "`code`"]
    data["lineage"] = [
        {"step": "source", "value": SCRIPT, "url": "javascript:alert(1)"},
        {"step": "validation", "value": MD_LINK, "url": " https://evil.example/"},
        {"step": "snapshot", "value": PIPE, "url": "JaVaScRiPt:alert(1)"},
        {"step": "training run", "value": TD_IMG, "url": "data:text/html,<script>x</script>"},
        {"step": "evaluation", "value": "ok", "url": 'https://x.example/"onmouseover="a'},
        {"step": "model version", "value": "v7", "url": "https://x.example/a(b)c"},
    ]
    return data


class Structure(HTMLParser):
    """Tags, attributes, text and nesting errors of an HTML document."""

    VOID = frozenset({"meta", "br", "hr", "img", "input", "link", "area", "base", "col",
                      "source", "wbr", "path", "rect", "line", "circle", "polyline", "stop"})

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.text: list[str] = []
        self.feed(html)
        self.close()
        if self.stack:
            self.errors.append(f"unclosed: {self.stack}")

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)

    def names(self) -> set[str]:
        return {tag for tag, _ in self.tags}

    def links(self) -> list[str]:
        return [attrs.get("href") for tag, attrs in self.tags if tag == "a"]

    def handlers(self) -> list[str]:
        return [name for _, attrs in self.tags for name in attrs if name.startswith("on")]


def md_to_html(markdown: str) -> str:
    """Markdown as a CommonMark renderer with GitHub's tables turns it into HTML (raw HTML
    allowed, as on GitHub before its sanitiser)."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").enable("table").render(markdown)


def table_rows(html: str) -> list[list[int]]:
    """Per table: the number of cells of each row."""
    tables = []
    for table in re.findall(r"<table>(.*?)</table>", html, re.DOTALL):
        tables.append([len(re.findall(r"<t[hd][ >]", row))
                       for row in re.findall(r"<tr>(.*?)</tr>", table, re.DOTALL)])
    return tables


# --- the realistic card -----------------------------------------------------------------------


def test_the_html_card_has_every_section_in_order():
    card = ModelCard.from_dict(realistic())
    html = render_html(card)
    positions = [html.index(f'id="{section}"') for section in HTML_SECTIONS]
    assert positions == sorted(positions)
    page = Structure(html)
    assert page.errors == []
    text = " ".join(" ".join(page.text).split())
    assert "Model card: flight_delay v7" in text
    assert "generated by the pipeline; do not edit" in text
    assert "2024-05-02T03:14:00+00:00" in text
    # training data and its schema
    for value in ("9f2c4e1b7a0d3c5e8f6a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6", "48210",
                  "/landing/flights.csv", "2024-05-01T00:00:00+00:00 → 2024-05-02T00:00:00+00:00",
                  "Schema (4 columns)"):
        assert value in text
    assert re.search(r"<td><code>is_late</code></td><td>bool</td>", html)
    # metrics overall: 4 significant digits, the primary metric first
    assert re.search(r"roc_auc <span class=\"badge\">primary</span></th><td class=\"num\">"
                     r"0.8123</td><td class=\"num\">0.8011</td><td class=\"num\">0.5</td>", html)
    assert html.index(">roc_auc ") < html.index(">accuracy<")
    # per slice: the chart and one table row per slice, the regressed and the ungated marked
    assert html.count('class="slice-bar') == 4 and html.count('<tr class="slice-row') == 4
    assert html.count('<tr class="slice-row regressed">') == 1
    assert html.count('<tr class="slice-row not-gated">') == 1
    assert "-0.024 [-0.035, -0.013]" in html
    assert "carrier=HA" in text and "12 rows, fewer than min_slice_rows 100" in text
    assert "0.801 [0.786, 0.815]" in html and "— —" in text  # JFK: no champion, no difference
    # fairness
    assert "Sensitive column carrier" in text
    assert "0.04 vs 0.1: within the limit" in text
    assert re.search(r"<td>HA</td><td class=\"num\">12</td><td class=\"num\">0.5</td>", html)
    # the decision, verbatim, forced with its reason
    assert "slice carrier=DL regressed by more than 0.01" in text
    assert "forced because accepted by the on-call lead (OPS-412)" in text
    assert "gate passed no" in text and "compared with champion v6" in text
    assert "carrier=HA: 12 rows, too few to judge (min_slice_rows 100)" in text
    # lineage: http(s) URLs as links, in order
    assert page.links() == ["http://ui.example/data_docs",
                            "https://mlflow.example/#/experiments/1/runs/3f1a9c",
                            "https://mlflow.example/#/models/flight_delay/versions/7"]
    steps = [html.index(f"<b>{step}</b>") for step in
             ("source", "validation", "snapshot", "training run", "evaluation", "model version")]
    assert steps == sorted(steps)


def test_the_html_card_is_one_self_contained_file_without_script():
    html = render_html(ModelCard.from_dict(realistic()))
    page = Structure(html)
    assert not page.names() & {"script", "img", "iframe", "object", "embed", "link", "base",
                               "form", "video", "audio", "image", "use", "foreignobject"}
    assert page.handlers() == []
    assert not any("src" in attrs for _, attrs in page.tags)
    assert not any("href" in attrs for tag, attrs in page.tags if tag != "a")
    assert "url(" not in html and "@import" not in html.lower()
    assert page.names() >= {"style", "svg", "table"}


def test_the_markdown_card_has_every_section_in_order_and_renders_as_tables():
    markdown = render_markdown(ModelCard.from_dict(realistic()))
    positions = [markdown.index(f"\n{section}") for section in MD_SECTIONS]
    assert positions == sorted(positions)
    assert "generated by the pipeline; do not edit" in markdown
    assert r"# Model card: flight\_delay v7" in markdown
    assert "| roc\\_auc (primary) | 0.8123 | 0.8011 | 0.5 |" in markdown
    assert "| carrier=DL | 7304 | 0.779 [0.768, 0.79] | 0.803 | -0.024 [-0.035, -0.013] | yes" \
           " | **yes** |" in markdown
    assert "| carrier=HA | 12 |" in markdown and "| no: 12 rows, fewer than" in markdown
    assert "| origin=JFK | 3050 | 0.801 [0.786, 0.815] | — | — — | yes | no |" in markdown
    assert "| HA | 12 | 0.5 | 0.58 |" in markdown
    assert "**blessed** (forced)" in markdown
    assert "| forced because | accepted by the on-call lead \\(OPS-412\\) |" in markdown
    assert "| compared with champion | v6 |" in markdown
    assert "1. **source**: /landing/flights.csv" in markdown
    assert "4. **training run**: [run 3f1a9c](https://mlflow.example/#/experiments/1/runs/3f1a9c)" \
        in markdown
    html = md_to_html(markdown)
    page = Structure(html)
    assert page.errors == []
    # 5 tables of 2 columns, the schema, metrics, slices (7 columns), fairness groups (4)
    assert [set(rows) for rows in table_rows(html)] == [
        {2}, {2}, {2}, {4}, {7}, {2}, {4}, {2}]
    assert [len(rows) for rows in table_rows(html)][4] == 5  # header and 4 slices
    assert page.links() == ["http://ui.example/data_docs",
                            "https://mlflow.example/#/experiments/1/runs/3f1a9c",
                            "https://mlflow.example/#/models/flight_delay/versions/7"]


def test_a_card_without_slices_or_fairness_says_so_in_both_formats():
    card = ModelCard.from_dict({"model_name": "m", "version": "1"})
    html, markdown = render_html(card), render_markdown(card)
    for words in ("No slices configured.", "No sensitive columns.", "No known limits recorded.",
                  "No lineage recorded.", "No schema recorded.", "No metrics recorded."):
        assert words in html and words in markdown
    assert 'id="slice-chart"' not in html and slice_chart_svg([], "rmse") == ""
    assert Structure(html).errors == []
    assert "not blessed" in html and "**not blessed**" in markdown
    assert "forced because" not in html and "forced because" not in markdown


def test_numbers_take_four_significant_digits_and_missing_ones_a_dash():
    data = realistic()
    data["metrics"] = {"candidate": {"rmse": 1234.5678, "r2": float("nan")}, "champion": None,
                       "baseline": {"rmse": 2000.0}}
    data["primary_metric"], data["greater_is_better"] = "rmse", False
    markdown = render_markdown(ModelCard.from_dict(data))
    assert "| rmse (primary) | 1235 | — | 2000 |" in markdown
    assert "| r2 | — | — | — |" in markdown
    assert "(lower is better)" in markdown and "(lower is better)" in render_html(
        ModelCard.from_dict(data))


# --- hostile values -------------------------------------------------------------------------


def test_hostile_values_are_only_escaped_text_in_the_html():
    html = render_html(ModelCard.from_dict(hostile()))
    page = Structure(html)
    assert page.errors == []
    assert "<script" not in html.lower() and "<img" not in html.lower()
    assert not page.names() & {"script", "img"}
    assert page.handlers() == []
    assert all(re.match(r"https?://", href) for href in page.links())
    assert 'href="javascript:' not in html.lower() and "data:text" not in "".join(
        str(href) for href in page.links())
    assert page.links() == ["https://x.example/a(b)c"]  # the only clean http(s) URL
    text = "".join(page.text)
    for value in HOSTILE:
        assert value in text  # shown as it is, as text
    urls = [value for _, attrs in page.tags for name, value in attrs.items()
            if name in ("href", "src", "xlink:href", "action", "formaction")]
    assert urls == page.links()


def test_hostile_values_cannot_add_columns_links_or_html_in_the_markdown():
    markdown = render_markdown(ModelCard.from_dict(hostile()))
    lines = markdown.splitlines()
    assert not any("<" in line for line in lines[1:])  # the first line is our HTML comment
    html = md_to_html(markdown)
    page = Structure(html)
    assert page.errors == []
    assert not page.names() & {"script", "img", "blockquote", "h4", "em"}
    assert len(re.findall("<code>", html)) == 4  # ours: the three settings and the fairness one
    assert page.handlers() == []
    assert page.links() == ["https://x.example/a%28b%29c"]
    # every row of every table has the header's number of cells
    for rows in table_rows(html):
        assert len(set(rows)) == 1, rows
    # the text reads as the data: the attacks are shown, not interpreted
    text = "".join(page.text)
    for value in (SCRIPT, TD_IMG, PIPE, MD_LINK, "# heading", "- list", "1. list", "> quote",
                  "`code`"):
        assert value in text
    # limits stay one list of plain items, headings are only ours
    headings = re.findall(r"<h([1-6])>(.*?)</h\1>", html)
    assert [level for level, _ in headings] == ["1", "2", "2", "2", "2", "2", "3", "2", "2",
                                                "2"]
    assert len(re.findall(r"<li>", html.split("Known limits")[1].split("<h2>")[0])) == 9


def test_md_escape():
    assert md_escape("a|b") == r"a\|b"
    assert md_escape(MD_LINK) == r"\[x\]\(javascript:alert\(1\)\)"
    assert md_escape(SCRIPT) == "&lt;script&gt;alert\\(1\\)&lt;/script&gt;"
    assert md_escape("*a* _b_ `c` ~d~") == r"\*a\* \_b\_ \`c\` \~d\~"
    assert md_escape("line\nbreak\r\tcell") == "line break  cell"
    assert md_escape("# title") == r"\# title"
    assert md_escape("# title", line_start=False) == "# title"
    assert md_escape("12. item") == r"12\. item"
    assert md_escape("- item") == r"\- item"
    assert md_escape("back\\slash|") == r"back\\slash\|"
    assert md_escape("AT&T &amp;") == "AT&amp;T &amp;amp;"
    assert md_escape(None) == "—" and md_escape("") == "—"
    assert md_escape("see https://user:pw@host.example/x") == "see https://host.example/x"


def test_credentials_in_urls_never_reach_either_format():
    data = realistic()
    data["training"]["source"] = "postgresql://etl:hunter2@db.example/flights"
    data["lineage"][3]["url"] = "https://alice:hunter2@mlflow.example/#/runs/1"
    card = ModelCard.from_dict(data)
    html, markdown = render_html(card), render_markdown(card)
    assert "hunter2" not in html and "hunter2" not in markdown
    assert 'href="https://mlflow.example/#/runs/1"' in html
    assert "(https://mlflow.example/#/runs/1)" in markdown


# --- the slice chart ------------------------------------------------------------------------


def test_the_slice_chart_has_one_bar_group_per_slice_and_no_unescaped_data():
    data = hostile()
    svg = str(slice_chart_svg(data["slices"], SCRIPT))
    root = ET.fromstring(svg)  # well-formed: no data broke out of its text or attribute
    ns = "{http://www.w3.org/2000/svg}"
    groups = [g for g in root.iter(f"{ns}g") if "slice-bar" in g.get("class", "")]
    assert len(groups) == len(data["slices"])
    assert {el.tag for el in root.iter()} <= {f"{ns}{t}" for t in (
        "svg", "title", "rect", "text", "line", "g", "path")}
    assert not any(name.startswith("on") for el in root.iter() for name in el.attrib)
    labels = [g.get("data-slice") for g in groups]
    assert labels == [f"carrier={SCRIPT}", f"carrier={TD_IMG}", f"carrier={PIPE}",
                      f"{MD_LINK}=JFK"]
    assert "<script" not in svg and "<img" not in svg
    # the regressed slice is marked, the ungated one faded, the candidate CI drawn per slice
    assert [g.get("class") for g in groups] == [
        "slice-bar", "slice-bar regressed", "slice-bar not-gated", "slice-bar"]
    assert groups[2].get("opacity") == "0.45"
    assert sum(1 for g in groups for el in g.iter(f"{ns}path")) == 4
    champion_bars = [el for g in groups for el in g.iter(f"{ns}rect")
                     if el.get("class") == "bar-champion"]
    assert len(champion_bars) == 3  # JFK has no champion value


def test_the_chart_spans_negative_values():
    slices = [{"column": "c", "value": "x", "rows": 500, "gated": True, "candidate": -0.4,
               "champion": 0.2, "candidate_ci": [-0.6, -0.1], "regressed": True}]
    root = ET.fromstring(str(slice_chart_svg(slices, "r2", width=500)))
    ns = "{http://www.w3.org/2000/svg}"
    bars = {el.get("class"): el for el in root.iter(f"{ns}rect") if el.get("class")}
    assert float(bars["bar-candidate"].get("width")) > 0
    assert float(bars["bar-candidate"].get("x")) < float(bars["bar-champion"].get("x"))
    assert int(root.get("width")) == 500


# --- the dict form --------------------------------------------------------------------------


@pytest.mark.parametrize("make", [realistic, hostile])
def test_from_dict_of_to_dict_round_trips(make):
    card = ModelCard.from_dict(make())
    data = card.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert ModelCard.from_dict(json.loads(json.dumps(data))) == card
    assert render_html(ModelCard.from_dict(data)) == render_html(card)


def test_to_dict_makes_numpy_values_plain_and_from_dict_tolerates_missing_keys():
    import numpy as np

    data = realistic()
    data["training"]["rows"] = np.int64(48210)
    data["slices"][0]["candidate_ci"] = (np.float64(0.815), np.float32(0.833))
    plain = ModelCard.from_dict(data).to_dict()
    assert type(plain["training"]["rows"]) is int
    assert isinstance(plain["slices"][0]["candidate_ci"], list)
    json.dumps(plain)

    sparse = {"model_name": "m", "version": 3, "decision": None, "unknown": "ignored",
              "slices": [{"column": "c", "value": "v"}],
              "fairness": [{"column": "s"}], "lineage": [{"step": "source"}]}
    card = ModelCard.from_dict(copy.deepcopy(sparse))
    assert card.version == "3" and card.decision == {} and card.greater_is_better is True
    html, markdown = render_html(card), render_markdown(card)
    assert Structure(html).errors == []
    assert "| c=v | — | — — | — | — — | — | — |" in markdown
    with pytest.raises(ValueError, match="model_name"):
        ModelCard.from_dict({"version": "1"})
