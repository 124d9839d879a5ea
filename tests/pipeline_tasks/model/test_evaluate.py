"""evaluate_candidate: candidate vs trivial baseline vs champion on one holdout, and overrides."""

from __future__ import annotations

import json

import pytest

from pipeline_tasks.core.config import load_config
from pipeline_tasks.core.errors import ConfigError, EvaluationError
from pipeline_tasks.core.schema import model_contract
from pipeline_tasks.model.evaluate import _gate, evaluate_candidate
from pipeline_tasks.model.train import TrainResult, train_model


@pytest.fixture(scope="module")
def eval_config(tmp_path_factory):
    return load_config(home=str(tmp_path_factory.mktemp("evaluate-home")))


def _train(frame, write_snapshot, config, name, **kwargs) -> TrainResult:
    uri = write_snapshot(frame, f"evaluate-{name}")
    return train_model(uri, dataset_version=f"sha-{name}", target="is_late",
                       model_name="flights_eval", config=config, run_key=name, **kwargs)


@pytest.fixture(scope="module")
def strong(flights_frame, write_snapshot, eval_config) -> TrainResult:
    return _train(flights_frame, write_snapshot, eval_config, "strong")


@pytest.fixture(scope="module")
def weak(flights_frame, write_snapshot, eval_config) -> TrainResult:
    """Same rows and split as ``strong`` but without dep_delay, the most telling feature."""
    return _train(flights_frame, write_snapshot, eval_config, "weak", exclude_columns=["dep_delay"])


@pytest.fixture(scope="module")
def shuffled(flights_frame, write_snapshot, eval_config) -> TrainResult:
    """Labels permuted at random: the model can only learn noise."""
    frame = flights_frame.copy()
    labelled = frame["is_late"].notna()
    frame.loc[labelled, "is_late"] = (
        frame.loc[labelled, "is_late"].sample(frac=1.0, random_state=7).to_numpy()
    )
    return _train(frame, write_snapshot, eval_config, "shuffled")


def _make_champion(model_name: str, result: TrainResult) -> str:
    """Register ``result`` under ``model_name`` and point the champion alias at it."""
    from mlflow.tracking import MlflowClient

    from pipeline_tasks.core.model_artifacts import verified_digest

    client = MlflowClient()
    if not client.search_registered_models(f"name = '{model_name}'"):
        client.create_registered_model(model_name)
    # the digest training recorded, as registration copies it: the champion is loaded verified
    version = client.create_model_version(
        model_name, source=result.model_uri, run_id=result.run_id,
        tags={"artifact_sha256": verified_digest(result.model_uri)}).version
    client.set_registered_model_alias(model_name, "champion", version)
    return str(version)


def contract(result: TrainResult):
    return model_contract(result.model_uri, target=result.target, task_type=result.task_type)


def _evaluate(result: TrainResult, config, model_name: str, holdout_uri: str | None = None,
              **kwargs):
    return evaluate_candidate(
        model_name=model_name, candidate_model_uri=result.model_uri,
        holdout_uri=holdout_uri or result.holdout_uri, target=result.target,
        task_type=result.task_type, primary_metric=result.primary_metric,
        greater_is_better=result.greater_is_better, config=config, **kwargs,
    )


def test_good_candidate_without_champion_is_blessed(strong, eval_config):
    decision = _evaluate(strong, eval_config, "no_champion_model")
    assert decision.blessed is True and decision.forced is False
    assert decision.reason.startswith("blessed: roc_auc")
    assert "beats the trivial baseline 0.5000 by >=5%" in decision.reason
    assert "no champion yet" in decision.reason
    assert decision.champion_version is None and decision.champion_metrics is None
    # the same metric code as training, on the same rows
    assert decision.candidate_metrics == pytest.approx(strong.metrics)
    assert decision.baseline_metrics["roc_auc"] == 0.5
    assert decision.deltas["roc_auc_vs_baseline"] == pytest.approx(strong.metrics["roc_auc"] - 0.5)
    assert decision.thresholds["min_baseline_lift"] == eval_config.min_baseline_lift
    assert json.loads(json.dumps(decision.to_dict())) == decision.to_dict()


