"""The model server's ASGI app (Starlette): strict input, no leaks, measured.

One app serves one or several models, each by name with its own contract, micro-batcher,
metrics labels and prediction-log partition; the first is the default of ``/predict`` and
``/metadata``. Endpoints:

- ``POST /predict`` (default model), ``POST /models/{name}/predict``: a batch in records or
  columnar form (see ``contract``); answers
  ``{"request_id", "model_name", "model_version", "predictions", "scores"?}``.
- ``GET /health``: the process is alive. ``GET /ready``: the models are loaded, with ``models``
  (name -> version).
- ``GET /metadata``, ``GET /models/{name}/metadata``: model name, version, run id, dataset
  version, artifact sha256, signature. ``GET /models``: that of each model.
- ``GET /metrics``: Prometheus text: requests by endpoint, status and model, latency histogram,
  errors by kind and model, rows predicted, and the served versions as
  ``mlops_serving_model_info``.
- The Open Inference Protocol (V2, see ``oip``): ``GET /v2``, ``/v2/health/live``,
  ``/v2/health/ready``, ``/v2/models/{name}[/versions/{version}][/ready]`` and
  ``POST /v2/models/{name}[/versions/{version}]/infer``: the same contract, micro-batcher and
  prediction log as ``/predict``; errors are ``{"error": ...}`` with the same status codes.
- ``GET /openapi.json``: the OpenAPI document of every endpoint, with the models' columns.

When ``MLOPS_SERVING_TOKEN`` is set, every endpoint but ``/health`` and ``/ready`` needs
``Authorization: Bearer <token>`` and answers 401 without it (``/v2/health/*`` are open too). Error answers are
``{"error": <short message>, "request_id": ...}``: never a stack trace, an input value or the
schema.

A client's ``event_time`` files its rows under that day of the prediction log, which the drift and
performance checks read: it must fall in a window around the server's clock (by default from
``EVENT_TIME_BACK`` = 7 days back to ``EVENT_TIME_AHEAD`` = 5 minutes ahead; another window, or
``none`` to replay history, with ``MLOPS_SERVING_EVENT_TIME_WINDOW``, e.g. ``30d,10m``).
Outside it the answer is 422, naming the field, the parsed time and the window.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pipeline_tasks.core.errors import ConfigError
from pipeline_tasks.serving import oip
from pipeline_tasks.serving.contract import BadInput
from pipeline_tasks.serving.contract import Request as Checked
from pipeline_tasks.serving.model import ServedModel
from pipeline_tasks.serving.predlog import PredictionLog

log = logging.getLogger(__name__)

TOKEN_ENV = "MLOPS_SERVING_TOKEN"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_OPEN_PATHS = {"/health", "/ready", "/v2/health/live", "/v2/health/ready"}

#: The longest a batch waits for concurrent requests to join it (``MicroBatcher``): about a
#: fifth of one predict call of the demo model (7 ms for 1 row as for 8).
BATCH_WAIT_S = 0.0015

#: How far a client's ``event_time`` may lie behind / ahead of the server's clock by default:
#: a week covers late or batched clients and a day of retries; five minutes ahead covers clock
#: skew. Older or future times would file rows under days the monitoring has already checked
#: (or will check), and let a client rewrite what drift and performance see there.
EVENT_TIME_BACK = timedelta(days=7)
EVENT_TIME_AHEAD = timedelta(minutes=5)
EVENT_TIME_WINDOW_ENV = "MLOPS_SERVING_EVENT_TIME_WINDOW"
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def _duration_text(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True)
class EventTimeWindow:
    """The ``event_time`` a request may carry: from ``back`` before now to ``ahead`` after it.
    ``None`` bounds nothing (``none``: replaying recorded traffic, ``make demo-monitoring``)."""

    back: timedelta | None = EVENT_TIME_BACK
    ahead: timedelta | None = EVENT_TIME_AHEAD

    @classmethod
    def parse(cls, text: str) -> EventTimeWindow:
        """``"7d,5m"`` (back, ahead; units s, m, h, d) or ``"none"``."""
        if text.strip().lower() in ("none", "off", "unbounded"):
            return cls(None, None)
        parts = text.split(",")
        matches = [_DURATION.fullmatch(part) for part in parts]
        if len(parts) != 2 or not all(matches):
            raise ConfigError(f"{EVENT_TIME_WINDOW_ENV} must be '<back>,<ahead>' durations such "
                              f"as '7d,5m' (units s, m, h, d), or 'none'; got {text!r}")
        back, ahead = (timedelta(**{_UNITS[m.group(2)]: float(m.group(1))}) for m in matches)
        return cls(back, ahead)

    @classmethod
    def from_env(cls) -> EventTimeWindow:
        text = os.environ.get(EVENT_TIME_WINDOW_ENV, "").strip()
        return cls.parse(text) if text else cls()

    def describe(self, now: datetime) -> str:
        if self.back is None and self.ahead is None:
            return "any time"
        low = "any time" if self.back is None else _iso(now - self.back)
        high = "any time" if self.ahead is None else _iso(now + self.ahead)
        span = (f"{_duration_text(self.back) if self.back is not None else 'unbounded'} back to "
                f"{_duration_text(self.ahead) if self.ahead is not None else 'unbounded'} ahead")
        return f"{low} .. {high} ({span} of the server's clock)"

    def check(self, when: pd.Timestamp, now: datetime | None = None) -> None:
        """Raise a 422 ``BadInput`` when ``when`` lies outside the window around ``now``."""
        now = now or datetime.now(UTC)
        moment = when.to_pydatetime()
        if (self.back is not None and moment < now - self.back) or (
                self.ahead is not None and moment > now + self.ahead):
            raise BadInput(422, f"'event_time': {_iso(moment)} is outside the accepted window "
                                f"{self.describe(now)}", "event_time")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json(obj, status: int = 200, headers: dict | None = None) -> Response:
    body = json.dumps(obj, separators=(",", ":"), allow_nan=False)
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def _no_constants(name: str):
    raise BadInput(400, "NaN and Infinity are not valid JSON numbers", "not_finite")


class Metrics:
    """The server's Prometheus metrics. ``model`` labels the model a request named (empty for
    server-wide endpoints and for names the server does not serve: clients cannot add labels)."""

    def __init__(self, models: list[ServedModel]):
        self.registry = CollectorRegistry()
        self.requests = Counter("mlops_serving_requests", "Requests by endpoint, status and model",
                                ["endpoint", "status", "model"], registry=self.registry)
        self.latency = Histogram(
            "mlops_serving_request_seconds", "Request latency by endpoint and model",
            ["endpoint", "model"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry)
        self.errors = Counter("mlops_serving_errors", "Refused or failed requests by kind and "
                              "model", ["kind", "model"], registry=self.registry)
        self.rows = Counter("mlops_serving_rows_predicted", "Rows predicted by model", ["model"],
                            registry=self.registry)
        self.batch_requests = Histogram(
            "mlops_serving_batch_requests", "Requests per model call (micro-batching)",
            ["model"], buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry)
        info = Gauge("mlops_serving_model_info", "The served model versions (value 1)",
                     ["model_name", "model_version", "artifact_sha256"], registry=self.registry)
        for served in models:
            info.labels(served.name, served.version, served.digest[:16]).set(1)
        self.log_dropped = Counter(
            "mlops_serving_prediction_log_dropped_rows",
            "Predicted rows the prediction log dropped because its queue was full",
            registry=self.registry)
        self.log_queued = Gauge("mlops_serving_prediction_log_queued_rows",
                                "Predicted rows waiting for the prediction log's writer",
                                registry=self.registry)

    def watch(self, prediction_log: PredictionLog | None) -> None:
        """Count the log's drops and show its queue (nothing to watch without a log)."""
        if prediction_log is None:
            return
        prediction_log.on_drop = self.log_dropped.inc
        self.log_queued.set_function(lambda: prediction_log.queued_rows)
        self.registry.register(_LogCpu(prediction_log))


