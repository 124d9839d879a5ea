"""Content-keyed caching of training: a key seen before reuses the run and its model."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from pipeline_tasks import stages
from pipeline_tasks.core import storage
from pipeline_tasks.core.config import load_config
from pipeline_tasks.model import cache
from pipeline_tasks.model.train import train_model


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return load_config(home=str(tmp_path_factory.mktemp("cache-home")))


def client_for(config) -> MlflowClient:
    return MlflowClient(tracking_uri=config.mlflow_tracking_uri,
                        registry_uri=config.mlflow_registry_uri)


def runs_of(config, experiment: str) -> list:
    found = client_for(config).get_experiment_by_name(experiment)
    return client_for(config).search_runs([found.experiment_id]) if found else []


def key_for(config, **changes):
    inputs = {"dataset_version": "ab" * 32, "target": "price", "task_type": "auto",
              "time_column": None, "run_search": False, "config": config, **changes}
    return cache.training_key(**inputs).key


def test_the_key_covers_data_code_params_config_and_libraries(config, monkeypatch):
    base = key_for(config)
    assert base == key_for(config)  # stable
    assert key_for(config, dataset_version="cd" * 32) != base
    assert key_for(config, target="carat") != base
    assert key_for(config, task_type="regression") != base
    assert key_for(config, run_search=True) != base
    assert key_for(config, holdout_extra=["cut"]) != base
    assert key_for(config.with_overrides(seed=7)) != base
    assert key_for(config.with_overrides(holdout_fraction=0.3)) != base
    # a setting the fit does not read keeps the key (a gate threshold, the serving port)
    assert key_for(config.with_overrides(min_champion_delta=0.5, serving_port=9123)) == base
    with monkeypatch.context() as patch:
        patch.setattr(cache, "library_versions", lambda: {"scikit-learn": "0.0"})
        assert key_for(config) != base
    with monkeypatch.context() as patch:
        patch.setattr(cache, "code_key", lambda: "0" * 64)
        assert key_for(config) != base
    # the code key is the training modules' source: every one of them exists and is read
    assert len(cache.code_key()) == 64 and set(cache.TRAINING_MODULES) >= {"train", "estimator"}


def test_a_seen_key_reuses_the_run_and_a_changed_input_fits(config, regression_frame,
                                                          write_snapshot):
    uri = write_snapshot(regression_frame, "cache-diamonds")
    common = {"dataset_version": "sha-cache", "target": "price", "model_name": "cache_unit",
                  "config": config, "reuse": True}
    first = train_model(uri, run_key="first", **common)
    assert not first.cache_hit and len(first.cache_key) == 64
    tags = client_for(config).get_run(first.run_id).data.tags
    assert tags[cache.KEY_TAG] == first.cache_key and tags[cache.CODE_TAG] == cache.code_key()

    again = train_model(uri, run_key="second", **common)
    assert again.cache_hit and again.run_id == first.run_id
    assert again.model_uri == first.model_uri and again.metrics == first.metrics
    assert again.holdout_uri == first.holdout_uri
    assert len(runs_of(config, "cache_unit")) == 1  # no new run

    # another seed is another key: a new fit
    other = train_model(uri, run_key="third", **{**common, "config": config.with_overrides(seed=3)})
    assert not other.cache_hit and other.run_id != first.run_id
    # reuse off (the no_cache param) always fits
    forced = train_model(uri, run_key="fourth", **{**common, "reuse": False})
    assert not forced.cache_hit and forced.cache_key == first.cache_key
    assert len(runs_of(config, "cache_unit")) == 3

    # the newest run of a key is reused; once its holdout is gone, the one before it
    assert train_model(uri, run_key="fifth", **common).run_id == forced.run_id
    storage.local_path(forced.holdout_uri).unlink()
    assert train_model(uri, run_key="sixth", **common).run_id == first.run_id


def test_the_nightly_chain_on_unchanged_data_reuses_the_model(tmp_path, regression_frame):
    source = tmp_path / "diamonds.csv"
    regression_frame.to_csv(source, index=False)

    def run(**params):
        return stages.RunSpec(dag_id="ml_training_pipeline", run_id="scheduled__2013-03-01",
                              interval_start="2013-03-01T00:00:00+00:00",
                              interval_end="2013-03-02T00:00:00+00:00",
                              params={"source": str(source), "target": "price",
                                      "model_name": "cache_chain", **params})

    first = stages.run_all(run())
    assert first["register"].promoted and not first["train"].cache_hit
    client = client_for(run().config)
    version = client.get_model_version("cache_chain", first["register"].version)
    assert version.tags[cache.KEY_TAG] == first["train"].cache_key  # recorded on the version

    again = stages.run_all(run())
    assert again["train"].cache_hit and again["train"].run_id == first["train"].run_id
    assert "evaluate" not in again and "register" not in again
    assert "cache hit" in again["skipped"] and first["train"].cache_key in again["skipped"]
    assert len(client.search_model_versions("name = 'cache_chain'")) == 1

    # the batch validated against the champion's suite before: ingest already knows the answer
    # of every later stage and the run stops there, with the same cache key and run
    thrice = stages.run_all(run())
    assert list(thrice) == ["ingest", "skipped"]
    reason = thrice["ingest"].nothing_new
    assert f"cache hit (key {first['train'].cache_key})" in reason
    assert first["train"].run_id in reason and "cache_chain v1 already" in reason
    assert again["version"].version_id[:12] in reason
    for stage, args in ((stages.validate, ()), (stages.version, (again["validate"],)),
                        (stages.train, (again["version"],))):
        with pytest.raises(stages.StageSkipped, match="cache hit"):  # the stages' backstop
            stage(run(), thrice["ingest"], *args)
    # a damaged snapshot is not skipped over: the run goes on and `version` rewrites it
    snapshot = storage.local_path(again["version"].data_uri)
    intact = snapshot.read_bytes()
    snapshot.write_bytes(b"not parquet")
    repaired = stages.run_all(run())
    assert not repaired["ingest"].nothing_new and repaired["train"].cache_hit
    assert snapshot.read_bytes() != b"not parquet"
    snapshot.write_bytes(intact)
    # a run meant to change the model's inputs always validates: never skipped at ingest
    assert not stages.ingest(run(allow_schema_change=True)).nothing_new

    # no_cache fits again: an equal model, evaluated, registered, not better
    fitted = stages.run_all(run(no_cache=True))
    assert not fitted["train"].cache_hit and fitted["train"].run_id != first["train"].run_id
    assert fitted["train"].cache_key == first["train"].cache_key
    assert not fitted["register"].promoted and fitted["register"].version == "2"
