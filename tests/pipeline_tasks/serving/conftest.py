"""The served flights model and a running prediction log, per test module."""

from __future__ import annotations

import pytest

from pipeline_tasks.serving import model as serving_model
from pipeline_tasks.serving.predlog import PredictionLog

MODEL = "flights_serving"  # registered by tests/pipeline_tasks/conftest.py


@pytest.fixture(scope="module")
def served(registered, serving_config, tmp_path_factory):
    # by number: test_deploy.py moves the champion alias around in the same registry
    return serving_model.load(serving_config, MODEL, "1", tmp_path_factory.mktemp("work"))


@pytest.fixture(scope="module")
def predlog(serving_config):
    log = PredictionLog(serving_config.predictions_uri, flush_s=0.2, max_rows=10_000)
    log.start()
    yield log
    log.close()
