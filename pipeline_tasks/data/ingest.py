"""Ingest: read a run's data interval plus its training window, and land it as one Parquet file.

Sources:
- a CSV or Parquet file (read whole);
- a folder or glob of them. When every file name carries a date (``2013-03-01``, also as
  ``date=2013-03-01``) the source is date-partitioned and only the partitions that overlap the
  window are read; otherwise every file is read;
- a SQL query, given with a SQLAlchemy URL (the DAG resolves an Airflow connection to it). The
  query may use the bind parameters ``:window_start``, ``:interval_start`` and ``:interval_end``.

Unreadable input fails here with a message naming the file and the problem.
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from pipeline_tasks.core import layout, storage
from pipeline_tasks.core.errors import ConfigError, IngestError, PipelineInputError
from pipeline_tasks.core.results import XComResult

if TYPE_CHECKING:
    import pandas as pd

    from pipeline_tasks.core.config import PipelineConfig

log = logging.getLogger(__name__)

DATA_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")
DATE_IN_NAME = re.compile(r"(?<!\d)(\d{4})-(\d{2})-(\d{2})(?!\d)")
TIME_COLUMN_NAMES = ("time_hour", "timestamp", "event_time", "event_timestamp", "datetime", "ts")
SNIFF_BYTES = 64 * 1024


@dataclass(frozen=True)
class IngestResult(XComResult):
    """What ingest wrote: small enough for XCom."""

    uri: str
    rows: int
    columns: list[str]
    source: str
    interval_start: str
    interval_end: str
    window_start: str
    partitioned: bool
    files: list[str] = field(default_factory=list)
    time_column: str | None = None
    rows_outside_window: int = 0
    # set by the training stage (``stages.ingest``) when an earlier run already validated,
    # versioned, trained and judged this batch: the DAG then skips the rest of the run
    nothing_new: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def as_utc(value: str | datetime) -> datetime:
    """An ISO timestamp (or datetime) in UTC; naive means UTC."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError as exc:
            raise ConfigError(f"not an ISO timestamp: {value!r}") from exc
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def training_window(
    interval_start: str | datetime, interval_end: str | datetime, training_window_days: int
) -> tuple[datetime, datetime, datetime]:
    """``(window_start, interval_start, interval_end)``: the interval plus the days before it."""
    start, end = as_utc(interval_start), as_utc(interval_end)
    if end < start:
        raise ConfigError(f"data interval ends ({end}) before it starts ({start})")
    if training_window_days < 0:
        raise ConfigError(f"training_window_days must be >= 0, got {training_window_days}")
    window_start = min(start, end - timedelta(days=training_window_days))
    return window_start, start, end


def _list_files(source: str) -> tuple[list[str], bool]:
    """Data files of a file, folder or glob URI, as full URIs, sorted; and whether it is one file."""
    fs, path = storage.url_to_fs(source)
    protocol = source.split("://", 1)[0] + "://" if "://" in source else ""
    single_file = False
    if any(ch in path for ch in "*?["):
        found = fs.glob(path)
    elif fs.isdir(path):
        found = fs.find(path)
    elif fs.exists(path):
        found, single_file = [path], True
    else:
        raise IngestError(f"source {source}: no such file or folder")
    files = sorted(
        p for p in found
        if (single_file or p.lower().endswith(DATA_SUFFIXES))
        and not p.rsplit("/", 1)[-1].startswith(".")
    )
    if not files:
        raise IngestError(
            f"source {source}: no CSV or Parquet files found (looked for {', '.join(DATA_SUFFIXES)})"
        )
    if not single_file and "file" in fs.protocol:
        glob_at = min((path.index(ch) for ch in "*?[" if ch in path), default=-1)
        folder = path if glob_at < 0 else path[:glob_at].rsplit("/", 1)[0]
        entries_within(folder or "/", files, f"source {source}")
    protocol = protocol or "file://"
    return [p if "://" in p else protocol + p for p in files], single_file


def entries_within(folder: str, files: list[str], what: str) -> None:
    """Refuse a local folder (or glob) whose entries lead out of it: each file, symlinks and
    '..' resolved, must still be inside ``folder`` (resolved). A symlink in a source folder cannot
    make the pipeline read a file elsewhere."""
    import os

    from pipeline_tasks.core.allowlists import is_under

    root = os.path.realpath(folder)
    for name in files:
        real = os.path.realpath(name.split("://", 1)[-1])
        if not is_under(real, root):
            raise IngestError(f"{what}: entry {name} resolves to {real}, outside {root}: "
                              f"symlinks out of a source folder are not followed")


def partition_date(uri: str) -> date | None:
    """The date a file's name carries (its last ``YYYY-MM-DD``), or None."""
    matches = DATE_IN_NAME.findall(uri.rsplit("://", 1)[-1])
    if not matches:
        return None
    y, m, d = (int(x) for x in matches[-1])
    try:
        return date(y, m, d)
    except ValueError:
        return None


