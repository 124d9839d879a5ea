"""MLflow wiring: experiments live under the configured artifact root, created once."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from pipeline_tasks.core import storage, tracking
from pipeline_tasks.core.config import load_config
from pipeline_tasks.core.errors import ConfigError


@pytest.fixture
def config(tmp_path):
    return load_config(home=str(tmp_path / "home"))


def test_experiment_is_created_once_under_the_artifact_root(config):
    first = tracking.ensure_experiment("houses/price v2", config)
    again = tracking.ensure_experiment("houses/price v2", config)
    assert first == again
    experiment = MlflowClient(tracking_uri=config.mlflow_tracking_uri).get_experiment(first)
    assert experiment.name == "houses/price v2"
    assert experiment.artifact_location == storage.join(config.mlflow_artifact_uri,
                                                        "houses_price_v2")


def test_empty_experiment_name_is_refused(config):
    with pytest.raises(ConfigError, match="must not be empty"):
        tracking.ensure_experiment("  ", config)


def test_artifact_location_is_one_safe_path_segment(config):
    root = config.mlflow_artifact_uri
    assert tracking.experiment_artifact_location("../../etc", config) == storage.join(root, "etc")
    assert tracking.experiment_artifact_location("..", config) == storage.join(root, "experiment")
    assert tracking.experiment_artifact_location("///", config) == storage.join(root, "experiment")


def test_a_deleted_experiment_is_reported_with_the_way_out(config):
    experiment_id = tracking.ensure_experiment("retired", config)
    MlflowClient(tracking_uri=config.mlflow_tracking_uri).delete_experiment(experiment_id)
    with pytest.raises(ConfigError, match=r"'retired' \(id \d+\) is deleted.*mlflow gc"):
        tracking.ensure_experiment("retired", config)
