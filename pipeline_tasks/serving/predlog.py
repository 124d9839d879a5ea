"""The prediction log: every served row, for monitoring, as partitioned Parquet in the lake.

``lake/predictions/date=YYYY-MM-DD/model=<model>/part-<time>-<id>.parquet``, one file per flush,
day and model (each model of a multi-model server has its own partition and columns). Each
row holds the request id, the UTC time it was predicted (``predicted_at``), the time of the event
it is about (``event_time``: the request's ``event_time`` if it gave one, else ``predicted_at``;
the ``date=`` partition is its day), the row's key (``row_id``, from the request's ``ids``, else
``<request id>-<row number>``), the model name and version, the features under their own names,
the prediction and, for binary classifiers, the score.

Off the request path: ``add`` only puts a reference to the request's columns (the arrays the
contract already made) and its answer on a queue, a few microseconds under a lock, never a
DataFrame or I/O. A background thread turns the queued requests into an Arrow table every
``ENCODE_EVERY_S`` (0.1 s; one concatenation per column, no Python loop over rows, no pandas),
the only part that holds the GIL, about a millisecond at a time; once ``ROW_GROUP_ROWS`` rows of
a day's file wait (and at the flush) they are encoded as one row group of that Parquet file, in
memory, by pyarrow without the GIL (big row groups cost a quarter of small ones per row). Every
``prediction_log_flush_s`` seconds (5 s by default), sooner when ``prediction_log_max_rows`` rows
wait, it finishes the files and writes them. The work is spread thin instead of 0.2 CPU seconds
of Python at once every 5 s, which would hold up every request on the same core, and the thread
runs at a lower CPU priority (``WRITER_NICE``), so the threads that answer go first. At most
``queue_rows`` rows wait: beyond that a request's rows are dropped, counted (``dropped_rows``,
the server's ``mlops_serving_prediction_log_dropped_rows`` counter) and warned about, never waited for. Files are written atomically, so readers never see
a partial one. ``close`` (the server's shutdown, SIGTERM included) writes what is queued before
the process exits; a crash loses at most the rows queued since the last flush.
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

#: Columns the log adds beside the features.
META_COLUMNS = ("request_id", "row_id", "predicted_at", "event_time", "model_name",
                "model_version", "prediction", "score")
_DAY_NS = 86_400 * 10**9
#: How often the writer thread turns what is queued into Arrow (the flush then finishes files).
ENCODE_EVERY_S = 0.1
#: Rows of a day's file kept as Arrow before they are encoded as one Parquet row group.
ROW_GROUP_ROWS = 16_384
#: How much nicer (lower CPU priority) the writer thread is than the server's other threads
#: (Linux sets it per thread): encoding a row group takes the core for several milliseconds,
#: and at 5 the threads that answer requests go first while the writer still gets about a
#: quarter of a busy core, more than the log needs at full load.
WRITER_NICE = 5
#: A warning about dropped rows at most this often (seconds).
DROP_WARNING_EVERY_S = 10.0


@dataclass(frozen=True)
class _Entry:
    """One request's rows as queued: references only, nothing copied on the request path."""

    request_id: str
    model_name: str
    model_version: str
    columns: Mapping[str, Any]  # feature name -> array (the contract's own arrays)
    rows: int
    output: dict[str, list]
    ids: list[str] | None
    event_time: pd.Timestamp | None
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
        # (day, model) -> the file being encoded, in memory
        self._open: dict[tuple[str, str], _OpenFile] = {}
        self._open_rows = 0  # rows encoded (or finished) and not yet written
        # finished files not yet written: (day, model), contents, rows
        self._done: list[tuple[tuple[str, str], pa.Buffer, int]] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()  # one flush at a time (the thread, close, a test)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_drop_warning = 0.0
        self.on_drop: Callable[[int], Any] | None = None  # the server's counter
        self.rows_written = 0
        self.files_written = 0
        self.write_errors = 0
        self.dropped_rows = 0
        self.dropped_requests = 0

    @property
    def queued_rows(self) -> int:
        """Rows not yet in a written file: queued, or encoded in memory."""
        return self._queued + self._open_rows

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
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
        entry = _Entry(request_id, model_name, model_version,
                       columns if columns is not None else features, rows, output, ids,
                       event_time, time.time())
        with self._lock:
            if self._queued + self._open_rows + rows > self.queue_rows:
                self.dropped_rows += rows
                self.dropped_requests += 1
                full = True
            else:
                self._queue.append(entry)
                self._queued += rows
                full = False
            wake = self._queued + self._open_rows >= self.max_rows
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
        model; returns the rows encoded. The thread does this every ``ENCODE_EVERY_S``, so the work of
        a flush is spread thin instead of taking the core for one long moment."""
        with self._write_lock:
            return self._encode()

    def _encode(self) -> int:
        with self._lock:
            entries = list(self._queue)
            self._queue.clear()
        if not entries:
            return 0
        by_model: dict[str, list[_Entry]] = {}
        for entry in entries:  # models have columns of their own: a table each
            by_model.setdefault(entry.model_name, []).append(entry)
        try:
            for model, group in by_model.items():
                for day, rows in _by_day(_table(group)):
                    self._append((day, model), rows)
        except Exception:
            with self._lock:  # back to the front of the queue: nothing is lost
                self._queue.extendleft(reversed(entries))
            raise
        rows = sum(e.rows for e in entries)
        with self._lock:
            self._queued -= rows
            self._open_rows += rows
        return rows

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
            self._encode()
            for key in list(self._open):
                self._finish(key)
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            written = 0
            while self._done:  # a failed write stays at the front, for the next flush
                (day, model), data, rows = self._done[0]
                path = storage.join(layout.prediction_partition(self.uri, day, model),
                                    f"part-{stamp}-{uuid.uuid4().hex[:8]}.parquet")
                storage.atomic_write_bytes(path, data.to_pybytes())
                self._done.pop(0)
                written += rows
                self.rows_written += rows
                self.files_written += 1
                with self._lock:
                    self._open_rows -= rows
            return written

    def _run(self) -> None:
        _nicer(WRITER_NICE)
        next_flush = time.monotonic() + self.flush_s
        while not self._stop.is_set():
            woken = self._wake.wait(max(0.0, min(ENCODE_EVERY_S,
                                                 next_flush - time.monotonic())))
            self._wake.clear()
            if woken or time.monotonic() >= next_flush:
                self._flush_logged()
                next_flush = time.monotonic() + self.flush_s
            else:
                try:
                    self.encode()
                except Exception:  # the rows stay queued; the flush retries and logs it
                    log.debug("encoding the prediction log failed; retried", exc_info=True)
        self._flush_logged()

    def _flush_logged(self) -> None:
        started = time.perf_counter()
        try:
            written = self.flush()
        except Exception:  # keep serving; the next flush retries with the same rows
            self.write_errors += 1
            log.exception("could not write the prediction log to %s", self.uri)
            return
        if written:
            log.debug("prediction log: %d rows in %.3f s", written, time.perf_counter() - started)

    def close(self, timeout: float = 30.0) -> None:
        """Stop the thread after a last flush (everything queued is written)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._queued or self._open_rows:
            self._flush_logged()


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


