"""Whether an error from MLflow (the tracking server, the registry, the artifact store) may pass
on a retry: the server did not answer, timed out, or said it is busy or unavailable.

The model steps wrap such errors in their own (``EvaluationError`` ...); this tells them to mark
the wrapper ``retryable`` so Airflow retries the task instead of failing it for good.
"""

from __future__ import annotations

# MLflow error codes (``MlflowException.error_code``) that describe a server state, not a request
TRANSIENT_CODES = frozenset({
    "TEMPORARILY_UNAVAILABLE", "SERVICE_UNDER_MAINTENANCE", "WORKSPACE_TEMPORARILY_UNAVAILABLE",
    "DEADLINE_EXCEEDED", "ABORTED", "RESOURCE_EXHAUSTED", "REQUEST_LIMIT_EXCEEDED", "IO_ERROR",
})
# MLflow's REST client says this (INTERNAL_ERROR) when the request never got an answer
_NO_ANSWER = ("API request to ", "failed with exception", "failed with timeout exception")
_MAX_CHAIN = 10


def is_transient(exc: BaseException | None) -> bool:
    """True when ``exc``, or an exception it was raised from, is a transient failure of a service:
    a connection error or timeout, or an ``MlflowException`` with a transient error code or for
    a request that got no answer."""
    seen = 0
    while exc is not None and seen < _MAX_CHAIN:
        if isinstance(exc, ConnectionError | TimeoutError):
            return True
        code = getattr(exc, "error_code", None)
        if isinstance(code, str) and code in TRANSIENT_CODES:
            return True
        message = str(getattr(exc, "message", "") or "")
        if message.startswith(_NO_ANSWER[0]) and any(p in message for p in _NO_ANSWER[1:]):
            return True
        if _is_requests_failure(exc):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def _is_requests_failure(exc: BaseException) -> bool:
    """A ``requests`` connection error or timeout, without importing requests when absent."""
    module = type(exc).__module__ or ""
    if not module.startswith(("requests", "urllib3")):
        return False
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & {"ConnectionError", "Timeout", "NewConnectionError", "MaxRetryError",
                         "ProtocolError", "ReadTimeoutError", "ConnectTimeoutError"})
