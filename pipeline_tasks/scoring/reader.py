"""Stream a batch source in record batches, its columns checked before any row is read for
scoring.

Sources are those training reads (``data.ingest``): a CSV or Parquet file, a folder or glob of
them (date-partitioned: only the interval's partitions), or a SQL query. Files are read with
pyarrow, a batch of ``chunk_rows`` at a time and only the columns the model needs (plus the id and
time columns): memory follows the chunk, not the table. A SQL query is read in chunks through a
server-side cursor.

``check_columns`` is the contract at the door: every required model input must be there, with a
type the model can take. A CSV is parsed with the types the model's signature gives, so a text
value in a numeric column is found as a retyped column too. Both fail the run naming the column
(and the file); values are never echoed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from pipeline_tasks.core import storage
from pipeline_tasks.core.errors import PipelineInputError

if TYPE_CHECKING:
    import pyarrow as pa

    from pipeline_tasks.serving.contract import Column

log = logging.getLogger(__name__)

#: Bytes of a CSV parsed at a time (pyarrow's block size, about 25,000 rows of 20 columns): the
#: streaming reader parses a few blocks ahead, so this, not the file, bounds its memory. Blocks
#: are gathered into chunks of ``chunk_rows`` before they are scored.
CSV_BLOCK_BYTES = 4 * 1024 * 1024
PARQUET_SUFFIXES = (".parquet", ".pq")


class BatchInputError(PipelineInputError):
    """A batch source the model cannot score: a missing or retyped input column, an unreadable
    file, nothing in the interval."""


@dataclass(frozen=True)
class Needed:
    """What the reader must deliver: the model's inputs, and the id and time columns."""

    inputs: tuple[Column, ...]
    id_column: str | None = None
    time_column: str | None = None

    @property
    def names(self) -> list[str]:
        extra = [c for c in (self.id_column, self.time_column) if c]
        names = [c.name for c in self.inputs]
        return names + [c for c in extra if c not in names]


def _kind_accepts(kind: str, dtype: pa.DataType) -> bool:
    import pyarrow as pa

    if pa.types.is_null(dtype):  # a column with no values: its rows are checked one by one
        return True
    if pa.types.is_dictionary(dtype):
        dtype = dtype.value_type
    if kind in ("float", "int"):
        return pa.types.is_integer(dtype) or pa.types.is_floating(dtype) \
            or pa.types.is_decimal(dtype)
    if kind == "str":
        return pa.types.is_string(dtype) or pa.types.is_large_string(dtype)
    if kind == "bool":
        return pa.types.is_boolean(dtype)
    return (pa.types.is_timestamp(dtype) or pa.types.is_date(dtype)
            or pa.types.is_string(dtype) or pa.types.is_large_string(dtype))


_KIND_WORDS = {"float": "numbers", "int": "whole numbers", "str": "text", "bool": "true/false",
               "datetime": "timestamps"}


def check_columns(origin: str, schema: pa.Schema, needed: Needed) -> None:
    """Refuse a source whose columns the model cannot take: a required input missing, an input
    of another type (text where the model takes numbers...), or the id/time column missing."""
    present = {name: schema.field(name).type for name in schema.names}
    missing = [c.name for c in needed.inputs if c.required and c.name not in present]
    if missing:
        more = f" (and {len(missing) - 1} more: {', '.join(map(repr, missing[1:6]))})" \
            if len(missing) > 1 else ""
        raise BatchInputError(f"{origin}: the model's input column {missing[0]!r} is missing"
                              f"{more}")
    for col in needed.inputs:
        if col.name in present and not _kind_accepts(col.kind, present[col.name]):
            raise BatchInputError(
                f"{origin}: column {col.name!r} is {present[col.name]}, but the model takes "
                f"{_KIND_WORDS[col.kind]} there (a retyped column)")
    for what, name in (("id", needed.id_column), ("time", needed.time_column)):
        if name and name not in present:
            raise BatchInputError(f"{origin}: the {what} column {name!r} is not among the "
                                  f"source's columns")


