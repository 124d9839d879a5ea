"""The SQL output of batch scoring: an interval's rows replaced in one transaction, on a real
PostgreSQL server (COPY) and on SQLite; the table name only ever as an identifier."""

from __future__ import annotations

import pandas as pd
import pytest
import sqlalchemy as sa

from pipeline_tasks.core.allowlists import check_table_name
from pipeline_tasks.core.errors import ConfigError
from pipeline_tasks.scoring.batch import score_interval
from pipeline_tasks.scoring.sql_export import OutputTableError, export_scores


@pytest.fixture(scope="module")
def scored(batch_source, scoring_model, batch_config, tmp_path_factory):
    """Two published intervals of the model (the second on fewer rows)."""
    folder = tmp_path_factory.mktemp("sql-source")
    out = {}
    for end, frame in (("2013-05-02", batch_source), ("2013-05-03", batch_source.head(100))):
        path = folder / f"{end}.parquet"
        frame.to_parquet(path, index=False)
        out[end] = score_interval(str(path), model=scoring_model, interval_start=f"{end}T00:00",
                                  interval_end=f"{end}T00:00", config=batch_config,
                                  dag_id="ml_batch_scoring", run_id=f"r-{end}",
                                  id_column="flight_id")
    return out


@pytest.fixture(params=["postgresql", "sqlite"])
def sql_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'scores.db'}"
    server = request.getfixturevalue("postgres_server")
    admin = sa.create_engine(f"postgresql+psycopg2://postgres@{server}/postgres",
                             isolation_level="AUTOCOMMIT")
    name = f"scores_{tmp_path.name[-20:].lower().replace('-', '_')}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return f"postgresql+psycopg2://postgres@{server}/{name}"


def export(result, sql_url, table=("", "batch_scores")):
    return export_scores(scores_uri=result.scores_uri, model_name=result.model_name,
                         interval_start=result.interval_start, interval_end=result.interval_end,
                         sql_url=sql_url, table=(table[0] or None, table[1]))


def rows_by_interval(sql_url) -> dict[str, int]:
    engine = sa.create_engine(sql_url)
    with engine.connect() as conn:
        found = pd.read_sql("SELECT interval_end, row_id, prediction, proba_true, model_version "
                            "FROM batch_scores", conn)
    engine.dispose()
    found["day"] = pd.to_datetime(found["interval_end"], utc=True).dt.strftime("%Y-%m-%d")
    return found.groupby("day").size().to_dict(), found


def test_sql_output_replaces_its_interval(scored, sql_url):
    first, second = scored["2013-05-02"], scored["2013-05-03"]
    made = export(first, sql_url)
    assert made.created and made.rows == first.rows_scored and made.replaced_rows == 0
    export(second, sql_url)
    again = export(first, sql_url)  # a re-run of the first interval
    assert not again.created and again.replaced_rows == first.rows_scored
    counts, found = rows_by_interval(sql_url)
    assert counts == {"2013-05-02": first.rows_scored, "2013-05-03": second.rows_scored}
    published = pd.read_parquet(first.parts[0].removeprefix("file://"))
    row = published.iloc[0]
    stored = found[found["row_id"] == row["row_id"]].iloc[0]
    assert stored["proba_true"] == pytest.approx(row["proba_true"])
    assert bool(stored["prediction"]) == bool(row["prediction"])
    assert str(stored["model_version"]) == row["model_version"]


def test_a_table_of_another_shape_is_refused_and_left_as_it_was(scored, sql_url):
    engine = sa.create_engine(sql_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE other_scores (interval_end TIMESTAMP, "
                             "model_name TEXT, row_id TEXT)"))
        conn.execute(sa.text("INSERT INTO other_scores VALUES ('2013-05-02', 'batch_flights', "
                             "'keep me')"))
    with pytest.raises(OutputTableError, match="has no column"):
        export(scored["2013-05-02"], sql_url, table=("", "other_scores"))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT row_id FROM other_scores")).scalars().all() == \
            ["keep me"]
    engine.dispose()


@pytest.mark.parametrize("name", ["scores; DROP TABLE x", "a.b.c", "x\"y", "1abc", "a" * 70])
def test_a_table_name_is_an_identifier_or_refused(name):
    with pytest.raises(ConfigError, match="output_table: not a table name"):
        check_table_name("output_table", name)
    assert check_table_name("output_table", "analytics.flight_scores") == \
        ("analytics", "flight_scores")


@pytest.mark.parametrize("params, message", [
    ({"output_conn_id": "warehouse", "output_table": "scores"}, "not in allowed_output_conn_ids"),
    ({"output_conn_id": "writer"}, "go together"),
    ({"output_table": "scores"}, "go together"),
    ({"sql_conn_id": "writer", "source": "SELECT 1"}, "not in allowed_sql_conn_ids"),
    ({"output_conn_id": "writer", "output_table": "a;b"}, "must be a table name"),
])
def test_the_first_task_refuses_outputs_the_operator_did_not_allow(params, message, monkeypatch):
    """Only connections listed in allowed_output_conn_ids may receive scores, and a source
    connection is never one of them by accident."""
    from pipeline_tasks.stages import RunSpec, check_batch_params

    monkeypatch.setenv("MLOPS_ALLOWED_OUTPUT_CONN_IDS", "writer")
    run = RunSpec(dag_id="ml_batch_scoring", run_id="r", interval_start="2013-03-01",
                  interval_end="2013-03-02", params={"model_name": "m", **params})
    with pytest.raises(ConfigError, match=message):
        check_batch_params(run)
    ok = RunSpec(dag_id="ml_batch_scoring", run_id="r", interval_start="2013-03-01",
                 interval_end="2013-03-02",
                 params={"model_name": "m", "output_conn_id": "writer",
                         "output_table": "analytics.scores"})
    assert check_batch_params(ok) == ("analytics", "scores")
