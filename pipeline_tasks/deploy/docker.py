"""The ``docker`` serving target: one immutable image per model version, run as a container.

Image (``build_image``): ``docker/serving.Dockerfile`` built with the docker SDK (legacy
builder; ``docker.from_env()`` honours ``DOCKER_HOST``). The version's files are downloaded and
checked against the registry's ``artifact_sha256`` before they go into the build context, and
the container checks them again at every start (``--model-dir /opt/model --expected-sha256``):
changed files make it exit with code 2 and the reason in its log. No network is used inside the
build: the runtime wheels (no Airflow) are prepared on the host, cached under
``<home>/cache/wheels`` (a second build needs no network), checked against requirements.lock's
sha256 hashes, and installed with ``--no-index --require-hashes``.
Tag ``mlops-serving/<model>:v<version>``; labels ``mlops.model.{name,version,run_id,sha256}``. A
tag that exists with the same sha256 label is reused.

Container (``run_container``): detached, ``mem_limit`` (``serving_docker_mem_limit``, default
``1g``), ``restart_policy`` on-failure (3 retries), port 8000 published on
``127.0.0.1:<host_port>``, the lake's ``predictions`` folder bind-mounted (the prediction log
lands in the host lake; the container runs as the folder's owner, never through a
world-writable folder), ``MLOPS_SERVING_TOKEN`` passed through (in its environment). Every
container runs with a read-only root filesystem, a tmpfs ``/tmp``, no capabilities and
``no-new-privileges`` (``HARDENING``). It returns once ``/ready``
answers on the host port; otherwise the container's last log lines are raised and it is removed.

Blue/green (``deploy_docker``): the stable port belongs to a router container
(``mlops-serving-<port>``, ``docker/router.Dockerfile``, ``serving/router.py``) on the private
network ``mlops-serving``; each model version runs as its own container behind it.

1. the new image starts as a container of its own beside the live one (on the network, and on a
   free private host port for validation);
2. ``pipeline_tasks.deploy.bluegreen.canary_check`` must pass against it (predictions equal offline ones),
   else it is removed and the router never changes;
3. the router's state file is switched to it (new connections go to it, open ones finish on the
   old one) and the stable port is checked to reach it; if it does not, the state file is put
   back and the candidate removed;
4. then the old container is stopped (SIGTERM: in-flight requests finish) and removed.

The stable port never stops accepting connections during a switch.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline_tasks.core import http, model_artifacts, storage, tracking
from pipeline_tasks.core.config import PROJECT_DIR, PipelineConfig
from pipeline_tasks.core.errors import DeployRejected

log = logging.getLogger(__name__)

DOCKERFILE = PROJECT_DIR / "docker" / "serving.Dockerfile"
IMAGE_REPO = "mlops-serving"
DEFAULT_BASE_IMAGE = "python:3.11-slim"
LOCAL_BASE_IMAGE = "mlops/python:3.11-bookworm"
BASE_IMAGE_ENV = "MLOPS_DOCKER_BASE_IMAGE"
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
#: What the server imports at run time (no Airflow); they and their dependencies are installed
#: at requirements.lock's versions, each file checked against the lock's sha256.
RUNTIME_PACKAGES = ("numpy", "pandas", "scipy", "scikit-learn", "skops", "mlflow-skinny",
                    "starlette", "uvicorn", "httptools", "uvloop", "prometheus-client",
                    "pyarrow", "fsspec", "filelock", "pyyaml")
LABEL_NAME = "mlops.model.name"
LABEL_VERSION = "mlops.model.version"
LABEL_RUN_ID = "mlops.model.run_id"
LABEL_SHA256 = "mlops.model.sha256"
LABEL_ROLE = "mlops.serving.role"
LABEL_PORT = "mlops.serving.port"  # the stable port a model container serves behind
NETWORK = "mlops-serving"
ROUTER_SOURCE = PROJECT_DIR / "pipeline_tasks" / "serving" / "router.py"
ROUTER_DOCKERFILE = PROJECT_DIR / "docker" / "router.Dockerfile"


class DockerTargetError(DeployRejected):
    """An image could not be built, or a container did not get ready; the message says why."""


@dataclass(frozen=True)
class ImageInfo:
    tag: str
    image_id: str
    digest: str  # the model's artifact sha256 baked into the image (label mlops.model.sha256)


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    host_port: int
    url: str


@dataclass(frozen=True)
class DockerDeployment:
    image: ImageInfo
    container: ContainerInfo
    status: str  # live | unchanged
    previous: dict | None  # {"name", "image", "model_name", "version"} of the replaced container
    canary_rows: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------- image

def docker_client():
    """A docker SDK client from the environment (``DOCKER_HOST``)."""
    import docker

    return docker.from_env(timeout=600)


def _engine_answers() -> bool:
    import docker.errors

    import docker

    try:
        docker.from_env(timeout=10).ping()
        return True
    except (docker.errors.DockerException, OSError):
        return False


def ensure_engine(base_image: bool = True) -> None:
    """Make a Docker engine answer (``docker/engine.sh`` starts one on Debian, as root; it sets
    ``DOCKER_HOST`` here) and, with ``base_image``, the local base image exist
    (``docker/base-image.sh``). Raises ``CalledProcessError`` with the scripts' output."""
    if not _engine_answers():
        out = subprocess.run([str(PROJECT_DIR / "docker" / "engine.sh")], capture_output=True,
                             text=True, check=True, timeout=600).stdout.strip().splitlines()
        if not out or not out[-1].startswith("export DOCKER_HOST="):
            raise DockerTargetError(f"docker/engine.sh did not name a host: {out[-3:]}")
        os.environ["DOCKER_HOST"] = out[-1].split("=", 1)[1]
    if base_image:
        subprocess.run([str(PROJECT_DIR / "docker" / "base-image.sh")], check=True,
                       capture_output=True, timeout=900)


