"""The prediction log: every served row, for monitoring, as partitioned Parquet in the lake.

``lake/predictions/date=YYYY-MM-DD/part-<time>-<id>.parquet``, one file per flush and day. Each
row holds the request id, the UTC time it was predicted (``predicted_at``), the time of the event
it is about (``event_time``: the request's ``event_time`` if it gave one, else ``predicted_at``;
the ``date=`` partition is its day), the row's key (``row_id``, from the request's ``ids``, else
``<request id>-<row number>``), the model name and version, the features under their own names,
the prediction and, for binary classifiers, the score. Requests only append to an
in-memory buffer; a background thread writes it every ``prediction_log_flush_s`` seconds (5 s by
default), sooner when ``prediction_log_max_rows`` rows wait, and once more on shutdown. Files are
written atomically, so readers never see a partial one. A crash loses at most the rows buffered
since the last flush: one flush interval.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import UTC, datetime

import pandas as pd

from pipeline_tasks.core import storage

log = logging.getLogger(__name__)

#: Columns the log adds beside the features.
META_COLUMNS = ("request_id", "row_id", "predicted_at", "event_time", "model_name",
                "model_version", "prediction", "score")


class PredictionLog:
    def __init__(self, uri: str, *, flush_s: float, max_rows: int):
        self.uri = uri.rstrip("/")
        self.flush_s = flush_s
        self.max_rows = max_rows
        self._buffer: list[pd.DataFrame] = []
        self._rows = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rows_written = 0
        self.files_written = 0
        self.write_errors = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def add(self, request_id: str, model_name: str, model_version: str, features: pd.DataFrame,
            output: dict[str, list], *, ids: list[str] | None = None,
            event_time: pd.Timestamp | None = None) -> None:
        """Queue one request's rows (cheap: no I/O on the request path)."""
        clash = [c for c in META_COLUMNS if c in features.columns]
        frame = features.add_prefix("feature_") if clash else features.copy()
        now = pd.Timestamp(datetime.now(UTC))
        frame["request_id"] = request_id
        frame["row_id"] = ids if ids is not None else [f"{request_id}-{i}"
                                                       for i in range(len(frame))]
        frame["predicted_at"] = now
        frame["event_time"] = event_time if event_time is not None else now
        frame["model_name"] = model_name
        frame["model_version"] = model_version
        frame["prediction"] = output["predictions"]
        if "scores" in output:
            frame["score"] = output["scores"]
        with self._lock:
            self._buffer.append(frame)
            self._rows += len(frame)
            full = self._rows >= self.max_rows
        if full:
            self._wake.set()

    def flush(self) -> int:
        """Write what is buffered now; returns the rows written."""
        with self._lock:
            frames, self._buffer, self._rows = self._buffer, [], 0
        if not frames:
            return 0
        batch = pd.concat(frames, ignore_index=True)
        day = batch["event_time"].dt.strftime("%Y-%m-%d")
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        pending = [rows.reset_index(drop=True) for _, rows in batch.groupby(day, sort=True)]
        written = 0
        while pending:
            rows = pending[0]
            value = rows["event_time"].iloc[0].strftime("%Y-%m-%d")
            path = f"{self.uri}/date={value}/part-{stamp}-{uuid.uuid4().hex[:8]}.parquet"
            try:
                storage.atomic_write_parquet(rows, path)
            except Exception:
                with self._lock:  # keep the unwritten rows for the next flush: nothing is lost
                    self._buffer[:0] = pending
                    self._rows += sum(len(p) for p in pending)
                raise
            pending.pop(0)
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
        except Exception:  # keep serving; the next flush retries with new rows
            self.write_errors += 1
            log.exception("could not write the prediction log to %s", self.uri)
            return
        if written:
            log.debug("prediction log: %d rows in %.3f s", written, time.perf_counter() - started)

    def close(self, timeout: float = 30.0) -> None:
        """Stop the thread after a last flush."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        else:
            self._flush_logged()
