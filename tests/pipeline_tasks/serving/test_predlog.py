"""The prediction log off the request path: a request only queues references; a full queue
drops rows visibly (counted, warned about) and never makes a request wait; closing writes
everything queued."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from starlette.testclient import TestClient

from pipeline_tasks.core import storage
from pipeline_tasks.serving import model as serving_model
from pipeline_tasks.serving.app import create_app
from pipeline_tasks.serving.predlog import PredictionLog, read_log_file


def logged(uri: str) -> pd.DataFrame:
    files = sorted(storage.local_path(uri).glob("date=*/model=*/part-*.parquet"))
    if not files:
        return pd.DataFrame()
    return pd.concat([read_log_file(f) for f in files], ignore_index=True)


def features(rows: int, start: int = 0) -> pd.DataFrame:
    return pd.DataFrame({"distance": [float(start + i) for i in range(rows)],
                         "carrier": ["AA"] * rows})


def test_a_full_queue_drops_counts_and_warns_and_keeps_the_rest(tmp_path, caplog):
    uri = (tmp_path / "predictions").as_uri()
    log = PredictionLog(uri, flush_s=3600, max_rows=1000, queue_rows=10)
    dropped = []
    log.on_drop = dropped.append
    answer = {"predictions": [1] * 5, "scores": [0.5] * 5}
    with caplog.at_level(logging.WARNING, logger="pipeline_tasks.serving.predlog"):
        assert log.add("r1", "m", "1", features(5), answer)
        assert log.add("r2", "m", "1", features(5, 5), answer)
        assert not log.add("r3", "m", "1", features(5, 10), answer)  # 15 > 10: dropped
    assert (log.dropped_rows, log.dropped_requests, dropped) == (5, 1, [5])
    assert "prediction log queue full" in caplog.text and "dropped 5 row(s)" in caplog.text
    assert log.queued_rows == 10
    assert log.flush() == 10 and log.queued_rows == 0
    rows = logged(uri)
    assert sorted(rows["request_id"].unique()) == ["r1", "r2"]
    assert rows["distance"].tolist() == [float(i) for i in range(10)]
    assert rows["row_id"].tolist()[:2] == ["r1-0", "r1-1"]
    assert log.add("r4", "m", "1", features(5, 20), answer)  # room again after the flush


def test_closing_writes_everything_queued(tmp_path):
    uri = (tmp_path / "predictions").as_uri()
    log = PredictionLog(uri, flush_s=3600, max_rows=10_000)
    log.start()
    when = pd.Timestamp("2013-03-01T08:00:00Z")
    for i in range(30):  # a Timestamp, a datetime (as library callers give it), or none
        event = (when if i % 3 == 1 else when.to_pydatetime()) if i % 3 else None
        log.add(f"q{i}", "m", "1", features(2, 2 * i), {"predictions": [0, 1]},
                ids=[f"k{i}a", f"k{i}b"], event_time=event)
    log.close()
    rows = logged(uri)
    assert len(rows) == 60 and rows["row_id"].is_unique
    for request in ("q1", "q2"):
        given = rows[rows["request_id"] == request]
        assert (given["event_time"] == when).all()  # filed under its event's day
    assert (rows[rows["request_id"] == "q0"]["event_time"] > when).all()  # none given: now
    assert "score" not in rows.columns  # no scores given: no score column


def test_a_request_without_rows_is_taken_and_holds_up_nothing(tmp_path):
    uri = (tmp_path / "predictions").as_uri()
    log = PredictionLog(uri, flush_s=3600, max_rows=10_000)
    log.add("q0", "m", "1", features(0), {"predictions": []})
    log.add("q1", "m", "1", features(2), {"predictions": [0, 1]})
    assert log.flush() == 2 and log.queued_rows == 0
    assert logged(uri)["request_id"].tolist() == ["q1", "q1"]


def test_a_running_log_writes_on_its_own(tmp_path):
    """The collector hands tables to the writer and asks for a flush every ``flush_s``: the
    rows reach the lake while the server runs, not only when it closes."""
    uri = (tmp_path / "predictions").as_uri()
    log = PredictionLog(uri, flush_s=0.2, max_rows=10_000)
    log.start()
    try:
        deadline = time.monotonic() + 60  # a loaded machine: wait on the state, not a time
        while time.monotonic() < deadline and len(log.cpu_seconds()) < 2:
            time.sleep(0.01)
        idle = log.cpu_seconds()  # each thread's own CPU clock, read at once
        for i in range(5):
            log.add(f"q{i}", "m", "1", features(2, 2 * i), {"predictions": [0, 1]})
        while time.monotonic() < deadline and log.rows_written < 10:
            time.sleep(0.05)
        assert log.rows_written == 10 and log.queued_rows == 0 and log.write_errors == 0
        assert sorted(logged(uri)["distance"]) == [float(i) for i in range(10)]
        busy = log.cpu_seconds()
        assert sorted(busy) == ["collector", "writer"]
        assert all(busy[t] > idle[t] for t in busy)  # the table and the file took CPU time
    finally:
        log.close()
    assert log.rows_written == 10  # nothing written twice at the close


def test_encoded_row_groups_become_one_file_per_day_and_nothing_is_lost(tmp_path, monkeypatch):
    """The writer encodes what is queued as row groups of the day's in-memory file (``encode``)
    and writes whole files at the flush: a chunk whose types do not fit the open file (a column
    that was all nulls) finishes it and starts another; a failed write keeps every row for the
    next flush."""
    uri = (tmp_path / "predictions").as_uri()
    log = PredictionLog(uri, flush_s=3600, max_rows=10_000)
    day1, day2 = pd.Timestamp("2013-03-01T08:00:00Z"), pd.Timestamp("2013-03-02T08:00:00Z")
    unknown = pd.DataFrame({"distance": [1.0, 2.0], "carrier": [None, None]})
    log.add("a", "m", "1", unknown, {"predictions": [0, 1]}, event_time=day1)
    assert log.encode() == 2 and log.queued_rows == 2  # encoded, not yet written
    log.add("b", "m", "1", features(3), {"predictions": [1, 1, 0]}, event_time=day1)
    log.add("c", "m", "1", features(1, 9), {"predictions": [1]}, event_time=day2)
    assert log.encode() == 4
    log.add("d", "m", "1", unknown, {"predictions": [0, 0]}, event_time=day1)  # fits the file
    assert log.encode() == 2
    assert not list(storage.local_path(uri).glob("date=*/model=*/part-*.parquet"))  # nothing visible yet
    broken = storage.atomic_write_bytes

    def failing(path, data, **options):
        raise OSError("store down")

    monkeypatch.setattr(storage, "atomic_write_bytes", failing)
    with pytest.raises(OSError):
        log.flush()
    assert log.queued_rows == 8
    monkeypatch.setattr(storage, "atomic_write_bytes", broken)
    assert log.flush() == 8 and log.queued_rows == 0
    files = sorted(storage.local_path(uri).glob("date=*/model=*/part-*.parquet"))
    assert sorted(f.parent.parent.name for f in files) == ["date=2013-03-01", "date=2013-03-01",
                                                           "date=2013-03-02"]
    assert {f.parent.name for f in files} == {"model=m"}
    rows = logged(uri)
    assert sorted(rows["row_id"]) == ["a-0", "a-1", "b-0", "b-1", "b-2", "c-0", "d-0", "d-1"]
    by_id = rows.set_index("row_id")
    assert by_id.loc["b-1", "carrier"] == "AA" and by_id.loc["c-0", "distance"] == 9.0
    assert by_id.loc["d-1", "carrier"] is None and by_id.loc["a-0", "carrier"] is None


def test_a_killed_servers_half_written_part_is_swept_once_per_folder(tmp_path, monkeypatch):
    import os
    import subprocess

    from pipeline_tasks.core import layout

    uri = (tmp_path / "predictions").as_uri()
    day = pd.Timestamp("2013-03-01T10:00:00Z")
    folder = storage.local_path(layout.prediction_partition(uri, "2013-03-01", "m"))
    folder.mkdir(parents=True)
    gone = subprocess.Popen(["true"])
    gone.wait()
    name = storage._tmp_name(str(folder / "part-x.parquet")).rpartition("/")[2]
    left = folder / name.replace(f".{os.getpid()}.", f".{gone.pid}.")
    left.write_bytes(b"half a part")
    sweeps = []
    sweep = storage.sweep_partial_writes_in
    monkeypatch.setattr(storage, "sweep_partial_writes_in",
                        lambda f: sweeps.append(f) or sweep(f))
    log = PredictionLog(uri, flush_s=3600, max_rows=1000)
    for n in range(3):
        log.add(f"r{n}", "m", "1", features(2), {"predictions": [1, 0]}, event_time=day)
        assert log.flush() == 2
    assert not left.exists()  # the dead writer's part is gone, the three flushes' are whole
    assert sorted(p.name.startswith("part-") for p in folder.iterdir()) == [True] * 3
    assert len(logged(uri)) == 6
    assert len(sweeps) == 1  # the folder was listed for leftovers once, not at every flush


def test_the_server_answers_while_the_log_drops_and_says_so(registered, serving_config,
                                                            flights_rows, tmp_path):
    served = serving_model.load(serving_config, "flights_serving", "1", tmp_path / "work")
    uri = (tmp_path / "predictions").as_uri()
    log = PredictionLog(uri, flush_s=3600, max_rows=10_000, queue_rows=30)  # no writer running
    app = create_app(served, max_body_bytes=10**7, prediction_log=log, token="")
    rows = flights_rows.head(20).to_dict(orient="records")
    with TestClient(app, raise_server_exceptions=False) as client:
        answers = [client.post("/predict", json={"records": rows}) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 200]
        metrics = client.get("/metrics").text
    assert "mlops_serving_prediction_log_dropped_rows_total 40.0" in metrics
    assert "mlops_serving_prediction_log_cpu_seconds_total{" not in metrics  # no threads ran
    assert log.dropped_requests == 2
    assert len(logged(uri)) == 20  # the shutdown wrote the one request that fit
    assert logged(uri)["carrier"].tolist() == [r["carrier"] for r in rows]


@pytest.mark.parametrize("clash", [True, False])
def test_a_feature_named_like_a_log_column_is_prefixed(tmp_path, clash):
    uri = (tmp_path / "predictions").as_uri()
    log = PredictionLog(uri, flush_s=3600, max_rows=100)
    frame = pd.DataFrame({"score" if clash else "s": [1.0, 2.0], "x": [3, 4]})
    log.add("r", "m", "1", frame, {"predictions": [0, 1], "scores": [0.1, 0.9]})
    log.flush()
    rows = logged(uri)
    if clash:
        assert rows["feature_score"].tolist() == [1.0, 2.0] and rows["feature_x"].tolist() == [3, 4]
    assert rows["score"].tolist() == [0.1, 0.9]


def _nice(tid: int) -> int:
    """A thread's niceness, from ``/proc`` (field 19 of its ``stat``)."""
    stat = Path(f"/proc/self/task/{tid}/stat").read_text()
    return int(stat.rpartition(")")[2].split()[16])


