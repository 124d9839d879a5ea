"""Model registry: one version per training run, aliases ``challenger`` / ``champion`` (no stages).

``challenger`` always moves to the newest registered version. ``champion`` moves only for a
blessed decision, and only by compare-and-set: under the registry lock (``pipeline_tasks.core.locks``:
a PostgreSQL advisory lock shared by every worker in the production profile, a file lock in the
embedded default) the current champion is read again, and the alias moves only if it is still the
version the decision was evaluated against. Otherwise the comparison is stale: with a
``reevaluate`` callback the candidate is compared again with the new champion, still under the
lock, so concurrent runs end with the best one as champion; without it the version stays a
challenger.

Versions are created under the same lock, so concurrent registrations of one model never race
for a version number in the store.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline_tasks.core import model_artifacts, tracking
from pipeline_tasks.core.config import PipelineConfig
from pipeline_tasks.core.errors import ConfigError
from pipeline_tasks.core.locks import named_lock
from pipeline_tasks.core.schema import ModelContract, version_contract

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
#: promotion_status of a candidate whose inputs break the champion's clients
BLOCKED_BREAKING = "blocked_breaking_change"
LOCK_TIMEOUT_S = 120.0
CREATE_ATTEMPTS = 4
CREATE_BACKOFF_S = 0.5
_TAG_VALUE_LIMIT = 5000
# What SqlAlchemyStore raises after its own retries when two writers pick the same version number.
_VERSION_COLLISION = "Model Version creation error"
_REQUIRED_DECISION_KEYS = ("blessed", "reason", "primary_metric", "candidate_metrics")


@dataclass(frozen=True)
class RegistrationResult:
    """The registered version and what happened to the aliases."""

    model_name: str
    version: str
    run_id: str
    promoted: bool
    reason: str
    champion_version: str | None
    previous_champion: str | None
    aliases: list[str]
    awaiting_approval: bool = False  # blessed, but champion moves only once a human approves
    breaking_change: bool = False  # its inputs break the champion's (see pipeline_tasks.core.schema)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def current_champion(model_name: str, client=None) -> str | None:
    """The version number the ``champion`` alias points to, or None (no alias, or no model)."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
    from mlflow.tracking import MlflowClient

    client = client or MlflowClient()
    try:
        model = client.get_registered_model(model_name)
    except MlflowException as exc:
        if exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return None
        raise
    version = model.aliases.get(CHAMPION)
    return None if version is None else str(version)


