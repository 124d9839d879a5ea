"""The prediction log: every served row, for monitoring, as partitioned Parquet in the lake.

``lake/predictions/date=YYYY-MM-DD/model=<model>/part-<time>-<id>.parquet``, one file per flush,
day and model (each model of a multi-model server has its own partition and columns). Each
row holds the request id, the UTC time it was predicted (``predicted_at``), the time of the event
it is about (``event_time``: the request's ``event_time`` if it gave one, else ``predicted_at``;
the ``date=`` partition is its day), the row's key (``row_id``, from the request's ``ids``, else
``<request id>-<row number>``: such a row's file holds its ``row_number`` and a null ``row_id``,
and ``read_log_file`` joins the key), the model name and version, the features under their own
names, the prediction and, for binary classifiers, the score.

Off the request path: ``add`` puts references to the request's columns (the arrays the
contract already made; a big request's text columns as Arrow strings, ``_texts_now``) and its
answer on a queue, a few microseconds under a lock, never a DataFrame or I/O. Two background
threads do the rest:

- the collector turns the queued requests into Arrow tables once ``COLLECT_REQUESTS`` (512)
  requests or ``COLLECT_ROWS`` (4,096) rows wait, and at the latest every ``COLLECT_EVERY_S``
  (1 s): one concatenation per column, no Python loop over rows, no pandas, the only part that
  holds the GIL, a few milliseconds at most at a time. It runs at the server's own priority: a
  thread the scheduler holds back while it holds the GIL would stall the event loop;
- the writer, at a lower CPU priority (``WRITER_NICE``, so the threads that answer go first),
  encodes those tables as row groups of each day's Parquet file in memory, by pyarrow without
  the GIL, once ``ROW_GROUP_ROWS`` rows of a file wait (small enough not to hold up much the
  requests it overlaps, big enough to cost little more per row), and every
  ``prediction_log_flush_s`` seconds (5 s by default; sooner when ``prediction_log_max_rows``
  rows wait) finishes the files and writes them.

The work is spread thin instead of 0.2 CPU seconds of Python at once every 5 s, which would hold
up every request on the same core. At most ``queue_rows`` rows wait: beyond that a request's
rows are dropped, counted (``dropped_rows``, the server's
``mlops_serving_prediction_log_dropped_rows`` counter) and warned about, never waited for.
Requests whose columns cannot be joined with the others' are made tables of their own; rows
that cannot be made a table even alone (a library caller's columns of another length) are
dropped the same way, counted and logged by type, instead of being retried ahead of every row
after them.
Files are written atomically, so readers never see a partial one; what a killed server left
half written is swept once per folder and process (a day's folder gains a file per flush:
listing it at every flush would cost more each time). ``close`` (the server's shutdown, SIGTERM
included) writes what is queued before the process exits; a crash loses at most the rows queued
since the last flush.
"""

from __future__ import annotations

import logging
import operator
import os
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline_tasks.core import layout, storage

log = logging.getLogger(__name__)

#: Columns the log's files hold beside the features (a feature of such a name is prefixed).
META_COLUMNS = ("request_id", "row_id", "row_number", "predicted_at", "event_time", "model_name",
                "model_version", "prediction", "score")
#: ... and those ``read_log_file`` gives: ``row_number`` becomes the key (``row_id``) of a
#: request that gave no ids.
READ_COLUMNS = tuple(c for c in META_COLUMNS if c != "row_number")
_DAY_NS = 86_400 * 10**9
#: The collector turns what is queued into Arrow once this many requests or rows wait (a few
#: milliseconds of GIL at most: text values are Python objects, about a microsecond a row),
#: and at the latest every ``COLLECT_EVERY_S``. Each turn has a fixed cost too, so at a lone
#: client's pace a turn per second, not ten (ticks every 0.1 s cost a single-row client about
#: 8 % of its throughput once a row's prediction took 1-2 ms).
COLLECT_REQUESTS = 512
COLLECT_ROWS = 4096
COLLECT_EVERY_S = 1.0
#: Requests of at least this many rows hand their texts over as Arrow (``_texts_now``).
TEXTS_NOW_ROWS = 16
#: Rows of a day's file kept as Arrow before they are encoded as one Parquet row group. The
#: encoding works through every column of them on the serving core, and the requests it
#: overlaps take longer than the writer's own CPU explains (likely as its data evicts theirs
#: from the core's caches): at 16,384 rows (~5 MB of columns) the serving benchmark's 100-row
#: requests that overlapped an encoding took 1.5x the others, and the log-on server's p99 was
#: 1.5x the log-off one's; at 4,096 rows 1.3x, for 9 % more encoding per row and 11 % bigger
#: files on realistic rows (docs/serving.md).
ROW_GROUP_ROWS = 4096
#: How much nicer (lower CPU priority) the writer thread is than the server's other threads
#: (Linux sets it per thread): encoding a row group takes the core for several milliseconds,
#: and at 5 the threads that answer requests go first while the writer still gets about a
#: quarter of a busy core, more than the log needs at full load.
WRITER_NICE = 5
#: A warning about dropped rows at most this often (seconds).
DROP_WARNING_EVERY_S = 10.0
#: In the writer's hand-off: write the files (once the tables before it are encoded).
_FLUSH = object()


