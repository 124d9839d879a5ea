"""train_model: one MLflow run per candidate, a loadable model, a holdout file, determinism."""

from __future__ import annotations

import json

import pytest

from pipeline_tasks.core import storage
from pipeline_tasks.core.config import load_config
from pipeline_tasks.core.errors import ConfigError, PipelineInputError
from pipeline_tasks.model.train import TrainResult, normalize_target, resolve_task_type, train_model

LINEAGE = {
    "airflow.dag_id": "ml_training_pipeline",
    "airflow.run_id": "scheduled__2013-12-31T00:00:00+00:00",
    "airflow.logical_date": "2013-12-31T00:00:00+00:00",
    "code_version": "abc1234",
}


@pytest.fixture(scope="module")
def train_config(tmp_path_factory):
    return load_config(home=str(tmp_path_factory.mktemp("train-home")))


@pytest.fixture(scope="module")
def flights_snapshot(flights_frame, write_snapshot):
    return write_snapshot(flights_frame, "train-flights")


@pytest.fixture(scope="module")
def flights_result(flights_snapshot, train_config) -> TrainResult:
    return train_model(
        flights_snapshot, dataset_version="sha-flights-1", target="is_late",
        model_name="flights_late", config=train_config, run_key="run-a", lineage=LINEAGE,
    )


def test_classification_run_is_fully_recorded(flights_result, flights_frame, flights_snapshot,
                                              train_config):
    from mlflow.tracking import MlflowClient

    result = flights_result
    assert result.task_type == "classification"
    assert result.primary_metric == "roc_auc" and result.greater_is_better is True
    assert result.time_column == "time_hour"  # auto-detected
    assert set(result.metrics) == {"roc_auc", "accuracy", "f1", "precision", "recall", "log_loss"}
    assert result.metrics["roc_auc"] > 0.7  # dep_delay makes lateness easy to predict
    assert result.feature_columns == ["carrier", "origin", "dest", "distance", "hour", "dep_delay"]
    labelled = int(flights_frame["is_late"].notna().sum())
    assert result.n_train + result.n_holdout == labelled < len(flights_frame)
    assert json.loads(json.dumps(result.to_dict())) == result.to_dict()

    client = MlflowClient()
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.experiment_id == result.experiment_id
    experiment = client.get_experiment(result.experiment_id)
    assert experiment.name == "flights_late"
    assert experiment.artifact_location.startswith(train_config.mlflow_artifact_uri)
    for key, value in LINEAGE.items():
        assert run.data.tags[key] == value
    assert run.data.tags["dataset_version"] == "sha-flights-1"
    assert run.data.tags["task_type"] == "classification"
    assert run.data.tags["target"] == "is_late"
    params = run.data.params
    assert params["seed"] == "42"
    assert params["split.split"] == "time"
    assert params["n_train"] == str(result.n_train)
    assert params["model.random_state"] == "42"
    assert params["features"] == ",".join(result.feature_columns)
    assert run.data.metrics["roc_auc"] == pytest.approx(result.metrics["roc_auc"])

    plots = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert plots == {"plots/confusion_matrix.png", "plots/roc_curve.png",
                     "plots/feature_importance.png"}
    [dataset_input] = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == "sha-flights-1"
    assert storage.local_path(flights_snapshot).name in dataset_input.dataset.source
    assert {t.key: t.value for t in dataset_input.tags}["mlflow.data.context"] == "training"


def test_logged_model_loads_and_predicts(flights_result):
    import mlflow

    holdout = storage.read_parquet(flights_result.holdout_uri)
    rows = holdout[flights_result.feature_columns].head(20)
    model = mlflow.sklearn.load_model(flights_result.model_uri)
    proba = model.predict_proba(rows)
    assert proba.shape == (20, 2)
    served = mlflow.pyfunc.load_model(flights_result.model_uri)
    assert list(served.predict(rows)) == list(model.predict(rows))
    assert served.metadata.get_input_schema().input_names() == flights_result.feature_columns


def test_holdout_is_the_latest_time_slice(flights_result, flights_frame):
    import mlflow

    holdout = storage.read_parquet(flights_result.holdout_uri)
    assert storage.local_path(flights_result.holdout_uri).name == "holdout.parquet"
    assert "/holdout/run-a/" in flights_result.holdout_uri
    assert len(holdout) == flights_result.n_holdout
    assert list(holdout.columns) == [*flights_result.feature_columns, "is_late", "time_hour"]
    assert holdout["is_late"].notna().all()
    labelled = flights_frame[flights_frame["is_late"].notna()]
    cutoff = holdout["time_hour"].min()
    assert (labelled["time_hour"] < cutoff).sum() == flights_result.n_train
    model = mlflow.sklearn.load_model(flights_result.model_uri)
    from pipeline_tasks.model.metrics import score_model

    rescored = score_model(model, holdout[flights_result.feature_columns],
                           holdout["is_late"], "classification")
    assert rescored == pytest.approx(flights_result.metrics)


