import os
import sqlite3

import pandas as pd
import pytest

from pipeline_tasks.core import storage
from pipeline_tasks.core.config import load_config
from pipeline_tasks.core.errors import ConfigError, IngestError
from pipeline_tasks.data.ingest import ingest_interval, partition_date, training_window

DAY = "2013-03-01T00:00:00+00:00"
NEXT = "2013-03-02T00:00:00+00:00"


def frame(day: str, n: int = 4) -> pd.DataFrame:
    return pd.DataFrame({
        "time_hour": pd.date_range(f"{day} 05:00", periods=n, freq="h", tz="UTC"),
        "distance": range(100, 100 + n),
        "origin": ["EWR", "JFK", "LGA", "EWR"][:n],
        "is_late": [0.0, 1.0, None, 0.0][:n],
    })


@pytest.fixture
def config(tmp_path):
    return load_config(home=str(tmp_path / "home"))


@pytest.fixture
def daily(tmp_path):
    folder = tmp_path / "flights"
    folder.mkdir()
    for day in ("2013-02-26", "2013-02-27", "2013-02-28", "2013-03-01", "2013-03-02"):
        frame(day).to_csv(folder / f"flights_{day}.csv", index=False)
    return folder


def run(source, config, window=2, **kw):
    return ingest_interval(str(source), interval_start=DAY, interval_end=NEXT,
                           training_window_days=window, config=config, run_key="d/r", **kw)


def test_partitioned_folder_reads_only_the_window(daily, config):
    result = run(daily, config, window=2)
    assert result.partitioned
    assert [f.rsplit("_", 1)[-1] for f in result.files] == ["2013-02-28.csv", "2013-03-01.csv"]
    df = storage.read_parquet(result.uri)
    assert len(df) == result.rows == 8
    assert str(df["time_hour"].dtype) == "datetime64[ns, UTC]"
    assert result.uri == storage.join(config.lake_uri, "raw", "d/r", "part.parquet")
    assert result.time_column == "time_hour"


def test_glob_and_parquet_sources(daily, tmp_path, config):
    pq = tmp_path / "pq"
    pq.mkdir()
    frame("2013-03-01").to_parquet(pq / "date=2013-03-01.parquet")
    assert run(f"{daily}/*2013-03-0*.csv", config, window=0).rows == 4
    assert run(pq.as_uri() + "/", config, window=0).rows == 4


def test_unpartitioned_file_is_read_whole(tmp_path, config):
    path = tmp_path / "cars.csv"
    pd.DataFrame({"x": [1, 2, 3], "y": [2.0, 4.1, 5.9]}).to_csv(path, index=False)
    result = run(path, config, window=0)
    assert not result.partitioned and result.rows == 3 and result.time_column is None


def test_rerun_rewrites_the_same_place(daily, config):
    first, second = run(daily, config), run(daily, config)
    assert first.uri == second.uri
    assert len(os.listdir(storage.local_path(first.uri).parent)) == 1


def test_sql_source_with_window_parameters(tmp_path, config):
    db = tmp_path / "src.db"
    with sqlite3.connect(db) as conn:
        df = pd.concat([frame("2013-02-20"), frame("2013-03-01")])
        df["time_hour"] = df["time_hour"].dt.strftime("%Y-%m-%d %H:%M:%S")
        df.to_sql("flights", conn, index=False)
    query = "SELECT * FROM flights WHERE time_hour >= :window_start AND time_hour < :interval_end"
    result = run(query, config, window=3, sql_url=f"sqlite:///{db}")
    assert result.rows == 4 and not result.partitioned


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), "not a CSV file"),
        ("a,b\n\xe9t\xe9,1\n".encode("latin-1"), "not UTF-8 text"),
        (b"time_hour,distance,is_late\n", "header but no rows"),
    ],
)
def test_unreadable_files_name_the_file_and_problem(tmp_path, config, content, message):
    path = tmp_path / "flights" / "flights_2013-03-01.csv"
    path.parent.mkdir()
    path.write_bytes(content)
    with pytest.raises(IngestError, match=message) as info:
        run(path.parent, config)
    assert "flights_2013-03-01.csv" in str(info.value)


