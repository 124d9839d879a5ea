"""Fault injection against the real parts (MLflow store, supervisor, model servers, the lake):
kill the task process at a random point, kill the live server and the supervisor, switch
versions under client load, corrupt what is stored, fill the disk. After every fault the same
invariants hold (``conftest.check_invariants``): the champion is what serves, no process outlives
its owner, no MLflow run is left RUNNING, no partial file is visible; and a corrupt input is
refused by name, and every answered prediction is in the log after a clean stop.

The tests share one served model and run in file order.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from dataclasses import replace
from types import SimpleNamespace

import pandas as pd
import pytest
from fault_harness import (
    MODEL,
    TRIALS,
    check_invariants,
    run_stage_in_process,
    spec,
    wait_for,
)

from pipeline_tasks import stages
from pipeline_tasks.core import http, storage
from pipeline_tasks.core.config import load_config
from pipeline_tasks.deploy.local import SupervisorClient


@pytest.fixture(scope="module")
def served(diamonds):
    """v1 champion and live on a port of its own; v2 registered from other rows (a challenger)."""
    since = time.time()
    port = http.free_port()
    first = spec(diamonds, port, "faults_v1")
    v1 = stages.run_all(first)
    stages.deploy(first, v1["train"], v1["register"])
    other = diamonds.parent / "diamonds_other.csv"
    pd.read_csv(diamonds).sample(frac=0.7, random_state=5).to_csv(other, index=False)
    second = spec(other, port, "faults_v2")
    v2 = stages.run_all(second)
    config = first.config.with_overrides(serving_port=port)
    assert check_invariants(config, since) == {"champion": "1", "served": "1"}
    yield SimpleNamespace(config=config, port=port, source=diamonds, v1=v1, v2=v2, since=since)
    SupervisorClient(config).shutdown()


def rollback_spec(served, version: str, trial: str) -> stages.RunSpec:
    return stages.RunSpec(dag_id="ml_model_rollback", run_id=f"faults_rollback_{trial}",
                          interval_start="2013-03-01T00:00:00+00:00",
                          interval_end="2013-03-02T00:00:00+00:00",
                          params={"model_name": MODEL, "version": version,
                                  "reason": f"fault trial {trial}",
                                  "serving_port": served.port})


def other_version(served) -> str:
    return "2" if check_invariants(served.config, served.since)["champion"] == "1" else "1"


def test_a_killed_deploy_task_leaks_no_server_and_its_retry_serves(served, campaign):
    for trial in range(TRIALS):
        target = other_version(served)
        point = campaign.point(0.5, 8.0)
        run = rollback_spec(served, target, f"kill{trial}")
        done = run_stage_in_process("rollback", [run], kill_after=point)
        # whatever the attempt got to, no candidate outlives it
        wait_for(lambda: SupervisorClient(served.config).call("status")["candidates"] == [],
                 30, "the killed deployer's candidate to be stopped")
        # the retry (Airflow retries the task) ends consistent
        stages.rollback(run)
        seen = check_invariants(served.config, served.since)
        assert seen["champion"] == target
        campaign.record("deploy task SIGKILL", f"at {point:.2f} s",
                        "finished before the kill" if done else f"killed; retry serves v{target}")


def test_a_killed_live_server_is_restarted(served, campaign):
    for _ in range(TRIALS):
        status = SupervisorClient(served.config).call("status")
        live = status["active"]
        os.kill(live["pid"], signal.SIGKILL)
        dead = live["pid"]
        wait_for(lambda dead=dead: (SupervisorClient(served.config).call("status")["active"]
                                    or {}).get("pid") not in (None, dead), 120,
                 "the live server's restart")
        wait_for(lambda: http.try_json(served.config.serving_url + "/ready", timeout=2), 60,
                 "the endpoint")
        check_invariants(served.config, served.since)
        campaign.record("live server SIGKILL", "", f"restarted v{live['models'][MODEL]}")


def test_a_killed_supervisor_is_brought_back(served, campaign):
    from pipeline_tasks.deploy.bluegreen import restore_serving

    for _ in range(TRIALS):
        status = SupervisorClient(served.config).call("status")
        os.kill(status["pid"], signal.SIGKILL)
        wait_for(lambda: http.try_json(served.config.serving_url + "/metadata", timeout=2)
                 is None, 30, "the model server to die with its supervisor")
        restored = [e for e in restore_serving(served.config)
                    if e["endpoint"] == served.config.serving_url]
        assert [e["action"] for e in restored] == ["restored"]
        seen = check_invariants(served.config, served.since)
        campaign.record("supervisor SIGKILL", "", f"restored v{seen['served']}")


def test_a_killed_training_task_leaves_no_running_run_and_one_version_per_run(served,
                                                                              campaign):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(served.config.mlflow_tracking_uri)
    for trial in range(TRIALS):
        # no_cache: the same rows as v1, and the trial is about a fit being killed
        run = spec(served.source, served.port, f"faults_train_{trial}", no_cache=True)
        ingested = stages.ingest(run)
        versioned = stages.version(run, ingested, stages.validate(run, ingested))
        point = campaign.point(0.5, 6.0)
        done = run_stage_in_process("train", [run, ingested, versioned], kill_after=point)
        trained = stages.train(run, ingested, versioned)  # the retry
        decision = stages.evaluate(run, trained)
        first = stages.register(run, trained, decision)
        again = stages.register(run, trained, decision)  # a retried register
        assert first.version == again.version
        check_invariants(served.config, served.since)
        killed = [r for r in client.search_runs([trained.experiment_id],
                                                "attributes.status = 'KILLED'")
                  if r.data.tags.get("run_key") == run.run_key]
        campaign.record("train task SIGKILL", f"at {point:.2f} s",
                        "finished before the kill" if done else
                        f"killed; {len(killed)} run marked KILLED, retry registered "
                        f"v{first.version}")


def test_a_task_killed_inside_any_stage_is_retried_cleanly(served, campaign):
    """Each training stage killed at a random point, then retried as Airflow does: the retry
    finishes, the lake holds no partial file, and the run registers one version."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(served.config.mlflow_tracking_uri)
    for trial in range(TRIALS):
        run = spec(served.source, served.port, f"faults_stages_{trial}", no_cache=True)
        done: dict[str, object] = {}
        inputs = {"ingest": [], "validate": ["ingest"], "version": ["ingest", "validate"],
                  "train": ["ingest", "version"], "evaluate": ["train"],
                  "register": ["train", "evaluate"]}
        killed = []
        for stage, needs in inputs.items():
            args = [run, *(done[name] for name in needs)]
            point = campaign.point(0.3, 6.0)
            if run_stage_in_process(stage, args, kill_after=point) is None:
                killed.append(f"{stage}@{point:.1f}s")
            done[stage] = getattr(stages, stage)(*args)  # the retry
            check_invariants(served.config, served.since)
        versions = client.search_model_versions(
            f"name = '{MODEL}' and run_id = '{done['train'].run_id}'")
        assert len(versions) == 1
        campaign.record("every stage SIGKILL", "random points",
                        f"killed {', '.join(killed) or 'none (each finished first)'}; "
                        f"retries registered v{done['register'].version} once")