def image_tag(model_name: str, version: str) -> str:
    """``mlops-serving/<model>:v<version>``, made valid under docker's reference rules."""
    name = re.sub(r"[^a-z0-9._-]+", "-", model_name.lower())
    name = re.sub(r"[._-]{2,}", "-", name).strip("._-") or "model"
    tag = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"v{version}")[:128]
    return f"{IMAGE_REPO}/{name[:100]}:{tag}"


def choose_base_image(client) -> str:
    """``$MLOPS_DOCKER_BASE_IMAGE``, else python:3.11-slim when present, else the local one."""
    import docker.errors

    wanted = os.environ.get(BASE_IMAGE_ENV)
    if wanted:
        return LOCAL_BASE_IMAGE if wanted.strip().lower() in ("1", "true", "yes") else wanted
    try:
        client.images.get(DEFAULT_BASE_IMAGE)
        return DEFAULT_BASE_IMAGE
    except docker.errors.ImageNotFound:
        return LOCAL_BASE_IMAGE


def runtime_requirements(locked: dict | None = None) -> list[str]:
    """``name==version`` of the server's runtime packages, as pinned in ``requirements.lock``."""
    from packaging.utils import canonicalize_name

    from pipeline_tasks.core.lockfile import read_lock

    locked = locked if locked is not None else read_lock()
    missing = [name for name in RUNTIME_PACKAGES if canonicalize_name(name) not in locked]
    if missing:
        raise DockerTargetError(f"requirements.lock has no pin for the server's runtime "
                                f"package(s) {', '.join(missing)} (regenerate it: make lock)")
    return [locked[canonicalize_name(name)].pin for name in RUNTIME_PACKAGES]


def _pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True,
                          check=False)


def _locked_entry(wheel: Path, locked: dict):
    """The lock entry of ``wheel`` (by its file name), or None when the lock pins another version
    or does not name the project."""
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename
    from packaging.version import Version

    try:
        name, version, _build, _tags = parse_wheel_filename(wheel.name)
    except InvalidWheelFilename:
        return None
    entry = locked.get(name)
    return entry if entry is not None and Version(entry.version) == version else None


def _sha256(path: Path) -> str:
    import hashlib

    with path.open("rb") as fh:
        return "sha256:" + hashlib.file_digest(fh, "sha256").hexdigest()


def check_wheel(wheel: Path, locked: dict, origin: Path | None = None) -> None:
    """Refuse ``wheel`` unless its sha256 is one of the lock's hashes for its ``name==version``
    (a corrupted or tampered file, or one the lock does not pin, never reaches an image)."""
    entry = _locked_entry(wheel, locked)
    shown = origin or wheel
    if entry is None:
        raise DockerTargetError(f"{shown}: not a file of any name==version in requirements.lock")
    digest = _sha256(wheel)
    if digest not in entry.hashes:
        raise DockerTargetError(
            f"{shown}: {digest} is not one of requirements.lock's hashes for {entry.pin} (line "
            f"{entry.line}): the file is corrupted or was tampered with; delete it to download "
            "it again")