def test_the_writer_yields_the_core_and_writes_big_row_groups(tmp_path, monkeypatch):
    """The writer thread runs at a lower CPU priority than the threads that answer requests
    (the collector, which holds the GIL, does not), and encodes what waits as one Parquet row
    group per ``ROW_GROUP_ROWS`` rows (not one per step), with dictionaries only on the columns
    whose values repeat."""
    import pyarrow.parquet as pq

    from pipeline_tasks.serving import predlog

    monkeypatch.setattr(predlog, "ROW_GROUP_ROWS", 40)
    uri = (tmp_path / "predictions").as_uri()
    running = PredictionLog((tmp_path / "other").as_uri(), flush_s=3600, max_rows=10_000)
    running.start()
    try:
        ours = _nice(threading.get_native_id())
        wanted = min(19, ours + predlog.WRITER_NICE)
        deadline = time.monotonic() + 10  # the thread lowers its priority as it starts
        while time.monotonic() < deadline and (
                running._writer.native_id is None or _nice(running._writer.native_id) != wanted):
            time.sleep(0.01)
        assert _nice(running._writer.native_id) == wanted
        assert _nice(running._thread.native_id) == ours  # the collector: the server's own
    finally:
        running.close()
    log = PredictionLog(uri, flush_s=3600, max_rows=10_000)  # no thread: encoded by hand
    for step in range(5):  # 5 steps of 20 rows: row groups of 40, 40 and the last 20
        log.add(f"r{step}", "m", "1", features(20, 20 * step), {"predictions": [1] * 20})
        assert log.encode() == 20
    assert log.flush() == 100
    [file] = storage.local_path(uri).glob("date=*/model=*/part-*.parquet")
    meta = pq.ParquetFile(file).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [40, 40, 20]
    encodings = {meta.schema.column(i).name: meta.row_group(0).column(i).encodings
                 for i in range(meta.num_columns)}
    for repeating in ("carrier", "model_name", "model_version", "row_number"):
        assert any("DICTIONARY" in e for e in encodings[repeating]), repeating
    for unique in ("request_id", "distance"):
        assert not any("DICTIONARY" in e for e in encodings[unique]), unique
    assert sorted(logged(uri)["distance"]) == [float(i) for i in range(100)]