@dataclass(frozen=True)
class _Entry:
    """The rows of one request, or of the requests one model call answered together, as queued:
    references only, nothing copied on the request path. Per request: its id, rows, row keys
    and event time; the columns and the answer hold all the requests' rows, in that order."""

    request_ids: list[str]
    counts: list[int]
    model_name: str
    model_version: str
    columns: Mapping[str, Any]  # feature name -> array (the contract's own; texts as Arrow)
    rows: int
    output: dict[str, list]
    ids: list[list[str] | None]
    event_times: list[pd.Timestamp | None]
    predicted_at: float


@dataclass
class _OpenFile:
    """A day's Parquet file being encoded in memory: the Arrow tables not yet encoded
    (``waiting``), then a row group each ``ROW_GROUP_ROWS`` rows."""

    sink: pa.BufferOutputStream
    writer: Any  # pyarrow.parquet.ParquetWriter
    schema: pa.Schema
    rows: int = 0
    waiting: list[pa.Table] = field(default_factory=list)
    waiting_rows: int = 0

    def add(self, rows: pa.Table) -> None:
        self.waiting.append(rows)
        self.waiting_rows += rows.num_rows
        self.rows += rows.num_rows
        if self.waiting_rows >= ROW_GROUP_ROWS:
            self.encode()

    def encode(self) -> None:
        """What waits as one row group (pyarrow encodes it without holding the GIL)."""
        if self.waiting:
            self.writer.write_table(pa.concat_tables(self.waiting))
            self.waiting, self.waiting_rows = [], 0