class _LogCpu:
    """``mlops_serving_prediction_log_cpu_seconds_total{thread}``: the CPU time the prediction
    log's threads have used, read from their clocks at each scrape (a server's CPU less this
    is what its answers took)."""

    def __init__(self, prediction_log: PredictionLog):
        self.prediction_log = prediction_log

    def collect(self):
        family = CounterMetricFamily("mlops_serving_prediction_log_cpu_seconds",
                                     "CPU time the prediction log's threads have used",
                                     labels=["thread"])
        for thread, seconds in sorted(self.prediction_log.cpu_seconds().items()):
            family.add_metric([thread], seconds)
        yield family


def _combined(batch: list[Checked]) -> tuple[dict[str, Any], pd.DataFrame]:
    """The rows of the batch's requests as one DataFrame, built once from their columns (one
    concatenation per column, not a DataFrame per request), and those concatenated columns
    (the prediction log takes them as they are)."""
    if len(batch) == 1:
        return batch[0].columns, batch[0].frame
    data = {}
    for name, first in batch[0].columns.items():
        parts = [checked.columns[name] for checked in batch]
        data[name] = pd.concat(parts, ignore_index=True) if isinstance(first, pd.Series) \
            else np.concatenate(parts)
    return data, pd.DataFrame(data)


#: What the batcher hands on after a model call: the requests it answered (checked, request
#: id), their rows' columns, concatenated, and the answer for all those rows.
Predicted = Callable[[list[tuple[Checked, str]], dict[str, Any], dict[str, list]], Any]