def test_a_file_holds_a_generated_key_as_its_number_and_reads_back_whole(tmp_path):
    """A request's given ``ids`` are its rows' keys; without them the file holds each row's
    number in its request and a null key, and ``read_log_file`` joins ``<request id>-<number>``.
    The model's name and version are written as a dictionary and read back as texts."""
    import pyarrow.parquet as pq

    uri = (tmp_path / "predictions").as_uri()
    log = PredictionLog(uri, flush_s=3600, max_rows=10_000)
    answer = {"predictions": [1, 0, 1]}
    log.add_batch("m", "7", ["plain", "keyed", "also-plain"], [1, 3, 2], {
        "distance": np.arange(6.0), "carrier": np.array(["AA"] * 6, dtype=object)},
        {"predictions": [1, 0, 1, 1, 0, 1]}, ids=[None, ["k1", "k2", "k3"], None])
    log.add("later", "m", "8", features(3), answer)
    assert log.flush() == 9
    [file] = storage.local_path(uri).glob("date=*/model=m/part-*.parquet")
    stored = pq.read_table(file)
    assert stored["row_id"].to_pylist() == [None, "k1", "k2", "k3", None, None] + [None] * 3
    assert stored["row_number"].to_pylist() == [0, 0, 1, 2, 0, 1, 0, 1, 2]
    rows = read_log_file(file)
    assert rows["row_id"].tolist() == ["plain-0", "k1", "k2", "k3", "also-plain-0",
                                       "also-plain-1", "later-0", "later-1", "later-2"]
    assert "row_number" not in rows.columns
    assert rows["model_name"].tolist() == ["m"] * 9
    assert rows["model_version"].tolist() == ["7"] * 6 + ["8"] * 3
    assert rows["request_id"].dtype == object and rows["model_version"].dtype == object
    # a file of batch scoring (or of an earlier server) holds every key: read as it is
    earlier = tmp_path / "earlier.parquet"
    pd.DataFrame({"request_id": ["b", "b"], "row_id": ["x", "y"], "distance": [1.0, 2.0],
                  "model_name": ["m", "m"]}).to_parquet(earlier)
    assert read_log_file(earlier)["row_id"].tolist() == ["x", "y"]


