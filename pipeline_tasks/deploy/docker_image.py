"""The serving image of a model SET: build context, runtime wheels, ``docker build``.

One container serves the endpoint's whole live set of models (e.g. ``{flights_is_late: v3,
other_model: v1}``), so an image holds a set: ``build_image(config, models)`` builds
``docker/serving.Dockerfile`` with the docker SDK (legacy builder; ``docker.from_env()`` honours
``DOCKER_HOST``). Each model version's files are downloaded and checked against the registry's
``artifact_sha256`` before they go into the build context (``models/<i>-<name>/``), next to
``models/manifest.json`` (folder, sha256, name, version, run id and tags of each; the first model
is the server's default, the one ``/predict`` answers for). The container checks every folder
again at every start (``--models-manifest /opt/models/manifest.json``): changed files make it
exit with code 2 and the reason in its log. No network is used inside the build: the runtime
wheels (no Airflow) are prepared on the host, cached under ``<home>/cache/wheels`` (a second build
needs no network), checked against requirements.lock's sha256 hashes, and installed with
``--no-index --require-hashes``. The package wheel holds the serving package and what it imports
(``pipeline_tasks.core``) only: no pipeline steps, tooling or templates. Layers go dependencies,
package, models: a new set reuses the cached dependency layers.

Tag ``mlops-serving:<16 hex of the set digest>`` (``set_digest``: sha256 over the set's
``(name, version, sha256)`` in manifest order); labels ``mlops.model.sha256`` (the set digest) and
``mlops.serving.models`` (the set as JSON: name -> {version, sha256}). An image whose labels say
it holds the same set is reused.

Also the docker engine itself (``docker_client``) and the names every docker
module shares (labels, ``DockerTargetError``). An engine or package index that does not answer
raises ``TransientError`` (worth a retry).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline_tasks.core import model_artifacts, tracking
from pipeline_tasks.core.config import PROJECT_DIR, PipelineConfig
from pipeline_tasks.core.errors import DeployRejected, TransientError
from pipeline_tasks.core.names import safe_name

log = logging.getLogger(__name__)

DOCKERFILE = PROJECT_DIR / "docker" / "serving.Dockerfile"
IMAGE_REPO = "mlops-serving"
DEFAULT_BASE_IMAGE = "python:3.11-slim"
LOCAL_BASE_IMAGE = "mlops/python:3.11-bookworm"
BASE_IMAGE_ENV = "MLOPS_DOCKER_BASE_IMAGE"
#: What the server imports at run time (no Airflow); they and their dependencies are installed
#: at requirements.lock's versions, each file checked against the lock's sha256.
RUNTIME_PACKAGES = ("numpy", "pandas", "scipy", "scikit-learn", "skops", "mlflow-skinny",
                    "starlette", "uvicorn", "httptools", "uvloop", "prometheus-client",
                    "pyarrow", "fsspec", "filelock", "pyyaml")
#: On a container: the model whose deployment started it, and its version.
LABEL_NAME = "mlops.model.name"
LABEL_VERSION = "mlops.model.version"
#: On an image or container of a set: the set digest (``set_digest``); on a container of a
#: single-model release (before sets): that model's artifact sha256.
LABEL_SHA256 = "mlops.model.sha256"
#: The set an image or container serves, as JSON: ``{name: {"version": .., "sha256": ..}}`` in
#: manifest order (the first is the default model).
LABEL_MODELS = "mlops.serving.models"
LABEL_ROLE = "mlops.serving.role"
LABEL_PORT = "mlops.serving.port"  # the stable port a model container serves behind

#: What the serving image holds of this package: the server and the one layer it imports.
PACKAGED = ("pipeline_tasks/__init__.py", "pipeline_tasks/core/", "pipeline_tasks/serving/")


class DockerTargetError(DeployRejected):
    """An image could not be built, or a container did not get ready; the message says why."""


#: Where the image holds the set, and its manifest (``--models-manifest``).
CONTAINER_MODELS = "/opt/models"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class ModelEntry:
    """One model of a set: a registered version and the sha256 of its files (registry tag)."""

    model_name: str
    model_version: str
    sha256: str
    run_id: str = field(default="", compare=False)
    tags: dict[str, str] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class ImageInfo:
    tag: str
    image_id: str
    digest: str  # the set digest (label mlops.model.sha256)
    models: tuple[ModelEntry, ...] = ()  # in manifest order: the first is the default model

    def versions(self) -> dict[str, str]:
        """name -> version of the set, in manifest order."""
        return {m.model_name: m.model_version for m in self.models}

    def sha256_of(self, model_name: str) -> str:
        """The artifact sha256 of ``model_name`` in this image ("" when it holds no such model)."""
        return next((m.sha256 for m in self.models if m.model_name == model_name), "")


# --------------------------------------------------------------------------------------- engine

def docker_client():
    """A docker SDK client from the environment (``DOCKER_HOST``); ``TransientError`` when no
    engine answers there."""
    import docker.errors

    import docker

    try:
        return docker.from_env(timeout=600)
    except docker.errors.DockerException as exc:
        raise TransientError(f"no Docker engine answers: {exc}",
                             advice="start the engine (docker/engine.sh) or set DOCKER_HOST, "
                                    "then retry") from exc


def set_digest(models: Sequence[ModelEntry]) -> str:
    """sha256 over the set's ``[name, version, sha256]`` in manifest order: what an image of
    the set serves (the order is part of it: the first model answers ``/predict``)."""
    import hashlib

    listed = [[m.model_name, m.model_version, m.sha256] for m in models]
    return hashlib.sha256(json.dumps(listed, separators=(",", ":")).encode()).hexdigest()


def image_tag(models: Sequence[ModelEntry]) -> str:
    """``mlops-serving:<first 16 hex of the set digest>`` (valid under docker's reference rules
    whatever the model names are; the labels say what the set is)."""
    return f"{IMAGE_REPO}:{set_digest(models)[:16]}"


def models_label(models: Sequence[ModelEntry]) -> str:
    """The ``LABEL_MODELS`` value of a set: ``{name: {"version", "sha256"}}`` as JSON."""
    return json.dumps({m.model_name: {"version": m.model_version, "sha256": m.sha256}
                       for m in models}, separators=(",", ":"))


def parse_models_label(text: str | None) -> dict[str, dict[str, str]]:
    """A ``LABEL_MODELS`` value back as ``{name: {"version", "sha256"}}`` ({} when absent or not
    such JSON: a container or image from before sets)."""
    try:
        value = json.loads(text or "")
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {str(name): {"version": str(entry.get("version", "")),
                        "sha256": str(entry.get("sha256", ""))}
            for name, entry in value.items() if isinstance(entry, dict)}


def _folder_name(index: int, model_name: str) -> str:
    """``<index>-<name>`` made safe as a path part (the index keeps the folders apart)."""
    return f"{index}-{safe_name(model_name, 'model')[:64]}"


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
            raise TransientError("could not download the serving wheels: "
                                 + fetched.stderr.strip()[-800:],
                                 advice="check the network or the package index, then retry")
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


def packaged_files() -> list[Path]:
    """The files of this package the serving image holds (``PACKAGED``), sorted."""
    files = []
    for entry in PACKAGED:
        path = PROJECT_DIR / entry
        for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if file.is_file() and "__pycache__" not in file.parts and file.suffix != ".pyc":
                files.append(file)
    return sorted(files)


def _package_wheel(dest: Path) -> Path:
    """A wheel of the serving part of this package (no dependencies), written from the checkout.

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
    for path in packaged_files():
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


