"""register_model: one version per run, challenger always, champion by compare-and-set."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pipeline_tasks.core.config import load_config
from pipeline_tasks.model.evaluate import EvaluationDecision
from pipeline_tasks.model.registry import (
    confirm_champion,
    current_champion,
    register_model,
    restore_champion,
)
from pipeline_tasks.model.train import train_model

LINEAGE = {"airflow.dag_id": "ml_training_pipeline", "airflow.run_id": "manual__1",
           "dataset_version": "sha-registry", "code_version": "abc1234"}


@pytest.fixture(scope="module")
def registry_config(tmp_path_factory):
    return load_config(home=str(tmp_path_factory.mktemp("registry-home")))


@pytest.fixture(scope="module")
def runs(flights_frame, write_snapshot, registry_config):
    """Four training runs (same data, distinct MLflow runs) to register."""
    uri = write_snapshot(flights_frame.head(1500), "registry-flights")
    return [
        train_model(uri, dataset_version="sha-registry", target="is_late",
                    model_name="flights_registry", config=registry_config, run_key=f"reg-{i}")
        for i in range(4)
    ]


def _decision(blessed: bool, champion_version: str | None, *, forced: bool = False) -> dict:
    verdict = "blessed: roc_auc fine" if blessed else "rejected: roc_auc 0.5 vs baseline 0.5"
    return EvaluationDecision(
        blessed=blessed, reason=verdict, primary_metric="roc_auc", greater_is_better=True,
        candidate_metrics={"roc_auc": 0.8}, baseline_metrics={"roc_auc": 0.5},
        champion_metrics=None, champion_version=champion_version, deltas={},
        thresholds={}, forced=forced, force_reason="manual" if forced else None,
    ).to_dict()


def _register(name, run, decision, config):
    return register_model(model_name=name, run_id=run.run_id, model_uri=run.model_uri,
                          decision=decision, lineage=LINEAGE, config=config)


def test_first_blessed_version_becomes_champion_and_challenger(runs, registry_config):
    from mlflow.tracking import MlflowClient

    result = _register("first_model", runs[0], _decision(True, None), registry_config)
    assert (result.version, result.promoted) == ("1", True)
    assert result.aliases == ["challenger", "champion"]
    assert result.champion_version == "1" and result.previous_champion is None
    assert result.reason.startswith("promoted from no champion: blessed")
    assert result.to_dict()["version"] == "1"

    version = MlflowClient().get_model_version("first_model", "1")
    assert version.run_id == runs[0].run_id
    for key, value in LINEAGE.items():
        assert version.tags[key] == value
    assert version.tags["blessed"] == "true"
    assert version.tags["primary_metric"] == "roc_auc"
    assert version.tags["primary_metric_value"] == "0.8"
    assert version.tags["promotion_status"] == "champion"
    assert version.tags["promoted_from"] == "none"
    assert runs[0].run_id in version.description

    import mlflow

    model = mlflow.sklearn.load_model("models:/first_model@champion")
    assert hasattr(model, "predict_proba")


def test_rejected_version_gets_challenger_only(runs, registry_config):
    from mlflow.tracking import MlflowClient

    _register("rejected_model", runs[0], _decision(True, None), registry_config)
    result = _register("rejected_model", runs[1], _decision(False, "1"), registry_config)
    assert (result.version, result.promoted) == ("2", False)
    assert result.aliases == ["challenger"]
    assert result.champion_version == "1" == result.previous_champion
    assert result.reason.startswith("not promoted: rejected")
    tags = MlflowClient().get_model_version("rejected_model", "2").tags
    assert tags["blessed"] == "false" and tags["promotion_status"] == "challenger"
    assert MlflowClient().get_model_version("rejected_model", "1").aliases == ["champion"]


def test_registering_the_same_run_again_reuses_its_version(runs, registry_config):
    from mlflow.tracking import MlflowClient

    first = _register("retry_model", runs[0], _decision(True, None), registry_config)
    again = _register("retry_model", runs[0], _decision(True, None), registry_config)
    assert again.version == first.version == "1"
    assert again.promoted is True and "already champion" in again.reason
    assert len(MlflowClient().search_model_versions("name = 'retry_model'")) == 1


def test_stale_decision_is_not_promoted(runs, registry_config):
    from mlflow.tracking import MlflowClient

    name = "cas_model"
    _register(name, runs[0], _decision(True, None), registry_config)  # v1 champion
    # evaluated when there was no champion, but v1 became champion meanwhile
    stale = _register(name, runs[1], _decision(True, None), registry_config)
    assert stale.promoted is False
    assert stale.reason == ("not promoted: champion moved from no champion to v1 while this run "
                            "was evaluated; re-evaluate")
    assert stale.champion_version == "1" and stale.aliases == ["challenger"]
    # evaluated against v1, which is still champion: promoted, and v1 records its successor
    fresh = _register(name, runs[2], _decision(True, "1", forced=True), registry_config)
    assert fresh.promoted is True and fresh.version == "3"
    assert fresh.previous_champion == "1" and fresh.champion_version == "3"
    assert fresh.reason.startswith("promoted (forced) from v1")
    client = MlflowClient()
    assert client.get_model_version(name, "1").tags["replaced_by"] == "3"
    assert client.get_model_version(name, "1").tags["promotion_status"] == "former_champion"
    assert client.get_model_version(name, "3").tags["promoted_from"] == "1"
    assert client.get_model_version(name, "3").tags["force_reason"] == "manual"
    assert current_champion(name) == "3"
    # a decision against v1 now is stale too
    late = _register(name, runs[3], _decision(True, "1"), registry_config)
    assert late.promoted is False and "champion moved from v1 to v3" in late.reason


def test_stale_decision_is_evaluated_again_when_it_can_be(runs, registry_config):
    name = "cas_reevaluated"
    _register(name, runs[0], _decision(True, None), registry_config)  # v1 champion
    calls = []

    def against_v1(blessed):
        def reevaluate():
            calls.append(current_champion(name))  # sees the new champion (outside the lock)
            return _decision(blessed, "1")
        return reevaluate

    worse = register_model(model_name=name, run_id=runs[1].run_id, model_uri=runs[1].model_uri,
                           decision=_decision(True, None), lineage=LINEAGE,
                           config=registry_config, reevaluate=against_v1(False))
    assert calls == ["1"] and worse.promoted is False and worse.champion_version == "1"
    assert worse.reason.startswith("not promoted: rejected")
    better = register_model(model_name=name, run_id=runs[2].run_id, model_uri=runs[2].model_uri,
                            decision=_decision(True, None), lineage=LINEAGE,
                            config=registry_config, reevaluate=against_v1(True))
    assert calls == ["1", "1"] and better.promoted is True and better.champion_version == "3"
    from mlflow.tracking import MlflowClient

    assert MlflowClient().get_model_version(name, "3").tags["evaluated_against_champion"] == "1"


def test_concurrent_promotions_only_one_wins(runs, registry_config):
    name = "race_model"
    _register(name, runs[0], _decision(True, None), registry_config)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(_register, name, run, _decision(True, "1"), registry_config)
                   for run in runs[1:3]]
        results = [future.result() for future in futures]  # re-raises a thread's error
    assert sorted(r.promoted for r in results) == [False, True]
    winner = next(r for r in results if r.promoted)
    assert current_champion(name) == winner.version
    assert sorted(r.version for r in results) == ["2", "3"]


def test_an_approved_version_is_compared_again_when_the_champion_moved(runs, registry_config):
    from mlflow.tracking import MlflowClient

    name = "approval_model"
    _register(name, runs[0], _decision(True, None), registry_config)  # v1 champion
    held = [register_model(model_name=name, run_id=run.run_id, model_uri=run.model_uri,
                           decision=_decision(True, "1"), lineage=LINEAGE,
                           config=registry_config, hold_promotion=True) for run in runs[1:3]]
    assert [(h.version, h.promoted, h.awaiting_approval) for h in held] == [
        ("2", False, True), ("3", False, True)]
    assert current_champion(name) == "1"
    calls = []

    def reevaluate(blessed):
        def against_current():
            calls.append(current_champion(name))
            return _decision(blessed, current_champion(name))
        return against_current

    # v2 approved while v1 is still champion: promoted without a second comparison
    first = confirm_champion(name, "2", evaluated_against="1", reevaluate=reevaluate(True),
                             reason="approved by a human: better", config=registry_config)
    assert (first.promoted, first.previous_champion, first.champion_version) == (True, "1", "2")
    assert calls == [] and first.aliases == ["champion"]
    client = MlflowClient()
    assert client.get_model_version(name, "2").tags["promoted_from"] == "1"
    assert client.get_model_version(name, "1").tags["promotion_status"] == "former_champion"
    # approving it again (a retried task) changes nothing
    again = confirm_champion(name, "2", evaluated_against="1", reevaluate=reevaluate(True),
                             reason="approved", config=registry_config)
    assert again.promoted and "already champion" in again.reason and calls == []

    # v3 was evaluated against v1, but v2 is champion now and beats it: not promoted
    late = confirm_champion(name, "3", evaluated_against="1", reevaluate=reevaluate(False),
                            reason="approved by a human", config=registry_config)
    assert calls == ["2"] and late.promoted is False and current_champion(name) == "2"
    assert late.reason.startswith("not promoted: the champion moved to v2")
    assert client.get_model_version(name, "3").tags["promotion_status"] == "challenger"

    # v2 could not be deployed: the title goes back to v1, which still serves
    done = restore_champion(name, "2", to="1", reason="canary failed", config=registry_config)
    assert done == "champion restored to v1" and current_champion(name) == "1"
    assert client.get_model_version(name, "2").tags["promotion_status"] == "deploy_failed"
    assert client.get_model_version(name, "1").tags["promotion_status"] == "champion"
    # only while v2 is champion: a second call leaves the (moved) title alone
    assert restore_champion(name, "2", to="3", reason="x", config=registry_config) == \
        "champion left as v1 (it moved meanwhile)"
    assert current_champion(name) == "1"


def test_incomplete_decision_is_refused(runs, registry_config):
    with pytest.raises(ValueError, match="decision lacks blessed"):
        _register("bad_model", runs[0], {"reason": "x", "primary_metric": "roc_auc",
                                         "candidate_metrics": {}}, registry_config)


def test_the_artifact_digest_is_recorded_and_catches_tampering(runs, registry_config, tmp_path):
    from mlflow.tracking import MlflowClient

    from pipeline_tasks.core import model_artifacts

    _register("digest_model", runs[0], _decision(True, None), registry_config)
    recorded = MlflowClient().get_model_version("digest_model", "1").tags["artifact_sha256"]
    assert len(recorded) == 64
    folder = model_artifacts.fetch_verified("models:/digest_model/1", recorded, tmp_path / "ok")
    assert (folder / "MLmodel").exists()

    # change one byte of the stored model file, where the tracking store keeps it
    source = MlflowClient().get_model_version("digest_model", "1").source
    logged = MlflowClient().get_logged_model(source.removeprefix("models:/"))
    root = Path(logged.artifact_location.removeprefix("file://"))
    target = next(root.glob("*.skops"))
    original = target.read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    try:
        with pytest.raises(model_artifacts.ArtifactMismatch, match="does not match"):
            model_artifacts.fetch_verified("models:/digest_model/1", recorded, tmp_path / "bad")
        # nor can the changed files be registered again: training recorded the digest
        with pytest.raises(model_artifacts.ArtifactMismatch, match="recorded at training"):
            _register("digest_model_again", runs[0], _decision(True, None), registry_config)
    finally:
        target.write_bytes(original)  # later tests register this run again
    with pytest.raises(model_artifacts.ArtifactMismatch, match="no recorded artifact_sha256"):
        model_artifacts.fetch_verified("models:/digest_model/1", None, tmp_path / "none")


def _breaking(champion_version: str, *, forced: bool = False) -> dict:
    """A candidate that passes the gates but drops an input of the champion's."""
    from pipeline_tasks.core.schema import SchemaDiff

    diff = SchemaDiff(against_version=champion_version, removed=["dep_delay"], added=["delay"],
                      added_required=["delay"])
    reason = f"blocked (breaking change): {diff.summary()}"
    return {**_decision(forced, champion_version, forced=forced), "reason": reason,
            "gate_passed": True, "breaking_change": True, "schema_change": diff.to_dict()}


