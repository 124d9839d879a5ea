import pandas as pd
import pytest

from pipeline_tasks.core import storage
from pipeline_tasks.core.config import load_config
from pipeline_tasks.data.versioning import content_hash, load_manifest, snapshot_dataset


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


def test_a_corrupt_snapshot_is_refused_by_name_and_repaired_from_its_own_data(config, caplog):
    from pipeline_tasks.data.versioning import CorruptSnapshotError, read_snapshot

    df = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", None]})
    first = snap(config, write(config, "r1", df), "d/r1")
    # a flip that still decodes, to other values: the id no longer names this content
    storage.atomic_write_parquet(df.assign(a=[1, 2, 4]), first.data_uri)
    with pytest.raises(CorruptSnapshotError, match=f"snapshot {first.data_uri} is corrupt"):
        read_snapshot(first.version_id, config)
    # a re-run on the same data writes the true content back, and says so
    again = snap(config, write(config, "r2", df), "d/r2")
    assert again.version_id == first.version_id and not again.created
    assert "is corrupt" in caplog.text and "rewriting it" in caplog.text
    pd.testing.assert_frame_equal(read_snapshot(first.version_id, config), df)
    # bytes that no longer decode at all
    path = storage.local_path(first.data_uri)
    path.write_bytes(path.read_bytes()[:-40] + b"\x00" * 40)
    with pytest.raises(CorruptSnapshotError, match="cannot be read"):
        read_snapshot(first.version_id, config)


def test_training_refuses_a_corrupt_snapshot(config, flights_frame):
    from pipeline_tasks.data.versioning import CorruptSnapshotError
    from pipeline_tasks.model.train import train_model

    version = snap(config, write(config, "r1", flights_frame.head(500)), "d/r1")
    changed = flights_frame.head(500).copy()
    changed.loc[0, "distance"] += 1
    storage.atomic_write_parquet(changed, version.data_uri)
    with pytest.raises(CorruptSnapshotError, match="hash to"):
        train_model(version.data_uri, dataset_version=version.version_id, target="is_late",
                    model_name="corrupt_snapshot", config=config, run_key="d/r1")
