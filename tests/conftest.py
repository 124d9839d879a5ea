"""Shared test setup: every test runs against a throwaway $MLOPS_HOME, never the user's."""

from __future__ import annotations

import os
import subprocess
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


def _docker_engine_answers() -> bool:
    import docker.errors

    import docker

    try:
        docker.from_env(timeout=10).ping()
        return True
    except (docker.errors.DockerException, OSError):
        return False


@pytest.fixture(scope="session")
def docker_engine() -> str:
    """A Docker engine that answers, and the local base image. If none answers,
    ``docker/engine.sh`` starts one (apt docker.io + dockerd) and its DOCKER_HOST is exported to
    this process, so the Airflow workers and model servers started afterwards inherit it."""
    if not _docker_engine_answers():
        out = subprocess.run([str(ROOT / "docker" / "engine.sh")], capture_output=True,
                             text=True, check=True, timeout=600).stdout.strip().splitlines()
        assert out and out[-1].startswith("export DOCKER_HOST="), out
        os.environ["DOCKER_HOST"] = out[-1].split("=", 1)[1]
    subprocess.run([str(ROOT / "docker" / "base-image.sh")], check=True, capture_output=True,
                   timeout=900)
    return os.environ.get("DOCKER_HOST", "")