def test_same_data_and_seed_give_the_same_model(flights_result, flights_snapshot, train_config):
    from mlflow.tracking import MlflowClient

    # an earlier attempt of "run-b" was killed mid-run and left its MLflow run RUNNING; an
    # unrelated run is still going
    client = MlflowClient()
    experiment = client.get_experiment_by_name("flights_late").experiment_id
    dead = client.create_run(experiment, tags={"run_key": "run-b"}).info.run_id
    live = client.create_run(experiment, tags={"run_key": "run-c"}).info.run_id
    again = train_model(
        flights_snapshot, dataset_version="sha-flights-1", target="is_late",
        model_name="flights_late", config=train_config, run_key="run-b", lineage=LINEAGE,
    )
    assert again.run_id != flights_result.run_id
    assert again.metrics == flights_result.metrics
    assert again.best_params == flights_result.best_params
    assert client.get_run(dead).info.status == "KILLED"
    assert "later attempt" in client.get_run(dead).data.tags["mlops.abandoned"]
    assert client.get_run(live).info.status == "RUNNING"
    assert client.get_run(again.run_id).info.status == "FINISHED"
    client.set_terminated(live)


def test_regression_with_random_split(regression_frame, write_snapshot, train_config):
    from mlflow.tracking import MlflowClient

    uri = write_snapshot(regression_frame, "train-diamonds")
    result = train_model(uri, dataset_version="sha-diamonds", target="price",
                         model_name="diamond_price", config=train_config, run_key="diamonds-1")
    assert result.task_type == "regression"
    assert result.time_column is None
    assert (result.primary_metric, result.greater_is_better) == ("rmse", False)
    assert set(result.metrics) == {"rmse", "mae", "r2"}
    assert result.metrics["r2"] > 0.8
    assert result.n_holdout == 400
    run = MlflowClient().get_run(result.run_id)
    assert run.data.params["split.split"] == "random"
    plots = {a.path for a in MlflowClient().list_artifacts(result.run_id, "plots")}
    assert "plots/residuals.png" in plots


def test_search_stays_small_within_its_budget(regression_frame, write_snapshot, train_config):
    from mlflow.tracking import MlflowClient

    uri = write_snapshot(regression_frame, "train-diamonds-search")
    config = train_config.with_overrides(search_time_budget_s=4.0, search_cv_folds=2)
    result = train_model(uri, dataset_version="sha-diamonds", target="price",
                         model_name="diamond_price", config=config, run_key="diamonds-search",
                         run_search=True)
    params = MlflowClient().get_run(result.run_id).data.params
    assert params["search.enabled"] == "True"
    assert 1 <= int(params["search.n_iter"]) <= 20
    assert params["search.cv"] == "KFold"
    assert set(result.best_params) == {"learning_rate", "max_leaf_nodes", "min_samples_leaf",
                                       "l2_regularization", "max_iter"}
    assert float(params["search.seconds"]) < 30


@pytest.mark.parametrize(
    ("change", "kwargs", "error", "match"),
    [
        (None, {"target": "no_such_column"}, ConfigError, "target column 'no_such_column'"),
        (None, {"task_type": "clustering"}, ConfigError, "task_type must be one of"),
        (None, {"time_column": "departed_at"}, ConfigError, "time_column 'departed_at'"),
        (None, {"task_type": "regression", "target": "carrier"}, ConfigError,
         "needs a numeric target"),
        (None, {"time_column": "carrier"}, ConfigError,
         "time_column 'carrier' .* cannot be read as ISO 8601 datetimes"),
        ("two_datetimes", {}, ConfigError, "several datetime columns \\(time_hour, booked_at\\)"),
        ("single_class", {}, PipelineInputError, "'is_late' has a single class"),
        ("no_labels", {}, PipelineInputError, "no labelled rows: target column 'is_late'"),
    ],
)
def test_bad_inputs_fail_clearly(flights_frame, write_snapshot, train_config, change, kwargs,
                                 error, match):
    import pandas as pd

    frame = flights_frame.copy()
    if change == "single_class":
        frame["is_late"] = frame["is_late"].where(frame["is_late"].isna(), True)
    elif change == "no_labels":
        frame["is_late"] = None
    elif change == "two_datetimes":
        frame["booked_at"] = frame["time_hour"] - pd.Timedelta(days=30)
    uri = write_snapshot(frame, f"bad-{change}")
    call = {"dataset_version": "v", "target": "is_late", "model_name": "bad",
            "config": train_config, "run_key": "bad", **kwargs}
    with pytest.raises(error, match=match):
        train_model(uri, **call)


def test_task_type_resolution():
    import pandas as pd

    assert resolve_task_type(pd.Series([True, False])) == "classification"
    assert resolve_task_type(pd.Series(["a", "b"])) == "classification"
    assert resolve_task_type(pd.Series([0.0, 1.0, None])) == "classification"
    assert resolve_task_type(pd.Series(range(100))) == "regression"
    assert resolve_task_type(pd.Series([0.5, 1.0])) == "regression"
    assert resolve_task_type(pd.Series([0.5, 1.0]), "classification") == "classification"
    assert list(normalize_target(pd.Series([0.0, 1.0]), "classification")) == [0, 1]
    assert normalize_target(pd.Series([True, False], dtype=object), "classification").dtype == bool
