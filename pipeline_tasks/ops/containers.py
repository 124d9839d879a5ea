"""The compose stack (``docker/docker-compose.yaml``) and its Airflow image, from the host.

- ``prepare_image_wheels``: every wheel of ``requirements.lock`` into ``docker/wheels/``, so
  ``docker/airflow.Dockerfile`` builds with no network (the serving image's way,
  ``docker_target.prepare_wheels``; cached under ``~/.cache/mlops/wheels``).
- ``compose_command``: ``docker compose`` (the plugin) or the standalone ``docker-compose``.
- ``compose_config`` / ``build_images``: what ``docker compose config`` / ``build`` say.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from pipeline_tasks.core.config import PROJECT_DIR, PipelineConfig
from pipeline_tasks.core.errors import ConfigError, TransientError
from pipeline_tasks.core.lockfile import lock_pins

log = logging.getLogger(__name__)

DOCKER_DIR = PROJECT_DIR / "docker"
COMPOSE_FILE = DOCKER_DIR / "docker-compose.yaml"
ENV_TEMPLATE = DOCKER_DIR / ".env.example"
WHEELS_DIR = DOCKER_DIR / "wheels"
#: What the compose CLI says when the env file leaves a required ``${NAME:?}`` variable empty
#: (v2: "required variable NAME is missing a value"; v1: "Missing mandatory value ...").
_MISSING_VALUE = re.compile(r"required variable \S+ is missing a value|Missing mandatory value")


def wheel_cache() -> Path:
    """Downloaded wheels, kept between builds and checkouts (``$XDG_CACHE_HOME/mlops/wheels``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mlops" / "wheels"


def prepare_image_wheels(config: PipelineConfig, dest: Path = WHEELS_DIR) -> list[str]:
    """The wheels of the whole lock in ``dest`` (the build context's ``docker/wheels/``), each
    checked against the lock's sha256 (``prepare_wheels``); the image installs them with
    ``--require-hashes`` again."""
    import tempfile

    from pipeline_tasks.deploy.docker_image import prepare_wheels

    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".wheels-", dir=dest.parent) as tmp:
        names = prepare_wheels(config, Path(tmp), pins=lock_pins(), cache=wheel_cache())
        # Only files that differ change: a build reading dest meanwhile sees whole wheels.
        for name in [*names, "requirements.txt"]:
            target = dest / name
            if not target.exists() or target.stat().st_size != (Path(tmp) / name).stat().st_size:
                os.replace(Path(tmp) / name, target)
    for old in dest.glob("*.whl"):
        if old.name not in names:  # from an older lock
            old.unlink()
    return names


def compose_command() -> list[str]:
    """The compose CLI on this machine, or an error that says how to get one."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True,
                                 check=False).returncode == 0:
        return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    if standalone:
        return [standalone]
    raise RuntimeError("neither `docker compose` nor `docker-compose` is installed (Debian: "
                       "apt-get install docker-compose)")


def _compose(env_file: Path, *args: str, env: dict[str, str] | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess:
    argv = [*compose_command(), "--project-directory", str(DOCKER_DIR), "-f", str(COMPOSE_FILE),
            "--env-file", str(env_file), *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                          env={**os.environ, **(env or {})})
    if done.returncode != 0:
        message = (f"{' '.join(argv[-len(args):])} failed ({done.returncode}):\n"
                   f"{done.stdout[-3000:]}\n{done.stderr[-2000:]}")
        if _MISSING_VALUE.search(done.stdout + done.stderr):  # the env file's value, not compose
            raise ConfigError(message, advice=f"set the variable in {env_file} "
                              "(make compose-env fills in every secret)")
        raise TransientError(message)
    return done


def compose_config(env_file: Path = ENV_TEMPLATE) -> dict:
    """The compose file resolved against ``env_file`` (validated by the compose CLI)."""
    return yaml.safe_load(_compose(env_file, "config").stdout)


def build_images(env_file: Path = ENV_TEMPLATE, base_image: str | None = None,
                 timeout: float = 3600) -> str:
    """``compose build`` of every service with a ``build:`` section; returns its output."""
    env = {"AIRFLOW_BASE_IMAGE": base_image} if base_image else {}
    done = _compose(env_file, "build", env=env, timeout=timeout)
    return done.stdout + done.stderr
