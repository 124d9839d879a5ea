"""Model registry: one version per training run, aliases ``challenger`` / ``champion`` (no stages).

``challenger`` always moves to the newest registered version. ``champion`` moves only for a
blessed decision, and only by compare-and-set under the registry lock
(``pipeline_tasks.core.locks``: a PostgreSQL advisory lock shared by every worker in the
production profile, a file lock in the embedded default): the current champion is read again,
and the alias moves only if it is still the version the decision was evaluated against.

Loading and scoring models takes time (the champion on the candidate's holdout), so it never
happens under the lock. When the champion moved since the decision was made, the lock is
released, the ``reevaluate`` callback compares the candidate with the new champion, and the
compare-and-set is tried again with the fresh decision (at most ``REEVALUATIONS`` times), so
concurrent runs end with the best one as champion. Without ``reevaluate`` a stale decision
leaves the version a challenger.

Versions are created under the same lock, so concurrent registrations of one model never race
for a version number in the store.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline_tasks.core import model_artifacts, tracking
from pipeline_tasks.core.config import PipelineConfig
from pipeline_tasks.core.errors import ConfigError, TransientError
from pipeline_tasks.core.locks import named_lock
from pipeline_tasks.core.results import XComResult
from pipeline_tasks.core.schema import ModelContract, version_contract
from pipeline_tasks.model.transient import is_transient
from pipeline_tasks.model.versions import (
    clip,
    ensure_registered_model,
    find_or_create_version,
    version_tags,
)

if TYPE_CHECKING:
    from pipeline_tasks.model.policy import EvaluationDecision

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
#: promotion_status of a candidate whose inputs break the champion's clients
BLOCKED_BREAKING = "blocked_breaking_change"
LOCK_TIMEOUT_S = 120.0
#: How many times a stale decision is compared again with a champion that keeps moving. Each
#: time means another run was promoted meanwhile, and the champion only ever moves to a better
#: version, so with N runs registering at once (a backfill's parallel runs) the best one needs up
#: to N - 1: 3 let it lose to a worse champion with 8 at once on a loaded machine.
REEVALUATIONS = 16
_REQUIRED_DECISION_KEYS = ("blessed", "reason", "primary_metric", "candidate_metrics")


@dataclass(frozen=True)
class RegistrationResult(XComResult):
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


def judged_version(model_name: str, run_id: str) -> str | None:
    """The version registered from ``run_id`` when judging it again could decide nothing new:
    it is the champion, or the champion is still the one it was evaluated against. None: not
    registered, or the champion moved since (a cache hit is then evaluated again, and
    registering reuses the version)."""
    from mlflow.tracking import MlflowClient

    from pipeline_tasks.model.versions import version_for_run

    client = MlflowClient()
    version = version_for_run(client, model_name, run_id)
    if version is None:
        return None
    against = client.get_model_version(model_name, version).tags.get("evaluated_against_champion")
    champion = current_champion(model_name, client)
    return version if champion == version or (champion or "none") == against else None


def register_model(
    *,
    model_name: str,
    run_id: str,
    model_uri: str,
    decision: EvaluationDecision | dict,
    lineage: dict[str, str],
    config: PipelineConfig,
    hold_promotion: bool = False,
    reevaluate: Callable[[], EvaluationDecision | dict] | None = None,
) -> RegistrationResult:
    """Register the run's model (once per run), move ``challenger``, and maybe ``champion``.

    ``decision`` is the ``EvaluationDecision`` (or its ``to_dict()``). Calling again for the same ``run_id``
    reuses its version, so a retried task never makes a second one. ``reevaluate`` returns a
    fresh decision against the current champion; it is called, outside the lock, when the
    champion moved since ``decision`` was made. With ``hold_promotion``, a blessed version is
    tagged ``awaiting_approval`` instead of becoming champion; the approval step then promotes
    it (``confirm_champion``).
    """
    decision = _as_dict(decision)
    missing = [key for key in _REQUIRED_DECISION_KEYS if key not in decision]
    if missing:
        raise ValueError(f"decision lacks {', '.join(missing)}: pass EvaluationDecision.to_dict()")
    if not model_name or not run_id or not model_uri:
        raise ValueError("model_name, run_id and model_uri are all required")
    tracking.configure_mlflow(config)
    from mlflow.tracking import MlflowClient

    # The digest training recorded goes on the version, once the files are checked against it
    # (and found to be a skops model of trusted types); every load checks it again.
    digest = model_artifacts.verified_digest(model_uri)
    client = MlflowClient()
    version = again = None
    for attempt in range(REEVALUATIONS + 1):
        with named_lock(config, f"{model_name}.registry", timeout=LOCK_TIMEOUT_S):
            if version is None:
                version, again = _create_version(client, model_name, run_id, model_uri, decision,
                                                 lineage, digest)
            previous = current_champion(model_name, client)
            superseded = again and previous is not None and int(previous) > int(version)
            expected = _expected(decision)
            stale = (reevaluate is not None and decision["blessed"] and not superseded
                     and previous not in (expected, version))
            if not stale or attempt == REEVALUATIONS:
                promoted, held, breaking, reason = _settle(
                    client, model_name, version, decision, previous=previous,
                    superseded=superseded, hold_promotion=hold_promotion)
                champion_after = current_champion(model_name, client)
                aliases = sorted(client.get_model_version(model_name, version).aliases)
                break
        # the compare part runs with the lock released: loading and scoring take time
        log.info("champion of %s moved from v%s to v%s since %s v%s was evaluated: "
                 "evaluating it again", model_name, expected, previous, model_name, version)
        decision = _as_dict(reevaluate())
        for key, value in version_tags(run_id, decision, lineage).items():
            client.set_model_version_tag(model_name, version, key, value)
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


def _as_dict(decision: EvaluationDecision | dict) -> dict:
    """A decision as the dict the registry reads (an ``EvaluationDecision`` or its dict)."""
    return decision if isinstance(decision, dict) else decision.to_dict()


def _expected(decision: dict) -> str | None:
    """The champion ``decision`` was evaluated against (None: there was none)."""
    expected = decision.get("champion_version")
    return None if expected is None else str(expected)


def _create_version(client, model_name: str, run_id: str, model_uri: str, decision: dict,
                    lineage: dict[str, str], digest: str) -> tuple[str, bool]:
    """The run's version (made now, or by an earlier call) with ``challenger`` moved to it when
    it is the newest (lock held by caller)."""
    ensure_registered_model(client, model_name)
    tags = {**version_tags(run_id, decision, lineage), model_artifacts.DIGEST_TAG: digest}
    version, again = find_or_create_version(client, model_name, run_id, model_uri, tags,
                                             decision, lineage)
    challenger = client.get_registered_model(model_name).aliases.get(CHALLENGER)
    # a retried or cleared register of an older run never moves an alias back
    if challenger is None or int(challenger) <= int(version):
        client.set_registered_model_alias(model_name, CHALLENGER, version)
    return version, again


def _settle(client, model_name: str, version: str, decision: dict, *, previous: str | None,
            superseded: bool, hold_promotion: bool) -> tuple[bool, bool, bool, str]:
    """The compare-and-set (lock held by caller): ``champion`` moves to ``version`` only if the
    decision blesses it and was made against ``previous``, the champion now. Tags the version
    with the outcome; returns ``(promoted, held, breaking, reason)``."""
    expected = _expected(decision)
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
            client.set_model_version_tag(model_name, version, key, clip(value))
    return promoted, held, breaking, reason


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
                     reevaluate: Callable[[], EvaluationDecision | dict], reason: str,
                     config: PipelineConfig, approved: bool = False) -> RegistrationResult:
    """Make sure ``version`` is ``champion`` before it is deployed, by the same compare-and-set
    as ``register_model``. It is not yet champion when a person just approved it (approval can
    come days after ``evaluate``), or when a failed deploy gave the title back and the deploy is
    run again. If the champion is no longer ``evaluated_against``, the version is compared
    again with the current one (``reevaluate``, outside the lock) and promoted only if it still
    wins and the champion did not move meanwhile (``approved``: a person accepted a breaking
    change, so passing the other gates is enough). When it already is champion, nothing
    changes."""
    tracking.configure_mlflow(config)
    from mlflow.tracking import MlflowClient

    version = str(version)
    expected = None if evaluated_against is None else str(evaluated_against)
    compared = None  # the reason of the last comparison made again, once there is one
    client = MlflowClient()
    for attempt in range(REEVALUATIONS + 1):
        with named_lock(config, f"{model_name}.registry", timeout=LOCK_TIMEOUT_S):
            run_id = _require_version(client, model_name, version).run_id
            previous = current_champion(model_name, client)
            promoted = previous == version or previous == expected
            if previous == version:
                why = f"v{version} is already champion"
            elif promoted:
                why = reason if compared is None else \
                    f"{reason} (compared again with v{previous}: {compared})"
                _move_champion(client, model_name, version, previous, why)
            elif attempt == REEVALUATIONS:
                why = (f"not promoted: the champion kept moving (now v{previous}) while v{version} "
                       "was compared with it; deploy again to compare with the current one")
                _tag_challenger(client, model_name, version, why)
            if promoted or attempt == REEVALUATIONS:
                champion_after = current_champion(model_name, client)
                aliases = sorted(client.get_model_version(model_name, version).aliases)
                break
        # the compare part runs with the lock released: loading and scoring take time
        log.info("champion of %s moved from v%s to v%s since v%s was evaluated: "
                 "evaluating it again", model_name, expected, previous, version)
        decision = _as_dict(reevaluate())
        accepted = decision["blessed"] or (
            approved and decision.get("breaking_change") and decision.get("gate_passed"))
        if not accepted:
            promoted = False
            why = (f"not promoted: the champion moved to v{previous} since it was "
                   f"evaluated, and {decision['reason']}")
            with named_lock(config, f"{model_name}.registry", timeout=LOCK_TIMEOUT_S):
                _tag_challenger(client, model_name, version, why)
                champion_after = current_champion(model_name, client)
                aliases = sorted(client.get_model_version(model_name, version).aliases)
            break
        expected = _expected(decision) if "champion_version" in decision else previous
        compared = decision["reason"]
    return RegistrationResult(
        model_name=model_name, version=version, run_id=run_id, promoted=promoted, reason=why,
        champion_version=champion_after, previous_champion=previous, aliases=aliases,
    )


def _tag_challenger(client, model_name: str, version: str, why: str) -> None:
    """Record that ``version`` stays a challenger, and why."""
    for key, value in {"promotion_status": CHALLENGER, "promotion_reason": why}.items():
        client.set_model_version_tag(model_name, version, key, clip(value))


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
            client.set_model_version_tag(model_name, version, key, clip(value))
    log.warning("%s: %s (%s)", model_name, done, reason)
    return done


def _require_version(client, model_name: str, version: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(model_name, str(version))
    except MlflowException as exc:
        if is_transient(exc):
            raise TransientError(f"the model registry did not answer for {model_name} "
                                 f"v{version}: {exc.message}",
                                 advice="The MLflow server did not answer; retried.") from exc
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        raise ConfigError(f"model {model_name!r} has no version {version!r}") from exc


def _move_champion(client, model_name: str, version: str, previous: str | None,
                   reason: str) -> None:
    """Point ``champion`` at ``version`` and tag both ends of the move (lock held by caller)."""
    client.set_registered_model_alias(model_name, CHAMPION, version)
    for key, value in {"promotion_status": CHAMPION,
                       "promotion_reason": reason,
                       "promoted_from": previous or "none"}.items():
        client.set_model_version_tag(model_name, version, key, clip(value))
    if previous and previous != version:
        client.set_model_version_tag(model_name, previous, "promotion_status",
                                     "former_champion")
        client.set_model_version_tag(model_name, previous, "replaced_by", version)
    log.info("champion of %s: v%s -> v%s (%s)", model_name, previous, version, reason)


def champion_contract(model_name: str, config: PipelineConfig) -> ModelContract | None:
    """The contract of ``model_name``'s champion, or None when it has none."""

    tracking.configure_mlflow(config)
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    version = current_champion(model_name, client)
    return None if version is None else version_contract(model_name, version, client)