def register_model(
    *,
    model_name: str,
    run_id: str,
    model_uri: str,
    decision: dict,
    lineage: dict[str, str],
    config: PipelineConfig,
    hold_promotion: bool = False,
    reevaluate: Callable[[], dict] | None = None,
) -> RegistrationResult:
    """Register the run's model (once per run), move ``challenger``, and maybe ``champion``.

    ``decision`` is ``EvaluationDecision.to_dict()``. Calling again for the same ``run_id``
    reuses its version, so a retried task never makes a second one. ``reevaluate`` returns a
    fresh decision against the current champion; it is called (under the lock) when the
    champion moved since ``decision`` was made. With ``hold_promotion``, a blessed version is
    tagged ``awaiting_approval`` instead of becoming champion; the approval step then promotes
    it (``confirm_champion``).
    """
    missing = [key for key in _REQUIRED_DECISION_KEYS if key not in decision]
    if missing:
        raise ConfigError(f"decision lacks {', '.join(missing)}: pass EvaluationDecision.to_dict()")
    if not model_name or not run_id or not model_uri:
        raise ConfigError("model_name, run_id and model_uri are all required")
    tracking.configure_mlflow(config)
    from mlflow.tracking import MlflowClient

    # The digest training recorded goes on the version, once the files are checked against it
    # (and found to be a skops model of trusted types); every load checks it again.
    digest = model_artifacts.verified_digest(model_uri)
    client = MlflowClient()
    with named_lock(config, f"{model_name}.registry", timeout=LOCK_TIMEOUT_S):
        _ensure_registered_model(client, model_name)
        tags = {**_version_tags(run_id, decision, lineage), model_artifacts.DIGEST_TAG: digest}
        version, again = _find_or_create_version(client, model_name, run_id, model_uri, tags,
                                                 decision, lineage)
        previous = current_champion(model_name, client)
        challenger = client.get_registered_model(model_name).aliases.get(CHALLENGER)
        # a retried or cleared register of an older run never moves an alias back
        if challenger is None or int(challenger) <= int(version):
            client.set_registered_model_alias(model_name, CHALLENGER, version)
        superseded = again and previous is not None and int(previous) > int(version)

        expected = decision.get("champion_version")
        expected = None if expected is None else str(expected)
        if (reevaluate is not None and decision["blessed"] and not superseded
                and previous not in (expected, version)):
            log.info("champion of %s moved from v%s to v%s since %s v%s was evaluated: "
                     "evaluating it again", model_name, expected, previous, model_name, version)
            decision = reevaluate()
            expected = decision.get("champion_version")
            expected = None if expected is None else str(expected)
            for key, value in _version_tags(run_id, decision, lineage).items():
                client.set_model_version_tag(model_name, version, key, value)
        promoted = held = False
        breaking = bool(decision.get("breaking_change"))
        if superseded:
            # only a deploy makes a version live: moving the title back here would name a
            # version that does not serve. Re-run the whole DAG run, or roll back, to serve it.
            reason = (f"not promoted: v{previous}, a newer version, became champion after this "
                      f"run registered v{version}; run the DAG again (or ml_model_rollback) to "
                      "serve it")
        elif (hold_promotion and breaking and decision.get("gate_passed")
                and not decision["blessed"] and previous != version):
            held = True  # a person may accept the breaking change
            reason = f"awaiting approval: {decision['reason']}"
        elif not decision["blessed"]:
            reason = f"not promoted: {decision['reason']}"
        elif hold_promotion and previous != version:
            held = True
            reason = f"awaiting approval: {decision['reason']}"
        elif previous == version:
            promoted = True
            reason = f"v{version} is already champion (repeated registration)"
        elif previous != expected:
            was = f"v{expected}" if expected else "no champion"
            now = f"v{previous}" if previous else "no champion"
            reason = (f"not promoted: champion moved from {was} to {now} while this run was "
                      "evaluated; re-evaluate")
        else:
            promoted = True
            forced = " (forced)" if decision.get("forced") else ""
            reason = f"promoted{forced} from {f'v{previous}' if previous else 'no champion'}: " \
                     f"{decision['reason']}"
            _move_champion(client, model_name, version, previous, reason)
        if not promoted and not superseded:  # a superseded version keeps its history
            status = ("awaiting_approval" if held
                      else BLOCKED_BREAKING if breaking and not decision["blessed"]
                      else CHALLENGER)
            for key, value in {
                "promotion_status": status,
                "promotion_reason": reason,
                "promoted_from": "",
            }.items():
                client.set_model_version_tag(model_name, version, key, _clip(value))
        champion_after = current_champion(model_name, client)
        aliases = sorted(client.get_model_version(model_name, version).aliases)
    log.info("registered %s v%s (run %s): %s", model_name, version, run_id, reason)
    return RegistrationResult(
        model_name=model_name,
        version=version,
        run_id=run_id,
        promoted=promoted,
        reason=reason,
        champion_version=champion_after,
        previous_champion=previous,
        aliases=aliases,
        awaiting_approval=held,
        breaking_change=breaking,
    )


def set_champion(model_name: str, version: str, *, reason: str, config: PipelineConfig) -> str | None:
    """Move ``champion`` to an existing ``version`` (a rollback), under the registry lock.

    Returns the version that was champion before. The moved-to version is tagged with why.
    """
    tracking.configure_mlflow(config)
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    with named_lock(config, f"{model_name}.registry", timeout=LOCK_TIMEOUT_S):
        _require_version(client, model_name, version)
        previous = current_champion(model_name, client)
        _move_champion(client, model_name, str(version), previous, reason)
    return previous


