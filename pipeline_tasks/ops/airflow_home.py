"""The Airflow home of the local stack: ``airflow.cfg`` rendered from ``airflow.cfg.example``,
the secrets the components share, the environment of every process, and private log files.

The stack (``ops.stack``), the backfill (``ops.backfill``) and ``mlops airflow`` all run Airflow
through this environment, so each talks to the same metadata DB with the same keys.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path
from string import Template
from typing import Any

from pipeline_tasks.core.config import PipelineConfig

log = logging.getLogger(__name__)


def venv_bin() -> Path:
    return Path(sys.executable).parent


def secure_home(config: PipelineConfig) -> Path:
    """``$MLOPS_HOME`` made private (mode 700): it holds the stack's secrets, the SQLite metadata
    DB (connection passwords), the logs and the lake. A home of another owner is left alone."""
    home = Path(config.home)
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = home.stat()
    if info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) != 0o700:
        home.chmod(0o700)
    return home


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def _token() -> str:
    import secrets

    return secrets.token_urlsafe(64)


def _local_secret(config: PipelineConfig, name: str, make=_token) -> str:
    """A random secret kept in the Airflow home (mode 600), made once per ``$MLOPS_HOME``.

    Components started separately must share the JWT secret, or the scheduler's workers are
    refused by the API server ("Invalid auth token"); the Fernet key must stay the same for as
    long as the metadata DB holds what it encrypted. Nothing secret is stored in the repo.
    """
    secure_home(config)
    path = Path(config.airflow_home) / f".{name}"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(make())
        tmp.replace(path)
    elif stat.S_IMODE(path.stat().st_mode) & 0o077:
        path.chmod(0o600)  # from a release that did not restrict it
    return path.read_text().strip()


def private_log(path: Path):
    """``path`` opened for appending, readable by its owner only (logs can quote secrets)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    if stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:
        os.fchmod(fd, 0o600)
    return os.fdopen(fd, "ab")


def log_tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file, for an error message."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stack_env(config: PipelineConfig, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of every process of the stack."""
    env = dict(os.environ)
    env.setdefault("AIRFLOW__API_AUTH__JWT_SECRET", _local_secret(config, "jwt_secret"))
    env.setdefault("AIRFLOW__API__SECRET_KEY", _local_secret(config, "api_secret_key"))
    # connection passwords and variables are stored encrypted in the metadata DB
    env.setdefault("AIRFLOW__CORE__FERNET_KEY", _local_secret(config, "fernet_key", _fernet_key))
    env.update({
        "MLOPS_HOME": config.home,
        # where deploy tasks put the model server
        "MLOPS_SERVING_HOST": config.serving_host,
        "MLOPS_SERVING_PORT": str(config.serving_port),
        "MLOPS_SERVING_TARGET": config.serving_target,
        # where the UI's links point (pipeline_tasks.lineage.links): the MLflow UI beside Airflow
        "MLOPS_MLFLOW_HOST": config.mlflow_host,
        "MLOPS_MLFLOW_PORT": str(config.mlflow_port),
        "AIRFLOW_HOME": config.airflow_home,
        "AIRFLOW_CONFIG": str(Path(config.airflow_home) / "airflow.cfg"),
        # Airflow starts its own components by the bare name ``airflow``.
        "PATH": f"{venv_bin()}{os.pathsep}{env.get('PATH', '')}",
        "GX_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "true",
        "MLFLOW_TRACKING_URI": config.mlflow_tracking_uri,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra or {})
    return env


def login_enabled(env: dict[str, str]) -> bool:
    """False when ``simple_auth_manager_all_admins`` turns login off (the embedded default)."""
    value = env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "True")
    return value.strip().lower() not in ("1", "true", "yes", "on")


def executor(env: dict[str, str]) -> str:
    """The executor the components will use (``AIRFLOW__CORE__EXECUTOR`` or the cfg's)."""
    return env.get("AIRFLOW__CORE__EXECUTOR", "LocalExecutor").rsplit(".", 1)[-1]


def openlineage_dir(config: PipelineConfig) -> Path:
    """Where the embedded profile's OpenLineage file transport writes ``events.jsonl``."""
    return Path(config.home) / "openlineage"


def render_airflow_cfg(config: PipelineConfig) -> str:
    template = Template((Path(config.project_dir) / "airflow.cfg.example").read_text())
    return template.substitute(
        MLOPS_HOME=config.home,
        AIRFLOW_HOME=config.airflow_home,
        PROJECT_DIR=config.project_dir,
        AIRFLOW_HOST=config.airflow_host,
        AIRFLOW_PORT=str(config.airflow_port),
    )


def prepare_airflow_home(config: PipelineConfig, extra_env: dict[str, str] | None = None) -> Path:
    """Write ``airflow.cfg`` from ``airflow.cfg.example`` (when it changed), migrate the metadata
    DB and create the training pool, once per (settings, database, pool)."""
    secure_home(config)
    home = Path(config.airflow_home)
    home.mkdir(parents=True, exist_ok=True)
    # [openlineage] of airflow.cfg.example: the file transport appends to
    # $MLOPS_HOME/openlineage/events.jsonl, and does not make the folder itself
    openlineage_dir(config).mkdir(mode=0o700, parents=True, exist_ok=True)
    cfg = home / "airflow.cfg"
    text = render_airflow_cfg(config)
    if not cfg.exists() or cfg.read_text() != text:
        tmp = cfg.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(cfg)
    env = stack_env(config, extra_env)
    marker = home / ".migrated"
    # the database may come from the environment (the production profile), not from the file
    stamp = hashlib.sha256("\n".join([
        text, env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", ""), config.training_pool,
        str(config.training_pool_slots)]).encode()).hexdigest()
    if not marker.exists() or marker.read_text() != stamp:
        log.info("migrating the Airflow metadata database of %s", home)
        airflow = str(venv_bin() / "airflow")
        subprocess.run([airflow, "db", "migrate"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        # Training runs in its own pool, so long fits cannot take every worker slot.
        subprocess.run([airflow, "pools", "set", config.training_pool,
                        str(config.training_pool_slots), "model training (ml_training_pipeline)"],
                       env=env, check=True, stdout=subprocess.DEVNULL)
        marker.write_text(stamp)
    return cfg


def run_airflow_cli(config: PipelineConfig, args: list[str],
                    extra_env: dict[str, str] | None = None, **popen: Any) -> int:
    """Run one Airflow CLI command against the stack's metadata DB (the embedded default, or
    the profile in the environment / ``extra_env``)."""
    prepare_airflow_home(config, extra_env)
    return subprocess.call([str(venv_bin() / "airflow"), *args], env=stack_env(config, extra_env),
                           **popen)
