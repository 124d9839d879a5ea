"""Shared test setup: every test runs against a throwaway $MLOPS_HOME, never the user's."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Set before anything imports pipeline_tasks.config, so no test can touch the user's .mlops/.
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


@pytest.fixture(scope="session")
def docker_engine() -> str:
    """A Docker engine that answers, and the local base image (``docker_target.ensure_engine``
    starts them when missing and exports DOCKER_HOST to this process, so the Airflow workers and
    model servers started afterwards inherit it)."""
    from pipeline_tasks.serving.docker_target import ensure_engine

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
