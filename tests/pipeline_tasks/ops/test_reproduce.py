"""The reproduce command: a version rebuilt from its lineage alone predicts the same."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient

from pipeline_tasks import stages
from pipeline_tasks.core import storage
from pipeline_tasks.ops import cli
from pipeline_tasks.ops.reproduce import compare_predictions

MODEL = "repro_diamonds"


@pytest.fixture(scope="module")
def registered(tmp_path_factory, regression_frame):
    """A regression model trained by the pipeline's stages (version 1 of MODEL)."""
    source = tmp_path_factory.mktemp("repro") / "diamonds.csv"
    regression_frame.to_csv(source, index=False)
    run = stages.RunSpec(dag_id="ml_training_pipeline", run_id="manual__repro",
                         interval_start="2013-03-01T00:00:00+00:00",
                         interval_end="2013-03-02T00:00:00+00:00",
                         params={"source": str(source), "target": "price", "model_name": MODEL})
    results = stages.run_all(run)
    assert results["register"].version == "1"
    return run.config, results


def command(capsys, *args) -> tuple[int, str, str]:
    code = cli.main(["reproduce", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_regression_version_rebuilds_identically(registered, capsys):
    config, results = registered
    code, out, _ = command(capsys, MODEL, "1", "--json")
    outcome = json.loads(out)
    assert code == 0 and outcome["identical"], outcome
    assert outcome["rows"] == results["train"].n_holdout and outcome["differing_rows"] == 0
    assert outcome["max_difference"] == 0.0 and outcome["compared"] == "predict"
    assert outcome["code_key_recorded"] == outcome["code_key_now"]
    # into a scratch experiment: no new version, the aliases untouched
    client = MlflowClient(tracking_uri=config.mlflow_tracking_uri,
                          registry_uri=config.mlflow_registry_uri)
    assert len(client.search_model_versions(f"name = '{MODEL}'")) == 1
    assert dict(client.get_registered_model(MODEL).aliases) in ({"champion": "1",
                                                                  "challenger": "1"},
                                                                 {"champion": 1, "challenger": 1})
    rebuilt = client.get_run(outcome["rebuilt_run_id"])
    assert client.get_experiment(rebuilt.info.experiment_id).name == f"{MODEL}-reproduce"
    assert rebuilt.data.tags["mlops.reproduces"] == f"{MODEL}/1"

    code, out, _ = command(capsys, MODEL, "1")
    assert code == 0 and "identical: " in out and f"{MODEL} v1" in out


def test_changed_training_code_is_reported_as_differs(registered, capsys, monkeypatch):
    import pipeline_tasks.model.train as train_module

    real = train_module.build_pipeline

    def fewer_iterations(*args, **kwargs):  # the code of today fits another model
        pipe = real(*args, **kwargs)
        pipe.named_steps["model"].set_params(max_iter=5)
        return pipe

    monkeypatch.setattr(train_module, "build_pipeline", fewer_iterations)
    code, out, _ = command(capsys, MODEL, "1")
    assert code == 1, out
    assert "differs: " in out and "holdout rows" in out and "largest difference" in out


def test_a_gone_or_changed_input_fails_naming_it(registered, capsys):
    _config, results = registered
    code, _, err = command(capsys, MODEL, "7")
    assert code == 2 and f"{MODEL} v7" in err
    code, _, err = command(capsys, MODEL, "1; rm -rf /")
    assert code == 2 and "VERSION must be a version number" in err

    snapshot = storage.local_path(results["version"].data_uri)
    saved = snapshot.read_bytes()
    frame = storage.read_parquet(results["version"].data_uri)
    storage.atomic_write_parquet(frame.head(len(frame) - 1), results["version"].data_uri)
    try:
        code, _, err = command(capsys, MODEL, "1")
        assert code == 2 and "corrupt" in err and str(snapshot.name) in err
        snapshot.unlink()
        code, _, err = command(capsys, MODEL, "1")
        assert code == 2 and "snapshot" in err and "is gone" in err
    finally:
        snapshot.write_bytes(saved)

    holdout = storage.local_path(results["train"].holdout_uri)
    kept = holdout.read_bytes()
    holdout.unlink()
    try:
        code, _, err = command(capsys, MODEL, "1")
        assert code == 2 and "holdout" in err and holdout.name in err
    finally:
        holdout.write_bytes(kept)


def test_compare_predictions_counts_rows_and_the_largest_gap(flights_frame):
    from sklearn.linear_model import LogisticRegression

    labelled = flights_frame[flights_frame["is_late"].notna()]
    X = labelled[["distance", "hour"]].fillna(0)
    y = labelled["is_late"].astype(int)
    one = LogisticRegression(C=1.0).fit(X, y)
    other = LogisticRegression(C=1e-6).fit(X, y)
    assert compare_predictions(one, one, X) == (0, 0.0, "predict_proba + predict")
    rows, largest, compared = compare_predictions(one, other, X)
    assert rows == len(X) and 0 < largest < 1 and compared == "predict_proba + predict"
