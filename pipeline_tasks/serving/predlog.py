"""The prediction log: every served row, for monitoring, as partitioned Parquet in the lake.

``lake/predictions/date=YYYY-MM-DD/part-<time>-<id>.parquet``, one file per flush and day. Each
row holds the request id, the UTC time it was predicted (``predicted_at``), the time of the event
it is about (``event_time``: the request's ``event_time`` if it gave one, else ``predicted_at``;
the ``date=`` partition is its day), the row's key (``row_id``, from the request's ``ids``, else
``<request id>-<row number>``), the model name and version, the features under their own names,
the prediction and, for binary classifiers, the score.

Off the request path: ``add`` only puts a reference to the request's columns (the arrays the
contract already made) and its answer on a queue, a few microseconds under a lock, never a
DataFrame or I/O. A background thread turns the queued requests into one table per flush
(one ``numpy.concatenate`` per column) and writes it every ``prediction_log_flush_s`` seconds
(5 s by default), sooner when ``prediction_log_max_rows`` rows wait; pyarrow writes the Parquet
without holding the GIL. At most ``queue_rows`` rows wait: beyond that a request's rows are
dropped, counted (``dropped_rows``, the server's ``mlops_serving_prediction_log_dropped_rows``
counter) and warned about, never waited for. Files are written atomically, so readers never see
a partial one. ``close`` (the server's shutdown, SIGTERM included) writes what is queued before
the process exits; a crash loses at most the rows queued since the last flush.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from pipeline_tasks.core import storage

log = logging.getLogger(__name__)

#: Columns the log adds beside the features.
META_COLUMNS = ("request_id", "row_id", "predicted_at", "event_time", "model_name",
                "model_version", "prediction", "score")
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


class PredictionLog:
    def __init__(self, uri: str, *, flush_s: float, max_rows: int,
                 queue_rows: int | None = None):
        self.uri = uri.rstrip("/")
        self.flush_s = flush_s
        self.max_rows = max_rows
        self.queue_rows = queue_rows or 10 * max_rows
        self._queue: deque[_Entry] = deque()
        self._queued = 0
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
        return self._queued

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def add(self, request_id: str, model_name: str, model_version: str, features: pd.DataFrame,
            output: dict[str, list], *, ids: list[str] | None = None,
            event_time: pd.Timestamp | None = None,
            columns: Mapping[str, Any] | None = None) -> bool:
        """Queue one request's rows (``columns``: the feature arrays behind ``features``, when
        the caller has them, so nothing is converted here). False: the queue was full and the
        rows were dropped (counted and warned about)."""
        rows = len(features)
        entry = _Entry(request_id, model_name, model_version,
                       columns if columns is not None else features, rows, output, ids,
                       event_time, time.time())
        with self._lock:
            if self._queued + rows > self.queue_rows:
                self.dropped_rows += rows
                self.dropped_requests += 1
                full = True
            else:
                self._queue.append(entry)
                self._queued += rows
                full = False
            wake = self._queued >= self.max_rows
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
                        "raise prediction_log_queue_rows", self._queued, self.uri, rows,
                        self.dropped_rows)

    def flush(self) -> int:
        """Write what is queued now; returns the rows written."""
        with self._write_lock:
            with self._lock:
                entries = list(self._queue)
                self._queue.clear()
            if not entries:
                return 0
            try:
                written = self._write(_table(entries))
            except Exception:
                with self._lock:  # back to the front of the queue: nothing is lost
                    self._queue.extendleft(reversed(entries))
                raise
            with self._lock:
                self._queued -= sum(e.rows for e in entries)
            return written

    def _write(self, batch: pd.DataFrame) -> int:
        day = batch["event_time"].dt.strftime("%Y-%m-%d")
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        written = 0
        for value, rows in batch.groupby(day, sort=True):
            path = f"{self.uri}/date={value}/part-{stamp}-{uuid.uuid4().hex[:8]}.parquet"
            storage.atomic_write_parquet(rows.reset_index(drop=True), path)
            written += len(rows)
            self.files_written += 1
        self.rows_written += written
        return written

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_s)
            self._wake.clear()
            self._flush_logged()
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
        if self._queued:
            self._flush_logged()


def _utc(moment: Any) -> pd.Timestamp:
    """A request's event time (a ``Timestamp`` or a ``datetime``) in UTC; naive means UTC."""
    when = pd.Timestamp(moment)
    return when.tz_localize("UTC") if when.tzinfo is None else when.tz_convert("UTC")


def _table(entries: list[_Entry]) -> pd.DataFrame:
    """The queued requests as one frame: one concatenation per column, the meta columns built
    with ``numpy.repeat``."""
    names = [str(c) for c in entries[0].columns]
    clash = {c for c in names if c in META_COLUMNS}
    data: dict[str, Any] = {}
    for name in names:
        parts = [np.asarray(e.columns[name]) for e in entries]
        data[f"feature_{name}" if clash else name] = np.concatenate(parts)
    counts = np.fromiter((e.rows for e in entries), dtype=np.int64, count=len(entries))
    data["request_id"] = np.repeat(np.array([e.request_id for e in entries], dtype=object),
                                   counts)
    data["row_id"] = np.array([key for e in entries for key in (
        e.ids if e.ids is not None else [f"{e.request_id}-{i}" for i in range(e.rows)])],
        dtype=object)
    predicted = pd.to_datetime(np.repeat(np.array([e.predicted_at for e in entries]), counts),
                               unit="s", utc=True)
    data["predicted_at"] = predicted
    given = [e.event_time for e in entries]
    if all(t is None for t in given):
        data["event_time"] = predicted
    else:
        stamps = np.array([_utc(t).value if t is not None
                           else pd.Timestamp(e.predicted_at, unit="s", tz="UTC").value
                           for t, e in zip(given, entries, strict=True)], dtype=np.int64)
        data["event_time"] = pd.to_datetime(np.repeat(stamps, counts), utc=True)
    data["model_name"] = np.repeat(np.array([e.model_name for e in entries], dtype=object),
                                   counts)
    data["model_version"] = np.repeat(np.array([e.model_version for e in entries],
                                               dtype=object), counts)
    data["prediction"] = np.concatenate([np.asarray(e.output["predictions"]) for e in entries])
    if all("scores" in e.output for e in entries):
        data["score"] = np.concatenate([np.asarray(e.output["scores"], dtype=float)
                                        for e in entries])
    return pd.DataFrame(data)
