"""Shared test setup: every test runs against a throwaway $MLOPS_HOME, never the user's."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Set before anything imports pipeline_tasks.config, so no test can touch the user's .mlops/.
_SESSION_HOME = tempfile.mkdtemp(prefix="mlops-test-home-")
os.environ["MLOPS_HOME"] = _SESSION_HOME
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "true")
for key in [k for k in os.environ if k.startswith("MLOPS_") and k != "MLOPS_HOME"]:
    del os.environ[key]  # a developer's own overrides must not leak into tests

# dags/ and plugins/ are on sys.path in Airflow; mirror that for tests that import them.
for folder in ("plugins",):
    path = str(ROOT / folder)
    if path not in sys.path:
        sys.path.insert(0, path)


@pytest.fixture(scope="session")
def docker_engine() -> str:
    """A Docker engine that answers, and the local base image (``docker_target.ensure_engine``
    starts them when missing and exports DOCKER_HOST to this process, so the Airflow workers and
    model servers started afterwards inherit it)."""
    from pipeline_tasks.serving.docker_target import ensure_engine

    ensure_engine()
    return os.environ.get("DOCKER_HOST", "")
