"""Errors of the model steps: a store that does not answer is retryable, a broken model is not."""

from __future__ import annotations

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_DOES_NOT_EXIST,
    TEMPORARILY_UNAVAILABLE,
)

from pipeline_tasks.core.errors import ConfigError, EvaluationError, TransientError
from pipeline_tasks.model import evaluate
from pipeline_tasks.model.transient import is_transient


def _chained(outer: Exception, inner: Exception) -> Exception:
    """``outer`` raised from ``inner``, as a wrapper in library code leaves it."""
    outer.__cause__ = inner
    return outer


@pytest.mark.parametrize(("exc", "transient"), [
    (ConnectionRefusedError("refused"), True),
    (TimeoutError("slow"), True),
    (MlflowException("busy", error_code=TEMPORARILY_UNAVAILABLE), True),
    (MlflowException("API request to http://mlflow:5000/api/2.0/x failed with exception "
                     "HTTPConnectionPool(...): Max retries exceeded"), True),
    (MlflowException("API request to http://mlflow:5000/api/2.0/x failed with timeout "
                     "exception Read timed out."), True),
    (_chained(OSError("could not download"), ConnectionResetError("reset")), True),
    (MlflowException("no such version", error_code=RESOURCE_DOES_NOT_EXIST), False),
    (MlflowException("bad version", error_code=INVALID_PARAMETER_VALUE), False),
    (ValueError("not a zip file"), False),
    (FileNotFoundError("model.skops"), False),
    (None, False),
])
def test_which_failures_may_pass(exc, transient):
    assert is_transient(exc) is transient


def test_a_requests_connection_error_is_transient():
    import requests

    assert is_transient(requests.exceptions.ConnectionError("down"))
    assert is_transient(_chained(RuntimeError("wrapped"), requests.exceptions.ReadTimeout("t")))
    assert not is_transient(requests.exceptions.InvalidURL("bad"))


@pytest.mark.parametrize(("failure", "retryable"), [
    (MlflowException("API request to http://mlflow/x failed with exception refused"), True),
    (ValueError("File is not a zip file"), False),
])
def test_a_champion_that_cannot_be_loaded(monkeypatch, failure, retryable):
    """The store not answering is retried; an unreadable model is not (a person must act)."""
    def load_verified(uri):
        raise failure

    monkeypatch.setattr(evaluate.model_artifacts, "load_verified", load_verified)
    with pytest.raises(EvaluationError, match="champion v4 of m cannot be loaded") as caught:
        evaluate._score_champion("m", "4", None, None, "classification", "roc_auc")
    assert caught.value.retryable is retryable
    assert ("retried" in caught.value.advice) is retryable


@pytest.mark.parametrize(("failure", "error"), [
    (MlflowException("no such version", error_code=RESOURCE_DOES_NOT_EXIST), ConfigError),
    (MlflowException("busy", error_code=TEMPORARILY_UNAVAILABLE), TransientError),
    (MlflowException("permission denied", error_code=INVALID_PARAMETER_VALUE), ConfigError),
])
def test_a_version_that_cannot_be_read(failure, error):
    from pipeline_tasks.model.registry import _require_version

    class Client:
        def get_model_version(self, name, version):
            raise failure

    with pytest.raises(error) as caught:
        _require_version(Client(), "m", "9")
    assert caught.value.retryable is (error is TransientError)


def test_programmer_errors_are_value_errors():
    from pipeline_tasks.model.versions import version_for_run

    with pytest.raises(ValueError, match="must not contain quotes"):
        version_for_run(object(), "m", "run'1")
