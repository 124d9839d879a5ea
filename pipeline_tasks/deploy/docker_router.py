"""The router of the docker target: the container that holds the stable port.

The stable port belongs to a router container (``mlops-serving-<port>``,
``docker/router.Dockerfile``, ``serving/router.py``) on the private network ``mlops-serving``;
the endpoint's set of models runs as one container behind it (a new set: a new container). The
router sends each new connection to the container named in its state file (``backend.json``,
rewritten atomically here: the container, and the set it serves), so a switch of sets never
stops the port accepting connections.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline_tasks.core import http, storage
from pipeline_tasks.core.config import PROJECT_DIR, PipelineConfig
from pipeline_tasks.deploy.docker_container import (
    CONTAINER_PORT,
    HARDENING,
    logs_tail,
    stop_container,
)
from pipeline_tasks.deploy.docker_image import (
    IMAGE_REPO,
    LABEL_PORT,
    LABEL_ROLE,
    DockerTargetError,
    build_from_context,
    choose_base_image,
    docker_client,
)

log = logging.getLogger(__name__)

NETWORK = "mlops-serving"
ROUTER_SOURCE = PROJECT_DIR / "pipeline_tasks" / "serving" / "router.py"
ROUTER_DOCKERFILE = PROJECT_DIR / "docker" / "router.Dockerfile"


def stable_name(config: PipelineConfig) -> str:
    """The router container that holds the stable port."""
    return f"mlops-serving-{config.serving_port}"


def _state_dir(config: PipelineConfig) -> Path:
    return Path(config.serving_dir) / str(config.serving_port) / "router"


def state_file(config: PipelineConfig) -> Path:
    return _state_dir(config) / "backend.json"


def read_backend(config: PipelineConfig) -> dict | None:
    """What the router sends traffic to now (None before the first deploy): ``host``, ``port``,
    ``container_id``, ``host_port``, ``image``, ``models`` (name -> version of the set it
    serves; absent in files of single-model releases), and ``model_name``/``model_version`` of
    the model whose deployment wrote it."""
    try:
        return json.loads(state_file(config).read_text())
    except FileNotFoundError:
        return None


def write_backend(config: PipelineConfig, state: dict) -> None:
    storage.atomic_write_json(state_file(config).as_uri(), state)


def ensure_network(client) -> str:
    import docker.errors

    try:
        client.networks.get(NETWORK)
    except docker.errors.NotFound:
        client.networks.create(NETWORK, driver="bridge", labels={LABEL_ROLE: "network"})
    return NETWORK


def router_image(client) -> str:
    """The router image (tag from the router code's hash: rebuilt only when it changes)."""
    import hashlib

    import docker.errors

    code = ROUTER_SOURCE.read_bytes() + ROUTER_DOCKERFILE.read_bytes()
    tag = f"{IMAGE_REPO}/router:{hashlib.sha256(code).hexdigest()[:12]}"
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    with tempfile.TemporaryDirectory(prefix="mlops-router-") as tmp:
        shutil.copy2(ROUTER_DOCKERFILE, Path(tmp) / "Dockerfile")
        shutil.copy2(ROUTER_SOURCE, Path(tmp) / "router.py")
        build_from_context(client, Path(tmp), tag, {"BASE_IMAGE": choose_base_image(client)},
                           {LABEL_ROLE: "router"})
    return tag


def ensure_router(config: PipelineConfig, client) -> Any:
    """The running router of ``serving_port``: started when missing, and replaced when it runs
    another router image than this package's (an upgrade changed ``router.py``)."""
    import docker.errors

    name = stable_name(config)
    image = router_image(client)
    try:
        router = client.containers.get(name)
    except docker.errors.NotFound:
        return start_router(config, client, image)
    running = router.attrs["Config"]["Image"]
    outdated = ("it is a single container from before the router"
                if (router.labels or {}).get(LABEL_ROLE) != "router"
                else f"it runs {running}, not this package's router {image}"
                if running != image else None)
    if outdated:
        # the only switch that leaves the port dark for a moment; the new router reads the
        # same state file, so it serves the same version
        log.warning("replacing %s: %s", name, outdated)
        stop_container(name, client=client)
        return start_router(config, client, image)
    if router.status != "running":
        router.start()
    return router


def start_router(config: PipelineConfig, client, image: str) -> Any:
    """Start the router container of ``serving_port`` from ``image`` and wait until it listens."""
    import docker.errors

    name = stable_name(config)
    state = _state_dir(config)
    state.mkdir(parents=True, exist_ok=True)
    state.chmod(0o755)
    try:
        router = client.containers.run(
            image, name=name, detach=True, network=ensure_network(client),
            mem_limit="128m", restart_policy={"Name": "unless-stopped"},
            ports={f"{CONTAINER_PORT}/tcp": (config.serving_host, int(config.serving_port))},
            volumes={str(state): {"bind": "/state", "mode": "ro"}},
            labels={LABEL_ROLE: "router", LABEL_PORT: str(config.serving_port)},
            tmpfs={"/tmp": "rw,noexec,nosuid,nodev,size=16m"}, **HARDENING)
    except docker.errors.APIError as exc:
        stop_container(name, client=client)
        raise DockerTargetError(f"the router for port {config.serving_port} did not start: "
                                f"{exc}") from exc
    deadline = time.monotonic() + 30
    # the published port accepts as soon as docker's proxy binds it: wait for the router itself
    while not (b"router on :" in router.logs()
               and _port_accepts(config.serving_host, config.serving_port)):
        router.reload()
        if router.status != "running" or time.monotonic() > deadline:
            tail = logs_tail(router)
            stop_container(name, client=client)
            raise DockerTargetError(f"the router for port {config.serving_port} is not "
                                    f"listening; its log:\n{tail}")
        time.sleep(0.2)
    return router


def _port_accepts(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def serves(url: str, model_name: str, version: str, tries: int = 5) -> bool:
    """New connections to ``url`` reach ``version`` of ``model_name`` (several in a row, each a
    new connection): ``GET <url>/models/<name>/metadata`` reports it."""
    for _ in range(tries):
        answer = http.try_json(http.model_url(url, model_name) + "/metadata", timeout=5,
                               headers=http.serving_headers())
        if not answer or answer.get("model_version") != str(version):
            return False
    return True


def stop_endpoint(config: PipelineConfig, *, client=None) -> None:
    """Stop and remove the router of ``serving_port`` and every model container behind it
    (every model of the port stops answering)."""
    client = client or docker_client()
    port = str(config.serving_port)
    for container in client.containers.list(all=True, filters={"label": f"{LABEL_PORT}={port}"}):
        stop_container(container.id, client=client)
    stop_container(stable_name(config), client=client)
    state_file(config).unlink(missing_ok=True)