def confirm_champion(model_name: str, version: str, *, evaluated_against: str | None,
                     reevaluate: Callable[[], dict], reason: str,
                     config: PipelineConfig, approved: bool = False) -> RegistrationResult:
    """Make sure ``version`` is ``champion`` before it is deployed, by the same compare-and-set
    as ``register_model``. It is not yet champion when a person just approved it (approval can
    come days after ``evaluate``), or when a failed deploy gave the title back and the deploy is
    run again. If the champion is no longer ``evaluated_against``, the version is compared
    again with the current one (``reevaluate``, under the lock) and promoted only if it still
    wins (``approved``: a person accepted a breaking change, so passing the other gates is
    enough). When it already is champion, nothing changes."""
    tracking.configure_mlflow(config)
    from mlflow.tracking import MlflowClient

    version = str(version)
    expected = None if evaluated_against is None else str(evaluated_against)
    client = MlflowClient()
    with named_lock(config, f"{model_name}.registry", timeout=LOCK_TIMEOUT_S):
        run_id = _require_version(client, model_name, version).run_id
        previous = current_champion(model_name, client)
        promoted = True
        if previous == version:
            why = f"v{version} is already champion"
        else:
            if previous != expected:
                log.info("champion of %s moved from v%s to v%s since v%s was evaluated: "
                         "evaluating it again", model_name, expected, previous, version)
                decision = reevaluate()
                accepted = decision["blessed"] or (
                    approved and decision.get("breaking_change") and decision.get("gate_passed"))
                if not accepted:
                    promoted = False
                    why = (f"not promoted: the champion moved to v{previous} since it was "
                           f"evaluated, and {decision['reason']}")
                    for key, value in {"promotion_status": CHALLENGER,
                                       "promotion_reason": why}.items():
                        client.set_model_version_tag(model_name, version, key, _clip(value))
                else:
                    reason = f"{reason} (compared again with v{previous}: {decision['reason']})"
            if promoted:
                why = reason
                _move_champion(client, model_name, version, previous, reason)
        champion_after = current_champion(model_name, client)
        aliases = sorted(client.get_model_version(model_name, version).aliases)
    return RegistrationResult(
        model_name=model_name, version=version, run_id=run_id, promoted=promoted, reason=why,
        champion_version=champion_after, previous_champion=previous, aliases=aliases,
    )


def restore_champion(model_name: str, version: str, *, to: str | None, reason: str,
                     config: PipelineConfig) -> str:
    """``version`` became champion but could not be deployed: give the title back to ``to``, the
    version that keeps serving (none: remove the alias), so the registry names what serves.
    Only if ``version`` is still champion (compare-and-set). Returns what was done."""
    tracking.configure_mlflow(config)
    from mlflow.tracking import MlflowClient

    version = str(version)
    client = MlflowClient()
    with named_lock(config, f"{model_name}.registry", timeout=LOCK_TIMEOUT_S):
        now = current_champion(model_name, client)
        if now != version:
            return f"champion left as v{now} (it moved meanwhile)"
        if to:
            _move_champion(client, model_name, str(to), version, f"restored: {reason}")
            done = f"champion restored to v{to}"
        else:
            client.delete_registered_model_alias(model_name, CHAMPION)
            done = "champion alias removed (no earlier champion)"
        for key, value in {"promotion_status": "deploy_failed",
                           "promotion_reason": reason}.items():
            client.set_model_version_tag(model_name, version, key, _clip(value))
    log.warning("%s: %s (%s)", model_name, done, reason)
    return done