class PredictionLog:
    def __init__(self, uri: str, *, flush_s: float, max_rows: int,
                 queue_rows: int | None = None):
        self.uri = uri.rstrip("/")
        self.flush_s = flush_s
        self.max_rows = max_rows
        self.queue_rows = queue_rows or 10 * max_rows
        self._queue: deque[_Entry] = deque()
        self._queued = 0
        self._queued_requests = 0
        self._flush_asked = False
        # (day, model) -> the file being encoded, in memory
        self._open: dict[tuple[str, str], _OpenFile] = {}
        self._open_rows = 0  # rows encoded (or finished) and not yet written
        # finished files not yet written: (day, model), contents, rows
        self._done: list[tuple[tuple[str, str], pa.Buffer, int]] = []
        #: partition folders whose partial files (a killed server's) were swept by this log
        self._swept: set[str] = set()
        # Arrow tables the collector made, in order, for the writer: ((day, model), table), or
        # _FLUSH (write the files once what comes before is encoded)
        self._tables: deque[tuple[tuple[str, str], pa.Table] | object] = deque()
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()  # one writer at a time (the thread, close, a test)
        self._wake = threading.Event()  # the collector: rows to take now
        self._handed = threading.Event()  # the writer: tables (or a flush) to take
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None  # the collector
        self._writer: threading.Thread | None = None
        self._last_drop_warning = 0.0
        self.on_drop: Callable[[int], Any] | None = None  # the server's counter
        #: each thread's CPU clock (``time.pthread_getcpuclockid``, taken by the thread itself)
        self._clocks: dict[str, int] = {}
        self.rows_written = 0
        self.files_written = 0
        self.write_errors = 0
        self.dropped_rows = 0
        self.dropped_requests = 0

    @property
    def queued_rows(self) -> int:
        """Rows not yet in a written file: queued, or encoded in memory."""
        return self._queued + self._open_rows

    def cpu_seconds(self) -> dict[str, float]:
        """The CPU time each of the log's threads (``collector``, ``writer``) has used so far,
        read at once from its CPU clock (the server's ``/metrics``: what the log costs, apart
        from the answers). Empty where threads have no CPU clock of their own."""
        out = {}
        for name, clock in list(self._clocks.items()):
            try:
                out[name] = time.clock_gettime(clock)
            except OSError:  # the thread has ended (a closed log)
                continue
        return out

    def _own_clock(self, name: str) -> None:
        """Note the calling thread's CPU clock under ``name``."""
        try:
            self._clocks[name] = time.pthread_getcpuclockid(threading.get_ident())
        except (AttributeError, OSError):  # no such clock here (not a Unix)
            pass

    def start(self) -> None:
        self._writer = threading.Thread(target=self._write_loop, name="prediction-log-writer",
                                        daemon=True)
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._writer.start()
        self._thread.start()

    def add(self, request_id: str, model_name: str, model_version: str,
            features: pd.DataFrame | int, output: dict[str, list], *,
            ids: list[str] | None = None, event_time: pd.Timestamp | None = None,
            columns: Mapping[str, Any] | None = None) -> bool:
        """Queue one request's rows: ``features`` (a DataFrame), or their number with
        ``columns``, the feature arrays (the server's checked request: nothing is converted
        here). False: the queue was full and the rows were dropped (counted and warned
        about)."""
        rows = features if isinstance(features, int) else len(features)
        if columns is None and isinstance(features, int):
            raise TypeError("give the features as a DataFrame, or their number and columns")
        return self.add_batch(model_name, model_version, [request_id], [rows],
                              columns if columns is not None else features, output,
                              ids=[ids], event_times=[event_time])

    def add_batch(self, model_name: str, model_version: str, request_ids: list[str],
                  counts: list[int], columns: Mapping[str, Any], output: dict[str, list], *,
                  ids: list[list[str] | None] | None = None,
                  event_times: list[pd.Timestamp | None] | None = None) -> bool:
        """Queue the rows of the requests one model call answered: ``counts`` rows each, in
        ``columns`` and ``output`` one after the other (the batcher's combined columns, so
        nothing is concatenated twice); ``ids`` and ``event_times`` per request. False: the
        queue was full and all their rows were dropped (counted and warned about)."""
        rows = sum(counts)
        if not rows:  # nothing to log (the server refuses such requests; a library caller)
            return True
        entry = _Entry(request_ids, counts, model_name, model_version, _texts_now(columns, rows),
                       rows, output,
                       ids if ids is not None else [None] * len(counts),
                       event_times if event_times is not None else [None] * len(counts),
                       time.time())
        with self._lock:
            if self._queued + self._open_rows + rows > self.queue_rows:
                self.dropped_rows += rows
                self.dropped_requests += len(counts)
                full = True
            else:
                self._queue.append(entry)
                self._queued += rows
                self._queued_requests += len(counts)
                full = False
            flush = self._queued + self._open_rows >= self.max_rows
            self._flush_asked = self._flush_asked or flush
            wake = flush or self._queued_requests >= COLLECT_REQUESTS \
                or self._queued >= COLLECT_ROWS
        if full:
            self._dropped(rows)
            return False
        if wake:
            self._wake.set()
        return True

    def _dropped(self, rows: int) -> None:
        if self.on_drop is not None:
            self.on_drop(rows)
        now = time.monotonic()
        if now - self._last_drop_warning >= DROP_WARNING_EVERY_S:
            self._last_drop_warning = now
            log.warning("prediction log queue full (%d rows waiting for %s): dropped %d row(s); "
                        "%d dropped so far. The store is slower than the traffic: check it, or "
                        "raise prediction_log_queue_rows", self.queued_rows, self.uri, rows,
                        self.dropped_rows)

    def encode(self) -> int:
        """Turn what is queued now into row groups of the open (in-memory) file of each day and
        model; returns the rows taken. (The threads do this in two steps: ``_collect`` every
        ``COLLECT_EVERY_S`` at the latest, then the writer.)"""
        with self._write_lock:
            rows = self._collect()
            self._drain_tables()
            return rows

    def _collect(self) -> int:
        """The queued requests as Arrow tables, a table per day and model, handed to the
        writer (``_tables``); returns their rows. The part that holds the GIL: the collector
        thread does it at the server's own priority, so it never keeps the GIL while the
        scheduler holds it back."""
        with self._lock:
            entries = list(self._queue)
            self._queue.clear()
            self._queued_requests = 0
        if not entries:
            return 0
        try:
            tables, lost = _tables(entries), []
        except Exception:  # noqa: BLE001 (columns that do not fit each other's: each alone)
            tables, lost = self._each(entries)
        rows = sum(e.rows for e in entries)
        dropped = sum(e.rows for e in lost)
        with self._lock:  # the request path counts its drops under it too
            self._queued -= rows
            self._open_rows += rows - dropped
            self._tables.extend(tables)
            self.dropped_rows += dropped
            self.dropped_requests += sum(len(e.counts) for e in lost)
        if dropped and self.on_drop is not None:
            self.on_drop(dropped)
        self._handed.set()
        return rows - dropped

    @staticmethod
    def _each(entries: list[_Entry]) -> tuple[list, list[_Entry]]:
        """The tables of each entry on its own, when together they fail (a column whose type
        does not fit the other requests', a library caller's other columns), and the entries
        that fail even alone (a column of another length than its rows, say): those can never
        be written, so their rows are dropped, counted and logged (by type, not by the values,
        which are the clients'), instead of holding up every later row."""
        tables: list = []
        lost: list[_Entry] = []
        why: dict[tuple[str, str], dict[str, list[str]]] = {}  # model -> error type -> requests
        rows_of: dict[tuple[str, str], int] = {}  # model -> rows dropped
        for entry in entries:
            try:
                tables.extend(_tables([entry]))
            except Exception as exc:  # noqa: BLE001 (any failure: the same one each time)
                lost.append(entry)
                model = (entry.model_name, entry.model_version)
                why.setdefault(model, {}).setdefault(type(exc).__name__, []).append(
                    entry.request_ids[0])
                rows_of[model] = rows_of.get(model, 0) + entry.rows
        for (name, version), errors in why.items():  # a line a model and turn, not a request
            rows = rows_of[(name, version)]
            log.error("prediction log: dropped %d row(s) of %s v%s that cannot be made a table "
                      "(%s)", rows, name, version, "; ".join(
                          f"{kind}: request {ids[0]}"
                          + (f" and {len(ids) - 1} more" if len(ids) > 1 else "")
                          for kind, ids in errors.items()))
        return tables, lost

    def _drain_tables(self) -> bool:
        """The handed tables added to their open files, in order (with ``_write_lock`` held);
        a table leaves the hand-off only once added, so a failure loses nothing. True when a
        flush was asked for among them."""
        flush = False
        while True:
            with self._lock:
                if not self._tables:
                    return flush
                item = self._tables[0]
            if item is _FLUSH:
                flush = True
            else:
                self._append(*item)
            with self._lock:
                self._tables.popleft()

    def _append(self, key: tuple[str, str], rows: pa.Table) -> None:
        """``rows`` added to the open file of ``key`` (day, model), to be encoded with what
        waits there; a file whose columns or types they do not fit (a column that was all nulls
        so far, say) is finished and a new one begun."""
        current = self._open.get(key)
        if current is not None and not rows.schema.equals(current.schema):
            try:  # other column names are a ValueError, a type it cannot take an ArrowException
                rows = rows.cast(current.schema)
            except (ValueError, pa.ArrowException):
                self._finish(key)
                current = None
        if current is None:
            sink = pa.BufferOutputStream()
            current = self._open[key] = _OpenFile(sink, _writer(sink, rows.schema), rows.schema)
        current.add(rows)

    def _finish(self, key: tuple[str, str]) -> None:
        current = self._open.pop(key)
        current.encode()
        current.writer.close()
        self._done.append((key, current.sink.getvalue(), current.rows))

    def flush(self) -> int:
        """Write what is queued or encoded now, one file per day and model; returns the rows
        written."""
        with self._write_lock:
            self._collect()
            return self._write_files()

    def _write_files(self) -> int:
        """What was handed over encoded, the open files finished and written (with
        ``_write_lock`` held); returns the rows written."""
        self._drain_tables()
        for key in list(self._open):
            self._finish(key)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        written = 0
        while self._done:  # a failed write stays at the front, for the next flush
            (day, model), data, rows = self._done[0]
            folder = layout.prediction_partition(self.uri, day, model)
            if folder not in self._swept:  # once: a day's folder grows a file per flush
                storage.sweep_partial_writes_in(folder)
                self._swept.add(folder)
            path = storage.join(folder, f"part-{stamp}-{uuid.uuid4().hex[:8]}.parquet")
            storage.atomic_write_bytes(path, data.to_pybytes(), sweep=False)  # a new name
            self._done.pop(0)
            written += rows
            self.rows_written += rows
            self.files_written += 1
            with self._lock:
                self._open_rows -= rows
        return written

    def _run(self) -> None:
        """The collector: once ``COLLECT_REQUESTS`` requests (or ``COLLECT_ROWS`` rows)
        wait, and at the latest every ``COLLECT_EVERY_S``, the queue becomes Arrow tables for
        the writer; every ``flush_s`` (or when ``max_rows`` rows wait) a flush is asked for."""
        self._own_clock("collector")
        next_flush = time.monotonic() + self.flush_s
        while not self._stop.is_set():
            self._wake.wait(max(0.0, min(COLLECT_EVERY_S, next_flush - time.monotonic())))
            self._wake.clear()
            with self._lock:
                asked, self._flush_asked = self._flush_asked, False
            flush = asked or self._stop.is_set() or time.monotonic() >= next_flush
            try:
                self._collect()
            except Exception:  # never the collector's end (rows that fail are dropped there)
                log.exception("prediction log: a collector turn failed")
            if flush:
                with self._lock:
                    self._tables.append(_FLUSH)
                self._handed.set()
                next_flush = time.monotonic() + self.flush_s

    def _write_loop(self) -> None:
        """The writer, at a lower CPU priority: encodes the handed tables as row groups
        (without the GIL) and writes the files when a flush comes."""
        _nicer(WRITER_NICE)
        self._own_clock("writer")
        while True:
            self._handed.wait()
            self._handed.clear()
            with self._write_lock:
                try:
                    flush = self._drain_tables()
                except Exception:  # the table stays handed over; the next turn retries
                    log.debug("encoding the prediction log failed; retried", exc_info=True)
                    flush = False
                if flush:
                    self._logged(self._write_files)
            if self._stop.is_set() and self._thread is not None and \
                    not self._thread.is_alive():
                return

    def _logged(self, write: Callable[[], int]) -> None:
        started = time.perf_counter()
        try:
            written = write()
        except Exception:  # keep serving; the next flush retries with the same rows
            self.write_errors += 1
            log.exception("could not write the prediction log to %s", self.uri)
            return
        if written:
            log.debug("prediction log: %d rows in %.3f s", written, time.perf_counter() - started)

    def close(self, timeout: float = 30.0) -> None:
        """Stop the threads after a last flush (everything queued is written)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._writer is not None:
            self._handed.set()
            self._writer.join(timeout)
        if self._queued or self._open_rows:
            self._logged(self.flush)


def _nicer(step: int) -> None:
    """This thread's niceness raised by ``step`` (on Linux, where it is per thread; elsewhere,
    where it would be the whole process's, nothing changes)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + step)
    except OSError as exc:  # never a reason not to log
        log.debug("prediction log: could not lower the writer's priority: %s", exc)


