"""The production profile on the real local PostgreSQL and Redis.

One stack per module: fresh databases (unique names, dropped at the end), the scheduler,
dag-processor, api-server and triggerer, two Celery workers with their own hostnames and an
MLflow tracking server on PostgreSQL, all configured by ``docker/production.env.example`` (the
file users copy) with only names, ports and the shared folder replaced. Every process runs in its
own process group and is stopped at the end, whether the tests pass or fail.
"""

from __future__ import annotations

import secrets
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
import pytest
import redis

from pipeline_tasks.config import PipelineConfig, load_config
from pipeline_tasks.production import (
    TEMPLATE,
    create_databases,
    drop_databases,
    profile_databases,
    read_env_file,
)
from pipeline_tasks.stack import AirflowAPI, Stack, stack_api

DAG_ID = "ml_training_pipeline"
PG_HOST = "127.0.0.1:5432"
REDIS_URL = "redis://127.0.0.1:6379/0"
WORKERS = ("worker1", "worker2")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def config_from_env(env: dict[str, str]) -> PipelineConfig:
    """The pipeline config the stack's processes will load from ``env`` (MLOPS_* variables)."""
    fields = {k[len("MLOPS_"):].lower(): v for k, v in env.items() if k.startswith("MLOPS_")}
    return load_config(**{k: v for k, v in fields.items() if k in PipelineConfig.__annotations__})


@dataclass
class Production:
    stack: Stack
    config: PipelineConfig
    env: dict[str, str]
    api: AirflowAPI
    run_tag: str
    shared: Path
    workers: dict[str, int] = field(default_factory=dict)  # name -> pid

    @property
    def databases(self) -> list[str]:
        return profile_databases(self.env)


@pytest.fixture(scope="module")
def production(tmp_path_factory) -> Production:
    require_services()
    tag = uuid.uuid4().hex[:10]
    shared = tmp_path_factory.mktemp("shared")
    env = read_env_file(TEMPLATE, overrides={
        "PG_HOST": PG_HOST,
        "PG_AIRFLOW_DB": f"mlops_it_{tag}_airflow",
        "PG_MLFLOW_DB": f"mlops_it_{tag}_mlflow",
        "REDIS_URL": REDIS_URL,
        "SHARED_DIR": str(shared),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(48),
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(48),
        "MLOPS_MLFLOW_PORT": str(free_port()),
        # the lost-worker check: a task whose worker stops heartbeating is failed after 20 s
        # (default 300) and retried on the other worker; workers heartbeat every 2 s
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
    }, environ={})
    env.update({
        "MLOPS_AIRFLOW_PORT": str(free_port()),
        "MLOPS_SERVING_PORT": str(free_port()),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "2",
        # only the runs the tests make; a queue of this run's own on the shared Redis
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": f"mlops_it_{tag}",
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
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
        stack.stop()
        drop_databases(urls)
