"""A served model for the serving tests: flights, trained, registered as champion."""

from __future__ import annotations

import pytest

from pipeline_tasks.core.config import load_config
from pipeline_tasks.model.evaluate import EvaluationDecision
from pipeline_tasks.model.registry import register_model
from pipeline_tasks.model.train import train_model

MODEL = "flights_serving"


@pytest.fixture(scope="session")
def serving_config(tmp_path_factory):
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
    ``frame`` (dataset version ``sha-<key>``) and register the run as a version of MODEL."""

    def make(frame, key: str, config, *, blessed: bool, champion_version: str | None = None):
        uri = write_snapshot(frame, key)
        trained = train_model(uri, dataset_version=f"sha-{key}", target="is_late",
                              model_name=MODEL, config=config, run_key=key)
        decision = EvaluationDecision(
            blessed=blessed, reason="blessed: test" if blessed else "rejected: test",
            primary_metric="roc_auc", greater_is_better=True,
            candidate_metrics={"roc_auc": 0.7 if blessed else 0.6},
            baseline_metrics={"roc_auc": 0.5}, champion_metrics=None,
            champion_version=champion_version, deltas={}, thresholds={}, forced=False,
            force_reason=None,
        ).to_dict()
        registration = register_model(model_name=MODEL, run_id=trained.run_id,
                                      model_uri=trained.model_uri, decision=decision,
                                      lineage={"dataset_version": f"sha-{key}"}, config=config)
        return trained, registration

    return make


@pytest.fixture(scope="session")
def registered(flights_frame, train_and_register, serving_config):
    trained, _ = train_and_register(flights_frame, "serving", serving_config, blessed=True)
    return trained
