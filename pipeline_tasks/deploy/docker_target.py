"""The ``docker`` deploy target: one container serves the endpoint's whole live set of models
(e.g. ``{flights_is_late: v3, other_model: v1}``), behind the router that holds the stable port
(``docker_image``, ``docker_container``, ``docker_router``).

Deploying model A vN switches that one model: the new set is the live set with A -> vN (A
appended when the set lacks it; the other models keep their versions and their order, so the
default model, the first, stays). Driven by the blue/green orchestrator (``deploy.bluegreen``):

1. ``prepare``: the live set is read (router state file -> its container's set label), the new
   set's image is built (or reused) and the router runs;
2. ``start_candidate``: the image starts as a container of its own beside the live one (on the
   network, and on a free private host port); the canary checks A on it by name
   (``/models/<A>/predict``); a failing canary removes it and the router never changes;
3. ``switch``: the router's state file names it and its set (new connections go to it, open
   ones finish on the old one); ``verify``: the stable port serves A vN; if not, ``restore``
   puts the state file back (the old container still runs) and removes the candidate;
4. ``retire``: the old container is stopped (SIGTERM: in-flight requests finish) and removed.

The stable port never stops accepting connections during a switch, and the other models of the
set answer throughout, at their versions.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

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
    LABEL_MODELS,
    LABEL_NAME,
    LABEL_PORT,
    LABEL_SHA256,
    LABEL_VERSION,
    DockerTargetError,
    ImageInfo,
    build_image,
    docker_client,
    models_label,
    parse_models_label,
    resolve_set,
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


def live_set(backend: dict | None, container: Any) -> dict[str, dict[str, str]]:
    """What the live container serves: ``{name: {"version", "sha256"}}`` in manifest order
    (sha256 "" when unknown); {} when nothing is live.

    From the container's ``LABEL_MODELS``; a container of a single-model release has only its
    model's name, version and sha256 labels; without the container (removed by hand), the state
    file's ``models`` (or its ``model_name``/``model_version``) say what should serve."""
    labels = (container.labels or {}) if container is not None else {}
    models = parse_models_label(labels.get(LABEL_MODELS))
    if models:
        return models
    if labels.get(LABEL_NAME) and labels.get(LABEL_VERSION):
        return {labels[LABEL_NAME]: {"version": labels[LABEL_VERSION],
                                     "sha256": labels.get(LABEL_SHA256, "")}}
    if not backend:
        return {}
    versions = backend.get("models") or (
        {backend["model_name"]: backend.get("model_version")} if backend.get("model_name")
        else {})
    return {str(name): {"version": str(version), "sha256": ""}
            for name, version in versions.items() if version is not None}


def _versions(models: dict[str, dict[str, str]]) -> dict[str, str]:
    return {name: entry["version"] for name, entry in models.items()}


def _shown(versions: dict[str, str]) -> str:
    return ", ".join(f"{name} v{version}" for name, version in versions.items()) or "nothing"


