"""Resolve one registered model version, verify its files, load it, and predict.

The version is named by alias (``champion``) or number. Its files are downloaded into a folder of
their own, hashed and compared with the ``artifact_sha256`` recorded at registration before
anything is loaded, and loaded only as a skops file of the types ``model_artifacts.TRUSTED_TYPES``
lists (``model_artifacts.load_verified_folder``): a mismatch, a pickle model or an untrusted type
refuses to start.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline_tasks.core import model_artifacts, tracking
from pipeline_tasks.core.config import PipelineConfig
from pipeline_tasks.core.errors import ConfigError
from pipeline_tasks.serving.contract import Contract
from pipeline_tasks.serving.predictor import ChunkPredictor

log = logging.getLogger(__name__)


@dataclass
class ServedModel:
    name: str
    version: str
    run_id: str
    dataset_version: str
    digest: str
    model: Any
    contract: Contract
    signature: dict
    classes: list | None = None  # classifiers: the labels, in predict_proba's column order
    tags: dict = field(default_factory=dict)
    #: the model's own predictions, computed faster where that is exact (``predictor``)
    predictor: ChunkPredictor = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        self.predictor = ChunkPredictor(self.model)

    def predict(self, frame) -> dict[str, list]:
        """``predictions`` (labels or values) and, for binary classifiers, ``scores``."""
        if self.classes is None:
            return {"predictions": self.predictor.predict(frame).tolist()}
        proba = self.predictor.predict_proba(frame)
        labels = [self.classes[i] for i in proba.argmax(axis=1)]
        out: dict[str, list] = {"predictions": labels}
        if len(self.classes) == 2:
            out["scores"] = proba[:, 1].tolist()
        return out

    def metadata(self) -> dict:
        return {
            "model_name": self.name,
            "model_version": self.version,
            "run_id": self.run_id,
            "dataset_version": self.dataset_version,
            "artifact_sha256": self.digest,
            "task_type": "classification" if self.classes is not None else "regression",
            "classes": self.classes,
            "signature": self.signature,
            "limits": {"max_rows": self.contract.max_rows, "max_abs_value": self.contract.max_abs},
        }


def resolve_version(client, name: str, ref: str) -> Any:
    """The model version named by ``ref``: a version number, or an alias such as ``champion``."""
    from mlflow.exceptions import MlflowException

    ref = str(ref).strip()
    try:
        if re.fullmatch(r"\d+", ref):
            return client.get_model_version(name, ref)
        return client.get_model_version_by_alias(name, ref)
    except MlflowException as exc:
        raise ConfigError(f"model {name!r} has no version or alias {ref!r}") from exc


def load(config: PipelineConfig, name: str, ref: str, workdir: str | Path) -> ServedModel:
    """Resolve, verify and load ``name``@``ref``; files go under ``workdir``."""
    tracking.configure_mlflow(config)
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    mv = resolve_version(client, name, ref)
    loaded = model_artifacts.load_verified(f"models:/{name}/{mv.version}",
                                           Path(workdir) / f"{name}-v{mv.version}")
    return _served(config, loaded, name=name, version=str(mv.version), run_id=mv.run_id or "",
                   tags=dict(mv.tags))


def load_dir(config: PipelineConfig, folder: str | Path, expected_sha256: str,
             meta: dict | None = None) -> ServedModel:
    """Verify and load a model folder baked in beforehand (the docker image's ``/opt/model``).

    The folder's sha256 (``model_artifacts.folder_digest``) must equal ``expected_sha256``, or
    ``ArtifactMismatch`` says why. Name, version and tags come from ``meta`` (written at build
    time), else from MLflow's ``registered_model_meta`` and the ``MLmodel`` file.
    """
    folder = Path(folder)
    tracking.quiet_telemetry()
    loaded = model_artifacts.load_verified_folder(folder, expected_sha256, label=str(folder),
                                                  where="expected (baked in at build time)")
    meta = dict(meta or {})
    registered = folder / "registered_model_meta"
    if registered.is_file():
        import yaml

        found = yaml.safe_load(registered.read_text()) or {}
        meta.setdefault("model_name", found.get("model_name"))
        meta.setdefault("model_version", found.get("model_version"))
    tags = dict(meta.get("tags") or {})
    return _served(config, loaded, name=str(meta.get("model_name") or folder.name),
                   version=str(meta.get("model_version") or ""),
                   run_id=str(meta.get("run_id") or ""), tags=tags)


def load_manifest(config: PipelineConfig, manifest: str | Path) -> list[ServedModel]:
    """Verify and load every model folder a manifest lists (the multi-model docker image's
    ``/opt/models/manifest.json``): ``{"models": [{"dir", "sha256", "model_name",
    "model_version", "run_id", "tags"}, ...]}``, ``dir`` relative to the manifest's folder.
    A folder whose sha256 differs refuses the whole server (``ArtifactMismatch``)."""
    import json

    path = Path(manifest)
    try:
        entries = json.loads(path.read_text())["models"]
        if not isinstance(entries, list) or not entries:
            raise ValueError("'models' must be a non-empty list")
        return [load_dir(config, path.parent / str(entry["dir"]), str(entry["sha256"]),
                         {k: entry.get(k) for k in ("model_name", "model_version", "run_id",
                                                     "tags")})
                for entry in entries]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"models manifest {path}: {type(exc).__name__}: {exc}") from exc


def _served(config: PipelineConfig, loaded: model_artifacts.VerifiedModel, *, name: str,
            version: str, run_id: str, tags: dict) -> ServedModel:
    """Serve the verified and loaded model as ``name`` v``version``."""
    model, digest = loaded.model, loaded.digest
    # the MLmodel file as the trust check read it: not ``mlflow.models.Model``, whose import
    # (most of MLflow, a second or more) a batch scorer of its own would pay before its first
    # row (``scoring.standalone``)
    mlmodel = loaded.mlmodel
    signature = mlmodel.get("signature") or {}
    contract = Contract.from_inputs(_specs(signature, "inputs"), max_rows=config.serving_max_rows,
                                    max_abs=config.serving_max_abs_value)
    classes = None
    if hasattr(model, "predict_proba") and hasattr(model, "classes_"):
        classes = [c.item() if hasattr(c, "item") else c for c in model.classes_]
    run_id = run_id or str(mlmodel.get("run_id") or "")
    log.info("loaded %s v%s (run %s, sha256 %s)", name, version, run_id, (digest or "")[:16])
    return ServedModel(
        name=name,
        version=version,
        run_id=run_id,
        dataset_version=tags.get("dataset_version", ""),
        digest=digest,
        model=model,
        contract=contract,
        signature={"inputs": contract.describe(),
                   "outputs": _specs(signature, "outputs") or None},
        classes=classes,
        tags=tags,
    )


def _specs(signature: Any, part: str) -> Any:
    """A signature part's column specs (MLflow stores each part as a JSON string)."""
    import json

    text = signature.get(part) if isinstance(signature, dict) else None
    if not text:
        return None
    try:
        return json.loads(text) if isinstance(text, str) else text
    except ValueError as exc:
        raise ConfigError(f"the model's {part} signature is not JSON ({exc})") from exc