#: Columns unique per row: a dictionary would only cost time (the score is a float, below).
_UNIQUE = ("request_id", "row_id", "predicted_at", "event_time")


def read_log_file(source: Any) -> pd.DataFrame:
    """The rows of one file of the log (a path or an open file), each with its key ``row_id``:
    a file holds the key of a request that gave no ids as its row number (``<request id>-<row
    number>`` is joined here); files of batch scoring and of earlier servers hold every key."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(source)
    if "row_number" in table.column_names:  # written beside request_id and row_id (``_table``)
        joined = pc.binary_join_element_wise(
            table["request_id"], pc.cast(table["row_number"], pa.string()), "-")
        table = table.set_column(table.column_names.index("row_id"), "row_id",
                                 pc.coalesce(table["row_id"], joined))
        table = table.drop_columns(["row_number"])
    return table.to_pandas()


def _writer(sink: pa.BufferOutputStream, schema: pa.Schema):
    """A Parquet writer for the log: dictionaries only where values repeat (texts, integers,
    booleans, the model's name and version; not the per-row keys and times, nor floating point
    numbers, where trying one costs half the encoding), statistics only on the times readers
    filter on."""
    import pyarrow.parquet as pq

    repeating = [f.name for f in schema
                 if f.name not in _UNIQUE and not pa.types.is_floating(f.type)]
    return pq.ParquetWriter(sink, schema, use_dictionary=repeating,
                            write_statistics=["predicted_at", "event_time"],
                            # without the Arrow schema, the dictionary columns (``_repeated``)
                            # read back as the strings they hold
                            store_schema=False)


def _utc(moment: Any) -> pd.Timestamp:
    """A request's event time (a ``Timestamp`` or a ``datetime``) in UTC; naive means UTC."""
    when = pd.Timestamp(moment)
    return when.tz_localize("UTC") if when.tzinfo is None else when.tz_convert("UTC")


