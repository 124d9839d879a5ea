"""The production profile on real PostgreSQL and Redis servers: throwaway ones the session
starts (``postgres_server``, ``redis_server`` in tests/conftest.py), never the machine's own.

One stack per module: fresh databases (a role of its own, dropped at the end), the scheduler,
dag-processor, api-server and triggerer, two Celery workers with their own hostnames and an
MLflow tracking server on PostgreSQL, all configured by ``docker/production.env.example`` (the
file users copy) with only names, ports and the shared folder replaced. Every process runs in its
own process group and is stopped at the end, whether the tests pass or fail.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from profile_teardown import unprovision

from pipeline_tasks.core.config import PipelineConfig
from pipeline_tasks.ops.airflow_api import AirflowAPI, stack_api
from pipeline_tasks.ops.production import (
    config_from_env,
    local_env,
    profile_databases,
    provision,
)
from pipeline_tasks.ops.stack import Stack

DAG_ID = "ml_training_pipeline"
WORKERS = ("worker1", "worker2")


@dataclass
class Production:
    stack: Stack
    config: PipelineConfig
    env: dict[str, str]
    api: AirflowAPI
    run_tag: str
    shared: Path
    workers: dict[str, int] = field(default_factory=dict)  # name -> pid


@pytest.fixture(scope="module")
def production(tmp_path_factory, postgres_server, redis_server) -> Production:
    tag = "it_" + uuid.uuid4().hex[:10]
    shared = tmp_path_factory.mktemp("shared")
    env = local_env(shared, tag, pg_host=postgres_server, redis_host=redis_server, overrides={
        # the lost-worker check: a task whose worker stops heartbeating is failed after 20 s
        # (default 300) and retried on the other worker; workers heartbeat every 2 s
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "2",
    })
    config = config_from_env(env)
    urls = profile_databases(env)
    assert len(urls) == 2, urls  # Airflow (+ Celery results) and MLflow (+ registry lock)
    provision(env)  # the profile's own PostgreSQL role (its databases' owner) and Redis user
    stack = Stack(config, extra_env=env, worker_names=tuple(f"{w}-{tag}" for w in WORKERS))
    try:
        stack.start(timeout=300)
        api = stack_api(config, env)
        api.wait_for_dag(DAG_ID)
        api.set_paused(DAG_ID, False)
        workers = {name.removeprefix("celery-"): proc.pid
                   for name, proc in stack.procs.items() if name.startswith("celery-")}
        yield Production(stack, config, env, api, tag, shared, workers)
    finally:
        try:
            stack.stop()
        finally:
            unprovision(env)