def _require_version(client, model_name: str, version: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(model_name, str(version))
    except MlflowException as exc:
        raise ConfigError(f"model {model_name!r} has no version {version!r}") from exc


def _move_champion(client, model_name: str, version: str, previous: str | None,
                   reason: str) -> None:
    """Point ``champion`` at ``version`` and tag both ends of the move (lock held by caller)."""
    client.set_registered_model_alias(model_name, CHAMPION, version)
    for key, value in {"promotion_status": CHAMPION,
                       "promotion_reason": reason,
                       "promoted_from": previous or "none"}.items():
        client.set_model_version_tag(model_name, version, key, _clip(value))
    if previous and previous != version:
        client.set_model_version_tag(model_name, previous, "promotion_status",
                                     "former_champion")
        client.set_model_version_tag(model_name, previous, "replaced_by", version)
    log.info("champion of %s: v%s -> v%s (%s)", model_name, previous, version, reason)


def _ensure_registered_model(client, model_name: str) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import (
        RESOURCE_ALREADY_EXISTS,
        RESOURCE_DOES_NOT_EXIST,
        ErrorCode,
    )

    try:
        client.get_registered_model(model_name)
        return
    except MlflowException as exc:
        if exc.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise
    try:
        client.create_registered_model(
            model_name, description=f"{model_name}: versions registered by the MLOps pipeline"
        )
    except MlflowException as exc:  # another machine created it between our read and write
        if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise


def _version_for_run(client, model_name: str, run_id: str) -> str | None:
    if "'" in run_id or "'" in model_name:
        raise ConfigError("model_name and run_id must not contain quotes")
    found = client.search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'")
    versions = sorted(int(mv.version) for mv in found)
    return str(versions[0]) if versions else None


def _find_or_create_version(client, model_name, run_id, model_uri, tags, decision,
                            lineage) -> tuple[str, bool]:
    """The run's version, and whether an earlier call (a retried or cleared task) made it."""
    from mlflow.exceptions import MlflowException

    existing = _version_for_run(client, model_name, run_id)
    if existing is not None:
        log.info("run %s is already registered as %s v%s: reusing it", run_id, model_name,
                 existing)
        for key, value in tags.items():  # a retry may carry a fresher decision
            client.set_model_version_tag(model_name, existing, key, value)
        return existing, True
    model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    description = (
        f"Trained by run {run_id} on dataset {lineage.get('dataset_version', '?')}. "
        f"Evaluation: {decision['reason']}"
    )
    for attempt in range(CREATE_ATTEMPTS):
        try:
            created = client.create_model_version(
                name=model_name, source=model_uri, run_id=run_id, tags=tags,
                description=_clip(description), model_id=model_id,
            )
            log.info("created %s v%s from %s", model_name, created.version, model_uri)
            return str(created.version), False
        except MlflowException as exc:
            if _VERSION_COLLISION not in exc.message or attempt == CREATE_ATTEMPTS - 1:
                raise
            wait = CREATE_BACKOFF_S * 2**attempt
            log.warning("model version number collision for %s (attempt %d); retrying in "
                        "%.1f s", model_name, attempt + 1, wait)
            time.sleep(wait)
            existing = _version_for_run(client, model_name, run_id)
            if existing is not None:  # a concurrent call for the same run made it
                return existing, False
    raise AssertionError("unreachable")


def _version_tags(run_id: str, decision: dict, lineage: dict[str, str]) -> dict[str, str]:
    metric = decision["primary_metric"]
    value = decision["candidate_metrics"].get(metric)
    tags = {str(k): _clip(str(v)) for k, v in (lineage or {}).items()}
    tags.update({
        "run_id": run_id,
        "blessed": str(bool(decision["blessed"])).lower(),
        "evaluation_reason": _clip(str(decision["reason"])),
        "primary_metric": str(metric),
        "primary_metric_value": "" if value is None else repr(float(value)),
        "evaluated_against_champion": str(decision.get("champion_version") or "none"),
        "forced": str(bool(decision.get("forced"))).lower(),
        "breaking_change": str(bool(decision.get("breaking_change"))).lower(),
    })
    if decision.get("schema_change"):
        from pipeline_tasks.core.schema import SchemaDiff

        diff = SchemaDiff.from_dict(decision["schema_change"])
        tags.update({k: _clip(v) for k, v in diff.tags().items()})
    if decision.get("forced"):
        tags["force_reason"] = _clip(str(decision.get("force_reason") or ""))
    return tags


def _clip(text: str) -> str:
    return text if len(text) <= _TAG_VALUE_LIMIT else text[: _TAG_VALUE_LIMIT - 3] + "..."


def champion_contract(model_name: str, config: PipelineConfig) -> ModelContract | None:
    """The contract of ``model_name``'s champion, or None when it has none."""

    tracking.configure_mlflow(config)
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    version = current_champion(model_name, client)
    return None if version is None else version_contract(model_name, version, client)
