"""A model's files and their sha256, and the one way this pipeline loads a model.

The digest covers every file of the model's artifact folder (MLmodel, the skops file, the
environment files, the input example), by relative path and content, so renaming, adding,
removing or editing any file changes it. Training records it on the logged model (tag
``artifact_sha256``); registration checks the files against it and copies it onto the model
version (same tag).

Every model load (evaluation of the candidate and of the champion, the deploy canary, the model
server, the docker image's server) goes through ``load_verified`` / ``load_verified_folder``:

1. the files are downloaded once into a folder of their own and hashed; the digest must equal
   the recorded one (missing or different: ``ArtifactMismatch``, naming the version);
2. the MLmodel's ``sklearn`` flavor must say ``serialization_format: skops`` (pickle and
   cloudpickle run code while loading: ``UntrustedModel``, naming the format);
3. every type the skops file names beyond skops' own safe defaults must be in
   ``TRUSTED_TYPES``, a fixed list in this module (never the ``skops_trusted_types`` the MLmodel
   file lists): anything else is ``UntrustedModel`` naming the type;
4. only then ``skops.io.load`` reads the very folder that was checked.
"""

from __future__ import annotations

import hashlib
import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline_tasks.core import tracking
from pipeline_tasks.core.errors import PipelineInputError

log = logging.getLogger(__name__)

#: Tag holding the artifact digest: on the logged model (set by training) and on the model
#: version (set by registration).
DIGEST_TAG = "artifact_sha256"
#: The only serialization format loaded.
SKOPS_FORMAT = "skops"
#: Types a model file may hold beyond skops' own safe defaults (which cover scikit-learn's
#: estimators, numpy arrays and builtins): exactly what ``model.estimator.build_pipeline`` fits, a
#: ColumnTransformer of SimpleImputer/OneHotEncoder and a HistGradientBoosting model. This list,
#: not the ``skops_trusted_types`` of a model's MLmodel file, decides what may be loaded.
TRUSTED_TYPES: tuple[str, ...] = (
    "numpy.dtype",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
)
_LOGGED_MODEL_URI = re.compile(r"models:/(m-[0-9a-f]+)")
_VERSION_URI = re.compile(r"models:/([^/@]+)/(\d+)")
#: Written by MLflow into the download folder of ``models:/<name>/<version>`` (name and
#: version of the download, not part of the model): left out of the digest.
_DOWNLOAD_ONLY = {"registered_model_meta"}


class ModelRefused(PipelineInputError):
    """A model that must not be loaded."""


class ArtifactMismatch(ModelRefused):
    """The model's files are not the ones registered: refuse to use them."""


class UntrustedModel(ModelRefused):
    """The model is not a skops file of trusted types: loading it could run its code."""


@dataclass(frozen=True)
class VerifiedModel:
    """A loaded model and what it was checked against."""

    model: Any
    digest: str
    label: str
    folder: Path | None  # the checked folder it was read from (None: a temporary one, gone)
    mlmodel: dict  # its MLmodel file, as read for the trust check (flavors, signature, run id)


def folder_digest(folder: str | Path) -> str:
    """sha256 over the sorted relative paths and contents of every file under ``folder``."""
    root = Path(folder)
    files = sorted(p for p in root.rglob("*")
                   if p.is_file() and p.relative_to(root).as_posix() not in _DOWNLOAD_ONLY)
    if not files:
        raise ArtifactMismatch(f"model folder {root} holds no files")
    digest = hashlib.sha256()
    for path in files:
        rel = path.relative_to(root).as_posix().encode()
        digest.update(len(rel).to_bytes(8, "big") + rel)
        digest.update(path.stat().st_size.to_bytes(8, "big"))
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def download(model_uri: str, dest: str | Path | None = None) -> Path:
    """Download a model's artifact folder (``models:/...``, ``runs:/...`` or a path) locally."""
    import mlflow.artifacts

    tracking.quiet_telemetry()
    target = Path(dest) if dest else Path(tempfile.mkdtemp(prefix="mlops-model-"))
    target.mkdir(parents=True, exist_ok=True)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(target)))


