"""The ``docker`` deploy target: one immutable image per model version, run as a container
behind the router that holds the stable port (``docker_image``, ``docker_container``,
``docker_router``).

Driven by the blue/green orchestrator (``deploy.bluegreen``):

1. ``prepare``: the version's image is built (or reused) and the router runs;
2. ``start_candidate``: the image starts as a container of its own beside the live one (on the
   network, and on a free private host port for the canary); a failing canary removes it and
   the router never changes;
3. ``switch``: the router's state file names it (new connections go to it, open ones finish on
   the old one); ``verify``: the stable port reaches it; if not, ``restore`` puts the state file
   back and removes the candidate;
4. ``retire``: the old container is stopped (SIGTERM: in-flight requests finish) and removed.

The stable port never stops accepting connections during a switch.
"""

from __future__ import annotations

import logging
import os
import time

from pipeline_tasks.core import http
from pipeline_tasks.core.config import PipelineConfig
from pipeline_tasks.deploy.docker_container import (
    CONTAINER_PORT,
    ContainerInfo,
    logs_tail,
    run_container,
    stop_container,
)
from pipeline_tasks.deploy.docker_image import (
    LABEL_NAME,
    LABEL_PORT,
    LABEL_SHA256,
    LABEL_VERSION,
    ImageInfo,
    build_image,
    docker_client,
)
from pipeline_tasks.deploy.docker_router import (
    ensure_network,
    ensure_router,
    read_backend,
    serves,
    stable_name,
    state_file,
    write_backend,
)
from pipeline_tasks.deploy.targets import Candidate, Live

log = logging.getLogger(__name__)

#: How long the stable port may take to reach the new version after the switch.
SWITCH_TIMEOUT_S = 15.0


class DockerTarget:
    """The router of ``config.serving_port`` and its model containers as a ``DeployTarget``."""

    name = "docker"

    def __init__(self, config: PipelineConfig, *, client=None):
        self.config = config
        self.client = client or docker_client()
        self.endpoint = config.serving_url
        self.image: ImageInfo | None = None
        self._deploying: tuple[str, str] = ("", "")

    def prepare(self, model_name: str, version: str) -> None:
        self._deploying = (model_name, str(version))
        self.image = build_image(self.config, model_name, version, client=self.client)
        ensure_router(self.config, self.client)

    def current(self) -> Live | None:
        import docker.errors

        backend = read_backend(self.config)
        if not backend:
            return None
        try:
            container = self.client.containers.get(backend["container_id"])
        except docker.errors.NotFound:
            container = None
        return Live(model_name=backend.get("model_name"), version=backend.get("model_version"),
                    record={"model_name": backend.get("model_name"),
                            "version": backend.get("model_version"),
                            "container": backend["host"], "image": backend.get("image")},
                    handle=(backend, container))

    def start_candidate(self, model_name: str, version: str, live: Live | None) -> Candidate:
        image = self.image
        backend, container = live.handle if live else (None, None)
        if (container is not None and container.status == "running"
                and (container.labels or {}).get(LABEL_SHA256) == image.digest
                and serves(self.endpoint, version, tries=1)):
            info = ContainerInfo(id=container.id, name=container.name,
                                 host_port=int(backend.get("host_port") or 0), url=self.endpoint)
            return Candidate(url=self.endpoint, record=self._record(info), unchanged=True,
                             handle=info)
        name = f"{stable_name(self.config)}-{image.tag.split('/', 1)[1].replace(':', '-')}-" \
               f"{os.urandom(3).hex()}"
        info = run_container(self.config, image, name, http.free_port(), client=self.client,
                             network=ensure_network(self.client),
                             labels={LABEL_NAME: model_name, LABEL_VERSION: str(version),
                                     LABEL_SHA256: image.digest,
                                     LABEL_PORT: str(self.config.serving_port)})
        return Candidate(url=info.url, record=self._record(info), handle=info,
                         note=f" (container {info.name}, image {image.tag})")

    def _record(self, info: ContainerInfo) -> dict:
        """What the deployment record keeps of a container of this target."""
        return {"pid": None, "private_port": None,
                "container": {"id": info.id, "name": info.name, "host_port": info.host_port},
                "image": {"tag": self.image.tag, "id": self.image.image_id,
                          "model_sha256": self.image.digest},
                "router": stable_name(self.config)}

    def switch(self, candidate: Candidate) -> None:
        info: ContainerInfo = candidate.handle
        model_name, version = self._deploying
        write_backend(self.config, {
            "host": info.name, "port": CONTAINER_PORT, "container_id": info.id,
            "host_port": info.host_port, "model_name": model_name, "model_version": version,
            "image": self.image.tag, "switched_at": time.time()})

    def verify(self, candidate: Candidate, version: str) -> str | None:
        deadline = time.monotonic() + SWITCH_TIMEOUT_S
        while not serves(self.endpoint, version):
            if time.monotonic() > deadline:
                router = self.client.containers.get(stable_name(self.config))
                return (f"the stable port {self.config.serving_port} does not reach it; router "
                        f"log:\n{logs_tail(router)}")
            time.sleep(0.2)
        return None

    def restore(self, live: Live | None, candidate: Candidate) -> str:
        """Route to the old container again (it still runs) and remove the candidate."""
        backend = live.handle[0] if live else None
        if backend:
            write_backend(self.config, backend)
        else:
            state_file(self.config).unlink(missing_ok=True)
        self.stop(candidate)
        return (f"{live.model_name} v{live.version} serves again" if backend
                else "nothing served before it")

    def stop(self, candidate: Candidate) -> None:
        stop_container(candidate.handle.id, client=self.client)

    def retire(self, live: Live | None, candidate: Candidate) -> None:
        container = live.handle[1] if live else None
        if container is not None and container.id != candidate.handle.id:
            stop_container(container.id, client=self.client)  # SIGTERM: in-flight requests finish
        log.info("%s is live on %s (container %s)", self.image.tag, self.endpoint,
                 candidate.handle.name)
