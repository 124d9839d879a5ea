"""Deployment records: the one type of a deploy, rollback or restore attempt, and its history.

Every attempt, good or bad, is a JSON document in ``lake/deployments/<model>/<time>-v<version>-
<id>.json`` (``core.layout.deployments_dir``): what, when, which Airflow run, where it serves
(pid and port, or container and image), the version it replaced, why, and how it ended. The
orchestrator writes them, the deploy stage returns one, lineage and monitoring read them back.
"""

from __future__ import annotations

import dataclasses
import json
import urllib.parse
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipeline_tasks.core import layout, storage
from pipeline_tasks.core.config import PipelineConfig
from pipeline_tasks.core.errors import ConfigError
from pipeline_tasks.core.names import safe_name
from pipeline_tasks.core.results import XComResult

#: Keys written only when set: the docker target's container, image and router, and the set of
#: models the endpoint serves.
_OPTIONAL_KEYS = ("container", "image", "router", "models")
#: Fields that are not part of the JSON document.
_NOT_IN_DOCUMENT = ("record_uri", "approval")
#: The deploy stage's result: these keys, as before the record type was one.
RESULT_KEYS = ("deployment_id", "model_name", "version", "target", "endpoint", "status", "pid",
               "private_port", "previous_version", "reason", "canary_rows", "record_uri",
               "breaking_change")


@dataclass(frozen=True)
class DeploymentRecord(XComResult):
    """One recorded attempt. ``to_dict``/``from_dict`` are the JSON document (its keys are the
    same as in every record written so far, so old records read as new ones); ``record_uri`` is
    where it is stored (not part of the document)."""

    deployment_id: str
    action: str  # deploy | rollback | restore
    model_name: str
    version: str
    target: str  # local | docker
    endpoint: str
    previous: dict | None  # what served before: model_name, version, and pid or container/image
    reason: str
    lineage: dict = field(default_factory=dict)
    breaking_change: bool = False  # promoted over a breaking input change (forced or approved)
    started_at: str = ""
    status: str = ""  # live | unchanged | failed
    outcome: str = ""
    pid: int | None = None
    private_port: int | None = None
    canary_rows: int | None = None
    container: dict | None = None  # docker: id, name, host_port
    image: dict | None = None  # docker: tag, id, model_sha256
    router: str | None = None  # docker: the router container of the stable port
    # the models the endpoint's server holds with this deployment (name -> version; the first
    # is the default of /predict): the deployed model's version, the others' unchanged
    models: dict | None = None
    finished_at: str = ""
    record_uri: str = field(default="", compare=False)
    # the deploy stage's champion confirmation of a version a person approved
    # (``RegistrationResult.to_dict()``): part of its XCom result, not of the document
    approval: dict | None = field(default=None, compare=False)

    @classmethod
    def begin(cls, *, model_name: str, version: str, target: str, endpoint: str, reason: str,
              lineage: dict | None = None, action: str = "deploy",
              breaking_change: bool = False) -> DeploymentRecord:
        """A new attempt, started now."""
        return cls(deployment_id=uuid.uuid4().hex[:12], action=action, model_name=model_name,
                   version=str(version), target=target, endpoint=endpoint, previous=None,
                   reason=reason, lineage=dict(lineage or {}), breaking_change=breaking_change,
                   started_at=datetime.now(UTC).isoformat())

    def update(self, **changes: Any) -> DeploymentRecord:
        return dataclasses.replace(self, **changes)

    @property
    def previous_version(self) -> str | None:
        """The version of the same model that served before (None for another model or none)."""
        previous = self.previous or {}
        if previous.get("version") is None or \
                previous.get("model_name", self.model_name) != self.model_name:
            return None
        return str(previous["version"])

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (without ``record_uri``; the docker keys only when set)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in _NOT_IN_DOCUMENT}
        for key in _OPTIONAL_KEYS:
            if data[key] is None:
                del data[key]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], record_uri: str = "") -> DeploymentRecord:
        """A record from its JSON document; keys a record of an older release lacks default."""
        known = {f.name for f in dataclasses.fields(cls)} - set(_NOT_IN_DOCUMENT)
        values = {k: v for k, v in data.items() if k in known}
        for key in ("deployment_id", "model_name", "version", "target", "endpoint", "reason",
                    "status", "outcome", "started_at", "finished_at"):
            values[key] = "" if values.get(key) is None else str(values[key])
        values["action"] = str(values.get("action") or "deploy")
        values["previous"] = values.get("previous") or None
        values["lineage"] = values.get("lineage") or {}
        values["breaking_change"] = bool(values.get("breaking_change"))
        return cls(**values, record_uri=record_uri)

    def to_xcom(self) -> dict[str, Any]:
        """The deploy stage's XCom result (what the UI links, notifications and tests read),
        with ``approval`` when a person approved the version."""
        data = {**self.to_dict(), "previous_version": self.previous_version,
                "record_uri": self.record_uri, "canary_rows": self.canary_rows or 0}
        return {key: data.get(key) for key in RESULT_KEYS} | (
            {"approval": self.approval} if self.approval else {})

    @classmethod
    def from_xcom(cls, payload: dict[str, Any]) -> DeploymentRecord:
        """A record from the deploy stage's XCom result (``to_xcom``): what the payload holds;
        ``previous`` is the version that served before (the rest of the document is at
        ``record_uri``). Unknown keys are ignored."""
        previous = payload.get("previous_version")
        record = cls.from_dict({key: payload.get(key) for key in RESULT_KEYS
                                if key not in ("previous_version", "record_uri")},
                               record_uri=str(payload.get("record_uri") or ""))
        return record.update(
            previous=None if previous is None else
            {"model_name": record.model_name, "version": str(previous)},
            approval=payload.get("approval") or None)