def test_rows_outside_the_window_fail(tmp_path, config):
    folder = tmp_path / "flights"
    folder.mkdir()
    frame("2013-06-15").to_csv(folder / "flights_2013-03-01.csv", index=False)
    with pytest.raises(IngestError, match="all 4 rows fall outside the window"):
        run(folder, config)


def test_no_partition_in_window(daily, config):
    with pytest.raises(IngestError, match="no partitions fall in the window"):
        ingest_interval(str(daily), interval_start="2014-01-01", interval_end="2014-01-02",
                        training_window_days=3, config=config, run_key="d/r")


def test_files_with_different_columns_fail(daily, config):
    frame("2013-02-28").rename(columns={"origin": "from"}).to_csv(
        daily / "flights_2013-02-28.csv", index=False)
    with pytest.raises(IngestError, match=r"flights_2013-02-28.csv: its columns differ.*missing \['origin'\]"):
        run(daily, config, window=3)


def test_missing_source_and_bad_time_column(tmp_path, daily, config):
    with pytest.raises(IngestError, match="no such file or folder"):
        run(tmp_path / "nope", config)
    with pytest.raises(IngestError, match="time column 'when'"):
        run(daily, config, time_column="when")
    with pytest.raises(IngestError, match=r"column 'origin': 8 value\(s\) are not timestamps"):
        run(daily, config, time_column="origin")


def test_window_arithmetic():
    start, _, _ = training_window(DAY, NEXT, 28)
    assert start.isoformat() == "2013-02-02T00:00:00+00:00"
    with pytest.raises(ConfigError, match="training_window_days"):
        training_window(DAY, NEXT, -1)
    assert partition_date("file:///x/date=2013-03-01/part.csv").isoformat() == "2013-03-01"
    assert partition_date("file:///x/part-0001.csv") is None


def test_read_table_reads_csv_gzip_and_parquet(tmp_path):
    from pipeline_tasks.data.ingest import read_table

    df = pd.DataFrame({"row_id": [1, 2], "x": [0.5, 1.5]})
    df.to_csv(tmp_path / "a.csv", index=False)
    df.to_csv(tmp_path / "a.csv.gz", index=False, compression="gzip")
    df.to_parquet(tmp_path / "a.parquet")
    for name in ("a.csv", "a.csv.gz", "a.parquet"):
        pd.testing.assert_frame_equal(read_table(str(tmp_path / name)), df)
    assert read_table((tmp_path / "a.csv").as_uri())["x"].tolist() == [0.5, 1.5]


def test_read_table_errors_name_the_file_and_use_the_callers_type(tmp_path):
    from pipeline_tasks.core.errors import PipelineInputError
    from pipeline_tasks.data.ingest import read_table

    class Mine(PipelineInputError):
        pass

    missing = str(tmp_path / "gone.csv")
    with pytest.raises(IngestError, match=r"gone.csv: no such file"):
        read_table(missing)
    with pytest.raises(Mine, match=r"gone.csv: no such file"):
        read_table(missing, error=Mine)
    (tmp_path / "labels.txt").write_text("a,b\n1,2\n")
    assert len(read_table(str(tmp_path / "labels.txt"))) == 1  # a single source file: CSV
    with pytest.raises(IngestError, match=r"labels.txt: expected a .csv or .parquet file"):
        read_table(str(tmp_path / "labels.txt"), require_suffix=True)
    (tmp_path / "header.csv").write_text("row_id,event_time,y\n")
    with pytest.raises(IngestError, match="header but no rows"):
        read_table(str(tmp_path / "header.csv"))
    empty = read_table(str(tmp_path / "header.csv"), allow_empty=True)
    assert empty.empty and list(empty.columns) == ["row_id", "event_time", "y"]
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(IngestError, match=r"bad.parquet: not a readable Parquet file"):
        read_table(str(tmp_path / "bad.parquet"))