def model_digest(model_uri: str) -> str:
    """The digest of a logged model, computed on a fresh download of its files."""
    with tempfile.TemporaryDirectory(prefix="mlops-digest-") as tmp:
        return folder_digest(download(model_uri, tmp))


def fetch_verified(model_uri: str, expected: str | None, dest: str | Path, *,
                   label: str | None = None, where: str = "recorded at registration") -> Path:
    """Download ``model_uri`` into ``dest`` and check it against ``expected``.

    Raises ``ArtifactMismatch`` when no digest was recorded or the files differ.
    """
    label = label or model_uri
    if not expected:
        raise ArtifactMismatch(f"{label} has no recorded {DIGEST_TAG}: it was not registered "
                               "by this pipeline, so its files cannot be checked")
    return verify_folder(download(model_uri, dest), expected, label=label, where=where)


def recorded_digest(model_uri: str) -> tuple[str | None, str, str]:
    """``(digest, label, where)`` for ``model_uri``: the ``artifact_sha256`` tag of the model
    version (``models:/<name>/<version>``, ``models:/<name>@<alias>``) or of the logged model
    (``models:/m-<id>``, a training run's output), a label naming it, and where it was recorded.
    Any other URI is refused: its files were never hashed by this pipeline."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    uri = str(model_uri).strip()
    try:
        if match := _LOGGED_MODEL_URI.fullmatch(uri):
            logged = client.get_logged_model(match.group(1))
            return (logged.tags.get(DIGEST_TAG), f"logged model {match.group(1)} ({uri})",
                    "recorded at training")
        if match := _VERSION_URI.fullmatch(uri):
            mv = client.get_model_version(match.group(1), match.group(2))
        elif uri.startswith("models:/") and uri.count("@") == 1 and "/" not in uri[8:]:
            name, alias = uri[8:].split("@")
            mv = client.get_model_version_by_alias(name, alias)
        else:
            raise ArtifactMismatch(
                f"{uri}: only models:/<name>/<version>, models:/<name>@<alias> or a training "
                f"run's models:/m-<id> are loaded, whose {DIGEST_TAG} this pipeline recorded")
    except MlflowException as exc:
        raise ArtifactMismatch(f"{uri}: no such model in the registry ({exc.message})") from exc
    return (mv.tags.get(DIGEST_TAG), f"model {mv.name} v{mv.version}",
            "recorded at registration")


def record_training_digest(model_id: str, model_uri: str) -> str:
    """Hash a freshly logged model's files and tag the logged model ``model_id`` with it."""
    from mlflow.tracking import MlflowClient

    digest = model_digest(model_uri)
    MlflowClient().set_logged_model_tags(model_id, {DIGEST_TAG: digest})
    log.info("logged model %s: %s %s", model_id, DIGEST_TAG, digest[:16])
    return digest


def verified_digest(model_uri: str) -> str:
    """The digest recorded for ``model_uri``, once its files are checked against it and found
    to be a loadable skops model of trusted types (registration calls this)."""
    expected, label, where = recorded_digest(model_uri)
    with tempfile.TemporaryDirectory(prefix="mlops-verify-") as tmp:
        folder = fetch_verified(model_uri, expected, tmp, label=label, where=where)
        _trusted_model_file(folder, label)
    return str(expected)


def load_verified(model_uri: str, dest: str | Path | None = None) -> VerifiedModel:
    """Resolve ``model_uri``, download it (into ``dest``, else a temporary folder), check its
    files against the recorded digest, and load it (``load_verified_folder``)."""
    tracking.quiet_telemetry()
    expected, label, where = recorded_digest(model_uri)
    if dest is not None:
        folder = fetch_verified(model_uri, expected, dest, label=label, where=where)
        return _load_checked(folder, str(expected), label, keep=True)
    with tempfile.TemporaryDirectory(prefix="mlops-model-") as tmp:
        folder = fetch_verified(model_uri, expected, tmp, label=label, where=where)
        return _load_checked(folder, str(expected), label, keep=False)


