"""A model's files and their sha256: recorded at registration, checked before serving.

The digest covers every file of the model's artifact folder (MLmodel, the skops file, the
environment files, the input example), by relative path and content, so renaming, adding,
removing or editing any file changes it. ``fetch_verified`` downloads the files once, checks them,
and returns the very folder it checked, so what is loaded is what was verified.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from pathlib import Path

from pipeline_tasks import tracking
from pipeline_tasks.errors import PipelineInputError

log = logging.getLogger(__name__)

#: Model version tag holding the artifact digest.
DIGEST_TAG = "artifact_sha256"
#: Written by MLflow into the download folder of ``models:/<name>/<version>`` (name and
#: version of the download, not part of the model): left out of the digest.
_DOWNLOAD_ONLY = {"registered_model_meta"}


class ArtifactMismatch(PipelineInputError):
    """The model's files are not the ones registered: refuse to use them."""


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


def fetch_verified(model_uri: str, expected: str | None, dest: str | Path) -> Path:
    """Download ``model_uri`` into ``dest`` and check it against ``expected``.

    Raises ``ArtifactMismatch`` when no digest was recorded or the files differ.
    """
    if not expected:
        raise ArtifactMismatch(f"{model_uri} has no recorded {DIGEST_TAG}: it was not registered "
                               "by this pipeline, so its files cannot be checked")
    return verify_folder(download(model_uri, dest), expected, label=model_uri,
                         where="recorded at registration")


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
