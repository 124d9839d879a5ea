"""The stage calls the DAG makes: params, run identity, and the whole chain in one process."""

from __future__ import annotations

from dataclasses import replace

import pytest
from mlflow.tracking import MlflowClient

from pipeline_tasks import stages
from pipeline_tasks.core import storage
from pipeline_tasks.core.errors import ConfigError, IngestError


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
    run = spec(source=str(path), target="price", model_name="stages_diamonds",
               slice_columns="cut", sensitive_columns="color")
    results = stages.run_all(run)
    assert results["ingest"].rows == len(regression_frame)
    assert results["validate"].success and results["validate"].suite_inferred
    assert storage.exists(results["version"].manifest_uri)
    assert results["train"].task_type == "regression"
    assert results["evaluate"].blessed, results["evaluate"].reason
    client = MlflowClient(tracking_uri=run.config.mlflow_tracking_uri,
                          registry_uri=run.config.mlflow_registry_uri)
    version = client.get_model_version("stages_diamonds", results["register"].version)
    assert version.tags["airflow.run_id"] == "manual__2013-03-01"
    assert version.tags["dataset_version"] == results["version"].version_id

    # the decision judged each slice and measured fairness; the version's card says so
    decision = results["evaluate"]
    assert {s["value"] for s in decision.slices} == set(regression_frame["cut"])
    assert not any(s["gated"] for s in decision.slices)  # the first version: nothing to compare
    assert any(s["note"] == "no champion to compare with" for s in decision.slices)
    assert decision.fairness[0]["column"] == "color" and len(decision.fairness[0]["groups"]) == 7
    from pipeline_tasks.lineage.cards import read_model_card

    assert version.tags["model_card"] == "model_card/model_card.html"
    html = read_model_card("stages_diamonds", version.version, run.config).decode()
    assert 'data-slice="cut=Ideal"' in html and "fairness" in html.lower()
    assert "blessed" in html and "stages_diamonds" in html
    markdown = read_model_card("stages_diamonds", version.version, run.config, "md").decode()
    assert "cut=Ideal" in markdown.replace("\\", "") and "color" in markdown


def test_a_missing_source_stops_at_ingest(tmp_path):
    missing = tmp_path / "nowhere" / "data.csv"
    with pytest.raises(IngestError, match="nowhere"):
        stages.ingest(spec(source=str(missing), target="y"))


def test_a_rejected_deploy_gives_the_champion_title_back(tmp_path, regression_frame):
    from pipeline_tasks.core.errors import DeployRejected
    from pipeline_tasks.core.http import free_port
    from pipeline_tasks.deploy.local import SupervisorClient
    from pipeline_tasks.model.registry import current_champion

    path = tmp_path / "diamonds.csv"
    regression_frame.to_csv(path, index=False)
    run = spec(source=str(path), target="price", model_name="stages_deploy_fail",
               serving_port=free_port())
    results = stages.run_all(run)
    registered = results["register"]
    assert registered.promoted and registered.previous_champion is None
    # the canary cannot run on a holdout that lacks the model's columns: the deploy is rejected
    bad = tmp_path / "holdout.parquet"
    regression_frame[["price"]].to_parquet(bad)
    try:
        with pytest.raises(DeployRejected, match=r"lacks column\(s\).*champion alias removed"):
            stages.deploy(run, replace(results["train"], holdout_uri=bad.as_uri()),
                          registered)
        # nothing serves this model, so the registry names no champion
        assert current_champion("stages_deploy_fail") is None
        client = MlflowClient(tracking_uri=run.config.mlflow_tracking_uri,
                              registry_uri=run.config.mlflow_registry_uri)
        tags = client.get_model_version("stages_deploy_fail", registered.version).tags
        assert tags["promotion_status"] == "deploy_failed"

        # the task run again once the cause is fixed: the version takes the title back, is served
        deployed = stages.deploy(run, results["train"], registered)
        assert deployed.status == "live" and deployed.version == registered.version
        assert current_champion("stages_deploy_fail") == registered.version
    finally:
        SupervisorClient(run.config).shutdown()


@pytest.mark.parametrize("params, words", [
    ({"min_champion_delta": -1}, "min_champion_delta must be >= 0"),
    ({"min_baseline_lift": 2}, r"min_baseline_lift must be in \[0, 1\]"),
    ({"model_name": "../etc"}, "param 'model_name' must be letters"),
    ({"training_window_days": -3}, "training_window_days' must be a whole number >= 0"),
    ({"force_promote": True}, "'force_reason' must say who and why"),
])
def test_bad_params_fail_in_the_first_task_before_any_work(tmp_path, params, words):
    source = tmp_path / "never_read.csv"  # does not exist: the params are checked first
    with pytest.raises(ConfigError, match=words):
        stages.ingest(spec(source=str(source), target="y", **params))
    assert not (tmp_path / "lake").exists()


