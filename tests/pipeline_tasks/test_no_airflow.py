"""``pipeline_tasks`` is a plain library: no module of it imports Airflow."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pipeline_tasks


def test_no_module_imports_airflow():
    names = [m.name for m in pkgutil.walk_packages(pipeline_tasks.__path__, "pipeline_tasks.")]
    assert "pipeline_tasks.stages" in names and "pipeline_tasks.ops.preload" in names
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n"
            "    importlib.import_module(name)\n"
            "print(sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
