"""Copy a published scores partition into a SQL table, replacing that interval's rows in one
transaction.

The table (``output_table``, optionally ``schema.table``) is created on first use from the
partition's columns, plus ``interval_start`` and ``interval_end``. Each export deletes the
rows of the same model and interval end and inserts the partition's rows, in one transaction: a
reader sees the interval's old rows or its new ones, and a failed export changes nothing. Rows go
in a row group at a time (PostgreSQL: ``COPY``), so memory follows the partition's row groups,
not its size. The table name reaches SQL only as a quoted identifier.
"""

from __future__ import annotations

import io
import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from pipeline_tasks.core import storage
from pipeline_tasks.core.errors import PipelineInputError, TransientError
from pipeline_tasks.core.results import XComResult

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


class OutputTableError(PipelineInputError):
    """The output table cannot take the scores (another shape, no permission)."""


@dataclass(frozen=True)
class SqlExportResult(XComResult):
    """What an export wrote."""

    table: str
    model_name: str
    interval_end: str
    rows: int
    replaced_rows: int
    created: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def export_scores(*, scores_uri: str, model_name: str, interval_start: str, interval_end: str,
                  sql_url: str, table: tuple[str | None, str]) -> SqlExportResult:
    """Replace the rows of ``model_name`` and ``interval_end`` in ``table`` with the partition
    at ``scores_uri``."""
    import pandas as pd
    import pyarrow.parquet as pq
    import sqlalchemy as sa

    schema_name, table_name = table
    shown = f"{schema_name}.{table_name}" if schema_name else table_name
    fs, path = storage.url_to_fs(scores_uri)
    parts = sorted(p for p in fs.glob(path.rstrip("/") + "/part-*.parquet"))
    if not parts:
        raise OutputTableError(f"{scores_uri}: no scores to export (the partition has no parts)")
    start, end = pd.Timestamp(interval_start), pd.Timestamp(interval_end)
    try:
        engine = sa.create_engine(sql_url)
    except Exception as exc:  # bad URL or missing driver: several exception types
        raise OutputTableError(f"output table {shown}: cannot use the connection URL "
                               f"({type(exc).__name__})") from exc
    rows = replaced = 0
    try:
        with engine.begin() as conn:  # one transaction: delete and insert, or nothing
            created = not sa.inspect(conn).has_table(table_name, schema=schema_name)
            target = None
            if not created:
                target = sa.Table(table_name, sa.MetaData(), schema=schema_name,
                                  autoload_with=conn)
                _check_columns(target, parts[0], fs, shown)
                deleted = conn.execute(sa.delete(target).where(
                    target.c.model_name == model_name,
                    target.c.interval_end == end.to_pydatetime()))
                replaced = deleted.rowcount or 0
            for part in parts:
                with fs.open(part, "rb") as handle:
                    for batch in pq.ParquetFile(handle).iter_batches(batch_size=50_000):
                        frame = batch.to_pandas()
                        frame.insert(0, "interval_start", start)
                        frame.insert(1, "interval_end", end)
                        if target is None:  # the first rows make the table
                            frame.head(0).to_sql(table_name, conn, schema=schema_name,
                                                 index=False)
                            target = sa.Table(table_name, sa.MetaData(), schema=schema_name,
                                              autoload_with=conn)
                        _insert(conn, target, frame)
                        rows += len(frame)
    except sa.exc.OperationalError as exc:
        raise TransientError(f"output table {shown}: the database did not answer "
                             f"({type(exc).__name__})") from exc
    except sa.exc.SQLAlchemyError as exc:
        raise OutputTableError(f"output table {shown}: {type(exc).__name__}: "
                               f"{str(exc).splitlines()[0][:300]}") from exc
    finally:
        engine.dispose()
    log.info("wrote %d rows of %s (interval ending %s) to %s, replacing %d", rows, model_name,
             end.isoformat(), shown, replaced)
    return SqlExportResult(table=shown, model_name=model_name, interval_end=end.isoformat(),
                           rows=rows, replaced_rows=replaced, created=created)


def _check_columns(target, first_part: str, fs, shown: str) -> None:
    import pyarrow.parquet as pq

    with fs.open(first_part, "rb") as handle:
        names = set(pq.ParquetFile(handle).schema_arrow.names) | {"interval_start", "interval_end"}
    have = {c.name for c in target.columns}
    missing = sorted(names - have)
    if missing:
        raise OutputTableError(f"output table {shown} has no column {missing[0]!r} "
                               f"(it was made for another model or task type); name another "
                               f"table or add the column")


def _insert(conn, target, frame: pd.DataFrame) -> None:
    """Insert ``frame`` into ``target`` on ``conn``'s transaction (PostgreSQL: ``COPY``)."""
    if conn.dialect.name == "postgresql":
        raw = conn.connection.dbapi_connection
        buffer = io.StringIO()
        frame.to_csv(buffer, index=False, header=False, date_format="%Y-%m-%d %H:%M:%S.%f%z")
        buffer.seek(0)
        columns = ", ".join(conn.dialect.identifier_preparer.quote(c) for c in frame.columns)
        table = conn.dialect.identifier_preparer.format_table(target)
        with raw.cursor() as cursor:
            cursor.copy_expert(f"COPY {table} ({columns}) FROM STDIN WITH (FORMAT csv)", buffer)
        return
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    conn.execute(target.insert(), records)
