"""The ``deploy`` stage: put a registered version behind the stable endpoint, blue/green.

One orchestrator for every target (``deploy.targets``; ``local``, the embedded default, is the
serving supervisor, ``docker`` a container per model set behind a router). An endpoint serves a
set of models by name; a deployment changes one model's version and keeps the others' (the
candidate serves the whole set). The new version starts beside the live one, must load (its files' sha256 is checked) and must answer canary requests on
holdout rows with exactly the predictions the model gives offline (``deploy.canary``). Only then
does it take the endpoint and the old version stop. A candidate that fails is stopped, the old
version keeps serving, and ``DeployRejected`` says why; on any failure after the switch the
previous version is put back.

Every attempt, good or bad, is recorded (``deploy.records``): a JSON document in
``lake/deployments/<model>/<time>-v<version>-<id>.json``, and on success tags on the model
version (``deployment_*``).
"""

from __future__ import annotations

import contextlib
import logging
import urllib.parse
from collections.abc import Iterator
from typing import Any, NoReturn

from pipeline_tasks.core import http, tracking
from pipeline_tasks.core.config import PipelineConfig
from pipeline_tasks.core.errors import ConfigError, DeployRejected
from pipeline_tasks.deploy.canary import canary_check, version_inputs
from pipeline_tasks.deploy.records import (
    DeploymentRecord,
    deployment_history,
    recorded_models,
    serving_place,
    write_record,
)
from pipeline_tasks.deploy.targets import DeployTarget

log = logging.getLogger(__name__)

TARGETS = ("local", "docker")
#: How long a deployment waits for another one on the same endpoint (a docker build and a
#: canary can take minutes).
ENDPOINT_LOCK_TIMEOUT_S = 900.0


def make_target(name: str, config: PipelineConfig) -> DeployTarget:
    """The deploy target called ``name`` (``serving_target``), for one deployment."""
    if name not in TARGETS:
        raise ConfigError(f"deployment target {name!r} is not one of {TARGETS}")
    if name == "docker":
        from pipeline_tasks.deploy.docker_target import DockerTarget

        return DockerTarget(config)
    from pipeline_tasks.deploy.local_target import LocalTarget

    return LocalTarget(config)


def deploy_version(*, model_name: str, version: str, holdout_uri: str | None,
                   feature_columns: list[str], config: PipelineConfig, reason: str,
                   lineage: dict[str, str] | None = None, target: str = "local",
                   action: str = "deploy", breaking_change: bool = False) -> DeploymentRecord:
    """Deploy ``model_name`` v``version`` to ``target`` through the blue/green path.
    ``breaking_change``: its inputs break the previous champion's clients, and a person forced
    or approved it; the deployment record says so."""
    return deploy_to(make_target(target, config), model_name=model_name, version=version,
                     holdout_uri=holdout_uri, feature_columns=feature_columns, config=config,
                     reason=reason, lineage=lineage, action=action,
                     breaking_change=breaking_change)


def deploy_to(target: DeployTarget, *, model_name: str, version: str, holdout_uri: str | None,
              feature_columns: list[str], config: PipelineConfig, reason: str,
              lineage: dict[str, str] | None = None, action: str = "deploy",
              breaking_change: bool = False) -> DeploymentRecord:
    """Blue/green on ``target``: start the candidate, canary, switch, verify; record it all.

    One deployment at a time per endpoint: the candidate is the live set of models with this
    one changed, so two deploys of different models on the same port at once would each start
    from the same set, and the second switch would undo the first."""
    from pipeline_tasks.core.locks import named_lock

    lock = f"serving-endpoint-{target.name}-{config.serving_host}-{config.serving_port}"
    with named_lock(config, lock, timeout=ENDPOINT_LOCK_TIMEOUT_S):
        return _deploy(target, model_name=model_name, version=version, holdout_uri=holdout_uri,
                       feature_columns=feature_columns, config=config, reason=reason,
                       lineage=lineage, action=action, breaking_change=breaking_change)


