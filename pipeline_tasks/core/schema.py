"""A model's input contract, and what counts as a breaking change between two versions.

The contract of a registered version is what its clients rely on: the input columns of its MLflow
signature (name, type, required or optional), its target and its task type. A candidate breaks
the champion's contract when it

- removes an input (clients still send it), or renames one (a removal plus an addition),
- changes an input's type, or makes an optional input required,
- adds a *required* input (clients do not send it yet),
- predicts another target or switches between classification and regression.

A new *optional* input (one the training data had nulls in, so the server accepts its absence)
and an input that became optional are not breaking. ``compare_contracts`` is a pure function of
two contracts; ``version_contract`` and ``model_contract`` read them from MLflow.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

#: Signature types that are the same kind of value for a client (a JSON number is either).
_TYPE_KIND = {"long": "number", "integer": "number", "double": "number", "float": "number",
              "string": "text", "boolean": "bool", "datetime": "datetime", "binary": "binary"}

#: The version tag that names the suite a version's data was validated against.
SUITE_TAG = "validation.suite_uri"


@dataclass(frozen=True)
class ModelContract:
    """What a model takes and predicts. ``inputs`` maps a column to its type and requiredness."""

    inputs: dict[str, dict[str, Any]]
    target: str | None = None
    task_type: str | None = None
    version: str | None = None
    suite_uri: str | None = None


@dataclass(frozen=True)
class SchemaDiff:
    """How a candidate's contract differs from the champion's."""

    against_version: str | None
    added: list[str] = field(default_factory=list)  # new inputs (required or optional)
    added_required: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    retyped: dict[str, str] = field(default_factory=dict)  # column -> "double -> string"
    now_required: list[str] = field(default_factory=list)  # optional before, required now
    target_change: str | None = None  # "is_late -> arr_delay"
    task_type_change: str | None = None

    @property
    def breaking(self) -> bool:
        return bool(self.added_required or self.removed or self.retyped or self.now_required
                    or self.target_change or self.task_type_change)

    @property
    def changed(self) -> bool:
        return self.breaking or bool(self.added)

    def summary(self) -> str:
        """One line a person reads: what changed and against which version."""
        parts = []
        if self.removed:
            parts.append(f"removed input(s) {', '.join(self.removed)}")
        if self.added_required:
            parts.append(f"new required input(s) {', '.join(self.added_required)}")
        optional = [c for c in self.added if c not in self.added_required]
        if optional:
            parts.append(f"new optional input(s) {', '.join(optional)}")
        if self.retyped:
            parts.append("retyped " + ", ".join(f"{c} ({t})" for c, t in self.retyped.items()))
        if self.now_required:
            parts.append(f"now required: {', '.join(self.now_required)}")
        if self.target_change:
            parts.append(f"target {self.target_change}")
        if self.task_type_change:
            parts.append(f"task type {self.task_type_change}")
        against = f"champion v{self.against_version}" if self.against_version else "the champion"
        if not parts:
            return f"same inputs as {against}"
        kind = "breaking change" if self.breaking else "compatible change"
        return f"{kind} against {against}: " + "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(breaking=self.breaking, summary=self.summary())
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SchemaDiff:
        """The inverse of ``to_dict`` (its derived ``breaking`` and ``summary`` left out)."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})

    def tags(self) -> dict[str, str]:
        """Model-version tags that record the difference (MLflow tag values are strings)."""
        return {
            "breaking_change": str(self.breaking).lower(),
            "schema_change.against": self.against_version or "",
            "schema_change.added": ",".join(self.added),
            "schema_change.removed": ",".join(self.removed),
            "schema_change.retyped": json.dumps(self.retyped, sort_keys=True),
            "schema_change.summary": self.summary(),
        }


def change_from_tags(tags: dict[str, str]) -> dict[str, Any]:
    """What ``SchemaDiff.tags`` recorded on a version, for its lineage page: against which
    version, the added, removed and retyped inputs, and the summary; empty when nothing did."""
    if not tags.get("schema_change.summary"):
        return {}

    def names(key: str) -> list[str]:
        return [c for c in tags.get(key, "").split(",") if c]

    try:
        retyped = json.loads(tags.get("schema_change.retyped") or "{}")
    except ValueError:
        retyped = {}
    return {"against": tags.get("schema_change.against", ""),
            "added": names("schema_change.added"), "removed": names("schema_change.removed"),
            "retyped": retyped if isinstance(retyped, dict) else {},
            "summary": tags["schema_change.summary"]}


def compare_contracts(champion: ModelContract, candidate: ModelContract) -> SchemaDiff:
    """The difference from ``champion`` to ``candidate`` (see the module doc for the rules)."""
    old, new = champion.inputs, candidate.inputs
    added = [c for c in new if c not in old]
    retyped = {}
    now_required = []
    for name in (c for c in old if c in new):
        before, after = old[name], new[name]
        if _TYPE_KIND.get(before["type"], before["type"]) != \
                _TYPE_KIND.get(after["type"], after["type"]):
            retyped[name] = f"{before['type']} -> {after['type']}"
        elif after.get("required", True) and not before.get("required", True):
            now_required.append(name)
    target_change = (f"{champion.target} -> {candidate.target}"
                     if champion.target and candidate.target and champion.target !=
                     candidate.target else None)
    task_change = (f"{champion.task_type} -> {candidate.task_type}"
                   if champion.task_type and candidate.task_type and champion.task_type !=
                   candidate.task_type else None)
    return SchemaDiff(
        against_version=champion.version,
        added=added,
        added_required=[c for c in added if new[c].get("required", True)],
        removed=[c for c in old if c not in new],
        retyped=retyped,
        now_required=now_required,
        target_change=target_change,
        task_type_change=task_change,
    )


def signature_inputs(signature) -> dict[str, dict[str, Any]]:
    """``{column: {"type": ..., "required": ...}}`` of an MLflow signature's column inputs."""
    if signature is None or signature.inputs is None:
        return {}
    out = {}
    for spec in signature.inputs.inputs:
        if getattr(spec, "name", None) is None:
            continue  # a tensor spec: no named columns to compare
        kind = getattr(spec.type, "name", None) or str(spec.type)
        out[str(spec.name)] = {"type": str(kind), "required": bool(getattr(spec, "required",
                                                                           True))}
    return out


def model_contract(model_uri: str, *, target: str | None = None,
                   task_type: str | None = None) -> ModelContract:
    """The contract of a logged model (``models:/m-...`` or ``runs:/...``), from its MLmodel."""
    from mlflow.models import get_model_info

    return ModelContract(inputs=signature_inputs(get_model_info(model_uri).signature),
                         target=target, task_type=task_type)


def version_contract(model_name: str, version: str, client=None) -> ModelContract:
    """The contract of a registered version: its signature, and the target and task type its
    training run recorded. Its ``suite_uri`` is the suite its data was validated against."""
    from mlflow.tracking import MlflowClient

    client = client or MlflowClient()
    mv = client.get_model_version(model_name, str(version))
    tags: dict[str, str] = {}
    if mv.run_id:
        tags = client.get_run(mv.run_id).data.tags
    contract = model_contract(f"models:/{model_name}/{version}",
                              target=tags.get("target") or None,
                              task_type=tags.get("task_type") or None)
    return replace(contract, version=str(version),
                   suite_uri=(mv.tags or {}).get(SUITE_TAG) or None)