def test_the_collector_takes_the_queue_by_amount_or_at_the_latest_after_a_while(tmp_path,
                                                                                 monkeypatch):
    """A turn of the collector has a fixed cost: a lone client's requests wait for a turn per
    ``COLLECT_EVERY_S``, busy traffic's for one per ``COLLECT_REQUESTS`` requests."""
    from pipeline_tasks.serving import predlog

    monkeypatch.setattr(predlog, "COLLECT_REQUESTS", 20)
    monkeypatch.setattr(predlog, "COLLECT_EVERY_S", 3600.0)
    log = PredictionLog((tmp_path / "predictions").as_uri(), flush_s=3600, max_rows=10_000)
    log.start()
    try:
        answer = {"predictions": [1], "scores": [0.5]}
        for i in range(19):
            assert log.add(f"r{i}", "m", "1", features(1, i), answer)
        time.sleep(0.3)  # ample for a turn, had one been due
        assert len(log._queue) == 19  # not taken: 19 requests wait, the next turn in an hour
        assert log.add("r19", "m", "1", features(1, 19), answer)  # the 20th: a turn now
        deadline = time.monotonic() + 60
        while log._queue and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not log._queue and log.queued_rows == 20  # taken, waiting for the flush
        assert log._queued_requests == 0
    finally:
        log.close()
    assert log.rows_written == 20


