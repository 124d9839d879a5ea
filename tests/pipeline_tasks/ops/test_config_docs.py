"""docs/configuration.md lists every PipelineConfig field as the class defines it, and every
relative link in README.md and docs/*.md reaches a file (and a heading, when it names one)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from pipeline_tasks.core.config import PipelineConfig, load_config
from pipeline_tasks.ops import config_docs

PROJECT = Path(__file__).resolve().parents[3]


def test_the_table_in_the_docs_is_the_generated_one():
    text = config_docs.DOC_PATH.read_text(encoding="utf-8")
    assert config_docs.table_in(text) == config_docs.render_table(), (
        "docs/configuration.md is stale: run `make docs` (python -m pipeline_tasks.ops.config_docs)")


def test_every_field_has_a_row_and_a_description():
    docs = config_docs.field_docs()
    assert [d.name for d in docs] == [f.name for f in dataclasses.fields(PipelineConfig)]
    table = config_docs.table_in(config_docs.DOC_PATH.read_text(encoding="utf-8"))
    for doc in docs:
        assert f"| `{doc.name}` | `MLOPS_{doc.name.upper()}` |" in table
        assert doc.description, f"{doc.name} has no comment in core/config.py"
        assert not doc.description.startswith("---"), doc.name  # a group heading is no description


def test_descriptions_come_from_the_comments():
    comments = config_docs.field_comments()
    assert comments["celery_workers"] == "workers the stack starts when the executor is CeleryExecutor"
    # no comment on the field's line: the comment lines right above it, joined
    assert comments["registry_lock_url"].startswith("A postgresql:// URL: the registry's")
    assert comments["registry_lock_url"].endswith("a file lock under locks_dir (one machine).")
    # a "# --- Title ---" group heading is never part of a description
    assert "Production profile" not in comments["mlflow_backend_store_uri"]


def test_the_parser_on_a_class_of_its_own():
    @dataclasses.dataclass
    class Example:
        # --- Group ---
        # above, first line
        # and second line
        a: int = 1
        b: str = "x"  # on its line
        # ignored: b's line has its own comment

        c: float = 0.5
        # --- Another group ---
        d: bool = False  # wins over nothing above

        def method(self) -> int:  # not a field
            e = 1  # noqa: F841 (a local, not a field)
            return 0

    comments = config_docs.field_comments(Example)
    assert comments == {"a": "above, first line and second line", "b": "on its line", "c": "",
                        "d": "wins over nothing above"}


def test_machine_paths_are_symbolic():
    table = config_docs.render_table()
    assert str(PROJECT) not in table
    rows = {d.name: d for d in config_docs.field_docs()}
    assert rows["lake_uri"].default == "`file://$MLOPS_HOME/lake`"
    assert rows["airflow_home"].default == "`$MLOPS_HOME/airflow`"
    assert rows["dags_folder"].default == "`<repo>/dags`"
    assert rows["mlflow_tracking_uri"].default == "`sqlite:///$MLOPS_HOME/mlflow/mlflow.db`"
    assert rows["allowed_source_roots"].default == "*(empty list)*"
    assert rows["min_primary_metric"].type == "float | None"
    assert "`float \\| None`" in table  # a pipe inside a cell is escaped


@pytest.mark.parametrize("field, raw, expected", [
    ("seed", "7", 7),
    ("airflow_port", "9090", 9090),
    ("drift_ignore_columns", "month,day", "month,day"),
    ("lake_uri", "s3://bucket/lake", "s3://bucket/lake"),
    ("allowed_sql_conn_ids", "a,b", ("a", "b")),
])
def test_the_printed_env_vars_are_the_ones_load_config_reads(monkeypatch, tmp_path, field, raw,
                                                            expected):
    env_var = {d.name: d.env_var for d in config_docs.field_docs()}[field]
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    monkeypatch.setenv(env_var, raw)
    assert getattr(load_config(), field) == expected


def test_write_docs_rewrites_only_between_the_markers(tmp_path):
    page = tmp_path / "configuration.md"
    page.write_text(f"# Title\n\nbefore\n\n{config_docs.START}\nold table\n{config_docs.END}\n\nafter\n")
    assert config_docs.write_docs(page) is True
    text = page.read_text()
    assert text.startswith("# Title\n\nbefore\n\n") and text.endswith("\n\nafter\n")
    assert config_docs.table_in(text) == config_docs.render_table()
    assert config_docs.write_docs(page) is False  # idempotent
    page.write_text("no markers\n")
    with pytest.raises(ValueError, match="markers"):
        config_docs.write_docs(page)


# -- links in README.md and docs/*.md -----------------------------------------------------------

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _pages() -> list[Path]:
    return [PROJECT / "README.md", *sorted((PROJECT / "docs").glob("*.md"))]


def _without_code(text: str) -> str:
    """``text`` without fenced blocks and inline code spans (links there are not links)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    return re.sub(r"`[^`\n]*`", "``", text)


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors of ``page``: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"),
                  flags=re.MULTILINE | re.DOTALL)
    anchors = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", text, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def _relative_links() -> list[tuple[Path, str]]:
    links = []
    for page in _pages():
        for target in LINK.findall(_without_code(page.read_text(encoding="utf-8"))):
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, mailto:, ... are not files
                links.append((page, target))
    return links


def test_the_docs_pages_exist():
    names = {p.name for p in _pages()}
    for name in ("serving.md", "monitoring.md", "ui.md", "configuration.md", "production.md",
                 "testing.md", "security.md", "pipeline.md", "reliability.md"):
        assert name in names
    readme = (PROJECT / "README.md").read_text(encoding="utf-8")
    for name in names - {"README.md"}:
        assert f"](docs/{name})" in readme, f"README.md does not link docs/{name}"


def test_every_relative_link_reaches_a_file_and_its_heading():
    links = _relative_links()
    assert len(links) > 20  # the check sees the links at all
    broken = []
    for page, target in links:
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{page.relative_to(PROJECT)}: {target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{page.relative_to(PROJECT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)