class DockerTarget:
    """The router of ``config.serving_port`` and the container of its model set as a
    ``DeployTarget``; each deployment switches one model of the set."""

    name = "docker"

    def __init__(self, config: PipelineConfig, *, client=None):
        self.config = config
        self.client = client or docker_client()
        self.endpoint = config.serving_url
        self.image: ImageInfo | None = None
        self._deploying: tuple[str, str] = ("", "")

    def _live_handle(self) -> tuple[dict | None, Any]:
        """The router's state file and the container it names (None when gone)."""
        import docker.errors

        backend = read_backend(self.config)
        if not backend:
            return None, None
        try:
            return backend, self.client.containers.get(backend["container_id"])
        except docker.errors.NotFound:
            return backend, None

    def prepare(self, model_name: str, version: str) -> None:
        """Build (or reuse) the image of the live set with ``model_name`` -> ``version``."""
        self._deploying = (model_name, str(version))
        live = live_set(*self._live_handle())
        wanted = {**_versions(live), model_name: str(version)}
        models = resolve_set(self.config, wanted)
        for entry in models:  # what serves now is rebuilt from the same files, or not at all
            known = live.get(entry.model_name, {})
            if (entry.model_name != model_name and known.get("sha256")
                    and known.get("version") == entry.model_version
                    and known["sha256"] != entry.sha256):
                raise DockerTargetError(
                    f"{entry.model_name} v{entry.model_version} serves on port "
                    f"{self.config.serving_port} with sha256 {known['sha256'][:16]}..., but the "
                    f"registry now records {entry.sha256[:16]}...: refusing to rebuild it from "
                    "other files")
        self.image = build_image(self.config, models, client=self.client)
        ensure_router(self.config, self.client)

    def current(self) -> Live | None:
        """The live set as ``Live`` of the model being deployed (``version`` None when the set
        lacks it); None only when nothing serves on the endpoint. (The orchestrator deploys one
        model at a time per endpoint, so the set ``prepare`` built on is still live.)"""
        backend, container = self._live_handle()
        if not backend:
            return None
        versions = _versions(live_set(backend, container))
        model_name = self._deploying[0]
        return Live(model_name=model_name, version=versions.get(model_name),
                    record={"model_name": model_name, "version": versions.get(model_name),
                            "models": versions, "container": backend["host"],
                            "image": backend.get("image")},
                    handle=(backend, container))

    def start_candidate(self, model_name: str, version: str, live: Live | None) -> Candidate:
        """A container of the new set beside the live one (``unchanged`` when the live
        container already holds exactly that set). The canary calls ``model_name`` by name
        on its URL (``/models/<name>/predict``): it serves the set's other models too."""
        image = self.image
        backend, container = live.handle if live else (None, None)
        if (container is not None and container.status == "running"
                and (container.labels or {}).get(LABEL_SHA256) == image.digest
                and serves(self.endpoint, model_name, version, tries=1)):
            info = ContainerInfo(id=container.id, name=container.name,
                                 host_port=int(backend.get("host_port") or 0), url=self.endpoint)
            return Candidate(url=self.endpoint, record=self._record(info), unchanged=True,
                             handle=info)
        name = f"{stable_name(self.config)}-{image.digest[:12]}-{os.urandom(3).hex()}"
        info = run_container(self.config, image, name, http.free_port(), client=self.client,
                             network=ensure_network(self.client),
                             labels={LABEL_NAME: model_name, LABEL_VERSION: str(version),
                                     LABEL_SHA256: image.digest,
                                     LABEL_MODELS: models_label(image.models),
                                     LABEL_PORT: str(self.config.serving_port)})
        return Candidate(url=info.url, record=self._record(info), handle=info,
                         note=f" (container {info.name}, image {image.tag}: "
                              f"{_shown(image.versions())})")

    def _record(self, info: ContainerInfo) -> dict:
        """What the deployment record keeps of a container of this target: the container, its
        image (the deployed model's sha256 and the set digest) and the set it serves."""
        return {"pid": None, "private_port": None,
                "container": {"id": info.id, "name": info.name, "host_port": info.host_port},
                "image": {"tag": self.image.tag, "id": self.image.image_id,
                          "model_sha256": self.image.sha256_of(self._deploying[0]),
                          "set_sha256": self.image.digest},
                "models": self.image.versions(), "router": stable_name(self.config)}

    def switch(self, candidate: Candidate) -> None:
        """Point the router at the candidate: new connections go to it."""
        info: ContainerInfo = candidate.handle
        model_name, version = self._deploying
        write_backend(self.config, {
            "host": info.name, "port": CONTAINER_PORT, "container_id": info.id,
            "host_port": info.host_port, "model_name": model_name, "model_version": version,
            "models": self.image.versions(), "image": self.image.tag,
            "switched_at": time.time()})

    def verify(self, candidate: Candidate, version: str) -> str | None:
        """None once the stable port serves ``version`` of the deployed model."""
        model_name = self._deploying[0]
        deadline = time.monotonic() + SWITCH_TIMEOUT_S
        while not serves(self.endpoint, model_name, version):
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
        return (f"{_shown(live.record.get('models') or {})} serve(s) again" if backend
                else "nothing served before it")

    def stop(self, candidate: Candidate) -> None:
        stop_container(candidate.handle.id, client=self.client)

    def retire(self, live: Live | None, candidate: Candidate) -> None:
        container = live.handle[1] if live else None
        if container is not None and container.id != candidate.handle.id:
            stop_container(container.id, client=self.client)  # SIGTERM: in-flight requests finish
        log.info("%s (%s) is live on %s (container %s)", self.image.tag,
                 _shown(self.image.versions()), self.endpoint, candidate.handle.name)
