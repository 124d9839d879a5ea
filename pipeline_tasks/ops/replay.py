"""The traffic replayer: sends each day's demo flights to the model server, as clients would.

For every day in the range, the day's flights go to ``POST /predict`` in columnar batches, one
scheduled hour at a time, with the flights' keys as ``ids`` and the hour as ``event_time`` (so
the prediction log files them under their own day, and late outcomes join on the keys). After a
day is sent, its outcomes land a day later in the outcome feed (``demo_data.land_outcomes``).
The features sent are the ones the served model's ``/metadata`` signature asks for; rows with a
null where the signature allows none are not sent (a client cannot get them predicted) and are
counted in ``rows_skipped``.
"""

from __future__ import annotations

import logging
import time
import urllib.error
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import date, timedelta

from pipeline_tasks.core import http
from pipeline_tasks.core.config import PipelineConfig
from pipeline_tasks.ops import demo_data

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
    rows_by_day: dict[str, int]
    rows_skipped: int  # rows with a null the model's contract refuses: not sent

    def to_dict(self) -> dict:
        return asdict(self)


def _call(url: str, body: dict | None = None) -> dict:
    try:
        return http.fetch_json(url, body, timeout=60, headers=http.serving_headers())
    except urllib.error.HTTPError as exc:
        raise ReplayError(f"{url} answered {exc.code}: "
                          f"{exc.read().decode(errors='replace')[:300]}") from exc
    except (OSError, ValueError) as exc:
        raise ReplayError(f"{url} cannot be reached: {exc}") from exc


def replay(config: PipelineConfig, first_day: date, last_day: date, *, url: str | None = None,
           batch_rows: int = 250, concurrency: int = 4, outcomes: bool = True,
           progress: Callable[[str], None] | None = None) -> ReplayResult:
    """Send ``first_day``..``last_day`` (inclusive) to the server at ``url`` (default: the
    configured endpoint). ``progress`` hears one line per day as it is sent."""
    from pipeline_tasks.deploy.canary import json_values

    if last_day < first_day:
        raise ValueError(f"last day {last_day} is before first day {first_day}")
    url = (url or config.serving_url).rstrip("/")
    meta = _call(url + "/metadata")
    inputs = (meta.get("signature") or {}).get("inputs", [])
    features = [c["name"] for c in inputs]
    if not features:
        raise ReplayError(f"{url}/metadata shows no input signature")
    # a client does not send what the contract refuses: rows with a null where the model's
    # training data had none cannot be predicted, and are counted instead
    required = [c["name"] for c in inputs if not c.get("nullable", True)]
    started = time.perf_counter()
    requests = rows = files = days = skipped = 0
    versions: dict[str, int] = {}
    by_day: dict[str, int] = {}
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        day = first_day
        while day <= last_day:
            flights = demo_data.flights_for_day(day)
            missing = [c for c in features if c not in flights.columns]
            if missing:
                raise ReplayError(f"the served model wants column(s) {missing} that the demo "
                                  "feed does not have")
            complete = flights[required].notna().all(axis=1)
            not_sent = int((~complete).sum())
            skipped += not_sent
            flights = flights[complete]
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
                by_day[day.isoformat()] = by_day.get(day.isoformat(), 0) + \
                    len(answer["predictions"])
            requests += len(bodies)
            if outcomes:
                files += demo_data.land_outcomes(config, day, day)
            if progress is not None:
                progress(f"{day}: {by_day.get(day.isoformat(), 0)} rows predicted in "
                         f"{len(bodies)} requests; {not_sent} rows with a null the model "
                         "refuses not sent")
            days += 1
            day += timedelta(days=1)
    seconds = time.perf_counter() - started
    log.info("replayed %s..%s: %d requests, %d rows in %.1f s (%d rows with a null the model "
             "refuses not sent)", first_day, last_day, requests, rows, seconds, skipped)
    return ReplayResult(url, first_day.isoformat(), last_day.isoformat(), days, requests, rows,
                        files, round(seconds, 2), versions, by_day, skipped)