def test_model_trained_on_shuffled_labels_is_rejected(shuffled, eval_config):
    decision = _evaluate(shuffled, eval_config, "no_champion_model")
    assert decision.blessed is False
    assert decision.reason.startswith("rejected: roc_auc")
    assert "does not beat the trivial baseline 0.5000 by 5% (needs >= 0.5250)" in decision.reason


def test_better_candidate_beats_the_champion(strong, weak, eval_config):
    version = _make_champion("better_model", weak)
    decision = _evaluate(strong, eval_config, "better_model")
    assert decision.blessed is True
    assert decision.champion_version == version
    assert decision.champion_metrics["roc_auc"] < decision.candidate_metrics["roc_auc"]
    assert decision.deltas["roc_auc_vs_champion"] == pytest.approx(
        decision.candidate_metrics["roc_auc"] - decision.champion_metrics["roc_auc"])
    assert f"beats champion v{version}" in decision.reason


def test_worse_candidate_is_rejected_against_the_champion(strong, weak, eval_config):
    version = _make_champion("worse_model", strong)
    # the weak model reads its columns from the strong model's holdout: same rows
    decision = _evaluate(weak, eval_config, "worse_model", holdout_uri=strong.holdout_uri)
    assert decision.blessed is False
    assert "does not beat the trivial baseline" not in decision.reason
    assert f"is not better than champion v{version}" in decision.reason
    assert decision.deltas["roc_auc_vs_champion"] < 0


def test_an_equal_model_is_not_promoted(strong, eval_config):
    version = _make_champion("equal_model", strong)
    decision = _evaluate(strong, eval_config, "equal_model")
    assert decision.blessed is False
    assert decision.deltas["roc_auc_vs_champion"] == 0.0
    assert f"not better than champion v{version}" in decision.reason
    assert "needs a strict improvement" in decision.reason
    relaxed = eval_config.with_overrides(min_champion_delta=0.5)
    strict = _evaluate(strong, relaxed, "equal_model")
    assert "needs an improvement >= 0.5" in strict.reason


def test_a_candidate_that_drops_an_input_is_blocked(strong, weak, eval_config):
    version = _make_champion("schema_model", strong)
    decision = _evaluate(weak, eval_config, "schema_model", candidate_contract=contract(weak))
    # it beats the baseline, but the champion's clients send dep_delay, which it no longer takes
    assert decision.gate_passed is True and decision.blessed is False
    assert decision.breaking_change is True
    assert decision.champion_version == version and decision.champion_metrics is None
    assert decision.schema_change["removed"] == ["dep_delay"]
    assert decision.schema_change["against_version"] == version
    assert decision.reason.startswith("blocked (breaking change): breaking change against "
                                      f"champion v{version}: removed input(s) dep_delay")
    assert "force_promote" in decision.reason and "approval" in decision.reason


def test_a_forced_breaking_candidate_is_blessed_and_says_so(strong, weak, eval_config):
    _make_champion("schema_forced_model", strong)
    decision = _evaluate(weak, eval_config, "schema_forced_model",
                         candidate_contract=contract(weak), force_promote=True,
                         force_reason="clients moved to the new inputs on 2026-11-27")
    assert decision.blessed and decision.forced and decision.breaking_change
    assert "would have said: blocked (breaking change)" in decision.reason


def test_a_new_optional_input_is_not_breaking(flights_frame, write_snapshot, strong,
                                             eval_config):
    import numpy as np

    version = _make_champion("schema_added_model", strong)
    # a new input with nulls where labels exist: the server accepts requests without it
    gust = np.random.default_rng(3).gamma(2.0, 5.0, len(flights_frame))
    gust[::7] = np.nan
    extra = _train(flights_frame.assign(wind_gust=gust), write_snapshot, eval_config, "extra")
    decision = _evaluate(extra, eval_config, "schema_added_model",
                         candidate_contract=contract(extra))
    assert decision.breaking_change is False
    assert decision.schema_change["added"] == ["wind_gust"]
    assert decision.schema_change["added_required"] == []
    # the champion scored the same holdout (it ignores the new column)
    assert decision.champion_metrics is not None and decision.champion_version == version
    assert "roc_auc_vs_champion" in decision.deltas


