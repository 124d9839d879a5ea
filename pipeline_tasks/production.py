"""The production profile as data: the env file that switches the stack to PostgreSQL, Celery,
an MLflow server and a shared store, and the databases it names.

``docker/production.env.example`` is the documented template. ``write_env_file`` fills its
``__GENERATE__`` secrets with random values into a file only its owner reads; ``read_env_file``
reads such a file the way ``set -a; . ./production.env`` does (``KEY=VALUE`` lines, ``${NAME}``
refers to a variable set before it), so tests, benchmarks and the Makefile use the same file.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from pathlib import Path
from urllib.parse import urlparse

from pipeline_tasks.config import PROJECT_DIR
from pipeline_tasks.errors import ConfigError
from pipeline_tasks.locks import libpq_url

log = logging.getLogger(__name__)

TEMPLATE = PROJECT_DIR / "docker" / "production.env.example"
GENERATE = "__GENERATE__"
#: The variables that hold PostgreSQL databases of the profile.
DATABASE_VARS = ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__RESULT_BACKEND",
                 "MLOPS_MLFLOW_BACKEND_STORE_URI", "MLOPS_REGISTRY_LOCK_URL")
_LINE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def read_env_file(path: str | Path, overrides: dict[str, str] | None = None,
                  environ: dict[str, str] | None = None) -> dict[str, str]:
    """The variables an env file sets, in order. ``overrides`` replace a variable's value where
    the file sets it (later lines see the new value); ``${NAME}`` falls back to ``environ``."""
    overrides = dict(overrides or {})
    environ = os.environ if environ is None else environ
    values: dict[str, str] = {}
    for number, raw in enumerate(Path(path).read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            raise ConfigError(f"{path}:{number}: not a KEY=VALUE line: {line[:60]!r}")
        name, value = match.group(1), match.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if name in overrides:
            value = overrides.pop(name)

        def expand(ref: re.Match, number=number) -> str:
            key = ref.group(1)
            if key in values:
                return values[key]
            if key in environ:
                return environ[key]
            raise ConfigError(f"{path}:{number}: ${{{key}}} is not set above this line")

        values[name] = _REF.sub(expand, value)
    values.update(overrides)  # names the file does not set
    missing = sorted(k for k, v in values.items() if v == GENERATE)
    if missing:
        raise ConfigError(f"{path}: {', '.join(missing)} still hold {GENERATE}; make the file "
                          "with `make production-env` (it fills in random secrets)")
    return values


def local_env(shared_dir: str | Path, tag: str, *, pg_host: str = "127.0.0.1:5432",
              redis_url: str = "redis://127.0.0.1:6379/0",
              overrides: dict[str, str] | None = None) -> dict[str, str]:
    """The profile from the template for a throwaway stack on this machine (tests, benchmarks):
    databases ``mlops_<tag>_airflow`` / ``_mlflow``, fresh secrets, free ports, a Celery queue
    of its own (the broker may be shared), the shared folder ``shared_dir``, nightly schedule
    off. ``overrides`` win."""
    from pipeline_tasks.http import free_port

    env = read_env_file(TEMPLATE, environ={}, overrides={
        "PG_HOST": pg_host, "PG_AIRFLOW_DB": f"mlops_{tag}_airflow",
        "PG_MLFLOW_DB": f"mlops_{tag}_mlflow", "REDIS_URL": redis_url,
        "SHARED_DIR": str(shared_dir), "MLOPS_MLFLOW_PORT": str(free_port()),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(48),
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(48),
    })
    env.update({
        "MLOPS_AIRFLOW_PORT": str(free_port()),
        "MLOPS_SERVING_PORT": str(free_port()),
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": f"mlops_{tag}",
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
    })
    env.update(overrides or {})
    return env


def config_from_env(env: dict[str, str]):
    """The ``PipelineConfig`` a process started with ``env`` loads (its MLOPS_* variables)."""
    from pipeline_tasks.config import PipelineConfig, load_config

    names = set(PipelineConfig.__dataclass_fields__)
    return load_config(**{key[len("MLOPS_"):].lower(): value for key, value in env.items()
                          if key.startswith("MLOPS_") and key[len("MLOPS_"):].lower() in names})


def write_env_file(dest: str | Path, template: str | Path = TEMPLATE) -> Path:
    """Copy ``template`` to ``dest`` with each ``__GENERATE__`` replaced by a random secret.

    The file is created with mode 600 and never overwritten (secrets must stay stable: every
    component shares them).
    """
    dest = Path(dest)
    if dest.exists():
        raise ConfigError(f"{dest} exists; remove it first to make new secrets")
    text = Path(template).read_text()
    text = re.sub(GENERATE, lambda _m: secrets.token_urlsafe(48), text)
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    log.info("wrote %s with fresh secrets (mode 600)", dest)
    return dest


def profile_databases(env: dict[str, str]) -> list[str]:
    """The distinct PostgreSQL databases the profile's variables name, as libpq URLs."""
    urls: list[str] = []
    for name in DATABASE_VARS:
        value = env.get(name, "")
        scheme = value.split("://", 1)[0]
        if "postgres" in scheme:
            url = libpq_url(value)
            if url not in urls:
                urls.append(url)
    return urls


def _split(url: str) -> tuple[str, str]:
    """``(maintenance URL, database name)`` of a PostgreSQL database URL."""
    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    if not name or not re.fullmatch(r"[A-Za-z0-9_]+", name):
        raise ConfigError(f"database name {name!r} in {parsed.scheme}://{parsed.hostname}/... "
                          "must be letters, digits and underscores")
    return parsed._replace(path="/postgres").geturl(), name


def _admin_sql(url: str, sql_for_name) -> str:
    """Run ``sql_for_name(cursor, name)`` on the server's maintenance DB for ``url``'s database."""
    import psycopg2

    admin, name = _split(url)
    conn = psycopg2.connect(admin, connect_timeout=30)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            return sql_for_name(cur, name)
    finally:
        conn.close()


def create_databases(urls: list[str]) -> list[str]:
    """Create each database that does not exist yet; returns the names created."""

    def create(cur, name: str) -> str:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if cur.fetchone() is not None:
            return ""
        cur.execute(f'CREATE DATABASE "{name}"')
        return name

    created = [name for name in (_admin_sql(url, create) for url in urls) if name]
    log.info("databases created: %s", ", ".join(created) or "none (all existed)")
    return created


def drop_databases(urls: list[str]) -> None:
    """Drop the databases (closing their sessions first); missing ones are fine."""
    for url in urls:
        _admin_sql(url, lambda cur, name: cur.execute(
            f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
