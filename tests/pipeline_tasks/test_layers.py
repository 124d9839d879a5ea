"""The library's layers hold: import-linter's contracts (pyproject.toml) pass on the checkout, and
they fail, naming the contract, when a module imports against them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess:
    # --no-cache: a stale cache must not hide an import the checkout has now
    return subprocess.run([str(LINT), "--no-cache"], cwd=root, capture_output=True, text=True, check=False,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)}, timeout=300)


def test_the_contracts_hold():
    out = _lint(PROJECT)
    assert out.returncode == 0, out.stdout + out.stderr
    for contract in ("Layers: stages and ops at the top, core at the bottom",
                     "No import cycle between the modules of any package",
                     "The model server is the data plane only",
                     "The library never imports Airflow"):
        assert f"{contract} KEPT" in out.stdout


@pytest.mark.parametrize("module, line, contract", [
    ("core/errors.py", "import pipeline_tasks.ops.cli", "Layers"),
    ("serving/contract.py", "import pipeline_tasks.deploy.bluegreen", "data plane only"),
    ("data/ingest.py", "import airflow.sdk", "never imports Airflow"),
    ("core/storage.py", "import pipeline_tasks.core.layout", "No import cycle"),
])
def test_an_import_against_the_layers_breaks_a_contract(tmp_path, module, line, contract):
    shutil.copytree(PROJECT / "pipeline_tasks", tmp_path / "pipeline_tasks",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "pipeline_tasks" / module
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    out = _lint(tmp_path)
    assert out.returncode != 0
    broken = [row for row in out.stdout.splitlines() if row.endswith(" BROKEN")]
    assert any(contract in row for row in broken), out.stdout