def _by_day(batch: pa.Table):
    """``(YYYY-MM-DD, rows)`` per day of ``event_time`` (almost always one)."""
    import pyarrow.compute as pc

    times = pc.cast(batch["event_time"], pa.int64())
    span = pc.min_max(times)
    first, last = span["min"].as_py() // _DAY_NS, span["max"].as_py() // _DAY_NS
    if first == last:  # one pass over the times, no day per row
        yield str(np.datetime64(first, "D")), batch
        return
    days = times.to_numpy() // _DAY_NS
    for day in np.unique(days):
        yield str(np.datetime64(int(day), "D")), batch.filter(pa.array(days == day))


def _column(values: np.ndarray) -> pa.Array:
    """A NumPy column as Arrow, as pandas would write it (NaN and None are nulls). Text (an
    object column of str and None, the first a str) is converted as strings at once: letting
    pyarrow infer the type looks at every value, 15-20x slower (3.4 ms for 4,096 values, all of
    it holding the GIL); anything else in an object column (NaN for a missing text, booleans
    with None, nothing but None) is inferred."""
    if values.dtype == object and len(values) and type(values[0]) is str:
        try:
            return pa.array(values, type=pa.string())
        except (pa.ArrowTypeError, pa.ArrowInvalid):
            pass
    return pa.array(values, from_pandas=True)


