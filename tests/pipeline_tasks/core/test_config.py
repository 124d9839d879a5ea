import json
import subprocess
import sys

import pytest

from pipeline_tasks.core.config import PipelineConfig, dataset_name, load_config
from pipeline_tasks.core.errors import ConfigError


def test_everything_lives_under_home(tmp_path):
    config = load_config(home=str(tmp_path))
    assert config.airflow_home == str(tmp_path / "airflow")
    assert config.mlflow_tracking_uri == f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    assert config.mlflow_registry_uri == config.mlflow_tracking_uri
    for uri in (config.lake_uri, config.reports_uri, config.landing_uri, config.suites_uri):
        assert uri.startswith(tmp_path.as_uri())


def test_env_overrides_and_explicit_uris_survive_home_change(tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_SEED", "7")
    monkeypatch.setenv("MLOPS_LAKE_URI", "s3://bucket/lake")
    config = load_config(home=str(tmp_path))
    assert config.seed == 7
    assert config.lake_uri == "s3://bucket/lake"
    assert config.reports_uri == (tmp_path / "reports").as_uri()


def test_bad_values_name_the_field(monkeypatch):
    monkeypatch.setenv("MLOPS_SEED", "seven")
    with pytest.raises(ConfigError, match="'seed'"):
        load_config()
    monkeypatch.delenv("MLOPS_SEED")
    with pytest.raises(ConfigError, match="holdout_fraction"):
        load_config(holdout_fraction=1.5)
    with pytest.raises(ConfigError, match="unknown configuration field.*nope"):
        PipelineConfig().with_overrides(nope=1)


def test_dataset_name_is_derived_from_source_and_target():
    assert dataset_name("file:///x/landing/flights/", "is_late") == "flights_is_late"
    assert dataset_name("/data/My Cars.csv", "mpg") == "my_cars_mpg"
    assert dataset_name("s3://b/sales/*.parquet", "y") == "sales_y"
    assert dataset_name("SELECT * FROM t", "y").startswith("sql_")


def test_cli_prints_resolved_config_as_json(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "pipeline_tasks", "config"],
        env={"MLOPS_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, check=True,
    ).stdout
    data = json.loads(out)
    for key in ("airflow_home", "mlflow_tracking_uri", "lake_uri", "reports_uri"):
        assert key in data
    assert data["airflow_home"] == str(tmp_path / "airflow")


@pytest.mark.parametrize("field, value, words", [
    ("min_champion_delta", -0.01, "min_champion_delta must be >= 0"),
    ("min_baseline_lift", 1.5, r"min_baseline_lift must be in \[0, 1\]"),
    ("min_baseline_lift", -0.1, r"min_baseline_lift must be in \[0, 1\]"),
    ("training_max_active_runs", 0, "training_max_active_runs must be >= 1"),
])
def test_gate_bounds_are_refused_when_the_config_is_made(field, value, words):
    with pytest.raises(ConfigError, match=words):
        load_config(**{field: value})


def test_labels_are_per_model_and_the_demo_default_is_the_demo_models_only(tmp_path,
                                                                          monkeypatch):
    config = load_config(home=str(tmp_path))
    assert config.labels_for("flights_is_late") == config.outcomes_uri
    assert config.labels_for("diamonds_price") is None  # no labels: performance is not checked
    # a model trained on the demo feed under another name is a demo model too
    assert config.labels_for("flights_seasons", source=config.demo_source_uri) == \
        config.outcomes_uri
    assert config.labels_for("diamonds_price", source="/data/diamonds.csv") is None
    monkeypatch.setenv("MLOPS_MODEL_LABELS", '{"diamonds_price": "file:///data/outcomes/"}')
    config = load_config(home=str(tmp_path))
    assert config.labels_for("diamonds_price") == "file:///data/outcomes/"
    assert config.labels_for("other") is None
    with pytest.raises(ConfigError, match="model_labels must map model names"):
        load_config(model_labels={"m": 3})


def test_allow_lists_default_to_the_landing_folder_and_no_connection(tmp_path, monkeypatch):
    monkeypatch.delenv("MLOPS_ALLOWED_SOURCE_ROOTS", raising=False)  # conftest lists tmp roots
    config = load_config(home=str(tmp_path))
    assert config.allowed_source_roots == () and config.allowed_sql_conn_ids == ()
    assert config.source_roots == ((tmp_path / "landing").as_uri(),)
    # a JSON list or comma-separated text, as for the other list settings
    monkeypatch.setenv("MLOPS_ALLOWED_SOURCE_ROOTS", '["/data/a", "s3://bucket/in/"]')
    monkeypatch.setenv("MLOPS_ALLOWED_SQL_CONN_IDS", "warehouse_ro, sales_ro")
    config = load_config(home=str(tmp_path))
    assert config.allowed_source_roots == ("/data/a", "s3://bucket/in/")
    assert config.allowed_sql_conn_ids == ("warehouse_ro", "sales_ro")
    assert config.source_roots[1:] == ("/data/a", "s3://bucket/in/")
    assert json.loads(json.dumps(config.to_dict()))["allowed_sql_conn_ids"] == [
        "warehouse_ro", "sales_ro"]
    monkeypatch.setenv("MLOPS_ALLOWED_SOURCE_ROOTS", "")
    assert load_config().allowed_source_roots == ()
    with pytest.raises(ConfigError, match="'allowed_sql_conn_ids'"):
        load_config(allowed_sql_conn_ids="[1, 2]")
    with pytest.raises(ConfigError, match="needs a host or bucket"):
        load_config(allowed_source_roots="https://")


def test_url_values_walk_every_text_the_printout_redacts(tmp_path):
    from pipeline_tasks.core.config import url_values

    config = load_config(home=str(tmp_path), registry_lock_url="postgresql://u:pw1@db/x",
                         model_labels={"m": "s3://k:pw2@bucket/labels/"},
                         allowed_source_roots=["https://u:pw3@files.example.org/pub"])
    found = {(name, key): text for name, key, text in url_values(config)}
    assert found[("registry_lock_url", None)] == "postgresql://u:pw1@db/x"
    assert found[("model_labels", "m")] == "s3://k:pw2@bucket/labels/"
    assert found[("allowed_source_roots", 0)] == "https://u:pw3@files.example.org/pub"
    data = config.to_dict()
    assert data["registry_lock_url"] == "postgresql://u:***@db/x"
    assert data["model_labels"] == {"m": "s3://k:***@bucket/labels/"}
    assert data["allowed_source_roots"] == ["https://files.example.org/pub"]
    assert not any(pw in json.dumps(data) for pw in ("pw1", "pw2", "pw3"))
