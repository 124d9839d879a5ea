"""Glue probes: a snippet that imports the Airflow-side glue runs in a fresh interpreter with its
own Airflow home (the test process never configures Airflow), and prints its result as JSON on
its last line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def run_probe(tmp_path):
    """``run_probe(source)``: what the snippet printed last, parsed as JSON (its ``stderr`` in
    the failure when it did not exit 0). ``MLOPS_HOME`` is ``tmp_path``."""
    def run(source: str):
        env = dict(os.environ, AIRFLOW_HOME=str(tmp_path / "airflow"), MLOPS_HOME=str(tmp_path),
                   PYTHONPATH=os.pathsep.join([str(ROOT / "plugins"), str(ROOT)]))
        proc = subprocess.run([sys.executable, "-c", source], env=env, capture_output=True,
                              text=True, timeout=180, check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])
    return run
