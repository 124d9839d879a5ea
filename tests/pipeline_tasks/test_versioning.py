import pandas as pd
import pytest

from pipeline_tasks import storage
from pipeline_tasks.config import load_config
from pipeline_tasks.versioning import content_hash, load_manifest, snapshot_dataset


@pytest.fixture
def config(tmp_path):
    return load_config(home=str(tmp_path / "home"))


def write(config, name, df):
    uri = storage.join(config.lake_uri, "raw", name, "part.parquet")
    storage.atomic_write_parquet(df, uri)
    return uri


def snap(config, uri, run_key="d/r1"):
    return snapshot_dataset(uri, config=config, run_key=run_key, source="file:///src",
                            interval={"interval_end": "2013-03-02"},
                            validation={"success": True}, lineage={"airflow.run_id": run_key})


def test_same_content_gives_same_version_and_one_copy(config):
    df = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", None]})
    first = snap(config, write(config, "r1", df), "d/r1")
    second = snap(config, write(config, "r2", df.copy()), "d/r2")
    assert first.version_id == second.version_id
    assert first.created and not second.created
    root = storage.local_path(first.uri)
    assert sorted(p.name for p in root.iterdir()) == ["data.parquet", "lineage", "manifest.json"]
    assert len(list((root / "lineage").iterdir())) == 2  # both runs are recorded
    manifest = load_manifest(first.version_id, config)
    assert manifest["rows"] == 3
    assert manifest["schema"] == {"a": "int64", "b": "object"}
    assert manifest["validation"] == {"success": True}
    assert manifest["first_run"] == "d/r1"
    pd.testing.assert_frame_equal(storage.read_parquet(first.data_uri), df)


def test_any_change_gives_a_new_version(config):
    df = pd.DataFrame({"a": [1, 2, 3]})
    base = content_hash(df)
    assert content_hash(df.assign(a=[1, 2, 4])) != base
    assert content_hash(df.astype("float64")) != base
    assert content_hash(df.rename(columns={"a": "b"})) != base
    assert content_hash(df.iloc[::-1].reset_index(drop=True)) != base


def test_unknown_version_fails(config):
    with pytest.raises(FileNotFoundError, match="dataset version abc not found"):
        load_manifest("abc", config)


def test_missing_input_fails(config):
    with pytest.raises(FileNotFoundError):
        snap(config, storage.join(config.lake_uri, "raw", "missing.parquet"))