class MicroBatcher:
    """Adaptive micro-batching: concurrent requests share one model call.

    A predict call costs about as much for 1 row as for 8, so requests that arrive close
    together go to the model together, up to ``max_rows`` rows, and their answers are split back.
    How long a batch may wait adapts to the traffic: the batcher counts the requests inside the
    server (``client``: from the first byte to the answer) and remembers the most it saw since
    the last call. A batch smaller than that waits for the others, at most ``max_wait_s``; a
    lone client (never more than one request in the server) never waits, and a batch that is
    full goes at once.
    Requests that arrive while the model runs queue for the next call. The model runs in one
    worker thread, so the event loop keeps reading requests meanwhile. If a combined call fails,
    each request of the batch is predicted on its own, so one bad request cannot fail the others.
    After each call, ``on_predicted`` (the prediction log) gets the requests it answered with
    their combined columns and answer.
    """

    def __init__(self, served: ServedModel, max_rows: int, max_wait_s: float = BATCH_WAIT_S):
        self.served = served
        self.max_rows = max_rows
        self.max_wait_s = max_wait_s
        self.pending: list[tuple[Checked, str, asyncio.Future]] = []  # (request, its id, answer)
        self.pending_rows = 0
        self.running = False
        self.active = 0  # requests inside the server now
        self.seen = 0  # the most inside at once since the last model call
        self.arrived = asyncio.Event()  # set when a request joins the queue or leaves
        self.calls = 0  # model calls
        self.waits = 0  # calls that waited for other requests to join
        self.on_call: Callable[[int], Any] | None = None  # the server's batch-size histogram
        self.on_predicted: Predicted | None = None  # the prediction log
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")

    @contextlib.contextmanager
    def client(self):
        """One request inside the server: counted from its first byte to its answer."""
        self.active += 1
        self.seen = max(self.seen, self.active)
        try:
            yield
        finally:
            self.active -= 1
            self.arrived.set()  # a batch waiting for it stops waiting

    async def predict(self, checked: Checked, request_id: str = "") -> dict[str, list]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending.append((checked, request_id, future))
        self.pending_rows += checked.rows
        self.arrived.set()
        if not self.running:
            self.running = True
            loop.create_task(self._drain())
        return await future

    def _take(self) -> list[tuple[Checked, str, asyncio.Future]]:
        batch, rows = [], 0
        while self.pending and (not batch or rows + self.pending[0][0].rows <= self.max_rows):
            item = self.pending.pop(0)
            batch.append(item)
            rows += item[0].rows
        self.pending_rows -= rows
        return batch

    async def _gather(self) -> None:
        """Wait, at most ``max_wait_s``, while the batch is smaller than the number of requests
        seen inside the server at once since the last call: the clients just answered send
        their next request, and it joins this call."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        waited = False
        while len(self.pending) < self.seen and self.pending_rows < self.max_rows:
            left = deadline - loop.time()
            if left <= 0:
                break
            waited = True
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), left)
        self.seen = self.active  # what the next call expects: the requests inside now
        self.waits += waited

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.pending:
                await self._gather()
                batch = self._take()
                self.calls += 1
                if self.on_call is not None:
                    self.on_call(len(batch))
                try:
                    columns, combined = _combined([checked for checked, _, _ in batch])
                    output = await loop.run_in_executor(self.executor, self.served.predict,
                                                        combined)
                except Exception:  # noqa: BLE001 (retried one by one, errors reach each caller)
                    await self._one_by_one(batch)
                    continue
                self._predicted([(checked, rid) for checked, rid, _ in batch], columns, output)
                start = 0
                for checked, _, future in batch:
                    end = start + checked.rows
                    if not future.done():
                        future.set_result({key: values[start:end]
                                           for key, values in output.items()})
                    start = end
        finally:
            self.running = False

    async def _one_by_one(self, batch) -> None:
        loop = asyncio.get_running_loop()
        for checked, request_id, future in batch:
            try:
                result = await loop.run_in_executor(self.executor, self.served.predict,
                                                    checked.frame)
            except Exception as exc:  # noqa: BLE001 (handed to the caller, answered as a 500)
                if not future.done():
                    future.set_exception(exc)
            else:
                self._predicted([(checked, request_id)], checked.columns, result)
                if not future.done():
                    future.set_result(result)

    def _predicted(self, answered: list[tuple[Checked, str]], columns: dict[str, Any],
                   output: dict[str, list]) -> None:
        """``on_predicted``, which never fails the answers (a log that cannot take the rows
        says so; the clients still get their predictions)."""
        if self.on_predicted is None:
            return
        try:
            self.on_predicted(answered, columns, output)
        except Exception:
            log.exception("could not hand %d answered request(s) of %s to the prediction log",
                          len(answered), self.served.name)


def _logger(prediction_log: PredictionLog, served: ServedModel) -> Predicted:
    """The batcher's ``on_predicted`` for ``served``: one log entry per model call."""
    def logged(answered: list[tuple[Checked, str]], columns: dict[str, Any],
               output: dict[str, list]) -> None:
        prediction_log.add_batch(served.name, served.version, [rid for _, rid in answered],
                                 [checked.rows for checked, _ in answered], columns, output,
                                 ids=[checked.ids for checked, _ in answered],
                                 event_times=[checked.event_time for checked, _ in answered])
    return logged