def test_a_breaking_candidate_is_a_blocked_challenger(runs, registry_config):
    from mlflow.tracking import MlflowClient

    _register("breaking_model", runs[0], _decision(True, None), registry_config)
    result = _register("breaking_model", runs[1], _breaking("1"), registry_config)
    assert (result.version, result.promoted, result.breaking_change) == ("2", False, True)
    assert result.aliases == ["challenger"] and result.champion_version == "1"
    tags = MlflowClient().get_model_version("breaking_model", "2").tags
    assert tags["promotion_status"] == "blocked_breaking_change"
    assert tags["breaking_change"] == "true"
    assert tags["schema_change.removed"] == "dep_delay" and tags["schema_change.added"] == "delay"
    assert tags["schema_change.against"] == "1"

    # forced with a reason: champion, and the version says it was a breaking change
    forced = _register("breaking_model", runs[2], _breaking("1", forced=True), registry_config)
    assert forced.promoted and forced.champion_version == "3"
    tags = MlflowClient().get_model_version("breaking_model", "3").tags
    assert tags["breaking_change"] == "true" and tags["forced"] == "true"
    assert tags["promotion_status"] == "champion"


def test_a_breaking_candidate_waits_for_a_person_when_approval_is_required(runs,
                                                                          registry_config):
    from pipeline_tasks.model.registry import confirm_champion

    _register("breaking_approved", runs[0], _decision(True, None), registry_config)
    held = register_model(model_name="breaking_approved", run_id=runs[1].run_id,
                          model_uri=runs[1].model_uri, decision=_breaking("1"),
                          lineage=LINEAGE, config=registry_config, hold_promotion=True)
    assert held.awaiting_approval and not held.promoted and held.champion_version == "1"
    # the person approves; meanwhile nothing moved, so it becomes champion as it is
    approved = confirm_champion("breaking_approved", held.version, evaluated_against="1",
                                reevaluate=lambda: _breaking("1"), reason="approved by a human",
                                config=registry_config, approved=True)
    assert approved.promoted and approved.champion_version == held.version


