"""``make demo-monitoring``: the seasons change, the drift DAG notices, the model is retrained.

On a running stack (``stack.Stack``), with the 2013 flights feed landed:

1. train ``flights_seasons`` on January (one ``ml_training_pipeline`` run) and serve it on its
   own port (``serving_port + 1``);
2. week by week from February: replay the week's flights to the served model
   (``replay.replay``: keys, event times, outcomes landing a day later), then run
   ``ml_drift_monitoring`` over that week's interval;
3. when the drift run asks for a retrain (the asset event), wait for the training run it starts
   and say what it did; the next weeks are served by whatever is champion then.

Each step is printed with the report, the verdict and the runs, so the loop can be followed in
the Airflow and MLflow UIs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

from pipeline_tasks.core import storage
from pipeline_tasks.core.config import PipelineConfig
from pipeline_tasks.ops.demo_data import land_flights_feed
from pipeline_tasks.ops.replay import replay

MODEL = "flights_seasons"
TRAINING = "ml_training_pipeline"
MONITORING = "ml_drift_monitoring"


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def run(config: PipelineConfig, api, say: Callable[[str], None], *, until: date,
        timeout: float = 1800) -> dict:
    """The whole loop (see the module doc); returns a summary of what happened."""
    land_flights_feed(config, date(2013, 1, 1), until + timedelta(days=2))
    port = config.serving_port + 1
    served = config.with_overrides(serving_port=port)
    for dag_id in (TRAINING, MONITORING):
        api.wait_for_dag(dag_id)
        api.set_paused(dag_id, False)

    say(f"==> training {MODEL} on January 2013, served on {served.serving_url}")
    first = _run(api, TRAINING, date(2013, 1, 1), date(2013, 2, 1), timeout,
                 {"model_name": MODEL, "training_window_days": 31, "serving_port": port})
    if first["state"] != "success":
        raise RuntimeError(f"the January training run {first['dag_run_id']} ended "
                           f"{first['state']}; see its logs in the Airflow UI")
    seen = {r["dag_run_id"] for r in _retrains(api)}
    week, summary = date(2013, 2, 1), {"weeks": 0, "drifted": 0, "retrains": []}
    while week <= until:
        end = min(week + timedelta(days=7), until + timedelta(days=1))
        sent = replay(served, week, end - timedelta(days=1))
        versions = ", ".join(f"v{v}: {n}" for v, n in sorted(sent.model_versions.items()))
        say(f"==> {week} .. {end - timedelta(days=1)}: replayed {sent.rows} flights ({versions})")
        time.sleep(config.prediction_log_flush_s + 1)  # the server's log is written in batches
        checked = _run(api, MONITORING, week, end, timeout, {"model_name": MODEL})
        drift = api.xcom(MONITORING, checked["dag_run_id"], "check_drift")
        summary["weeks"] += 1
        columns = ", ".join(drift["drifted_columns"]) or "none"
        say(f"    drift: {drift['status']} (share {drift['drifted_share']:.2f}, columns "
            f"{columns}); report {storage.local_path(drift['report_uri'] or drift['verdict_uri'])}")
        tasks = {t["task_id"]: t["state"]
                 for t in api.task_instances(MONITORING, checked["dag_run_id"])}
        if drift["drift_detected"]:
            summary["drifted"] += 1
        if tasks.get("request_retrain") == "success":
            retrain = _wait_new_retrain(api, seen, timeout)
            seen.add(retrain["dag_run_id"])
            registered = api.xcom(TRAINING, retrain["dag_run_id"], "register")
            say(f"    retrain {retrain['dag_run_id']}: {retrain['state']}; v"
                f"{registered['version']} {registered['reason']}")
            summary["retrains"].append({"run_id": retrain["dag_run_id"],
                                        "version": registered["version"],
                                        "promoted": registered["promoted"]})
        elif drift["drift_detected"]:
            say("    no retrain: inside the cool-down (see request_retrain's log)")
        week = end
    return summary


def _run(api, dag_id: str, start: date, end: date, timeout: float, conf: dict) -> dict:
    run_id = f"demo_{dag_id}_{start.isoformat()}_{end.isoformat()}"
    existing = [r for r in api.get(f"/api/v2/dags/{dag_id}/dagRuns?limit=200")["dag_runs"]
                if r["dag_run_id"] == run_id]
    run = existing[0] if existing else api.trigger_interval(
        dag_id, _midnight(start), _midnight(end), conf=conf, run_id=run_id)
    return api.wait_for_run(dag_id, run["dag_run_id"], timeout=timeout)


def _retrains(api) -> list[dict]:
    runs = api.get(f"/api/v2/dags/{TRAINING}/dagRuns?limit=200")["dag_runs"]
    return [r for r in runs if r["run_type"] == "asset_triggered"]


def _wait_new_retrain(api, seen: set[str], timeout: float) -> dict:
    deadline = time.monotonic() + 120
    while True:
        new = [r for r in _retrains(api) if r["dag_run_id"] not in seen]
        if new:
            return api.wait_for_run(TRAINING, new[0]["dag_run_id"], timeout=timeout)
        if time.monotonic() > deadline:
            raise RuntimeError("the retrain request started no training run within 120 s")
        time.sleep(2)