@dataclass(frozen=True)
class Slot:
    """One model of the server, with what is its own: its contract (in ``served``), and its
    micro-batcher, whose single predict thread runs this model only."""

    served: ServedModel
    batcher: MicroBatcher


def create_app(models: ServedModel | list[ServedModel], *, max_body_bytes: int,
               prediction_log: PredictionLog | None, token: str | None = None,
               event_time_window: EventTimeWindow | None = None) -> Starlette:
    """The app serving ``models`` (one, or several by name; the first is the default model of
    ``/predict`` and ``/metadata``). A name given at several versions answers at the first
    one unless the path names a version (``/v2/models/{name}/versions/{version}/...``). ``token`` defaults to ``$MLOPS_SERVING_TOKEN``,
    ``event_time_window`` to ``$MLOPS_SERVING_EVENT_TIME_WINDOW`` (else 7 days back to 5 minutes
    ahead)."""
    served_models = [models] if isinstance(models, ServedModel) else list(models)
    if not served_models:
        raise ConfigError("give the model server at least one model")
    given = [(m.name, m.version) for m in served_models]
    if len(set(given)) != len(given):
        raise ConfigError("each model version is served once; given: "
                          + ", ".join(f"{name} v{version}" for name, version in given))
    token = (token if token is not None else os.environ.get(TOKEN_ENV)) or None
    window = event_time_window if event_time_window is not None else EventTimeWindow.from_env()
    metrics = Metrics(served_models)
    metrics.watch(prediction_log)
    versions: dict[str, dict[str, Slot]] = {}  # name -> version -> slot, the first the name's own
    for served in served_models:
        batcher = MicroBatcher(served, max_rows=served.contract.max_rows)
        batcher.on_call = metrics.batch_requests.labels(served.name).observe
        if prediction_log is not None:
            batcher.on_predicted = _logger(prediction_log, served)
        versions.setdefault(served.name, {})[served.version] = Slot(served, batcher)
    slots = {name: next(iter(by_version.values())) for name, by_version in versions.items()}
    default = slots[served_models[0].name]

    def authorized(request: Request) -> bool:
        if token is None or request.url.path in _OPEN_PATHS:
            return True
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(),
                                                                   token.encode())

    def model_label(request: Request, uses_default: bool) -> str:
        """The served model a request is about ("" for none, or a name not served here)."""
        name = request.path_params.get("model_name")
        if name is None:
            return default.served.name if uses_default else ""
        return name if name in slots else ""

    def endpoint(name: str, handler: Callable, *, v2: bool = False,
                 uses_default: bool = False) -> Callable:
        async def wrapped(request: Request) -> Response:
            started = time.perf_counter()
            given_id = request.headers.get("x-request-id", "")
            request_id = given_id if _REQUEST_ID.fullmatch(given_id) else uuid.uuid4().hex
            model = model_label(request, uses_default)
            try:
                if not authorized(request):
                    raise BadInput(401, "missing or invalid bearer token", "auth")
                response = await handler(request, request_id)
            except BadInput as exc:
                metrics.errors.labels(exc.kind, model).inc()
                headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
                response = _json({"error": exc.message} if v2 else
                                 {"error": exc.message, "request_id": request_id}, exc.status,
                                 headers)
            except Exception:
                metrics.errors.labels("internal", model).inc()
                log.exception("request %s on %s failed", request_id, name)
                response = _json({"error": "internal error"} if v2 else
                                 {"error": "internal error", "request_id": request_id}, 500)
            response.headers["X-Request-Id"] = request_id
            metrics.requests.labels(name, str(response.status_code), model).inc()
            metrics.latency.labels(name, model).observe(time.perf_counter() - started)
            return response

        return wrapped

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise BadInput(400, "invalid Content-Length", "shape")
            if int(declared) > max_body_bytes:
                raise BadInput(413, f"body larger than the limit of {max_body_bytes} bytes",
                               "too_large")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                raise BadInput(413, f"body larger than the limit of {max_body_bytes} bytes",
                               "too_large")
            chunks.append(chunk)
        return b"".join(chunks)

    async def read_json(request: Request):
        media = request.headers.get("content-type", "application/json").split(";")[0].strip()
        if media not in ("application/json", ""):
            raise BadInput(415, "send the body as application/json", "shape")
        body = await read_body(request)
        try:
            return json.loads(body, parse_constant=_no_constants)
        except BadInput:
            raise
        except (ValueError, RecursionError):
            raise BadInput(400, "body is not valid JSON", "invalid_json") from None

    async def run(slot: Slot, payload, request_id: str) -> dict[str, list]:
        """``payload`` (``/predict``'s body form) checked against ``slot``'s contract,
        predicted and logged under its model."""
        served = slot.served
        checked = served.contract.request(payload)
        if checked.event_time is not None:
            window.check(checked.event_time)
        output = await slot.batcher.predict(checked, request_id)  # logged by the batcher
        metrics.rows.labels(served.name).inc(checked.rows)
        return output

    def named(request: Request) -> Slot:
        """The model the path names, at the version it names if any (404 otherwise; the
        answer never echoes the name)."""
        params = request.path_params
        name = params.get("model_name", default.served.name)
        if name not in versions:
            raise BadInput(404, "no such model", "not_found")
        if "model_version" not in params:
            return slots[name]
        slot = versions[name].get(params["model_version"])
        if slot is None:
            raise BadInput(404, "no such model version", "not_found")
        return slot

    async def predict(request: Request, request_id: str) -> Response:
        slot = named(request)
        with slot.batcher.client():
            output = await run(slot, await read_json(request), request_id)
            return _json({"request_id": request_id, "model_name": slot.served.name,
                          "model_version": slot.served.version, **output})

    async def v2_infer(request: Request, request_id: str) -> Response:
        slot = named(request)
        declared = request.headers.get("inference-header-content-length")
        if declared is not None and declared != request.headers.get("content-length"):
            raise BadInput(415, "binary tensor data is not supported: send JSON tensors",
                           "shape")
        with slot.batcher.client():
            body, requested, given_id = oip.request_body(slot.served.contract,
                                                         await read_json(request))
            output = await run(slot, body, request_id)
            return _json(oip.response(slot.served, output, requested, given_id or request_id))

    async def v2_metadata(request: Request, request_id: str) -> Response:
        slot = named(request)
        return _json(oip.model_metadata(slot.served, list(versions[slot.served.name])))

    async def v2_ready(request: Request, request_id: str) -> Response:
        if "model_name" in request.path_params:
            named(request)
        return _json({"ready": True})

    async def v2_server(request: Request, request_id: str) -> Response:
        return _json(oip.server_metadata())

    async def v2_live(request: Request, request_id: str) -> Response:
        return _json({"live": True})

    document = oip.openapi(served_models)

    async def openapi(request: Request, request_id: str) -> Response:
        return _json(document)

    async def health(request: Request, request_id: str) -> Response:
        return _json({"status": "alive"})

    async def ready(request: Request, request_id: str) -> Response:
        return _json({"status": "ready", "model_name": default.served.name,
                      "model_version": default.served.version,
                      "models": {name: slot.served.version for name, slot in slots.items()},
                      "versions": {name: list(by_version) for name, by_version in
                                   versions.items()},
                      "stable_endpoint": bool(getattr(request.app.state, "stable_active",
                                                      False))})

    async def metadata(request: Request, request_id: str) -> Response:
        return _json(named(request).served.metadata())

    async def every_model(request: Request, request_id: str) -> Response:
        return _json({"models": [slot.served.metadata() for by_version in versions.values()
                                 for slot in by_version.values()]})

    async def prometheus(request: Request, request_id: str) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def not_found(request: Request, exc) -> Response:
        status = getattr(exc, "status_code", 404)
        message = "method not allowed" if status == 405 else "not found"
        return _json({"error": message}, status)

    routes = [
        Route("/predict", endpoint("predict", predict, uses_default=True), methods=["POST"]),
        Route("/health", endpoint("health", health), methods=["GET"]),
        Route("/ready", endpoint("ready", ready), methods=["GET"]),
        Route("/metadata", endpoint("metadata", metadata, uses_default=True), methods=["GET"]),
        Route("/models", endpoint("models", every_model), methods=["GET"]),
        Route("/models/{model_name}/predict", endpoint("predict", predict), methods=["POST"]),
        Route("/models/{model_name}/metadata", endpoint("metadata", metadata),
              methods=["GET"]),
        Route("/metrics", endpoint("metrics", prometheus), methods=["GET"]),
        Route("/openapi.json", endpoint("openapi", openapi), methods=["GET"]),
        Route("/v2", endpoint("v2_server", v2_server, v2=True), methods=["GET"]),
        Route("/v2/health/live", endpoint("v2_health", v2_live, v2=True), methods=["GET"]),
        Route("/v2/health/ready", endpoint("v2_health", v2_ready, v2=True), methods=["GET"]),
        Route("/v2/models/{model_name}", endpoint("v2_metadata", v2_metadata, v2=True),
              methods=["GET"]),
        Route("/v2/models/{model_name}/versions/{model_version}",
              endpoint("v2_metadata", v2_metadata, v2=True), methods=["GET"]),
        Route("/v2/models/{model_name}/ready", endpoint("v2_ready", v2_ready, v2=True),
              methods=["GET"]),
        Route("/v2/models/{model_name}/versions/{model_version}/ready",
              endpoint("v2_ready", v2_ready, v2=True), methods=["GET"]),
        Route("/v2/models/{model_name}/infer", endpoint("v2_infer", v2_infer, v2=True),
              methods=["POST"]),
        Route("/v2/models/{model_name}/versions/{model_version}/infer",
              endpoint("v2_infer", v2_infer, v2=True), methods=["POST"]),
    ]
    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        if prediction_log is not None:
            # After the last answered request, before the process exits: uvicorn re-raises the
            # signal it caught once shutdown is done, so code after ``server.run()`` never runs.
            await asyncio.get_running_loop().run_in_executor(None, prediction_log.close)

    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found},
                    lifespan=lifespan)
    app.state.metrics = metrics
    app.state.slots = slots
    app.state.batcher = default.batcher
    app.state.served = default.served
    return app