def _writer(sink: pa.BufferOutputStream, schema: pa.Schema):
    """A Parquet writer for the log: dictionaries only where values repeat (texts, integers,
    booleans, the model's name and version; not the per-row keys and times, nor floating point
    numbers, where trying one costs half the encoding), statistics only on the times readers
    filter on."""
    import pyarrow.parquet as pq

    repeating = [f.name for f in schema
                 if f.name not in _UNIQUE and not pa.types.is_floating(f.type)]
    return pq.ParquetWriter(sink, schema, use_dictionary=repeating,
                            write_statistics=["predicted_at", "event_time"])


def _utc(moment: Any) -> pd.Timestamp:
    """A request's event time (a ``Timestamp`` or a ``datetime``) in UTC; naive means UTC."""
    when = pd.Timestamp(moment)
    return when.tz_localize("UTC") if when.tzinfo is None else when.tz_convert("UTC")


def _by_day(batch: pa.Table):
    """``(YYYY-MM-DD, rows)`` per day of ``event_time`` (almost always one)."""
    import pyarrow.compute as pc

    days = pc.cast(batch["event_time"], pa.int64()).to_numpy() // _DAY_NS
    unique = np.unique(days)
    for day in unique:
        rows = batch if len(unique) == 1 else batch.filter(pa.array(days == day))
        yield str(np.datetime64(int(day), "D")), rows