def test_a_champion_that_cannot_score_a_compatible_holdout_is_an_error(strong, weak,
                                                                       eval_config):
    # without the candidate's contract the change is unknown: the champion must score the holdout
    version = _make_champion("schema_unknown_model", strong)
    with pytest.raises(EvaluationError, match=f"champion v{version} cannot score the "
                                              "candidate's holdout.*dep_delay"):
        _evaluate(weak, eval_config, "schema_unknown_model")


def test_floor_from_the_config_applies(strong, eval_config):
    config = eval_config.with_overrides(min_primary_metric=0.999)
    decision = _evaluate(strong, config, "no_champion_model")
    assert decision.blessed is False
    assert "is below the floor min_primary_metric=0.999" in decision.reason


def test_force_promote_needs_a_reason(shuffled, eval_config):
    with pytest.raises(ConfigError, match="force_promote=True needs a non-empty force_reason"):
        _evaluate(shuffled, eval_config, "no_champion_model", force_promote=True,
                  force_reason="  ")


def test_force_promote_blesses_and_records_the_override(shuffled, eval_config):
    decision = _evaluate(shuffled, eval_config, "no_champion_model", force_promote=True,
                         force_reason="incident 42: roll forward")
    assert decision.blessed is True and decision.forced is True
    assert decision.force_reason == "incident 42: roll forward"
    assert "override" in decision.reason and "incident 42" in decision.reason
    assert "would have said: rejected" in decision.reason


def test_bad_task_type_is_refused(strong, eval_config):
    with pytest.raises(ConfigError, match="task_type must be one of"):
        evaluate_candidate(model_name="x", candidate_model_uri=strong.model_uri,
                           holdout_uri=strong.holdout_uri, target="is_late", task_type="ranking",
                           primary_metric="roc_auc", greater_is_better=True, config=eval_config)


def test_gate_for_a_lower_is_better_metric(eval_config):
    def gate(candidate, champion=None):
        return _gate(metric="rmse", greater_is_better=False, candidate={"rmse": candidate},
                     baseline={"rmse": 10.0}, champion=None if champion is None else
                     {"rmse": champion}, champion_version=None if champion is None else "3",
                     champion_note=None if champion else "no champion yet", config=eval_config)

    assert gate(9.5)[0] is True  # exactly 5% below the baseline
    blessed, reason = gate(9.6)
    assert not blessed and "does not beat the trivial baseline 10.0000 by 5% (needs <= 9.5000)" \
        in reason
    assert gate(8.0, champion=8.5)[0] is True
    blessed, reason = gate(8.6, champion=8.5)
    assert not blessed and "not better than champion v3 8.5000 (improvement -0.1000" in reason


def test_multiclass_metrics_tolerate_a_label_the_model_never_saw():
    import numpy as np

    from pipeline_tasks.model.metrics import classification_metrics, primary_metric

    y_true = np.array(["a", "b", "c", "c"])
    proba = np.array([[0.8, 0.2], [0.3, 0.7], [0.5, 0.5], [0.9, 0.1]])  # model knows a, b only
    metrics = classification_metrics(y_true, proba, classes=np.array(["a", "b"]))
    assert set(metrics) == {"accuracy", "log_loss", "f1_macro"}
    assert metrics["accuracy"] == 0.5
    assert metrics["log_loss"] > 5  # "c" got probability 0
    assert primary_metric("classification", n_classes=3) == ("f1_macro", True)


def test_a_champion_without_a_recorded_digest_is_refused(strong, weak, eval_config):
    """Registered by hand, without the sha256 registration records: it is not loaded."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    client.create_registered_model("unverified_model")
    version = client.create_model_version("unverified_model", source=weak.model_uri,
                                          run_id=weak.run_id).version
    client.set_registered_model_alias("unverified_model", "champion", version)
    with pytest.raises(EvaluationError, match=f"champion v{version} of unverified_model is "
                                              f"refused: model unverified_model v{version} has "
                                              "no recorded artifact_sha256"):
        _evaluate(strong, eval_config, "unverified_model")


def test_training_records_the_digest_evaluation_checks(strong):
    from mlflow.tracking import MlflowClient

    from pipeline_tasks.core import model_artifacts

    logged = MlflowClient().get_logged_model(strong.model_uri.removeprefix("models:/"))
    assert logged.tags["artifact_sha256"] == model_artifacts.model_digest(strong.model_uri)
