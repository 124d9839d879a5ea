"""The traffic replayer: sends each day's demo flights to the model server, as clients would.

For every day in the range, the day's flights go to ``POST /predict`` in columnar batches, one
scheduled hour at a time, with the flights' keys as ``ids`` and the hour as ``event_time`` (so
the prediction log files them under their own day, and late outcomes join on the keys). After a
day is sent, its outcomes land a day later in the outcome feed (``demo_data.land_outcomes``).
The features sent are the ones the served model's ``/metadata`` signature asks for.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import date, timedelta

from pipeline_tasks import demo_data
from pipeline_tasks.config import PipelineConfig

log = logging.getLogger(__name__)


class ReplayError(RuntimeError):
    """The server refused or failed requests; the message says which and why."""


@dataclass(frozen=True)
class ReplayResult:
    url: str
    first_day: str
    last_day: str
    days: int
    requests: int
    rows: int
    outcome_files: int
    seconds: float
    model_versions: dict[str, int]

    def to_dict(self) -> dict:
        return asdict(self)


def _call(url: str, body: dict | None = None, timeout: float = 60.0) -> dict:
    headers = {"Content-Type": "application/json"}
    if os.environ.get("MLOPS_SERVING_TOKEN"):
        headers["Authorization"] = f"Bearer {os.environ['MLOPS_SERVING_TOKEN']}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers=headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise ReplayError(f"{url} answered {exc.code}: "
                          f"{exc.read().decode(errors='replace')[:300]}") from exc
    except OSError as exc:
        raise ReplayError(f"{url} cannot be reached: {exc}") from exc


def replay(config: PipelineConfig, first_day: date, last_day: date, *, url: str | None = None,
           batch_rows: int = 250, concurrency: int = 4, outcomes: bool = True) -> ReplayResult:
    """Send ``first_day``..``last_day`` (inclusive) to the server at ``url`` (default: the
    configured endpoint)."""
    from pipeline_tasks.deploy import json_values

    if last_day < first_day:
        raise ValueError(f"last day {last_day} is before first day {first_day}")
    url = (url or config.serving_url).rstrip("/")
    meta = _call(url + "/metadata")
    features = [c["name"] for c in (meta.get("signature") or {}).get("inputs", [])]
    if not features:
        raise ReplayError(f"{url}/metadata shows no input signature")
    started = time.perf_counter()
    requests = rows = files = days = 0
    versions: dict[str, int] = {}
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        day = first_day
        while day <= last_day:
            flights = demo_data.flights_for_day(day)
            missing = [c for c in features if c not in flights.columns]
            if missing:
                raise ReplayError(f"the served model wants column(s) {missing} that the demo "
                                  "feed does not have")
            keys = demo_data.flight_keys(flights)
            bodies = []
            for hour, group in flights.groupby(demo_data.TIME_COLUMN, sort=True):
                for at in range(0, len(group), batch_rows):
                    part = group.iloc[at:at + batch_rows]
                    bodies.append({"columns": {c: json_values(part[c]) for c in features},
                                   "ids": keys.loc[part.index].tolist(),
                                   "event_time": hour.isoformat()})
            for answer in pool.map(lambda body: _call(url + "/predict", body), bodies):
                version = str(answer.get("model_version"))
                versions[version] = versions.get(version, 0) + len(answer["predictions"])
                rows += len(answer["predictions"])
            requests += len(bodies)
            if outcomes:
                files += demo_data.land_outcomes(config, day, day)
            days += 1
            day += timedelta(days=1)
    seconds = time.perf_counter() - started
    log.info("replayed %s..%s: %d requests, %d rows in %.1f s", first_day, last_day, requests,
             rows, seconds)
    return ReplayResult(url, first_day.isoformat(), last_day.isoformat(), days, requests, rows,
                        files, round(seconds, 2), versions)