def test_the_input_contract_holds_from_validation_to_promotion(tmp_path, regression_frame):
    """One model, three sources: the model's suite and its champion's inputs stop a renamed
    column; a run allowed to change the inputs is a blocked challenger; forced, it is champion
    and recorded as breaking; later runs validate against the new champion's suite."""
    from pipeline_tasks.core.errors import BreakingChangeBlocked, DataValidationError
    from pipeline_tasks.model.registry import current_champion

    name = "stages_contract"
    first = tmp_path / "diamonds.csv"
    regression_frame.to_csv(first, index=False)
    v1 = stages.run_all(spec(source=str(first), target="price", model_name=name))
    assert v1["register"].promoted
    client = MlflowClient(tracking_uri=spec().config.mlflow_tracking_uri,
                          registry_uri=spec().config.mlflow_registry_uri)
    count = len(client.search_model_versions(f"name = '{name}'"))

    # the same source with a column renamed: stopped before versioning, the column named
    regression_frame.rename(columns={"carat": "carats"}).to_csv(first, index=False)
    renamed = spec(source=str(first), target="price", model_name=name)
    with pytest.raises(DataValidationError, match="carat") as stopped:
        stages.validate(renamed, stages.ingest(renamed))
    assert "carats" in str(stopped.value)

    # another source without two inputs: refused too, unless the run may change the inputs
    other = tmp_path / "diamonds_v2.csv"
    regression_frame.drop(columns=["depth", "table"]).to_csv(other, index=False)
    with pytest.raises(DataValidationError, match="depth"):
        run = spec(source=str(other), target="price", model_name=name)
        stages.validate(run, stages.ingest(run))
    changed = stages.run_all(spec(source=str(other), target="price", model_name=name,
                                  allow_schema_change=True))
    decision, registered = changed["evaluate"], changed["register"]
    assert decision.breaking_change and decision.gate_passed and not decision.blessed
    assert sorted(decision.schema_change["removed"]) == ["depth", "table"]
    assert not registered.promoted and registered.breaking_change
    assert current_champion(name) == v1["register"].version
    tags = client.get_model_version(name, registered.version).tags
    assert tags["promotion_status"] == "blocked_breaking_change"
    assert tags["schema_change.removed"] == "depth,table"
    with pytest.raises(BreakingChangeBlocked, match="breaking change"):
        stages.deploy(spec(source=str(other), target="price", model_name=name),
                      changed["train"], registered)

    # forced with a reason: champion, recorded as a breaking change
    forced = stages.run_all(spec(source=str(other), target="price", model_name=name,
                                 allow_schema_change=True, force_promote=True,
                                 force_reason="clients moved to v2 inputs"))
    assert forced["register"].promoted and forced["evaluate"].breaking_change
    tags = client.get_model_version(name, forced["register"].version).tags
    assert tags["breaking_change"] == "true" and tags["forced"] == "true"
    # the same data, code and params: the blocked version's model is reused, not fitted again
    assert forced["train"].cache_hit and forced["train"].run_id == changed["train"].run_id
    assert forced["register"].version == registered.version
    assert len(client.search_model_versions(f"name = '{name}'")) == count + 1

    # the next run of the model validates against the suite its new champion was checked with
    again = spec(source=str(other), target="price", model_name=name)
    validated = stages.validate(again, stages.ingest(again))
    assert validated.success and validated.suite_uri == forced["validate"].suite_uri
    assert validated.champion_version == forced["register"].version


def test_the_param_schema_words_each_problem_and_names_the_param():
    from pipeline_tasks.core import params as schema

    window = schema.spec_for(schema.TRAINING_DAG, "training_window_days")
    assert window.requirement() == "a whole number >= 0 and <= 3660"
    assert window.json_schema() == {"type": "integer", "minimum": 0, "maximum": 3660,
                                    "title": "Training window (days)"}
    assert schema.check_value(window, 3661) == ("param 'training_window_days' must be a whole "
                                                "number >= 0 and <= 3660, got 3661")
    assert schema.check_value(window, True) is not None  # a bool is not a number
    name = schema.spec_for(schema.TRAINING_DAG, "model_name")
    assert name.json_schema()["type"] == ["null", "string"]  # optional: the form does not require it
    assert name.problem(None) is None and name.problem("a.b-c_1") is None
    for bad in ("../etc", "a..b", "-x", "a b"):
        assert "letters, digits" in name.problem(bad), bad
    reason = schema.spec_for(schema.ROLLBACK_DAG, "reason")
    assert reason.problem("ab") == "must be at least 3 character(s), got 'ab'"
    # a config field's default is the config's; a monitoring run's target is the training DAG's
    port = schema.spec_for(schema.MONITORING_DAG, "serving_port")
    assert port.default_for(spec().config) == spec().config.serving_port
    assert schema.spec_for(schema.MONITORING_DAG, "target").default == "is_late"
    assert schema.problems(schema.ROLLBACK_DAG, {"version": "v7", "reason": "", "other": 1}) == [
        "param 'version' must be a version number or 'previous', got 'v7'"]


def test_params_beyond_the_forms_bounds_fail_the_first_task(tmp_path):
    with pytest.raises(ConfigError, match="param 'serving_port' must be a whole number >= 1"):
        stages.ingest(spec(source=str(tmp_path / "x.csv"), target="y", serving_port=0))
    with pytest.raises(ConfigError, match="param 'training_window_days' .* <= 3660, got 9999"):
        stages.ingest(spec(source=str(tmp_path / "x.csv"), target="y",
                           training_window_days=9999))
    run = stages.RunSpec(dag_id="ml_model_rollback", run_id="r", interval_start="a",
                         interval_end="b", params={"model_name": "m", "version": "v7; rm",
                                                   "reason": "a test"})
    with pytest.raises(ConfigError, match="param 'version' must be a version number"):
        stages.rollback(run)
    assert spec(require_approval=True).approval_required
    assert not spec().approval_required