def model_entry(config: PipelineConfig, model_name: str, version: str) -> ModelEntry:
    """``model_name`` v``version`` as the registry records it; ``DockerTargetError`` when it
    has no ``artifact_sha256`` (its files could not be checked)."""
    tracking.configure_mlflow(config)
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        mv = MlflowClient().get_model_version(model_name, str(version))
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise DockerTargetError(f"{model_name} v{version} is not in the registry: its files "
                                "cannot be fetched into the image") from exc
    entry = ModelEntry(model_name=model_name, model_version=str(mv.version),
                       sha256=mv.tags.get(model_artifacts.DIGEST_TAG) or "",
                       run_id=mv.run_id or "", tags=dict(mv.tags))
    if not entry.sha256:
        raise DockerTargetError(f"{model_name} v{version} has no recorded "
                                f"{model_artifacts.DIGEST_TAG}: its files cannot be checked")
    return entry


def resolve_set(config: PipelineConfig, versions: Mapping[str, str]) -> list[ModelEntry]:
    """The registry's entries of ``versions`` (name -> version), in the mapping's order."""
    return [model_entry(config, name, str(version)) for name, version in versions.items()]


def _fetch_model(entry: ModelEntry, dest: Path) -> None:
    """Download ``entry``'s files into ``dest`` and check them against its sha256."""
    folder = model_artifacts.fetch_verified(
        f"models:/{entry.model_name}/{entry.model_version}", entry.sha256, dest)
    if folder != dest:  # download_artifacts may nest; flatten
        moved = dest.with_name(dest.name + ".tmp")
        shutil.move(str(folder), str(moved))
        shutil.rmtree(dest)
        moved.rename(dest)