def test_corrupt_snapshots_and_model_files_are_refused_by_name(served, campaign):
    from mlflow.tracking import MlflowClient

    from pipeline_tasks.core.errors import DeployRejected
    from pipeline_tasks.data.versioning import CorruptSnapshotError

    rng = campaign.rng
    # a snapshot: a byte range flipped, or rows changed that still decode
    version_id = served.v1["version"].version_id
    data = storage.local_path(served.v1["version"].data_uri)
    original = data.read_bytes()
    try:
        start = rng.randrange(len(original) // 4, len(original) - 64)
        data.write_bytes(original[:start] + bytes(b ^ 0xFF for b in original[start:start + 32])
                         + original[start + 32:])
        # no_cache: train must read the snapshot (a cache hit reuses v1's model without it)
        run = spec(served.source, served.port, "faults_corrupt", no_cache=True)
        with pytest.raises(CorruptSnapshotError,
                           match=re.escape(f"snapshot {served.v1['version'].data_uri}")):
            stages.train(run, stages.ingest(run), replace(served.v1["version"],
                                                          version_id=version_id))
        campaign.record("snapshot byte flip", f"bytes {start}+32", "refused by name")
    finally:
        data.write_bytes(original)
    # a model file: the version that does not serve cannot be put in service
    client = MlflowClient(served.config.mlflow_tracking_uri)
    target = other_version(served)
    source = client.get_model_version(MODEL, target).source
    root = storage.local_path(client.get_logged_model(source.removeprefix("models:/"))
                              .artifact_location)
    model_file = next(p for p in root.rglob("model.skops"))
    original = model_file.read_bytes()
    try:
        start = rng.randrange(0, len(original) - 16)
        model_file.write_bytes(original[:start] + b"\x00" * 16 + original[start + 16:])
        with pytest.raises(DeployRejected, match="does not match"):
            stages.rollback(rollback_spec(served, target, "corrupt"))
        check_invariants(served.config, served.since)  # the champion stayed on what serves
        campaign.record("model file overwrite", f"bytes {start}+16",
                        "refused, champion unchanged")
    finally:
        model_file.write_bytes(original)


def test_a_switch_under_client_load_loses_no_answer(served, campaign):
    """Bounded client load through a switch and a clean stop: no request fails, and every
    answered row is in the prediction log."""
    from pipeline_tasks.monitoring.sources import read_prediction_log

    rows = pd.read_csv(served.source).drop(columns=["price"]).head(200)
    records = rows.to_dict("records")
    answered, failed, stop = [], [], threading.Event()

    def client(worker: int) -> None:
        i = 0
        while not stop.is_set():
            row_id = f"load-{worker}-{i}"
            answer = http.try_json(served.config.serving_url + "/predict",
                                   {"records": [records[i % len(records)]], "ids": [row_id],
                                    "event_time": "2013-03-01T12:00:00Z"}, timeout=30)
            if answer and "predictions" in answer:
                answered.append(row_id)
            else:
                failed.append((row_id, answer))
            i += 1
            time.sleep(0.02)

    threads = [threading.Thread(target=client, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        target = other_version(served)
        stages.rollback(rollback_spec(served, target, "load"))
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    check_invariants(served.config, served.since)
    SupervisorClient(served.config).shutdown()  # the clean stop: every server flushes its log
    start = pd.Timestamp("2013-03-01", tz="UTC").to_pydatetime()
    logged = read_prediction_log(load_config(), MODEL, start, start + pd.Timedelta(days=1))
    assert failed == []
    assert set(answered) <= set(logged["row_id"]), len(set(answered) - set(logged["row_id"]))
    campaign.record("switch under 4 clients", "",
                    f"{len(answered)} answered, 0 failed, all logged")
    from pipeline_tasks.deploy.bluegreen import restore_serving

    restore_serving(served.config)  # back in service for what follows


def test_a_full_disk_under_the_lake_names_the_path_and_leaves_nothing_partial(served, campaign,
                                                                              tiny_disk):
    from pipeline_tasks.data.versioning import snapshot_dataset

    config = served.config.with_overrides(lake_uri=tiny_disk.as_uri())
    raw = served.v1["ingest"].uri
    with pytest.raises(OSError, match=f"no space left on the device holding {tiny_disk.as_uri()}"):
        snapshot_dataset(raw, config=config, run_key="faults/disk", source="x",
                         interval={}, validation={"success": True})
    visible = [p for p in tiny_disk.rglob("*") if p.is_file()]
    assert all(".tmp-" not in p.name for p in visible)
    assert not any(p.name == "manifest.json" for p in visible)  # no half snapshot
    campaign.record("disk full under the lake", "16 KiB tmpfs", "refused with the path")
    check_invariants(served.config, served.since)