def read_table(uri: str, *, allow_empty: bool = False, require_suffix: bool = False,
               error: type[PipelineInputError] = IngestError) -> pd.DataFrame:
    """Read one CSV or Parquet file (a URI or a local path) into a DataFrame: the one table reader.

    Parquet by its ``.parquet``/``.pq`` suffix; anything else is read as UTF-8 CSV (gzip when the
    name ends in ``.gz``), unless ``require_suffix`` asks for ``.csv``, ``.csv.gz``, ``.parquet``
    or ``.pq``. A CSV must have a header row; one with a header and no rows is an error unless
    ``allow_empty``. Every problem (no such file, empty, binary, not UTF-8, malformed) raises
    ``error`` (``IngestError`` by default; a caller may pass its own ``PipelineInputError``
    subclass) with a message that starts with ``uri`` and names the problem.
    """
    import pandas as pd

    fs, path = storage.url_to_fs(uri)
    lower = path.lower()
    if require_suffix and not lower.endswith(DATA_SUFFIXES):
        raise error(f"{uri}: expected a .csv or .parquet file")
    try:
        with fs.open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError as exc:
        raise error(f"{uri}: no such file") from exc
    if not raw.strip():
        raise error(f"{uri}: the file is empty")
    if lower.endswith((".parquet", ".pq")):
        try:
            return pd.read_parquet(io.BytesIO(raw), engine="pyarrow")
        except Exception as exc:  # pyarrow raises several unrelated types for a bad file
            raise error(f"{uri}: not a readable Parquet file ({exc})") from exc
    if lower.endswith(".gz"):
        import gzip

        try:
            raw = gzip.decompress(raw)
        except OSError as exc:
            raise error(f"{uri}: not a gzip file ({exc})") from exc
    head = raw[:SNIFF_BYTES]
    if b"\x00" in head:
        raise error(f"{uri}: not a CSV file (it holds binary data: NUL bytes)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(
            f"{uri}: not UTF-8 text (bad byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        ) from exc
    try:
        df = pd.read_csv(io.StringIO(text), low_memory=False)
    except pd.errors.EmptyDataError as exc:
        raise error(f"{uri}: the file has no header and no rows") from exc
    except pd.errors.ParserError as exc:
        raise error(f"{uri}: not a well-formed CSV file ({exc})") from exc
    unnamed = [c for c in df.columns if str(c).startswith("Unnamed: ")]
    if len(unnamed) == len(df.columns) or (
        not allow_empty and len(df.columns) == 1 and df.shape[0] == 0
    ):
        raise error(f"{uri}: not a CSV file with a header row")
    if df.empty and not allow_empty:
        raise error(f"{uri}: the file has a header but no rows")
    return df


def _parse_time(df: pd.DataFrame, column: str, origin: str) -> pd.Series:
    import pandas as pd

    col = df[column]
    if isinstance(col.dtype, pd.DatetimeTZDtype):
        return col.dt.tz_convert("UTC")
    if pd.api.types.is_datetime64_any_dtype(col):
        return col.dt.tz_localize("UTC")
    parsed = pd.to_datetime(col, utc=True, errors="coerce", format="ISO8601")
    bad = parsed.isna() & col.notna()
    if bad.any():
        example = col[bad].iloc[0]
        raise IngestError(
            f"{origin}: column {column!r}: {int(bad.sum())} value(s) are not timestamps "
            f"(for example {example!r})"
        )
    return parsed


def detect_time_column(df: pd.DataFrame) -> str | None:
    """A datetime column, or a column with a conventional time name, else None."""
    import pandas as pd

    for name in df.columns:
        if pd.api.types.is_datetime64_any_dtype(df[name]):
            return str(name)
    for name in TIME_COLUMN_NAMES:
        if name in df.columns:
            return name
    return None


def _read_sql(query: str, sql_url: str, window: tuple[datetime, datetime, datetime]):
    import pandas as pd
    import sqlalchemy as sa

    params = dict(zip(("window_start", "interval_start", "interval_end"), window, strict=True))
    # Only pass the bind parameters the query uses; drivers reject unknown ones.
    used = {k: v.replace(tzinfo=None) for k, v in params.items() if f":{k}" in query}
    try:
        engine = sa.create_engine(sql_url)
    except Exception as exc:  # bad URL or missing driver: several exception types
        raise IngestError(f"SQL source: cannot use the connection URL ({exc})") from exc
    try:
        with engine.connect() as conn:
            return pd.read_sql(sa.text(query), conn, params=used)
    except sa.exc.SQLAlchemyError as exc:
        raise IngestError(f"SQL source: the query failed: {exc.__class__.__name__}: "
                          f"{str(exc).splitlines()[0]}") from exc
    finally:
        engine.dispose()


def _check_same_columns(frames: list[tuple[str, pd.DataFrame]]) -> None:
    """Every file must have the columns most files have; name the first one that does not."""
    from collections import Counter

    counts = Counter(frozenset(map(str, df.columns)) for _, df in frames)
    expected, _ = counts.most_common(1)[0]
    for uri, df in frames:
        cols = set(map(str, df.columns))
        if cols != expected:
            example = next(u for u, d in frames if set(map(str, d.columns)) == expected)
            raise IngestError(
                f"{uri}: its columns differ from the other files' (e.g. {example}): "
                f"missing {sorted(expected - cols)}, unexpected {sorted(cols - expected)}"
            )


def select_files(source: str, window_start: datetime, end: datetime) -> tuple[list[str], bool]:
    """The data files of a file, folder or glob ``source`` to read for ``[window_start, end)``,
    and whether the source is date-partitioned (then only the partitions that overlap the window
    are returned; otherwise every file)."""
    all_files, single_file = _list_files(source)
    dates = {uri: partition_date(uri) for uri in all_files}
    partitioned = not single_file and any(d is not None for d in dates.values())
    if not partitioned:
        return all_files, False
    undated = [u for u, d in dates.items() if d is None]
    if undated:
        raise IngestError(
            f"source {source}: some files carry a date in their name and some do not "
            f"(for example {undated[0]}); cannot tell which partitions to read"
        )
    first_day, last_day = window_start.date(), end.date()
    if end == datetime.combine(last_day, datetime.min.time(), UTC):
        last_day -= timedelta(days=1)  # an interval ending at midnight excludes that day
    files = [u for u in all_files if first_day <= dates[u] <= last_day]
    if not files:
        known = sorted(dates.values())
        raise IngestError(
            f"source {source}: no partitions fall in the window {first_day} .. {last_day}"
            f" (the source has {len(known)} from {known[0]} to {known[-1]})"
        )
    return files, True


def ingest_interval(
    source: str,
    *,
    interval_start: str | datetime,
    interval_end: str | datetime,
    training_window_days: int,
    config: PipelineConfig,
    run_key: str,
    time_column: str | None = None,
    sql_url: str | None = None,
) -> IngestResult:
    """Read the source for the window and write it to ``lake/raw/<run_key>/part.parquet``."""
    import pandas as pd

    if not source or not source.strip():
        raise ConfigError("source is empty: give a file, folder or glob URI, or a SQL query")
    window = training_window(interval_start, interval_end, training_window_days)
    window_start, start, end = window
    files: list[str] = []
    partitioned = False
    if sql_url:
        df = _read_sql(source, sql_url, window)
        origin = "SQL source"
        if df.empty:
            raise IngestError(f"{origin}: the query returned no rows for window "
                              f"[{window_start.isoformat()}, {end.isoformat()})")
    else:
        files, partitioned = select_files(source, window_start, end)
        frames = [(uri, read_table(uri)) for uri in files]
        _check_same_columns(frames)
        df = pd.concat([f for _, f in frames], ignore_index=True)
        origin = files[0] if len(files) == 1 else f"source {source}"

    if time_column and time_column not in df.columns:
        raise IngestError(f"{origin}: time column {time_column!r} is not among the columns "
                          f"{list(df.columns)}")
    time_col = time_column or detect_time_column(df)
    outside = 0
    if time_col:
        df[time_col] = _parse_time(df, time_col, origin)
        if partitioned or sql_url:
            inside = (df[time_col] >= pd.Timestamp(window_start)) & (df[time_col] < pd.Timestamp(end))
            outside = int((~inside).sum())
            if not inside.any():
                raise IngestError(
                    f"{origin}: all {len(df)} rows fall outside the window "
                    f"[{window_start.isoformat()}, {end.isoformat()}) of column {time_col!r} "
                    f"(they span {df[time_col].min()} .. {df[time_col].max()})"
                )
            if outside:
                log.warning("%s: dropped %d row(s) outside the window", origin, outside)
            df = df[inside].reset_index(drop=True)

    out_uri = layout.raw_batch(config, run_key)
    storage.atomic_write_parquet(df, out_uri)
    log.info("ingested %d rows x %d columns from %d file(s) into %s", len(df), df.shape[1],
             len(files), out_uri)
    return IngestResult(
        uri=out_uri,
        rows=len(df),
        columns=[str(c) for c in df.columns],
        source=source,
        interval_start=start.isoformat(),
        interval_end=end.isoformat(),
        window_start=window_start.isoformat(),
        partitioned=bool(partitioned),
        files=files,
        time_column=time_col,
        rows_outside_window=outside,
    )