def load_verified_folder(folder: str | Path, expected: str | None, *, label: str,
                         where: str) -> VerifiedModel:
    """Check a local model folder against ``expected`` and load it as a trusted skops model.

    ``ArtifactMismatch``: no digest, or the files differ. ``UntrustedModel``: not the skops
    format, or a type outside ``TRUSTED_TYPES``.
    """
    folder = Path(folder)
    if not expected:
        raise ArtifactMismatch(f"{label}: no expected {DIGEST_TAG} given, so its files cannot "
                               "be checked")
    if not folder.is_dir():
        raise ArtifactMismatch(f"{label}: model folder {folder} does not exist")
    verify_folder(folder, expected, label=label, where=where)
    return _load_checked(folder, expected, label, keep=True)


def _load_checked(folder: Path, digest: str, label: str, *, keep: bool) -> VerifiedModel:
    import skops.io

    path, types, mlmodel = _trusted_model_file(folder, label)
    try:
        model = skops.io.load(path, trusted=types)
    except Exception as exc:  # a malformed file that skops' audit let through
        raise UntrustedModel(f"{label}: its {SKOPS_FORMAT} file cannot be loaded "
                             f"({type(exc).__name__}: {exc})") from exc
    log.info("loaded %s from skops (extra trusted types: %s)", label, ", ".join(types) or "none")
    return VerifiedModel(model=model, digest=digest, label=label,
                         folder=folder if keep else None, mlmodel=mlmodel)


def _trusted_model_file(folder: Path, label: str) -> tuple[Path, list[str], dict]:
    """The skops file of a verified folder, the non-default types it holds and the folder's
    MLmodel file (read here once, for whoever serves the model); refuses any other format and
    any type outside ``TRUSTED_TYPES``."""
    import yaml

    mlmodel = folder / "MLmodel"
    try:
        spec = yaml.safe_load(mlmodel.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UntrustedModel(f"{label}: its MLmodel file cannot be read ({exc})") from exc
    flavors = spec.get("flavors") if isinstance(spec, dict) else None
    flavor = flavors.get("sklearn") if isinstance(flavors, dict) else None
    if not isinstance(flavor, dict):
        found = ", ".join(sorted(flavors)) if isinstance(flavors, dict) else "none"
        raise UntrustedModel(f"{label}: no sklearn flavor in its MLmodel (flavors: {found}); "
                             f"only scikit-learn models saved as {SKOPS_FORMAT} are loaded")
    fmt = flavor.get("serialization_format")
    if fmt != SKOPS_FORMAT:
        raise UntrustedModel(f"{label}: serialization format {fmt!r} is refused; only "
                             f"{SKOPS_FORMAT!r} is loaded (pickle and cloudpickle run code "
                             "while loading)")
    root = folder.resolve()
    path = (root / str(flavor.get("pickled_model") or "")).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise UntrustedModel(f"{label}: its MLmodel names model file "
                             f"{flavor.get('pickled_model')!r}, which is not a file of the "
                             "model's folder")
    import skops.io

    try:
        found = skops.io.get_untrusted_types(file=path)
    except Exception as exc:  # a zip, JSON or schema error: not a skops file
        raise UntrustedModel(f"{label}: {path.name} is not a readable {SKOPS_FORMAT} file "
                             f"({type(exc).__name__}: {exc})") from exc
    refused = sorted(set(found) - set(TRUSTED_TYPES))
    if refused:
        raise UntrustedModel(f"{label}: its {SKOPS_FORMAT} file holds type(s) outside the "
                             f"trusted list: {', '.join(refused)} (trusted beyond skops' "
                             f"defaults: {', '.join(TRUSTED_TYPES)})")
    return path, sorted(found), spec


def verify_folder(folder: str | Path, expected: str, *, label: str, where: str) -> Path:
    """Check ``folder`` against the digest ``expected``; ``ArtifactMismatch`` says how not."""
    folder = Path(folder)
    actual = folder_digest(folder)
    if actual != expected:
        raise ArtifactMismatch(f"{label}: artifact sha256 {actual[:16]}... does not match the "
                               f"{expected[:16]}... {where}; the files were changed after it "
                               "was taken")
    log.info("verified %s (sha256 %s)", label, actual[:16])
    return folder