def _deploy(target: DeployTarget, *, model_name: str, version: str, holdout_uri: str | None,
            feature_columns: list[str], config: PipelineConfig, reason: str,
            lineage: dict[str, str] | None, action: str,
            breaking_change: bool) -> DeploymentRecord:
    version = str(version)
    record = DeploymentRecord.begin(model_name=model_name, version=version, target=target.name,
                                    endpoint=target.endpoint, reason=reason, lineage=lineage,
                                    action=action, breaking_change=breaking_change)
    try:
        target.prepare(model_name, version)
        record = record.update(endpoint=target.endpoint)
        live = target.current()  # what serves on the endpoint (maybe other models only)
        record = record.update(previous=live.record if live and live.version else None)
        candidate = target.start_candidate(model_name, version, live)
    except DeployRejected as exc:
        _fail(record, config, f"v{version} did not start: {exc}")
    record = record.update(**candidate.record)
    if candidate.unchanged:
        return _finish(record.update(status="unchanged", canary_rows=0,
                                     outcome=f"v{version} is already live"), config)

    step = "failed validation"
    try:
        record = record.update(canary_rows=canary_check(
            candidate.url, model_name, version, holdout_uri, feature_columns, config))
        step = "could not take the endpoint"
        target.switch(candidate)
    except BaseException as exc:
        target.stop(candidate)  # the live version never stopped serving
        if isinstance(exc, DeployRejected):
            _fail(record, config, f"v{version} {step}: {exc}")
        raise
    try:
        answered = target.verify(candidate, version)
    except BaseException:
        target.restore(live, candidate)
        raise
    if answered is not None:
        # the old version was stopped or unrouted at the switch: put it back, so something serves
        back = target.restore(live, candidate)
        _fail(record, config, f"the endpoint does not report v{version} after the switch "
                              f"({answered}); {back}")
    target.retire(live, candidate)
    done = _finish(record.update(
        status="live", outcome=f"v{version} is live on {record.endpoint}{candidate.note}"),
        config)
    _tag_versions(done, config)
    return done


def rollback(*, model_name: str, to: str, config: PipelineConfig, reason: str,
             lineage: dict[str, str] | None = None) -> DeploymentRecord:
    """Move ``champion`` back to ``to`` (a version number, or ``previous``: the version live
    before the current one) and deploy it through the same blue/green path."""
    if not reason or not reason.strip():
        raise ConfigError("a rollback needs a reason (who and why)")
    to = str(to).strip() or "previous"
    live = [r.version for r in deployment_history(model_name, config) if r.status == "live"]
    if to == "previous":
        if not live:
            raise ConfigError(f"no deployment of {model_name!r} is recorded: nothing to roll back")
        earlier = [v for v in reversed(live) if v != live[-1]]
        if not earlier:
            raise ConfigError(f"only v{live[-1]} of {model_name!r} was ever deployed: there is "
                              "no previous version")
        to = earlier[0]
    elif not to.isdigit():
        raise ConfigError(f"version must be a version number or 'previous', got {to!r}")
    from pipeline_tasks.model.registry import set_champion

    why = f"rollback to v{to}: {reason.strip()}"
    previous = set_champion(model_name, to, reason=why, config=config)
    # "if it fails, nothing changes": the title goes back to the version that keeps serving
    guard = (title_back_on_failure(model_name, to, to=previous, config=config,
                                   what=f"rollback to v{to} failed")
             if previous != to else contextlib.nullcontext())
    with guard:
        holdout_uri, features = version_inputs(model_name, to, config)
        # redeploy where the model serves (a run may have deployed it elsewhere than the defaults)
        config = config.with_overrides(**serving_place(model_name, config))
        return deploy_version(model_name=model_name, version=to, holdout_uri=holdout_uri,
                              feature_columns=features, config=config, reason=why,
                              lineage=lineage, target=config.serving_target, action="rollback")