def test_object_columns_keep_their_types_and_nulls():
    """Text goes to Arrow as strings at once; anything else in an object column is inferred as
    pandas would write it."""
    import pyarrow as pa

    from pipeline_tasks.serving.predlog import _column

    text = _column(np.array(["AA", None, "B6"], dtype=object))
    assert text.type == pa.string() and text.to_pylist() == ["AA", None, "B6"]
    missing = _column(np.array(["AA", np.nan, "B6"], dtype=object))  # the contract's null
    assert missing.type == pa.string() and missing.to_pylist() == ["AA", None, "B6"]
    flags = _column(np.array([True, None, False], dtype=object))
    assert flags.type == pa.bool_() and flags.to_pylist() == [True, None, False]
    assert _column(np.array([None, None], dtype=object)).type == pa.null()
    assert _column(np.array([None, "AA"], dtype=object)).type == pa.string()
    assert _column(np.array([1.5, np.nan])).to_pylist() == [1.5, None]


@pytest.mark.parametrize("times", [(1, 1, 1), (8, 8, 8), (8, 1, 1), (1, 8, 1)],
                         ids=["small", "big", "big-then-small", "small-big-small"])
def test_texts_handed_over_as_arrow_join_with_other_requests_of_any_type(tmp_path, times):
    """A request of ``TEXTS_NOW_ROWS`` rows or more has its text columns made Arrow when it is
    handed over (its values still in the CPU's caches); a smaller one hands them over as they
    are (a call per column would cost more than its values). One turn joins them all, in any
    mix, with the other requests' columns, a request whose text was all missing (a null-typed
    array) and booleans with and without nulls included."""
    import pyarrow as pa

    from pipeline_tasks.serving.predlog import TEXTS_NOW_ROWS

    assert 2 < TEXTS_NOW_ROWS <= 16  # 2 rows are few, 16 many
    uri = (tmp_path / "predictions").as_uri()
    log = PredictionLog(uri, flush_s=3600, max_rows=1000)
    given = [
        {"carrier": np.array(["AA", "B6"], dtype=object), "late": np.array([True, False]),
         "distance": np.array([1.0, 2.0])},
        {"carrier": np.array([np.nan, np.nan], dtype=object),  # the contract's missing texts
         "late": np.array([None, True], dtype=object), "distance": np.array([3, 4])},
        {"carrier": np.array(["UA", None], dtype=object), "late": np.array([False, False]),
         "distance": np.array([5.0, np.nan])},
    ]
    given = [{name: np.tile(values, k) for name, values in columns.items()}
             for columns, k in zip(given, times)]
    for i, columns in enumerate(given):
        rows = 2 * times[i]
        answer = {"predictions": [1, 0] * times[i], "scores": [0.9, 0.1] * times[i]}
        assert log.add_batch("m", "1", [f"r{i}"], [rows], columns, answer)
    for entry, columns in zip(log._queue, given):  # numbers stay the given arrays
        assert isinstance(entry.columns["carrier"], pa.Array) == (entry.rows >= TEXTS_NOW_ROWS)
        assert entry.columns["distance"] is columns["distance"]
    assert log.flush() == 2 * sum(times)
    rows = logged(uri)
    a, b, c = times
    assert rows["carrier"].tolist() == ["AA", "B6"] * a + [None, None] * b + ["UA", None] * c
    assert rows["late"].tolist() == [True, False] * a + [None, True] * b + [False, False] * c
    distance = rows["distance"].tolist()
    assert distance[:2 * (a + b)] == [1.0, 2.0] * a + [3.0, 4.0] * b
    assert distance[2 * (a + b)::2] == [5.0] * c and pd.isna(distance[2 * (a + b) + 1::2]).all()
    assert rows["row_id"].tolist() == [f"r{i}-{j}" for i, k in enumerate(times)
                                       for j in range(2 * k)]


