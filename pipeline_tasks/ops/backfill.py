"""A backfill as a user runs it: ``airflow backfill create`` on the stack's metadata DB, then
wait through the REST API until the scheduler has finished it (benchmarks, integration tests)."""

from __future__ import annotations

import json
import logging
import subprocess
import time
from pathlib import Path

from pipeline_tasks.core.config import PipelineConfig
from pipeline_tasks.ops.airflow_api import AirflowAPI, StackError
from pipeline_tasks.ops.airflow_home import log_tail, private_log, run_airflow_cli

log = logging.getLogger(__name__)


def run_backfill(config: PipelineConfig, api: AirflowAPI, dag_id: str, first_day: str,
                 last_day: str, *, max_active_runs: int = 3, conf: dict | None = None,
                 reprocess: str | None = None, extra_env: dict[str, str] | None = None,
                 log_path: Path | None = None, timeout: float = 1800.0) -> list[dict]:
    """``airflow backfill create`` (the CLI, as a user runs it), then wait until the scheduler
    has finished it; returns the DAG's backfill runs."""
    before = {b["id"] for b in api.get(f"/api/v2/backfills?dag_id={dag_id}")["backfills"]}
    args = ["backfill", "create", "--dag-id", dag_id, "--from-date", first_day,
            "--to-date", last_day, "--max-active-runs", str(max_active_runs)]
    if conf:
        args += ["--dag-run-conf", json.dumps(conf)]
    if reprocess:
        args += ["--reprocess-behavior", reprocess]
    log_path = log_path or Path(config.logs_dir) / "backfill-cli.log"
    for attempt in range(3):
        start = log_path.stat().st_size if log_path.exists() else 0
        with private_log(log_path) as out:
            code = run_airflow_cli(config, args, extra_env, stdout=out, stderr=subprocess.STDOUT)
        output = log_path.read_bytes()[start:].decode(errors="replace")
        created = [b for b in api.get(f"/api/v2/backfills?dag_id={dag_id}")["backfills"]
                   if b["id"] not in before]
        # SQLite (the embedded default) refuses a writer while the scheduler holds its lock;
        # the CLI's transaction is rolled back, so trying again is safe.
        if code == 0 or created or "database is locked" not in output or attempt == 2:
            break
        log.warning("backfill create: the SQLite database was locked; trying again")
        time.sleep(5.0)
    if code != 0:
        raise StackError(f"airflow backfill create failed ({code}):\n{log_tail(log_path)}")
    deadline = time.monotonic() + timeout
    while True:
        new = [b for b in api.get(f"/api/v2/backfills?dag_id={dag_id}")["backfills"]
               if b["id"] not in before]
        if len(new) > 1:
            raise StackError(f"more than one new backfill of {dag_id}: {new}")
        if new and new[0]["completed_at"]:
            break
        if time.monotonic() > deadline:
            raise StackError(f"backfill of {dag_id} not finished after {timeout:.0f} s")
        time.sleep(2.0)
    return api.get(f"/api/v2/dags/{dag_id}/dagRuns?run_type=backfill&limit=1000")["dag_runs"]