@contextlib.contextmanager
def title_back_on_failure(model_name: str, version: str, *, to: str | None,
                          config: PipelineConfig, what: str) -> Iterator[None]:
    """``version`` was made champion before it is deployed: if the block fails (a rejection or
    an infrastructure error), give the title back to ``to``, the version that keeps serving
    (``registry.restore_champion``), so the registry always names what serves."""
    from pipeline_tasks.model.registry import restore_champion

    try:
        yield
    except Exception as exc:
        done = restore_champion(model_name, version, to=to, reason=f"{what}: {exc}",
                                config=config)
        if isinstance(exc, DeployRejected):
            raise DeployRejected(f"{exc}; {done}", result=exc.result) from exc
        log.error("%s (%s); %s", what, exc, done)
        raise


def restore_serving(config: PipelineConfig) -> list[dict[str, Any]]:
    """Bring back what the deployment records say is live on each local endpoint, when it no
    longer answers (a killed supervisor takes its model servers with it). For each port and
    model, the newest live local deployment names the version; if the endpoint's
    ``/models/<name>/metadata`` does not report it, that version is deployed again through the
    same blue/green path (``restore``), models in the order they were last deployed. Returns one
    entry per endpoint and model: what was expected, what answered, what was done."""
    newest: dict[tuple[int, str], DeploymentRecord] = {}
    for model in recorded_models(config):
        for record in deployment_history(model, config):
            port = urllib.parse.urlsplit(record.endpoint or "").port
            key = (port, record.model_name)
            if record.status == "live" and record.target == "local" and port and (
                    key not in newest or record.finished_at > newest[key].finished_at):
                newest[key] = record
    report = []
    for (port, _), record in sorted(newest.items(), key=lambda item: (item[0][0],
                                                                      item[1].finished_at)):
        here = config.with_overrides(serving_port=port)
        answer = http.try_json(http.model_url(here.serving_url, record.model_name) + "/metadata",
                               timeout=5) or {}
        entry = {"endpoint": here.serving_url, "model_name": record.model_name,
                 "version": record.version, "answered": answer.get("model_version")}
        if (answer.get("model_name"), answer.get("model_version")) == (record.model_name,
                                                                      record.version):
            report.append({**entry, "action": "none"})
            continue
        log.error("%s should serve %s v%s but answers %s: restoring it", here.serving_url,
                  record.model_name, record.version, answer or "nothing")
        try:
            holdout_uri, features = version_inputs(record.model_name, record.version, here)
            done = deploy_version(model_name=record.model_name, version=record.version,
                                  holdout_uri=holdout_uri, feature_columns=features, config=here,
                                  reason="restored: the endpoint no longer served the live "
                                         "version", lineage=record.lineage, action="restore")
            report.append({**entry, "action": "restored", "status": done.status})
        except (DeployRejected, OSError) as exc:
            log.error("could not restore %s: %s", here.serving_url, exc)
            report.append({**entry, "action": "failed", "error": str(exc)})
    return report


def _fail(record: DeploymentRecord, config: PipelineConfig, why: str) -> NoReturn:
    done = write_record(record.update(status="failed", outcome=why), config)
    log.error("deployment of %s v%s failed; the previous version keeps serving: %s",
              record.model_name, record.version, why)
    raise DeployRejected(why, result={"record_uri": done.record_uri})


def _finish(record: DeploymentRecord, config: PipelineConfig) -> DeploymentRecord:
    done = write_record(record, config)
    log.info("%s: %s", done.action, done.outcome)
    return done


def _tag_versions(record: DeploymentRecord, config: PipelineConfig) -> None:
    """The live version's ``deployment_*`` tags; the one it replaced says so."""
    tracking.configure_mlflow(config)
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    tags = {
        "deployment_status": "live",
        "deployment_id": record.deployment_id,
        "deployment_target": record.target,
        "deployment_endpoint": record.endpoint,
        "deployment_pid": "" if record.pid is None else str(record.pid),
        "deployment_container": (record.container or {}).get("name", ""),
        "deployment_image": (record.image or {}).get("tag", ""),
        "deployed_at": record.finished_at,
        "deployment_reason": record.reason[:4000],
    }
    for key, value in tags.items():
        client.set_model_version_tag(record.model_name, record.version, key, value)
    previous = record.previous_version
    if previous and previous != record.version:
        client.set_model_version_tag(record.model_name, previous, "deployment_status",
                                     f"replaced by v{record.version}")