def prepare_wheels(config: PipelineConfig, dest: Path, pins: list[str] | None = None,
                   cache: Path | None = None, lock: Path | None = None) -> list[str]:
    """Put the wheels of ``pins`` (default: the server's runtime) and their dependencies, at the
    versions of ``requirements.lock``, into ``dest`` with a ``requirements.txt`` that names each
    with the lock's hashes (the image installs it with ``--require-hashes``); returns the wheel
    file names.

    Wheels come from ``cache`` (default ``<home>/cache/wheels``); only when that cannot satisfy
    the pins are they downloaded (binary wheels only) into the cache first. Every cached wheel of
    a locked version, and every wheel put into ``dest``, must match one of the lock's sha256
    hashes: anything else raises ``DockerTargetError`` naming the file.
    """
    from pipeline_tasks.core.lockfile import LOCK_FILE, read_lock

    locked = read_lock(lock or LOCK_FILE)
    cache = cache or Path(config.home) / "cache" / "wheels"
    cache.mkdir(parents=True, exist_ok=True)
    dest.mkdir(parents=True, exist_ok=True)
    for cached in sorted(cache.glob("*.whl")):  # older locks' versions are never picked
        if _locked_entry(cached, locked) is not None:
            check_wheel(cached, locked)
    requirements = dest / "requirements.txt"
    requirements.write_text("\n".join(pins or runtime_requirements(locked)) + "\n")
    constraints = dest.parent / "constraints.txt"
    constraints.write_text("".join(f"{entry.pin}\n" for entry in locked.values()))
    common = ("download", "--only-binary=:all:", "-r", str(requirements), "-c", str(constraints),
              "--disable-pip-version-check", "-q")
    offline = ("--no-index", "--find-links", str(cache), "-d", str(dest))
    done = _pip(*common, *offline)
    if done.returncode != 0:
        log.info("fetching the serving image's wheels into %s", cache)
        fetched = _pip(*common, "-d", str(cache))
        if fetched.returncode != 0:
            raise DockerTargetError("could not download the serving wheels: "
                                    + fetched.stderr.strip()[-800:])
        done = _pip(*common, *offline)
        if done.returncode != 0:
            raise DockerTargetError("the wheel cache does not satisfy the pins: "
                                    + done.stderr.strip()[-800:])
    constraints.unlink()
    wheels = sorted(dest.glob("*.whl"))
    entries = []
    for wheel in wheels:
        check_wheel(wheel, locked, origin=cache / wheel.name)
        entries.append(_locked_entry(wheel, locked))
    requirements.write_text("".join(f"{entry.requirement()}\n"
                                    for entry in sorted(entries, key=lambda e: e.name.lower())))
    return [wheel.name for wheel in wheels]


def _package_wheel(dest: Path) -> Path:
    """A wheel of this package (no dependencies), written from the checkout.

    Written directly (a wheel is a zip with a ``.dist-info``) rather than with ``pip wheel``:
    that needs a build backend from the network (the venv's setuptools has no bdist_wheel), and
    fixed timestamps make the same source give the same bytes, so docker's layer cache holds.
    """
    import base64
    import hashlib
    import zipfile

    from pipeline_tasks import __version__

    dest.mkdir(parents=True, exist_ok=True)
    dist_info = f"mlops_pipeline-{__version__}.dist-info"
    files: list[tuple[str, bytes]] = []
    root = PROJECT_DIR / "pipeline_tasks"
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            files.append((path.relative_to(PROJECT_DIR).as_posix(), path.read_bytes()))
    files.append((f"{dist_info}/METADATA", (
        f"Metadata-Version: 2.1\nName: mlops-pipeline\nVersion: {__version__}\n"
        "Requires-Python: >=3.11\n").encode()))
    files.append((f"{dist_info}/WHEEL", (b"Wheel-Version: 1.0\nGenerator: mlops-docker-target\n"
                                          b"Root-Is-Purelib: true\nTag: py3-none-any\n")))
    files.append((f"{dist_info}/top_level.txt", b"pipeline_tasks\n"))
    record = []
    for name, data in files:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    files.append((f"{dist_info}/RECORD", ("\n".join(record) + "\n").encode()))
    wheel = dest / f"mlops_pipeline-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files:
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return wheel


def _version_meta(config: PipelineConfig, model_name: str, version: str) -> dict:
    tracking.configure_mlflow(config)
    from mlflow.tracking import MlflowClient

    mv = MlflowClient().get_model_version(model_name, str(version))
    return {"model_name": model_name, "model_version": str(mv.version),
            "run_id": mv.run_id or "", "sha256": mv.tags.get(model_artifacts.DIGEST_TAG) or "",
            "tags": dict(mv.tags)}