def test_a_cleared_register_of_an_older_run_moves_no_alias_back(runs, registry_config):
    """v1 then v2 became champion (and were deployed). Clearing ``register`` of v1's run alone
    must not give v1 the title (nothing would deploy it) nor take ``challenger`` back."""
    from mlflow.tracking import MlflowClient

    _register("cleared_model", runs[0], _decision(True, None), registry_config)
    _register("cleared_model", runs[1], _decision(True, "1"), registry_config)
    again = register_model(model_name="cleared_model", run_id=runs[0].run_id,
                           model_uri=runs[0].model_uri, decision=_decision(True, None),
                           lineage=LINEAGE, config=registry_config,
                           # compared again with v2, it would win (on its own old holdout)
                           reevaluate=lambda: _decision(True, "2"))
    assert (again.version, again.promoted) == ("1", False)
    assert "v2, a newer version, became champion" in again.reason
    aliases = MlflowClient().get_registered_model("cleared_model").aliases
    assert {k: str(v) for k, v in aliases.items()} == {"champion": "2", "challenger": "2"}
    assert MlflowClient().get_model_version("cleared_model", "1").tags["promotion_status"] == \
        "former_champion"


def _lock_is_free(config, name: str) -> bool:
    """True when this process can take the registry lock of ``name`` at once (nobody holds it)."""
    from pipeline_tasks.core.locks import LockTimeout, named_lock

    try:
        with named_lock(config, f"{name}.registry", timeout=0):
            return True
    except LockTimeout:
        return False


