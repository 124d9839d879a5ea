"""Shared test setup: every test runs against a throwaway $MLOPS_HOME, never the user's."""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from pytest_redis import factories as redis_factories

ROOT = Path(__file__).resolve().parent.parent

# Set before anything imports pipeline_tasks.core.config, so no test can touch the user's .mlops/.
_SESSION_HOME = tempfile.mkdtemp(prefix="mlops-test-home-")
os.environ["MLOPS_HOME"] = _SESSION_HOME
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "true")
for key in [k for k in os.environ if k.startswith("MLOPS_") and k != "MLOPS_HOME"]:
    del os.environ[key]  # a developer's own overrides must not leak into tests

# dags/ and plugins/ are on sys.path in Airflow; mirror that for tests that import them.
for folder in ("plugins",):
    path = str(ROOT / folder)
    if path not in sys.path:
        sys.path.insert(0, path)
# Test helpers that are no part of the library (tests/pipeline_tasks/synthetic_data.py,
# tests/integration/profile_teardown.py), importable by their module name from any test. Appended,
# so they never shadow an installed module; never tests/ itself, which would shadow the library
# with tests/pipeline_tasks/.
for folder in ("tests/pipeline_tasks", "tests/integration"):
    path = str(ROOT / folder)
    if path not in sys.path:
        sys.path.append(path)


def ensure_engine() -> None:
    """Make a Docker engine answer (``docker/engine.sh`` starts one on Debian, as root, and names
    its ``DOCKER_HOST``) and the local base image exist (``docker/base-image.sh``); the scripts'
    output in the error when they fail. Exported to this process, so the Airflow workers and
    model servers started afterwards inherit it."""
    import subprocess

    import docker.errors

    import docker

    try:
        docker.from_env(timeout=10).ping()
    except (docker.errors.DockerException, OSError):
        out = subprocess.run([str(ROOT / "docker" / "engine.sh")], capture_output=True,
                             text=True, check=True, timeout=600).stdout.strip().splitlines()
        assert out and out[-1].startswith("export DOCKER_HOST="), \
            f"docker/engine.sh did not name a host: {out[-3:]}"
        os.environ["DOCKER_HOST"] = out[-1].split("=", 1)[1]
    subprocess.run([str(ROOT / "docker" / "base-image.sh")], check=True, capture_output=True,
                   timeout=900)


@pytest.fixture(scope="session")
def docker_engine() -> str:
    """A Docker engine that answers, and the local base image (``ensure_engine``)."""
    ensure_engine()
    return os.environ.get("DOCKER_HOST", "")


@pytest.fixture
def tiny_disk(tmp_path):
    """A 16 KiB tmpfs: a real full disk (mounting needs root, like the docker tests; the test
    fails loudly without it)."""
    import subprocess

    folder = tmp_path / "tiny"
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(folder)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.fail(f"cannot mount a small tmpfs for a disk-full test (run as root): "
                    f"{done.stderr.strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


class WebhookReceiver:
    """A local HTTP endpoint that records the JSON bodies POSTed to it and answers ``status``."""

    def __init__(self, status: int = 200):
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.received: list[dict] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, predicate, timeout: float = 60) -> dict:
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for body in list(self.received):
                if predicate(body):
                    return body
            time.sleep(0.5)
        raise AssertionError(f"no matching notification in {timeout:.0f} s; got {self.received}")


@pytest.fixture(scope="session")
def make_webhook():
    """``make_webhook(status=200)`` -> a running ``WebhookReceiver``; all stop at the end."""
    made: list[WebhookReceiver] = []

    def make(status: int = 200) -> WebhookReceiver:
        made.append(WebhookReceiver(status))
        return made[-1]

    yield make
    for receiver in made:
        receiver.server.shutdown()


# Throwaway PostgreSQL and Redis servers for the tests that need them (the production profile,
# the registry lock): started from the installed server binaries on free ports, in temporary
# folders, by pytest-postgresql's and pytest-redis's executors, and removed after the session.
# They never touch whatever listens on 5432 or 6379. `make test` installs Debian's server
# packages when they are missing (as root); elsewhere the fixture fails with the command to run.
def _server_binary(pattern: str, name: str, package: str) -> str:
    import glob

    found = sorted(glob.glob(pattern), key=lambda p: [int(x) for x in re.findall(r"\d+", p)])
    path = found[-1] if found else shutil.which(name)
    if not path:
        pytest.fail(f"{name} is not installed: run `make test` as root (it installs Debian's "
                    f"{package}), or `apt-get install {package}`")
    return path


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """``host:port`` of a throwaway PostgreSQL cluster; superuser ``postgres``, trust auth."""
    import pwd

    from port_for import select_random
    from pytest_postgresql.executors.proc import PostgreSQLExecutor

    pg_ctl = _server_binary("/usr/lib/postgresql/*/bin/pg_ctl", "pg_ctl", "postgresql")
    folder = Path(tempfile.mkdtemp(prefix="mlops-test-pg-"))
    executable = pg_ctl
    if os.getuid() == 0:  # PostgreSQL refuses to run as root: the cluster belongs to `postgres`
        owner = pwd.getpwnam("postgres")
        os.chown(folder, owner.pw_uid, owner.pw_gid)
        executable = str(folder / "pg_ctl")
        Path(executable).write_text(f'#!/bin/sh\nexec runuser -u postgres -- "{pg_ctl}" "$@"\n')
        os.chmod(executable, 0o755)
    port = select_random()
    executor = PostgreSQLExecutor(
        executable=executable, host="127.0.0.1", port=port, datadir=str(folder / "data"),
        unixsocketdir=str(folder), logfile=str(folder / "postgresql.log"), startparams="-w",
        dbname="postgres", user="postgres",
        # the production profile's stack: 2 Celery workers, the scheduler, MLflow, ...
        postgres_options="-c max_connections=300")
    try:
        with executor:
            yield f"127.0.0.1:{port}"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# pytest-redis's executor (redis-server runs as any user); `redis_server` checks the binary first
redis_executor = redis_factories.redis_proc(executable=shutil.which("redis-server"), port=None)


@pytest.fixture(scope="session")
def redis_server(request) -> str:
    """``host:port`` of a throwaway Redis server (default user open, ACLs available)."""
    _server_binary("", "redis-server", "redis-server")
    executor = request.getfixturevalue("redis_executor")
    return f"{executor.host}:{executor.port}"