def csv_types(needed: Needed) -> dict[str, pa.DataType]:
    """The pyarrow type each needed CSV column is parsed as: the model's kinds (an integer
    input as float64, so a null or '3.0' is not a parse error), the id as text."""
    import pyarrow as pa

    kinds = {"float": pa.float64(), "int": pa.float64(), "str": pa.string(),
             "bool": pa.bool_(), "datetime": pa.string()}
    types = {c.name: kinds[c.kind] for c in needed.inputs}
    if needed.id_column:
        types[needed.id_column] = pa.string()
    return types


class Source:
    """One batch source: its files (or query) for the interval, checked and streamed."""

    def __init__(self, source: str, *, interval_start: datetime, interval_end: datetime,
                 needed: Needed, chunk_rows: int, sql_url: str | None = None):
        self.source, self.needed, self.chunk_rows = source, needed, chunk_rows
        self.start, self.end, self.sql_url = interval_start, interval_end, sql_url
        self.partitioned = bool(sql_url)
        self.files: list[str] = []
        if not sql_url:
            from pipeline_tasks.data.ingest import IngestError, select_files

            try:
                self.files, self.partitioned = select_files(source, interval_start, interval_end)
            except IngestError as exc:
                raise BatchInputError(str(exc)) from exc

    # -- the contract, before any row is scored ---------------------------------------------
    def check(self) -> None:
        """Every file's columns against the model's inputs (a SQL source: its first chunk, as
        it is read)."""
        for uri in self.files:
            check_columns(uri, self._schema(uri), self.needed)

    def _schema(self, uri: str) -> pa.Schema:
        if _is_parquet(uri):
            import pyarrow.parquet as pq

            fs, path = storage.url_to_fs(uri)
            try:
                with fs.open(path, "rb") as handle:
                    return pq.ParquetFile(handle).schema_arrow
            except Exception as exc:  # pyarrow raises several types for a bad file
                raise BatchInputError(f"{uri}: not a readable Parquet file "
                                      f"({type(exc).__name__})") from exc
        with self._csv_reader(uri, include_all=True) as reader:
            return reader.schema

    # -- streaming ---------------------------------------------------------------------------
    def batches(self) -> Iterator[tuple[str, pa.RecordBatch]]:
        """``(origin, record batch)`` of the needed columns, file after file (or chunk after
        chunk of the query)."""
        if self.sql_url:
            yield from self._sql_batches()
            return
        for uri in self.files:
            if _is_parquet(uri):
                yield from ((uri, b) for b in self._parquet_batches(uri))
            else:
                yield from ((uri, b) for b in self._csv_batches(uri))

    def _parquet_batches(self, uri: str) -> Iterator[pa.RecordBatch]:
        import pyarrow.parquet as pq

        fs, path = storage.url_to_fs(uri)
        with fs.open(path, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            columns = [c for c in self.needed.names if c in parquet.schema_arrow.names]
            try:
                yield from parquet.iter_batches(batch_size=self.chunk_rows, columns=columns)
            except OSError as exc:
                raise BatchInputError(f"{uri}: cannot be read past a damaged part "
                                      f"({type(exc).__name__})") from exc

    def _csv_reader(self, uri: str, *, include_all: bool = False):
        import gzip
        from contextlib import contextmanager

        import pyarrow as pa
        import pyarrow.csv as pcsv

        @contextmanager
        def opened():
            fs, path = storage.url_to_fs(uri)
            with fs.open(path, "rb") as raw:
                stream = gzip.GzipFile(fileobj=raw) if path.lower().endswith(".gz") else raw
                try:
                    reader = pcsv.open_csv(
                        stream,
                        read_options=pcsv.ReadOptions(block_size=CSV_BLOCK_BYTES),
                        convert_options=pcsv.ConvertOptions(
                            column_types=csv_types(self.needed),
                            include_columns=None if include_all else self._csv_columns(uri),
                            strings_can_be_null=True),
                    )
                except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as exc:
                    raise BatchInputError(_csv_problem(uri, exc, _csv_header(uri))) from exc
                yield reader

        return opened()

    def _csv_columns(self, uri: str) -> list[str]:
        with self._csv_reader(uri, include_all=True) as reader:
            present = set(reader.schema.names)
        return [c for c in self.needed.names if c in present]

    def _csv_batches(self, uri: str) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa

        pending: list[pa.RecordBatch] = []
        rows = 0
        with self._csv_reader(uri) as reader:
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    break
                except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as exc:
                    raise BatchInputError(_csv_problem(uri, exc, _csv_header(uri))) from exc
                pending.append(batch)
                rows += batch.num_rows
                if rows >= self.chunk_rows:
                    yield from _chunks(pending, self.chunk_rows)
                    pending, rows = [], 0
        if pending:
            yield from _chunks(pending, self.chunk_rows)

    def _sql_batches(self) -> Iterator[tuple[str, pa.RecordBatch]]:
        import pandas as pd
        import pyarrow as pa
        import sqlalchemy as sa

        params = {"interval_start": self.start.replace(tzinfo=None),
                  "interval_end": self.end.replace(tzinfo=None)}
        used = {k: v for k, v in params.items() if f":{k}" in self.source}
        try:
            engine = sa.create_engine(self.sql_url)
        except Exception as exc:  # bad URL or missing driver: several exception types
            raise BatchInputError(f"SQL source: cannot use the connection URL "
                                  f"({type(exc).__name__})") from exc
        origin = "SQL source"
        try:
            with engine.connect() as conn:
                conn = conn.execution_options(stream_results=True)
                first = True
                for frame in pd.read_sql(sa.text(self.source), conn, params=used,
                                         chunksize=self.chunk_rows):
                    table = pa.Table.from_pandas(frame, preserve_index=False)
                    if first:
                        check_columns(origin, table.schema, self.needed)
                        first = False
                    keep = [c for c in self.needed.names if c in table.column_names]
                    yield from ((origin, b) for b in table.select(keep).to_batches())
        except sa.exc.SQLAlchemyError as exc:
            raise BatchInputError(f"SQL source: the query failed: {exc.__class__.__name__}: "
                                  f"{str(exc).splitlines()[0][:300]}") from exc
        finally:
            engine.dispose()


def _chunks(batches: list[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    """The rows of ``batches`` (one file's, in order) as record batches of at most ``rows``."""
    import pyarrow as pa

    table = pa.Table.from_batches(batches).combine_chunks()
    for offset in range(0, table.num_rows, rows):
        yield from table.slice(offset, rows).to_batches()


def _is_parquet(uri: str) -> bool:
    return uri.lower().endswith(PARQUET_SUFFIXES)


def _csv_header(uri: str) -> list[str]:
    """The column names of a CSV's header line ([] when it cannot be read)."""
    import csv
    import gzip
    import io

    try:
        fs, path = storage.url_to_fs(uri)
        with fs.open(path, "rb") as raw:
            stream = gzip.GzipFile(fileobj=raw) if path.lower().endswith(".gz") else raw
            line = io.TextIOWrapper(stream, encoding="utf-8-sig").readline()
        return next(csv.reader([line]), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def _csv_problem(uri: str, exc: Exception, header: list[str]) -> str:
    """A CSV parse error in words, naming the column (never the value)."""
    import re

    text = str(exc)
    if isinstance(exc, UnicodeDecodeError) or "UTF8" in text or "utf-8" in text.lower():
        return f"{uri}: not UTF-8 text"
    match = re.search(r"In CSV column #(\d+): .*?conversion error to (\w+)", text)
    if match:
        index = int(match.group(1))
        name = repr(header[index][:64]) if index < len(header) else f"#{index + 1}"
        return (f"{uri}: column {name} holds a value that is not {match.group(2)}, but the "
                f"model takes {match.group(2)} there (a retyped column)")
    match = re.search(r"CSV conversion error to (\w+)", text)
    if match:
        return f"{uri}: a column holds a value that is not {match.group(1)} (a retyped column)"
    if "Empty CSV file" in text or "empty" in text.lower():
        return f"{uri}: the file is empty"
    first = text.splitlines()[0] if text else type(exc).__name__
    return f"{uri}: not a well-formed CSV file ({first[:200]})"