def test_rows_that_cannot_be_made_a_table_are_dropped_and_counted_not_retried(tmp_path,
                                                                                caplog):
    """A request whose columns do not fit the others' goes into a table of its own (nothing
    lost); one that cannot be made a table even alone (a column of another length than its
    rows: a library caller's mistake) is dropped, counted and logged by type, never retried
    ahead of every later row."""
    uri = (tmp_path / "predictions").as_uri()
    log = PredictionLog(uri, flush_s=3600, max_rows=1000)
    dropped = []
    log.on_drop = dropped.append
    answer = {"predictions": [1, 0], "scores": [0.9, 0.1]}
    secret = "card-4111111111111111"
    given = [
        {"carrier": np.array(["AA", "B6"], dtype=object), "distance": np.array([1.0, 2.0])},
        {"carrier": np.array([secret, "x", "y"], dtype=object),  # 3 values for 2 rows
         "distance": np.array([3.0, 4.0])},
        {"carrier": np.array([7, 8]), "distance": np.array([5.0, 6.0])},  # ints, not texts
        {"carrier": np.array(["UA", "DL"], dtype=object), "distance": np.array([7.0, 8.0])},
    ]
    given += [given[1]] * 2  # r4, r5: more of r1's kind in the same turn
    with caplog.at_level(logging.ERROR, logger="pipeline_tasks.serving.predlog"):
        for i, columns in enumerate(given):
            assert log.add_batch("m", "1", [f"r{i}"], [2], columns, answer)
        assert log.flush() == 6
    assert (log.dropped_rows, log.dropped_requests, dropped) == (6, 3, [6])
    assert log.queued_rows == 0 and not log._queue
    # one line for the turn, not one a request (a caller sending such requests would flood it)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "dropped 6 row(s) of m v1" in errors[0]
    assert "(ArrowInvalid: request r1 and 2 more)" in errors[0], errors
    assert secret not in caplog.text
    rows = logged(uri)
    assert sorted(rows["request_id"].unique()) == ["r0", "r2", "r3"]
    assert sorted(rows["distance"].tolist()) == [1.0, 2.0, 5.0, 6.0, 7.0, 8.0]
    assert sorted(str(c) for c in rows["carrier"]) == ["7", "8", "AA", "B6", "DL", "UA"]
    # the log goes on: later rows are written
    assert log.add_batch("m", "1", ["r6"], [2], given[0], answer) and log.flush() == 2


def test_the_server_shows_what_its_log_threads_cost(registered, serving_config, flights_rows,
                                                    tmp_path):
    """``/metrics`` has the CPU time of each of the log's threads, read at the scrape."""
    from prometheus_client.parser import text_string_to_metric_families

    served = serving_model.load(serving_config, "flights_serving", "1", tmp_path / "work")
    log = PredictionLog((tmp_path / "predictions").as_uri(), flush_s=0.2, max_rows=10_000)
    log.start()
    app = create_app(served, max_body_bytes=10**7, prediction_log=log, token="")
    rows = flights_rows.head(50).to_dict(orient="records")

    def cpu(client) -> dict[str, float]:
        text = client.get("/metrics").text
        return {s.labels["thread"]: s.value for f in text_string_to_metric_families(text)
                for s in f.samples if s.name == "mlops_serving_prediction_log_cpu_seconds_total"}

    with TestClient(app, raise_server_exceptions=False) as client:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(cpu(client)) < 2:
            time.sleep(0.01)
        before = cpu(client)
        for _ in range(4):
            assert client.post("/predict", json={"records": rows}).status_code == 200
        while time.monotonic() < deadline and log.rows_written < 200:
            time.sleep(0.05)
        after = cpu(client)
    assert log.rows_written == 200
    assert sorted(after) == ["collector", "writer"]
    assert all(after[t] > before[t] for t in after)
