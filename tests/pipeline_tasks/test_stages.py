"""The stage calls the DAG makes: params, run identity, and the whole chain in one process."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from pipeline_tasks import stages, storage
from pipeline_tasks.errors import ConfigError, IngestError


def spec(**params) -> stages.RunSpec:
    return stages.RunSpec(dag_id="ml_training_pipeline", run_id="manual__2013-03-01",
                          interval_start="2013-03-01T00:00:00+00:00",
                          interval_end="2013-03-02T00:00:00+00:00",
                          logical_date="2013-03-01T00:00:00+00:00", params=params)


def test_empty_params_fall_back_to_the_dag_defaults():
    run = spec(source="", target="", model_name="", task_type="auto")
    assert run.param("training_window_days") == 28
    assert run.source == run.config.demo_source_uri
    assert run.model_name == "flights_is_late"
    assert run.run_key == "ml_training_pipeline/interval_end=2013-03-02/run_id=manual__2013-03-01"


def test_gate_params_override_the_config_for_one_run():
    run = spec(min_baseline_lift=0.2, min_primary_metric=0.7)
    assert run.config.min_baseline_lift == 0.2 and run.config.min_primary_metric == 0.7
    assert spec().config.min_primary_metric is None


def test_an_unknown_task_type_names_the_param():
    with pytest.raises(ConfigError, match="param 'task_type' must be one of"):
        _ = spec(source="/data/x.csv", task_type="ranking").task_type


def test_lineage_ties_back_to_the_airflow_run_and_hides_the_sql_url():
    run = stages.RunSpec(dag_id="d", run_id="r", interval_start="a", interval_end="b",
                         params={"source": "select 1"}, sql_url="postgresql://u:secret@h/db")
    assert run.lineage["airflow.run_id"] == "r" and run.lineage["source"] == "select 1"
    assert "secret" not in repr(run.to_dict())


def test_run_all_trains_and_registers_a_csv(tmp_path, regression_frame):
    path = tmp_path / "diamonds.csv"
    regression_frame.to_csv(path, index=False)
    run = spec(source=str(path), target="price", model_name="stages_diamonds")
    results = stages.run_all(run)
    assert results["ingest"]["rows"] == len(regression_frame)
    assert results["validate"]["success"] and results["validate"]["suite_inferred"]
    assert storage.exists(results["version"]["manifest_uri"])
    assert results["train"]["task_type"] == "regression"
    assert results["evaluate"]["blessed"], results["evaluate"]["reason"]
    client = MlflowClient(tracking_uri=run.config.mlflow_tracking_uri,
                          registry_uri=run.config.mlflow_registry_uri)
    version = client.get_model_version("stages_diamonds", results["register"]["version"])
    assert version.tags["airflow.run_id"] == "manual__2013-03-01"
    assert version.tags["dataset_version"] == results["version"]["version_id"]


def test_a_missing_source_stops_at_ingest(tmp_path):
    missing = tmp_path / "nowhere" / "data.csv"
    with pytest.raises(IngestError, match="nowhere"):
        stages.ingest(spec(source=str(missing), target="y"))


def test_a_rejected_deploy_gives_the_champion_title_back(tmp_path, regression_frame):
    from pipeline_tasks.errors import DeployRejected
    from pipeline_tasks.http import free_port
    from pipeline_tasks.registry import current_champion
    from pipeline_tasks.serving.supervisor import SupervisorClient

    path = tmp_path / "diamonds.csv"
    regression_frame.to_csv(path, index=False)
    run = spec(source=str(path), target="price", model_name="stages_deploy_fail",
               serving_port=free_port())
    results = stages.run_all(run)
    registered = results["register"]
    assert registered["promoted"] and registered["previous_champion"] is None
    # the canary cannot run on a holdout that lacks the model's columns: the deploy is rejected
    bad = tmp_path / "holdout.parquet"
    regression_frame[["price"]].to_parquet(bad)
    try:
        with pytest.raises(DeployRejected, match=r"lacks column\(s\).*champion alias removed"):
            stages.deploy(run, {**results["train"], "holdout_uri": bad.as_uri()}, registered)
        # nothing serves this model, so the registry names no champion
        assert current_champion("stages_deploy_fail") is None
        client = MlflowClient(tracking_uri=run.config.mlflow_tracking_uri,
                              registry_uri=run.config.mlflow_registry_uri)
        tags = client.get_model_version("stages_deploy_fail", registered["version"]).tags
        assert tags["promotion_status"] == "deploy_failed"

        # the task run again once the cause is fixed: the version takes the title back, is served
        deployed = stages.deploy(run, results["train"], registered)
        assert deployed["status"] == "live" and deployed["version"] == registered["version"]
        assert current_champion("stages_deploy_fail") == registered["version"]
    finally:
        SupervisorClient(run.config).shutdown()