def test_the_registry_lock_is_free_while_the_candidate_is_scored_again(runs, registry_config):
    """Re-evaluation loads and scores models: it runs with the registry lock released, both when
    registering and when confirming an approved version before its deploy."""
    name = "lock_free_model"
    _register(name, runs[0], _decision(True, None), registry_config)  # v1 champion
    seen = []

    def reevaluate():
        seen.append(_lock_is_free(registry_config, name))
        return _decision(True, current_champion(name))

    # evaluated when there was no champion: compared again with v1, with the lock free
    result = register_model(model_name=name, run_id=runs[1].run_id, model_uri=runs[1].model_uri,
                            decision=_decision(True, None), lineage=LINEAGE,
                            config=registry_config, reevaluate=reevaluate)
    assert seen == [True] and result.promoted and result.champion_version == "2"

    held = register_model(model_name=name, run_id=runs[2].run_id, model_uri=runs[2].model_uri,
                          decision=_decision(True, "1"), lineage=LINEAGE,
                          config=registry_config, hold_promotion=True)
    assert held.awaiting_approval
    confirmed = confirm_champion(name, held.version, evaluated_against="1", reevaluate=reevaluate,
                                 reason="approved by a human", config=registry_config)
    assert seen == [True, True] and confirmed.promoted and confirmed.champion_version == "3"
    assert confirmed.reason == "approved by a human (compared again with v2: blessed: roc_auc fine)"
    assert _lock_is_free(registry_config, name)  # and nothing is left held


