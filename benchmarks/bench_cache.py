"""Benchmark: a nightly training run on unchanged data, with the training cache and without it.

Through the real scheduler (the embedded stack: API server, scheduler, DAG processor,
LocalExecutor), on a fresh ``MLOPS_HOME`` with the demo flights feed of 2013.
A first run of the nightly DAG (interval 2013-12-31; ``--window-days`` of data before its end: 28
by default, as the DAG's nightly run; 365 is the whole year) trains, registers and deploys the
champion. Then, rounds interleaved, the same interval again:

- ``full``: ``no_cache`` on: every stage runs (the fit, the evaluation against the champion, a
  new version, which is not better, so ``deploy`` is skipped), what every night cost before the
  cache;
- ``cached``: the default: the same batch was validated, versioned and trained before (same
  snapshot, training code, params, libraries) and that model is a version judged against the
  champion, so ``ingest`` skips every later task at once (``model.cache.judged_before``); when
  only the training key matches, ``train`` reuses the model and the tasks after it skip.

Each figure is the DAG run's own duration (its start to its end, as Airflow records it) and the
wall time from the trigger to the end as a user sees it. Medians over rounds, and the ratio
cached / full (goal: at most 15%).

    make bench-cache                     # or: .venv/bin/python benchmarks/bench_cache.py
    ... --rounds 5 --keep-home /tmp/bench-cache

Figures go to stdout and to benchmarks/results/<UTC time>-cache.json. Not a test: never asserts
times; the goal is printed as PASS/MISS for information.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

DAG_ID = "ml_training_pipeline"
MODEL = "bench_cache"
DAY = datetime(2013, 12, 31, tzinfo=UTC)  # the last interval of the feed: up to a year before it
GOAL = 0.15


def _seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def run_once(api, config, counter: int, conf: dict) -> dict:
    """Trigger the nightly DAG for DAY with ``conf``; its durations and task states."""
    t0 = time.perf_counter()
    run = api.trigger_interval(DAG_ID, DAY, DAY + timedelta(days=1),
                               logical_date=DAY + timedelta(seconds=counter), conf=conf,
                               run_id=f"bench_cache_{counter:03d}")
    final = api.wait_for_run(DAG_ID, run["dag_run_id"], timeout=3600)
    wall = time.perf_counter() - t0
    if final["state"] != "success":
        raise SystemExit(f"run {run['dag_run_id']} ended {final['state']}; see {config.logs_dir}")
    tis = {ti["task_id"]: ti for ti in api.task_instances(DAG_ID, run["dag_run_id"])}
    if tis["train"]["state"] == "skipped":  # ingest found the same batch, judged before
        hit = "cache hit" in api.xcom(DAG_ID, run["dag_run_id"], "ingest")["nothing_new"]
        where = "ingest"
    else:
        hit = bool(api.xcom(DAG_ID, run["dag_run_id"], "train").get("cache_hit"))
        where = "train"
    return {"run_seconds": _seconds(final["start_date"], final["end_date"]), "wall": wall,
            "cache_hit": hit, "hit_at": where if hit else None,
            "states": {task: ti["state"] for task, ti in sorted(tis.items())},
            "tasks": {task: _seconds(ti["start_date"], ti["end_date"])
                      for task, ti in tis.items() if ti.get("start_date") and ti.get("end_date")}}


def run_rounds(config, rounds: int, sides: dict, api_class, window_days: int) -> None:
    """The first run, then ``rounds`` of full + cached; results appended to ``sides``."""
    api = api_class(config.airflow_url)
    api.wait_for_dag(DAG_ID)
    api.set_paused(DAG_ID, False)
    counter = api.get(f"/api/v2/dags/{DAG_ID}/dagRuns?limit=1")["total_entries"]
    base = {"model_name": MODEL, "training_window_days": window_days}
    print("first run (trains, registers and deploys the champion) ...", flush=True)
    counter += 1
    sides["first"] = [run_once(api, config, counter, base)]
    print(f"  {sides['first'][0]['run_seconds']:.1f} s", flush=True)
    for round_no in range(1, rounds + 1):
        for side, conf in (("full", {**base, "no_cache": True}), ("cached", base)):
            counter += 1
            result = run_once(api, config, counter, conf)
            expected_hit = side == "cached"
            if result["cache_hit"] != expected_hit:
                raise SystemExit(f"round {round_no} {side}: cache_hit is "
                                 f"{result['cache_hit']}, expected {expected_hit}")
            sides[side].append(result)
            print(f"  round {round_no} {side:<7}{result['run_seconds']:8.1f} s  "
                  f"(wall {result['wall']:.1f} s)", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of full + cached (3)")
    parser.add_argument("--window-days", type=int, default=28,
                        help="training window of the runs, days before 2014-01-01 (28: the "
                        "DAG's default, a nightly run; 365: the year of flights)")
    parser.add_argument("--keep-home", help="use this MLOPS_HOME instead of a fresh temp dir")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    home = Path(args.keep_home or tempfile.mkdtemp(prefix="mlops-bench-cache-"))
    os.environ["MLOPS_HOME"] = str(home)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from pipeline_tasks.core.http import free_port

    os.environ["MLOPS_AIRFLOW_PORT"] = str(free_port())
    os.environ["MLOPS_SERVING_PORT"] = str(free_port())
    from pipeline_tasks.core.config import load_config
    from pipeline_tasks.ops.airflow_api import AirflowAPI
    from pipeline_tasks.ops.demo_data import land_flights_feed
    from pipeline_tasks.ops.stack import Stack

    config = load_config()
    print(f"MLOPS_HOME={home}; landing the 2013 feed ...", flush=True)
    land_flights_feed(config, date(2013, 1, 1), date(2013, 12, 31))
    stack = Stack(config, components=("api-server", "scheduler", "dag-processor"),
                  mlflow_ui=False, extra_env={"AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False"})
    sides: dict[str, list[dict]] = {"full": [], "cached": []}
    try:
        with stack:
            run_rounds(config, args.rounds, sides, AirflowAPI, args.window_days)
            stack_logs = config.logs_dir
    finally:  # the model servers the first run deployed outlive the stack: stop them
        from pipeline_tasks.deploy.local import shutdown_all

        shutdown_all(config)
    first = sides.pop("first")[0]

    med = {side: {key: statistics.median(r[key] for r in runs) for key in ("run_seconds", "wall")}
           for side, runs in sides.items()}
    tasks = sorted({t for runs in sides.values() for r in runs for t in r["tasks"]})
    print(f"\nnightly run on unchanged data ({args.window_days} days of flights), medians of "
          f"{args.rounds} rounds\n")
    print(f"{'':<24}{'full (no_cache)':>16}{'cached':>10}{'ratio':>8}")
    for key, label in (("run_seconds", "DAG run duration s"), ("wall", "trigger to end s")):
        ratio = med["cached"][key] / med["full"][key]
        print(f"{label:<24}{med['full'][key]:>16.1f}{med['cached'][key]:>10.1f}{ratio:>8.2f}")
    print("\nper task, median seconds (skipped tasks take none)")
    for task in tasks:
        cells = []
        for side in ("full", "cached"):
            values = [r["tasks"][task] for r in sides[side] if task in r["tasks"]
                      and r["states"].get(task) != "skipped"]
            cells.append(f"{statistics.median(values):.1f}" if values else "skipped")
        print(f"  {task:<22}{cells[0]:>16}{cells[1]:>10}")
    ratio = med["cached"]["run_seconds"] / med["full"]["run_seconds"]
    verdict = "PASS" if ratio <= GOAL else "MISS"
    print(f"\ncached / full = {ratio:.2f} (goal: at most {GOAL:.2f}): {verdict}")
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (out / f"{stamp}-cache.json").write_text(json.dumps(
        {"window_days": args.window_days, "first": first, "sides": sides, "medians": med,
         "ratio": ratio,
         "logs": str(stack_logs)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