def prepare_context(config: PipelineConfig, models: Sequence[ModelEntry],
                    context: Path) -> dict:
    """Fill the build ``context``: Dockerfile, wheels, package wheel, and ``models/``: each
    model's verified folder and ``manifest.json`` (the ``--models-manifest`` format; the first
    model is the default). Returns the manifest."""
    if not models:
        raise DockerTargetError("a serving image needs at least one model")
    names = [m.model_name for m in models]
    if len(set(names)) != len(names):
        raise DockerTargetError(f"a model appears twice in the set {names}")
    context.mkdir(parents=True, exist_ok=True)
    shutil.copy2(DOCKERFILE, context / "Dockerfile")
    (context / ".dockerignore").write_text("")
    prepare_wheels(config, context / "wheels")
    _package_wheel(context / "app")
    listed = []
    for index, entry in enumerate(models):
        folder = _folder_name(index, entry.model_name)
        _fetch_model(entry, context / "models" / folder)
        listed.append({"dir": folder, "sha256": entry.sha256, "model_name": entry.model_name,
                       "model_version": entry.model_version, "run_id": entry.run_id,
                       "tags": entry.tags})
    manifest = {"models": listed}
    (context / "models" / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


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
    except docker.errors.APIError as exc:  # the engine, not the Dockerfile: may pass
        raise TransientError(f"docker build of {tag} failed: {exc}") from exc
    log.info("built %s (%s) in %.1f s", tag, image.short_id, time.monotonic() - started)
    return image.id


def build_image(config: PipelineConfig, models: Sequence[ModelEntry], *,
                client=None) -> ImageInfo:
    """The image serving the set ``models`` (in manifest order: the first is the default
    model): reused when an image of its tag is labelled with the same set."""
    import docker.errors

    client = client or docker_client()
    models = tuple(models)
    digest = set_digest(models)
    tag = image_tag(models)
    labels = {LABEL_SHA256: digest, LABEL_MODELS: models_label(models)}
    shown = ", ".join(f"{m.model_name} v{m.model_version}" for m in models)
    try:
        existing = client.images.get(tag)
        if (existing.labels or {}).get(LABEL_SHA256) == digest:
            log.info("reusing image %s (%s)", tag, shown)
            return ImageInfo(tag=tag, image_id=existing.id, digest=digest, models=models)
    except docker.errors.ImageNotFound:
        pass
    with tempfile.TemporaryDirectory(prefix="mlops-image-") as tmp:
        context = Path(tmp) / "context"
        prepare_context(config, models, context)
        image_id = build_from_context(client, context, tag,
                                      {"BASE_IMAGE": choose_base_image(client)}, labels)
    log.info("image %s serves %s", tag, shown)
    return ImageInfo(tag=tag, image_id=image_id, digest=digest, models=models)