def test_a_champion_that_moves_during_the_comparison_is_compared_again(runs, registry_config):
    """The compare-and-set finds that the champion moved while the candidate was scored (another
    run promoted its version meanwhile): the candidate is compared again with the new one."""
    from pipeline_tasks.model.registry import set_champion

    name = "moving_champion_model"
    for run, decision in ((runs[0], _decision(True, None)), (runs[1], _decision(False, "1"))):
        _register(name, run, decision, registry_config)  # v1 champion, v2 a challenger
    compared_with = []

    def reevaluate():
        champion = current_champion(name)
        compared_with.append(champion)
        if len(compared_with) == 1:  # a concurrent run promotes v2 while this one is scored
            set_champion(name, "2", reason="a concurrent promotion", config=registry_config)
        return _decision(True, champion)

    result = register_model(model_name=name, run_id=runs[2].run_id, model_uri=runs[2].model_uri,
                            decision=_decision(True, None), lineage=LINEAGE,
                            config=registry_config, reevaluate=reevaluate)
    assert compared_with == ["1", "2"]
    assert result.promoted and result.previous_champion == "2" and result.champion_version == "3"
    assert result.reason.startswith("promoted from v2: blessed")
    from mlflow.tracking import MlflowClient

    tags = MlflowClient().get_model_version(name, "3").tags
    assert tags["evaluated_against_champion"] == "2" and tags["promoted_from"] == "2"


def test_a_champion_that_keeps_moving_bounds_the_retries(runs, registry_config):
    from pipeline_tasks.model import registry

    name = "restless_champion_model"
    for run, decision in ((runs[0], _decision(True, None)), (runs[1], _decision(False, "1"))):
        _register(name, run, decision, registry_config)  # v1 champion, v2 a challenger
    calls = []

    def reevaluate():  # every comparison is overtaken by another promotion
        champion = current_champion(name)
        calls.append(champion)
        registry.set_champion(name, "2" if champion == "1" else "1", reason="flapping",
                              config=registry_config)
        return _decision(True, champion)

    result = register_model(model_name=name, run_id=runs[2].run_id, model_uri=runs[2].model_uri,
                            decision=_decision(True, None), lineage=LINEAGE,
                            config=registry_config, reevaluate=reevaluate)
    assert len(calls) == registry.REEVALUATIONS
    assert not result.promoted and "champion moved from" in result.reason
    assert current_champion(name) != result.version
    # confirming hits the same bound, and says why
    calls.clear()
    gone = "2" if current_champion(name) == "1" else "1"  # evaluated against the other one
    late = confirm_champion(name, result.version, evaluated_against=gone, reevaluate=reevaluate,
                            reason="approved", config=registry_config)
    assert len(calls) == registry.REEVALUATIONS and not late.promoted
    assert late.reason.startswith("not promoted: the champion kept moving")
