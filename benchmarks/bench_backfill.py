"""Benchmark: the same 7-day backfill on the embedded default and on the production profile.

Embedded: SQLite, LocalExecutor (parallelism 4), MLflow on SQLite. Production: PostgreSQL,
CeleryExecutor with 2 workers (2 slots each) on the local Redis, an MLflow server on
PostgreSQL, configured by docker/production.env.example (fresh databases, dropped at the end).
Both run `airflow backfill create` over the same 7 days of the demo feed with
`--max-active-runs 3` and the same conf, after a warm-up run that makes the champion; the wall
time is from the CLI call to the backfill's completion.

    make bench-backfill       # or: .venv/bin/python benchmarks/bench_backfill.py [--window 7]

Needs PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379). Prints the figures and writes them
to benchmarks/results/backfill-<UTC time>.json. Not a test: never asserts times.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from pipeline_tasks.core.http import free_port

# The teardown of a throwaway profile is a test helper (tests/integration/profile_teardown.py), not
# library code: its folder goes on sys.path (never tests/ itself, whose pipeline_tasks/ folder
# would shadow the library).
sys.path.append(str(Path(__file__).resolve().parent.parent / "tests" / "integration"))

DAG_ID = "ml_training_pipeline"
FIRST, LAST = date(2013, 3, 1), date(2013, 3, 7)
WARM_UP_DAY = date(2013, 3, 10)


def _seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def measure(config, stack, env: dict[str, str], conf: dict) -> dict:
    from pipeline_tasks.ops.airflow_api import stack_api
    from pipeline_tasks.ops.backfill import run_backfill
    from pipeline_tasks.ops.demo_data import land_flights_feed

    land_flights_feed(config, FIRST - timedelta(days=conf["training_window_days"] + 1),
                      WARM_UP_DAY)
    stack.start(timeout=600)
    api = stack_api(config, env)
    api.wait_for_dag(DAG_ID)
    api.set_paused(DAG_ID, False)
    start = datetime(WARM_UP_DAY.year, WARM_UP_DAY.month, WARM_UP_DAY.day, tzinfo=UTC)
    warm = api.trigger_interval(DAG_ID, start, start + timedelta(days=1),
                                conf={"training_window_days": conf["training_window_days"]})
    api.wait_for_run(DAG_ID, warm["dag_run_id"], timeout=1800)
    began = time.perf_counter()
    runs = run_backfill(config, api, DAG_ID, FIRST.isoformat(), LAST.isoformat(),
                        max_active_runs=3, conf=conf, extra_env=env)
    wall = time.perf_counter() - began
    states = sorted({r["state"] for r in runs})
    task_s = []
    for run in runs:
        for ti in api.task_instances(DAG_ID, run["dag_run_id"]):
            if ti.get("start_date") and ti.get("end_date"):
                task_s.append(_seconds(ti["start_date"], ti["end_date"]))
    return {"wall_s": round(wall, 1), "runs": len(runs), "states": states,
            "tasks": len(task_s), "task_s_total": round(sum(task_s), 1)}


def embedded(home: Path, conf: dict) -> dict:
    from pipeline_tasks.core.config import load_config
    from pipeline_tasks.ops.stack import Stack

    config = load_config(home=str(home), airflow_port=free_port(),
                         mlflow_port=free_port(), serving_port=free_port())
    env = {"AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
           "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False"}
    stack = Stack(config, components=("api-server", "scheduler", "dag-processor"),
                  mlflow_ui=False, extra_env=env)
    try:
        return measure(config, stack, env, conf)
    finally:
        stack.stop()


def production(shared: Path, conf: dict) -> dict:
    from profile_teardown import unprovision

    from pipeline_tasks.ops.production import config_from_env, local_env, provision
    from pipeline_tasks.ops.stack import Stack

    env = local_env(shared, "bench_" + uuid.uuid4().hex[:8])
    config = config_from_env(env)
    provision(env)  # the profile's PostgreSQL role and databases, its Redis user
    stack = Stack(config, components=("api-server", "scheduler", "dag-processor"),
                  extra_env=env)
    try:
        return measure(config, stack, env, conf)
    finally:
        try:
            stack.stop()
        finally:
            unprovision(env)


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=int, default=7, help="training_window_days per run")
    args = parser.parse_args()
    # like the integration test's backfill: history is recorded, the champion does not move
    conf = {"training_window_days": args.window, "min_champion_delta": 1.0}
    with tempfile.TemporaryDirectory(prefix="bench-backfill-") as tmp:
        results = {"embedded": embedded(Path(tmp) / "embedded", conf),
                   "production": production(Path(tmp) / "shared", conf)}
    emb, prod = results["embedded"], results["production"]
    ratio = prod["wall_s"] / emb["wall_s"]
    print(f"7-day backfill of {DAG_ID} ({FIRST} .. {LAST}), --max-active-runs 3, "
          f"training window {args.window} days")
    print(f"{'profile':<38} {'wall s':>8} {'runs':>5} {'tasks':>6} {'task s (sum)':>13}")
    print(f"{'embedded (LocalExecutor, SQLite)':<38} {emb['wall_s']:>8.1f} {emb['runs']:>5} "
          f"{emb['tasks']:>6} {emb['task_s_total']:>13.1f}")
    print(f"{'production (2 Celery workers, PG)':<38} {prod['wall_s']:>8.1f} {prod['runs']:>5} "
          f"{prod['tasks']:>6} {prod['task_s_total']:>13.1f}")
    print(f"ratio production / embedded: {ratio:.2f}")
    results.update({"ratio": round(ratio, 3), "window_days": args.window,
                    "at": datetime.now(UTC).isoformat()})
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    path = out / f"backfill-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"figures: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