def prepare_context(config: PipelineConfig, model_name: str, version: str, context: Path,
                    meta: dict | None = None) -> dict:
    """Fill the build ``context``: Dockerfile, wheels, package wheel, verified model, meta."""
    meta = meta or _version_meta(config, model_name, version)
    context.mkdir(parents=True, exist_ok=True)
    shutil.copy2(DOCKERFILE, context / "Dockerfile")
    (context / ".dockerignore").write_text("")
    prepare_wheels(config, context / "wheels")
    _package_wheel(context / "app")
    folder = model_artifacts.fetch_verified(f"models:/{model_name}/{meta['model_version']}",
                                            meta["sha256"], context / "model")
    if folder != context / "model":  # download_artifacts may nest; flatten
        shutil.move(str(folder), str(context / "model.tmp"))
        shutil.rmtree(context / "model")
        (context / "model.tmp").rename(context / "model")
    (context / "model-meta.json").write_text(json.dumps(
        {k: meta[k] for k in ("model_name", "model_version", "run_id", "tags")}, indent=1))
    return meta


def build_from_context(client, context: Path, tag: str, buildargs: dict[str, str],
                       labels: dict[str, str]) -> str:
    """Build ``context`` as ``tag``; returns the image id, or raises with the build's log."""
    import docker.errors

    started = time.monotonic()
    try:
        image, _logs = client.images.build(path=str(context), dockerfile="Dockerfile", tag=tag,
                                          buildargs=buildargs, labels=labels, rm=True,
                                          forcerm=True, pull=False)
    except docker.errors.BuildError as exc:
        tail = "".join(str(chunk.get("stream") or chunk.get("error") or "")
                       for chunk in exc.build_log)[-2000:]
        raise DockerTargetError(f"docker build of {tag} failed: {exc.msg}\n{tail}") from exc
    except docker.errors.APIError as exc:
        raise DockerTargetError(f"docker build of {tag} failed: {exc}") from exc
    log.info("built %s (%s) in %.1f s", tag, image.short_id, time.monotonic() - started)
    return image.id


def build_image(config: PipelineConfig, model_name: str, version: str, *,
                client=None) -> ImageInfo:
    """The image of ``model_name`` v``version``: reused when its tag holds the same model."""
    import docker.errors

    client = client or docker_client()
    meta = _version_meta(config, model_name, str(version))
    if not meta["sha256"]:
        raise DockerTargetError(f"{model_name} v{version} has no recorded "
                                f"{model_artifacts.DIGEST_TAG}: its files cannot be checked")
    tag = image_tag(model_name, meta["model_version"])
    try:
        existing = client.images.get(tag)
        if (existing.labels or {}).get(LABEL_SHA256) == meta["sha256"]:
            log.info("reusing image %s (sha256 %s)", tag, meta["sha256"][:16])
            return ImageInfo(tag=tag, image_id=existing.id, digest=meta["sha256"])
    except docker.errors.ImageNotFound:
        pass
    labels = {LABEL_NAME: model_name, LABEL_VERSION: meta["model_version"],
              LABEL_RUN_ID: meta["run_id"], LABEL_SHA256: meta["sha256"]}
    with tempfile.TemporaryDirectory(prefix="mlops-image-") as tmp:
        context = Path(tmp) / "context"
        prepare_context(config, model_name, meta["model_version"], context, meta)
        buildargs = {"BASE_IMAGE": choose_base_image(client), "MODEL_NAME": model_name,
                     "MODEL_VERSION": meta["model_version"], "MODEL_SHA256": meta["sha256"],
                     "MODEL_RUN_ID": meta["run_id"]}
        image_id = build_from_context(client, context, tag, buildargs, labels)
    return ImageInfo(tag=tag, image_id=image_id, digest=meta["sha256"])


# ------------------------------------------------------------------------------------ container

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
        for folder in [host, *[p for p in host.glob("date=*") if p.is_dir()]]:
            os.chown(folder, CONTAINER_UID, CONTAINER_UID)
            folder.chmod(0o755)  # also closes the world-writable mode of older releases
    return ({str(host): {"bind": f"{CONTAINER_LAKE}/predictions", "mode": "rw"}},
            {"MLOPS_LAKE_URI": f"file://{CONTAINER_LAKE}"})


def _ready(url: str) -> bool:
    return http.ok(url + "/ready", timeout=3)


def _logs(container, lines: int = 30) -> str:
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
        tail = _logs(container)
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


# ----------------------------------------------------------------------------------- blue/green

def stable_name(config: PipelineConfig) -> str:
    """The router container that holds the stable port."""
    return f"mlops-serving-{config.serving_port}"


