"""A model server container of the docker target: run it hardened, wait until ready, stop it.

``run_container``: detached, ``mem_limit`` (``serving_docker_mem_limit``, default ``1g``),
``restart_policy`` on-failure (3 retries), port 8000 published on ``127.0.0.1:<host_port>``, the
lake's ``predictions`` folder bind-mounted (the prediction log lands in the host lake; the
container runs as the folder's owner, never through a world-writable folder),
``MLOPS_SERVING_TOKEN`` passed through (in its environment). Every container runs with a
read-only root filesystem, a tmpfs ``/tmp``, no capabilities and ``no-new-privileges``
(``HARDENING``). It returns once ``/ready`` answers on the host port; otherwise the container's
last log lines are raised and it is removed.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from pipeline_tasks.core import http, storage
from pipeline_tasks.core.config import PipelineConfig
from pipeline_tasks.deploy.docker_image import (
    LABEL_ROLE,
    DockerTargetError,
    ImageInfo,
    docker_client,
)

log = logging.getLogger(__name__)

CONTAINER_PORT = 8000
CONTAINER_LAKE = "/lake"
CONTAINER_UID = 10001
DEFAULT_MEM_LIMIT = "1g"
#: Every container of the target: a read-only root filesystem with a private tmpfs /tmp (the
#: image's MLOPS_HOME and WORKDIR), no capabilities, no privilege gain through setuid binaries.
HARDENING: dict[str, Any] = {"read_only": True, "cap_drop": ["ALL"],
                             "security_opt": ["no-new-privileges"]}
TMPFS_OPTIONS = "rw,noexec,nosuid,nodev,size=256m"
READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 20


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    host_port: int
    url: str


def mem_limit(config: PipelineConfig) -> str:
    """The container memory limit: ``serving_docker_mem_limit`` (``MLOPS_SERVING_DOCKER_MEM_LIMIT``)."""
    return config.serving_docker_mem_limit or DEFAULT_MEM_LIMIT


def _predictions_mount(config: PipelineConfig) -> tuple[dict, dict[str, str]]:
    """The bind mount of the lake's predictions folder and the env pointing the server at it."""
    if not storage.is_local(config.lake_uri):
        return {}, {"MLOPS_LAKE_URI": config.lake_uri}
    host = storage.local_path(config.predictions_uri)
    host.mkdir(parents=True, exist_ok=True)
    # The container writes as the folder's owner (run_container's user), so the folder is never
    # opened to everyone: a folder of root's is handed to the image's unprivileged user (uid
    # 10001; root keeps reading and writing it), any other owner's is used as it is.
    if host.stat().st_uid == 0:
        if os.geteuid() != 0:
            raise DockerTargetError(f"{host} belongs to root: give it to the user who deploys "
                                    f"(or to uid {CONTAINER_UID}) so the model container can "
                                    "write its prediction log there")
        partitions = [*host.glob("date=*"), *host.glob("date=*/model=*")]  # day, then model
        for folder in [host, *[p for p in partitions if p.is_dir()]]:
            os.chown(folder, CONTAINER_UID, CONTAINER_UID)
            folder.chmod(0o755)  # also closes the world-writable mode of older releases
    return ({str(host): {"bind": f"{CONTAINER_LAKE}/predictions", "mode": "rw"}},
            {"MLOPS_LAKE_URI": f"file://{CONTAINER_LAKE}"})


def _ready(url: str) -> bool:
    return http.ok(url + "/ready", timeout=3)


def logs_tail(container, lines: int = 30) -> str:
    """The container's last log lines (for an error message)."""
    import docker.errors

    try:
        return container.logs(tail=lines).decode(errors="replace").strip()
    except (OSError, docker.errors.APIError) as exc:  # the container may be gone already
        return f"(no logs: {exc})"


def _final_exit_code(container) -> int | None:
    """The exit code of a container that failed: no more restarts, then wait for its end."""
    import docker.errors

    try:
        container.update(restart_policy={"Name": "no"})
        return int(container.wait(timeout=60)["StatusCode"])
    except (docker.errors.APIError, OSError, ValueError):
        container.reload()
        return container.attrs.get("State", {}).get("ExitCode")


def _remove(container) -> None:
    import docker.errors

    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        pass


def run_container(config: PipelineConfig, image: ImageInfo | str, name: str, host_port: int, *,
                  client=None, timeout_s: float = READY_TIMEOUT_S,
                  labels: dict[str, str] | None = None,
                  network: str | None = None) -> ContainerInfo:
    """Run ``image`` as ``name`` on ``127.0.0.1:host_port`` and wait until it is ready."""
    import docker.errors

    client = client or docker_client()
    tag = image.tag if isinstance(image, ImageInfo) else image
    volumes, environment = _predictions_mount(config)
    for key in ("MLOPS_SERVING_TOKEN", "MLOPS_SERVING_EVENT_TIME_WINDOW"):
        if os.environ.get(key):
            environment[key] = os.environ[key]
    for key in ("serving_max_rows", "serving_max_body_bytes", "serving_max_abs_value",
                "prediction_log_flush_s", "prediction_log_max_rows"):
        environment["MLOPS_" + key.upper()] = str(getattr(config, key))
    user = None
    if volumes:
        owner = storage.local_path(config.predictions_uri).stat()
        if owner.st_uid != 0:
            user = f"{owner.st_uid}:{owner.st_gid}"
    try:
        container = client.containers.run(
            tag, name=name, detach=True, mem_limit=mem_limit(config),
            restart_policy={"Name": "on-failure", "MaximumRetryCount": 3},
            ports={f"{CONTAINER_PORT}/tcp": ("127.0.0.1", int(host_port))},
            volumes=volumes, environment=environment, user=user, network=network,
            labels={LABEL_ROLE: "server", **(labels or {})}, init=False,
            tmpfs={"/tmp": TMPFS_OPTIONS}, **HARDENING)
    except docker.errors.APIError as exc:  # e.g. the host port is taken: created, not started
        stop_container(name, client=client)
        raise DockerTargetError(f"container {name} from {tag} did not start: {exc}") from exc
    url = f"http://127.0.0.1:{host_port}"
    deadline = time.monotonic() + timeout_s
    why = None
    while True:
        container.reload()
        state = container.attrs.get("State", {})
        if state.get("Status") in ("exited", "dead", "restarting") or container.attrs.get(
                "RestartCount", 0):
            why = f"it exited with code {_final_exit_code(container)}"
            break
        if state.get("Running") and _ready(url):
            break
        if time.monotonic() > deadline:
            why = f"/ready did not answer within {timeout_s:.0f} s"
            break
        time.sleep(0.5)
    if why is not None:
        tail = logs_tail(container)
        _remove(container)
        raise DockerTargetError(f"container {name} ({tag}) is not ready: {why}; its last log "
                                f"lines:\n{tail}")
    log.info("container %s (%s) ready on %s", name, tag, url)
    return ContainerInfo(id=container.id, name=name, host_port=int(host_port), url=url)


def stop_container(name_or_id: str, *, client=None, remove: bool = True) -> None:
    """Stop (SIGTERM, then kill after 20 s) and by default remove a container; no-op if gone."""
    import docker.errors

    client = client or docker_client()
    try:
        container = client.containers.get(name_or_id)
    except docker.errors.NotFound:
        return
    try:
        container.stop(timeout=STOP_TIMEOUT_S)
    except docker.errors.APIError:
        pass
    if remove:
        _remove(container)