def deployments_uri(model_name: str, config: PipelineConfig) -> str:
    """``lake/deployments/<model>``; a name that is not one plain path segment is refused."""
    if not model_name or safe_name(model_name) != model_name or model_name.startswith("."):
        raise ConfigError(f"model name {model_name!r} cannot name a folder: letters, digits, "
                          "'.', '_', '-' only")
    return layout.deployments_dir(config, model_name)


def record_uri(record: DeploymentRecord, config: PipelineConfig) -> str:
    """Where ``record`` is stored: its start time, version and id name the file."""
    stamp = record.started_at.replace(":", "").replace("-", "")[:15]
    name = f"{stamp}-v{record.version}-{record.deployment_id}.json"
    return storage.join(deployments_uri(record.model_name, config), name)


def write_record(record: DeploymentRecord, config: PipelineConfig) -> DeploymentRecord:
    """Stamp ``finished_at`` and store ``record`` (atomically); returns it with its URI."""
    done = record.update(finished_at=datetime.now(UTC).isoformat())
    uri = record_uri(done, config)
    storage.atomic_write_json(uri, done.to_dict())
    return done.update(record_uri=uri)


def deployment_history(model_name: str, config: PipelineConfig) -> list[DeploymentRecord]:
    """Every recorded deployment attempt of ``model_name``, oldest first."""
    root = deployments_uri(model_name, config)
    fs, path = storage.url_to_fs(root)
    if not fs.exists(path):
        return []
    records = [DeploymentRecord.from_dict(json.loads(fs.cat_file(p)),
                                          record_uri=storage.join(root, p.rpartition("/")[2]))
               for p in fs.glob(path.rstrip("/") + "/*.json")]
    return sorted(records, key=lambda r: (r.finished_at or "", r.deployment_id))


def recorded_models(config: PipelineConfig) -> list[str]:
    """The models that have a deployment history folder."""
    fs, root = storage.url_to_fs(layout.deployments_root(config))
    if not fs.exists(root):
        return []
    return [folder.rstrip("/").rpartition("/")[2] for folder in fs.ls(root, detail=False)]


def serving_place(model_name: str, config: PipelineConfig) -> dict[str, Any]:
    """``serving_target`` and ``serving_port`` of the model's last live deployment ({} if it was
    never deployed)."""
    live = [r for r in deployment_history(model_name, config) if r.status == "live"]
    if not live:
        return {}
    port = urllib.parse.urlsplit(live[-1].endpoint or "").port
    return {"serving_target": live[-1].target or None, "serving_port": port}