def _state_dir(config: PipelineConfig) -> Path:
    return Path(config.serving_dir) / str(config.serving_port) / "router"


def _state_file(config: PipelineConfig) -> Path:
    return _state_dir(config) / "backend.json"


def read_backend(config: PipelineConfig) -> dict | None:
    """What the router sends traffic to now (None before the first deploy)."""
    try:
        return json.loads(_state_file(config).read_text())
    except FileNotFoundError:
        return None


def _write_backend(config: PipelineConfig, state: dict) -> None:
    storage.atomic_write_json(_state_file(config).as_uri(), state)


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
            tail = _logs(router)
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


def _serves(url: str, version: str, tries: int = 5) -> bool:
    """New connections to ``url`` reach ``version`` (several in a row, each a new connection)."""
    for _ in range(tries):
        answer = http.try_json(url + "/ready", timeout=5)
        if not answer or answer.get("model_version") != str(version):
            return False
    return True


def deploy_docker(config: PipelineConfig, model_name: str, version: str,
                  holdout_uri: str | None, feature_columns: list[str], *,
                  client=None) -> DockerDeployment:
    """Build, start beside the live version, validate, then switch the router (module doc)."""
    import docker.errors

    from pipeline_tasks.deploy.bluegreen import canary_check

    client = client or docker_client()
    image = build_image(config, model_name, version, client=client)
    ensure_router(config, client)
    stable_url = f"http://{config.serving_host}:{config.serving_port}"
    backend = read_backend(config)
    live = None
    if backend:
        try:
            live = client.containers.get(backend["container_id"])
        except docker.errors.NotFound:
            live = None
    previous = None
    if backend:
        previous = {"name": backend["host"], "image": backend.get("image"),
                    "model_name": backend.get("model_name"),
                    "version": backend.get("model_version")}
    if (live is not None and live.status == "running"
            and (live.labels or {}).get(LABEL_SHA256) == image.digest
            and _serves(stable_url, version, tries=1)):
        return DockerDeployment(image=image, container=ContainerInfo(
            id=live.id, name=live.name, host_port=int(backend.get("host_port") or 0),
            url=stable_url), status="unchanged", previous=previous, canary_rows=0)

    name = f"{stable_name(config)}-{image.tag.split('/', 1)[1].replace(':', '-')}-" \
           f"{os.urandom(3).hex()}"
    candidate = run_container(config, image, name, http.free_port(), client=client,
                              network=ensure_network(client),
                              labels={**_container_labels(image, model_name, version),
                                      LABEL_PORT: str(config.serving_port)})
    try:
        rows = canary_check(candidate.url, model_name, str(version), holdout_uri,
                            feature_columns, config)
        state = {"host": candidate.name, "port": CONTAINER_PORT, "container_id": candidate.id,
                 "host_port": candidate.host_port, "model_name": model_name,
                 "model_version": str(version), "image": image.tag,
                 "switched_at": time.time()}
        _write_backend(config, state)
        deadline = time.monotonic() + 15
        while not _serves(stable_url, version):
            if time.monotonic() > deadline:
                raise DockerTargetError(f"the stable port {config.serving_port} does not reach "
                                        f"v{version} after the switch; router log:\n"
                                        f"{_logs(client.containers.get(stable_name(config)))}")
            time.sleep(0.2)
    except BaseException:
        if backend:
            _write_backend(config, backend)  # traffic stays on (or goes back to) the old one
        else:
            _state_file(config).unlink(missing_ok=True)
        stop_container(candidate.id, client=client)
        raise
    if live is not None and live.id != candidate.id:
        stop_container(live.id, client=client)  # SIGTERM: in-flight requests finish
    log.info("%s v%s is live on %s (container %s)", model_name, version, stable_url,
             candidate.name)
    return DockerDeployment(image=image, container=candidate, status="live", previous=previous,
                            canary_rows=rows)


def stop_endpoint(config: PipelineConfig, *, client=None) -> None:
    """Stop and remove the router of ``serving_port`` and every model container behind it."""
    client = client or docker_client()
    port = str(config.serving_port)
    for container in client.containers.list(all=True, filters={"label": f"{LABEL_PORT}={port}"}):
        stop_container(container.id, client=client)
    stop_container(stable_name(config), client=client)
    _state_file(config).unlink(missing_ok=True)


def _container_labels(image: ImageInfo, model_name: str, version: str) -> dict[str, str]:
    return {LABEL_NAME: model_name, LABEL_VERSION: str(version), LABEL_SHA256: image.digest}