def _column(values: np.ndarray) -> pa.Array:
    """A NumPy column as Arrow, as pandas would write it (NaN and None are nulls)."""
    return pa.array(values, from_pandas=True)


def _table(entries: list[_Entry]) -> pa.Table:
    """The queued requests as one Arrow table, built column by column: one concatenation per
    feature, the per-request columns (request id, model, times) repeated with ``take`` and
    ``numpy.repeat``, and generated row ids joined in Arrow, with no Python loop over rows
    (given ``ids`` are only flattened)."""
    import pyarrow.compute as pc

    keys = list(entries[0].columns)
    names = [str(c) for c in keys]
    clash = {c for c in names if c in META_COLUMNS}
    counts = np.fromiter((e.rows for e in entries), dtype=np.int64, count=len(entries))
    owner = pa.array(np.repeat(np.arange(len(entries)), counts))  # each row's request
    columns: dict[str, pa.Array] = {}
    get = operator.itemgetter(*keys)  # each request's columns at once, then per column
    per_request = (get(e.columns) for e in entries)
    by_column = zip(*per_request) if len(keys) > 1 else [tuple(per_request)]
    for name, parts in zip(names, by_column, strict=True):
        columns[f"feature_{name}" if clash else name] = _column(np.concatenate(parts))
    request_ids = pa.array([e.request_id for e in entries], pa.string())
    columns["request_id"] = request_ids.take(owner)
    if all(e.ids is None for e in entries):  # ``<request id>-<row number>``
        starts = np.repeat(np.cumsum(counts) - counts, counts)
        number = pa.array(np.arange(int(counts.sum())) - starts)
        columns["row_id"] = pc.binary_join_element_wise(
            columns["request_id"], pc.cast(number, pa.string()), "-")
    else:
        columns["row_id"] = pa.array([key for e in entries for key in (
            e.ids if e.ids is not None else [f"{e.request_id}-{i}" for i in range(e.rows)])],
            pa.string())
    predicted_ns = np.repeat(np.array([round(e.predicted_at * 1e9) for e in entries],
                                      dtype=np.int64), counts)
    columns["predicted_at"] = pa.array(predicted_ns, pa.timestamp("ns", tz="UTC"))
    if all(e.event_time is None for e in entries):
        columns["event_time"] = columns["predicted_at"]
    else:
        stamps = np.array([_utc(e.event_time).value if e.event_time is not None
                           else round(e.predicted_at * 1e9) for e in entries], dtype=np.int64)
        columns["event_time"] = pa.array(np.repeat(stamps, counts), pa.timestamp("ns", tz="UTC"))
    columns["model_name"] = pa.array([e.model_name for e in entries], pa.string()).take(owner)
    columns["model_version"] = pa.array([e.model_version for e in entries],
                                        pa.string()).take(owner)
    columns["prediction"] = _column(np.concatenate([np.asarray(e.output["predictions"])
                                                    for e in entries]))
    if all("scores" in e.output for e in entries):
        columns["score"] = _column(np.concatenate([np.asarray(e.output["scores"], dtype=float)
                                                   for e in entries]))
    return pa.table(columns)
