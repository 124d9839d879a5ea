"""The production profile on the real local PostgreSQL and Redis.

One stack per module: fresh databases (unique names, dropped at the end), the scheduler,
dag-processor, api-server and triggerer, two Celery workers with their own hostnames and an
MLflow tracking server on PostgreSQL, all configured by ``docker/production.env.example`` (the
file users copy) with only names, ports and the shared folder replaced. Every process runs in its
own process group and is stopped at the end, whether the tests pass or fail.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
import pytest
import redis

from pipeline_tasks.config import PipelineConfig
from pipeline_tasks.production import (
    config_from_env,
    create_databases,
    drop_databases,
    local_env,
    profile_databases,
)
from pipeline_tasks.stack import AirflowAPI, Stack, stack_api

DAG_ID = "ml_training_pipeline"
PG_HOST = "127.0.0.1:5432"
REDIS_URL = "redis://127.0.0.1:6379/0"
WORKERS = ("worker1", "worker2")


def require_services() -> None:
    """PostgreSQL and Redis must answer; the test fails loudly (never skips) otherwise."""
    try:
        psycopg2.connect(f"postgresql://postgres@{PG_HOST}/postgres", connect_timeout=5).close()
    except psycopg2.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {PG_HOST} does not answer (start it: see FIELD-NOTES / "
                    f"README 'Scaling out'): {exc}")
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=5).ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis at {REDIS_URL} does not answer: {exc}")


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
def production(tmp_path_factory) -> Production:
    require_services()
    tag = "it_" + uuid.uuid4().hex[:10]
    shared = tmp_path_factory.mktemp("shared")
    env = local_env(shared, tag, pg_host=PG_HOST, redis_url=REDIS_URL, overrides={
        # the lost-worker check: a task whose worker stops heartbeating is failed after 20 s
        # (default 300) and retried on the other worker; workers heartbeat every 2 s
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "2",
    })
    config = config_from_env(env)
    urls = profile_databases(env)
    assert len(urls) == 2, urls  # Airflow (+ Celery results) and MLflow (+ registry lock)
    create_databases(urls)
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
            drop_databases(urls)