def _texts_now(columns: Mapping[str, Any], rows: int) -> Mapping[str, Any]:
    """``columns`` with their text (object) columns as Arrow now (about 35 ns a value), while
    the request's values are still in the CPU's caches: the collector, converting them up to a
    turn later, cold, took twice as long, 40 % of its time (its CPU per 100-row request went
    from about 78 to 40 us). Other columns stay the arrays they are. Fewer than
    ``TEXTS_NOW_ROWS`` rows stay as they are too: then converting costs what a call costs
    (about 5 us a column, most of a single row's hand-off), and the collector converts such
    requests' values together, one call a column for the whole turn."""
    if rows < TEXTS_NOW_ROWS:
        return columns
    out = None
    for name, values in columns.items():
        if getattr(values, "dtype", None) == object:
            if out is None:
                out = dict(columns)
            out[name] = _column(np.asarray(values))
    return out if out is not None else columns


def _joined(parts: tuple) -> pa.Array:
    """One column's parts (an entry's each: NumPy arrays, or Arrow where ``_texts_now``
    converted them) as one Arrow array; NumPy parts side by side are converted together."""
    arrays: list[pa.Array] = []
    pending: list[np.ndarray] = []

    def convert_pending() -> None:
        if pending:
            arrays.append(_column(np.concatenate(pending) if len(pending) > 1 else pending[0]))
            pending.clear()

    for part in parts:
        if isinstance(part, pa.Array):
            convert_pending()
            arrays.append(part)
        else:
            pending.append(np.asarray(part))
    convert_pending()
    if len(arrays) == 1:
        return arrays[0]
    if len({array.type for array in arrays}) == 1:
        return pa.concat_arrays(arrays)
    # an entry whose values were all missing (null type) beside texts, say: promoted as
    # pandas would (one column, several chunks, one type)
    return pa.concat_tables([pa.table({"v": array}) for array in arrays],
                            promote_options="permissive")["v"].combine_chunks()


