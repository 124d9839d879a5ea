import pandas as pd
import pytest

from pipeline_tasks.core import layout, storage


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    uri = (tmp_path / "a" / "b.json").as_uri()
    storage.atomic_write_json(uri, {"x": 1})
    assert storage.read_json(uri) == {"x": 1}
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["b.json"]


def test_a_rewrite_removes_what_a_killed_writer_left(tmp_path):
    import os
    import subprocess

    uri = (tmp_path / "a" / "part.parquet").as_uri()
    fs, path = storage.url_to_fs(uri)
    fs.makedirs(str(tmp_path / "a"), exist_ok=True)
    gone = subprocess.Popen(["true"])
    gone.wait()
    left = storage._tmp_name(path).replace(f".{os.getpid()}.", f".{gone.pid}.")
    (tmp_path / "a" / left.rpartition("/")[2]).write_bytes(b"half a file")
    in_flight = tmp_path / "a" / storage._tmp_name(path).rpartition("/")[2]  # a live writer
    in_flight.write_bytes(b"being written")
    storage.atomic_write_bytes(uri, b"whole")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [in_flight.name, "part.parquet"]
    old = os.path.getmtime(in_flight) - storage.STALE_TMP_S - 1
    os.utime(in_flight, (old, old))  # a writer on another machine that never came back
    storage.atomic_write_bytes(uri, b"whole again")
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["part.parquet"]


def test_parquet_round_trip(tmp_path):
    uri = (tmp_path / "p.parquet").as_uri()
    df = pd.DataFrame({"a": [1, 2], "b": ["x", None]})
    storage.atomic_write_parquet(df, uri)
    pd.testing.assert_frame_equal(storage.read_parquet(uri), df)


def test_read_missing_file_fails(tmp_path):
    with pytest.raises(FileNotFoundError):
        storage.read_json((tmp_path / "missing.json").as_uri())


def test_run_partition_is_stable_and_safe():
    key = layout.run_partition("dag", "backfill__2013-02-01T00:00:00+00:00", "2013-02-02T00:00")
    assert key == layout.run_partition("dag", "backfill__2013-02-01T00:00:00+00:00",
                                        "2013-02-02T00:00")
    assert key == "dag/interval_end=2013-02-02/run_id=backfill__2013-02-01T00_00_00_00_00"
    assert ".." not in layout.run_partition("d", "../../etc")


def test_a_full_disk_names_the_path_and_leaves_no_partial_file(tiny_disk):
    target = (tiny_disk / "lake" / "part.parquet").as_uri()
    with pytest.raises(OSError, match=f"no space left on the device holding {target}"):
        storage.atomic_write_bytes(target, b"x" * 200_000)
    assert list((tiny_disk / "lake").iterdir()) == []  # neither the file nor a temporary one