def _repeated(values: list[str], rows: list[int]) -> pa.DictionaryArray:
    """Per-entry texts (the model's name, its version) as one value per row: a dictionary of the
    few distinct ones and an index per row, which the Parquet writer takes as its own dictionary
    encoding, with no text per row to copy or hash (it reads back as plain strings)."""
    distinct, index = np.unique(np.array(values, dtype=object), return_inverse=True)
    return pa.DictionaryArray.from_arrays(
        pa.array(np.repeat(index.astype(np.int32), rows)), pa.array(distinct, pa.string()))


def _tables(entries: list[_Entry]) -> list[tuple[tuple[str, str], pa.Table]]:
    """The entries as Arrow tables, one per model (models have columns of their own) and day."""
    by_model: dict[str, list[_Entry]] = {}
    for entry in entries:
        by_model.setdefault(entry.model_name, []).append(entry)
    return [((day, model), rows) for model, group in by_model.items()
            for day, rows in _by_day(_table(group))]


def _table(entries: list[_Entry]) -> pa.Table:
    """The queued entries as one Arrow table, built column by column: one concatenation per
    feature, the per-request columns (request id, times, row numbers) repeated with ``take`` and
    ``numpy``, and the per-entry ones (model) as dictionaries, with no Python loop over rows
    (given ``ids`` are only flattened)."""
    keys = list(entries[0].columns)
    names = [str(c) for c in keys]
    clash = {c for c in names if c in META_COLUMNS}
    counts = np.fromiter((n for e in entries for n in e.counts), dtype=np.int64)
    owner = pa.array(np.repeat(np.arange(len(counts)), counts))  # each row's request
    columns: dict[str, pa.Array] = {}
    get = operator.itemgetter(*keys)  # each entry's columns at once, then per column
    per_entry = (get(e.columns) for e in entries)
    by_column = zip(*per_entry) if len(keys) > 1 else [tuple(per_entry)]
    for name, parts in zip(names, by_column, strict=True):
        columns[f"feature_{name}" if clash else name] = _joined(parts)
    request_ids = pa.array([r for e in entries for r in e.request_ids], pa.string())
    columns["request_id"] = request_ids.take(owner)
    # the row's key: the request's ``ids``, else ``<request id>-<row number>``, joined when
    # read (``read_log_file``): written as the number, not as one more text per row
    given = [ids for e in entries for ids in e.ids]
    if all(ids is None for ids in given):
        columns["row_id"] = pa.nulls(len(owner), pa.string())
    else:
        columns["row_id"] = pa.array([key for ids, n in zip(given, counts, strict=True)
                                      for key in (ids if ids is not None else [None] * n)],
                                     pa.string())
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    columns["row_number"] = pa.array((np.arange(len(owner)) - starts).astype(np.int32))
    predicted = np.array([round(e.predicted_at * 1e9) for e in entries for _ in e.counts],
                         dtype=np.int64)
    columns["predicted_at"] = pa.array(np.repeat(predicted, counts), pa.timestamp("ns", tz="UTC"))
    events = [(t, e.predicted_at) for e in entries for t in e.event_times]
    if all(t is None for t, _ in events):
        columns["event_time"] = columns["predicted_at"]
    else:
        stamps = np.array([_utc(t).value if t is not None else round(at * 1e9)
                           for t, at in events], dtype=np.int64)
        columns["event_time"] = pa.array(np.repeat(stamps, counts), pa.timestamp("ns", tz="UTC"))
    rows = [e.rows for e in entries]
    columns["model_name"] = _repeated([e.model_name for e in entries], rows)
    columns["model_version"] = _repeated([e.model_version for e in entries], rows)
    columns["prediction"] = _column(np.concatenate([np.asarray(e.output["predictions"])
                                                    for e in entries]))
    if all("scores" in e.output for e in entries):
        columns["score"] = _column(np.concatenate([np.asarray(e.output["scores"], dtype=float)
                                                   for e in entries]))
    return pa.table(columns)
