"""The ``deploy`` stage: put a registered version behind the stable endpoint, blue/green.

Target ``local`` (the embedded default): the serving supervisor (``deploy.local``) owns the
endpoint ``serving_url``. The new version starts beside the live one on a private port, must load
(its files' sha256 is checked) and must answer canary requests on holdout rows with exactly the
predictions the model gives offline. Only then does it take the endpoint and the old server stop.
On any failure the candidate is stopped, the old version keeps serving, and ``DeployRejected``
says why.

Every attempt, good or bad, is recorded: a JSON document in
``lake/deployments/<model>/<time>-v<version>.json`` (what, when, which Airflow run, pid and port,
the previous version, why), and on success tags on the model version (``deployment_*``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn

from pipeline_tasks.core import http, layout, storage, tracking
from pipeline_tasks.core.config import PipelineConfig
from pipeline_tasks.core.errors import ConfigError, DeployRejected

log = logging.getLogger(__name__)

TARGETS = ("local", "docker")
CANARY_ROWS = 200


@dataclass(frozen=True)
class DeploymentResult:
    deployment_id: str
    model_name: str
    version: str
    target: str
    endpoint: str
    status: str  # live | unchanged
    pid: int | None
    private_port: int | None
    previous_version: str | None
    reason: str
    canary_rows: int
    record_uri: str
    breaking_change: bool = False  # promoted over a breaking input change (forced or approved)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def deploy_version(*, model_name: str, version: str, holdout_uri: str | None,
                   feature_columns: list[str], config: PipelineConfig, reason: str,
                   lineage: dict[str, str] | None = None, target: str = "local",
                   action: str = "deploy", breaking_change: bool = False) -> DeploymentResult:
    """Deploy ``model_name`` v``version`` to ``target`` through the blue/green path.
    ``breaking_change``: its inputs break the previous champion's clients, and a person forced
    or approved it; the deployment record says so."""
    if target not in TARGETS:
        raise ConfigError(f"deployment target {target!r} is not one of {TARGETS}")
    version = str(version)
    if target == "docker":
        return _deploy_docker(model_name=model_name, version=version, holdout_uri=holdout_uri,
                              feature_columns=feature_columns, config=config, reason=reason,
                              lineage=lineage, action=action, breaking_change=breaking_change)
    from pipeline_tasks.deploy.local import SupervisorClient, SupervisorError

    supervisor = SupervisorClient(config)
    status = supervisor.ensure_running()
    live = status.get("active")
    previous = live["version"] if live and live["model"] == model_name else None
    record = {
        "deployment_id": uuid.uuid4().hex[:12], "action": action, "model_name": model_name,
        "version": version, "target": target, "endpoint": status["stable_url"],
        "previous": ({"model_name": live["model"], "version": live["version"],
                      "pid": live["pid"]} if live else None),
        "reason": reason, "lineage": lineage or {}, "breaking_change": breaking_change,
        "started_at": datetime.now(UTC).isoformat(),
    }
    if live and live["model"] == model_name and live["version"] == version:
        record.update(status="unchanged", pid=live["pid"], private_port=live["private_port"],
                      canary_rows=0, outcome=f"v{version} is already live")
        return _result(record, config)

    try:
        # owner: if this task is killed before the switch, the supervisor stops the candidate
        child = supervisor.call("start", model=model_name, version=version,
                                owner=os.getpid())["child"]
    except SupervisorError as exc:
        _fail(record, config, f"v{version} did not start: {exc}")
    record.update(pid=child["pid"], private_port=child["private_port"])
    try:
        rows = canary_check(child["private_url"], model_name, version, holdout_uri,
                            feature_columns, config)
    except DeployRejected as exc:
        supervisor.call("stop", pid=child["pid"])
        _fail(record, config, f"v{version} failed validation: {exc}")
    record["canary_rows"] = rows
    try:
        supervisor.call("activate", pid=child["pid"])
    except SupervisorError as exc:
        supervisor.call("stop", pid=child["pid"])
        _fail(record, config, f"v{version} could not take the endpoint: {exc}")
    served = _get_json(record["endpoint"] + "/metadata")
    if not served or served.get("model_version") != version:
        # the old server was stopped at the switch: start it again, so something serves
        back = _reactivate(supervisor, live) if live else "nothing served before it"
        _fail(record, config, f"the endpoint does not report v{version} after the switch "
                              f"(it answered {served and served.get('model_version')}); {back}")
    record.update(status="live", outcome=f"v{version} is live on {record['endpoint']}")
    result = _result(record, config)
    _tag_versions(model_name, version, previous, record, config)
    return result


def _deploy_docker(*, model_name, version, holdout_uri, feature_columns, config, reason,
                   lineage, action, breaking_change=False) -> DeploymentResult:
    """The docker target (``deploy.docker``): image per version, validated on the side."""
    from pipeline_tasks.deploy.docker import deploy_docker
    from pipeline_tasks.deploy.docker import stable_name as docker_router_name

    record = {
        "deployment_id": uuid.uuid4().hex[:12], "action": action, "model_name": model_name,
        "version": version, "target": "docker", "endpoint": config.serving_url,
        "previous": None, "reason": reason, "lineage": lineage or {},
        "breaking_change": breaking_change, "started_at": datetime.now(UTC).isoformat(),
    }
    try:
        done = deploy_docker(config, model_name, version, holdout_uri, feature_columns)
    except DeployRejected as exc:
        _fail(record, config, f"v{version} was not deployed: {exc}")
    previous = done.previous
    record.update(
        status=done.status, canary_rows=done.canary_rows, pid=None, private_port=None,
        previous=({"model_name": previous.get("model_name"), "version": previous.get("version"),
                   "container": previous.get("name"), "image": previous.get("image")}
                  if previous else None),
        container={"id": done.container.id, "name": done.container.name,
                   "host_port": done.container.host_port},
        image={"tag": done.image.tag, "id": done.image.image_id,
               "model_sha256": done.image.digest},
        router=docker_router_name(config),
        outcome=(f"v{version} is already live" if done.status == "unchanged" else
                 f"v{version} is live on {config.serving_url} (container {done.container.name}, "
                 f"image {done.image.tag})"))
    result = _result(record, config)
    if done.status == "live":
        before = previous.get("version") if previous and \
            previous.get("model_name") == model_name else None
        _tag_versions(model_name, version, before, record, config)
    return result


def _reactivate(supervisor, live: dict) -> str:
    """Start ``live`` (the version that served before a failed switch) and put it back on the
    stable endpoint. Returns what happened, for the deployment record."""
    from pipeline_tasks.deploy.local import SupervisorError

    try:
        child = supervisor.call("start", model=live["model"], version=live["version"],
                                owner=os.getpid())["child"]
        supervisor.call("activate", pid=child["pid"])
    except SupervisorError as exc:
        log.error("could not restore %s v%s: %s", live["model"], live["version"], exc)
        return f"restoring {live['model']} v{live['version']} failed too: {exc}"
    return f"{live['model']} v{live['version']} serves again"


def deployments_uri(model_name: str, config: PipelineConfig) -> str:
    """``lake/deployments/<model>``; a name that is not one plain path segment is refused."""
    if not model_name or layout.safe_name(model_name) != model_name or \
            model_name.startswith("."):
        raise ConfigError(f"model name {model_name!r} cannot name a folder: letters, digits, "
                          "'.', '_', '-' only")
    return storage.join(config.lake_uri, "deployments", model_name)


def deployment_history(model_name: str, config: PipelineConfig) -> list[dict]:
    """Every recorded deployment attempt of ``model_name``, oldest first."""
    root = deployments_uri(model_name, config)
    fs, path = storage.url_to_fs(root)
    if not fs.exists(path):
        return []
    records = [json.loads(fs.cat_file(p)) for p in fs.glob(path.rstrip("/") + "/*.json")]
    return sorted(records, key=lambda r: (r.get("finished_at") or "", r["deployment_id"]))


def rollback(*, model_name: str, to: str, config: PipelineConfig, reason: str,
             lineage: dict[str, str] | None = None) -> DeploymentResult:
    """Move ``champion`` back to ``to`` (a version number, or ``previous``: the version live
    before the current one) and deploy it through the same blue/green path."""
    if not reason or not reason.strip():
        raise ConfigError("a rollback needs a reason (who and why)")
    to = str(to).strip() or "previous"
    live = [r["version"] for r in deployment_history(model_name, config)
            if r.get("status") == "live"]
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
    longer answers (a killed supervisor takes its model servers with it). For each port, the
    newest live local deployment names the model and version; if ``/metadata`` does not report
    them, that version is deployed again through the same blue/green path (``restore``).
    Returns one entry per endpoint: what was expected, what answered, what was done."""
    fs, root = storage.url_to_fs(storage.join(config.lake_uri, "deployments"))
    if not fs.exists(root):
        return []
    newest: dict[int, dict] = {}
    for folder in fs.ls(root, detail=False):
        model = folder.rstrip("/").rpartition("/")[2]
        for record in deployment_history(model, config):
            port = urllib.parse.urlsplit(record.get("endpoint") or "").port
            if record.get("status") == "live" and record.get("target") == "local" and port and (
                    port not in newest or record["finished_at"] > newest[port]["finished_at"]):
                newest[port] = record
    report = []
    for port, record in sorted(newest.items()):
        here = config.with_overrides(serving_port=port)
        answer = http.try_json(here.serving_url + "/metadata", timeout=5) or {}
        entry = {"endpoint": here.serving_url, "model_name": record["model_name"],
                 "version": record["version"], "answered": answer.get("model_version")}
        if (answer.get("model_name"), answer.get("model_version")) == (record["model_name"],
                                                                      record["version"]):
            report.append({**entry, "action": "none"})
            continue
        log.error("%s should serve %s v%s but answers %s: restoring it", here.serving_url,
                  record["model_name"], record["version"], answer or "nothing")
        try:
            holdout_uri, features = version_inputs(record["model_name"], record["version"],
                                                   here)
            done = deploy_version(model_name=record["model_name"], version=record["version"],
                                  holdout_uri=holdout_uri, feature_columns=features, config=here,
                                  reason="restored: the endpoint no longer served the live "
                                         "version", lineage=record.get("lineage"),
                                  action="restore")
            report.append({**entry, "action": "restored", "status": done.status})
        except (DeployRejected, OSError) as exc:
            log.error("could not restore %s: %s", here.serving_url, exc)
            report.append({**entry, "action": "failed", "error": str(exc)})
    return report


def serving_place(model_name: str, config: PipelineConfig) -> dict[str, Any]:
    """``serving_target`` and ``serving_port`` of the model's last live deployment ({} if it was
    never deployed)."""
    live = [r for r in deployment_history(model_name, config) if r.get("status") == "live"]
    if not live:
        return {}
    port = urllib.parse.urlsplit(live[-1].get("endpoint") or "").port
    return {"serving_target": live[-1].get("target"), "serving_port": port}


def version_inputs(model_name: str, version: str, config: PipelineConfig):
    """The holdout of the version's training run and its input columns (from the model's
    signature), for the canary and for monitoring."""
    tracking.configure_mlflow(config)
    from mlflow.models import get_model_info
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    mv = client.get_model_version(model_name, version)
    holdout_uri = client.get_run(mv.run_id).data.tags.get("holdout_uri") if mv.run_id else None
    signature = get_model_info(f"models:/{model_name}/{version}").signature
    return holdout_uri, signature.inputs.input_names()


def canary_check(url: str, model_name: str, version: str, holdout_uri: str | None,
                 feature_columns: list[str], config: PipelineConfig) -> int:
    """Send holdout rows to ``url``; its answers must equal the model's offline predictions."""
    if not holdout_uri:
        raise DeployRejected("no holdout rows to validate with")
    tracking.configure_mlflow(config)
    import numpy as np

    from pipeline_tasks.core import model_artifacts

    holdout = storage.read_parquet(holdout_uri)
    missing = [c for c in feature_columns if c not in holdout.columns]
    if missing:
        raise DeployRejected(f"holdout {holdout_uri} lacks column(s) {missing}")
    frame = holdout[feature_columns].head(CANARY_ROWS)
    try:  # the sha256 recorded at registration, skops with trusted types, as the server does
        offline = model_artifacts.load_verified(f"models:/{model_name}/{version}").model
    except model_artifacts.ModelRefused as exc:
        raise DeployRejected(f"canary: {exc}") from exc
    expected = offline.predict(frame).tolist()
    body = {"columns": {c: json_values(frame[c]) for c in feature_columns}}
    answer = _post_json(url + "/predict", body)
    if answer is None or "predictions" not in answer:
        raise DeployRejected(f"POST {url}/predict gave no predictions: {answer}")
    got = answer["predictions"]
    if len(got) != len(expected):
        raise DeployRejected(f"{len(got)} predictions for {len(expected)} canary rows")
    if isinstance(expected[0], float):
        same = np.allclose(np.asarray(got, dtype=float), np.asarray(expected, dtype=float),
                           rtol=1e-9, atol=1e-9)
    else:
        same = [str(g) for g in got] == [str(e) for e in expected]
    if not same:
        differ = sum(str(g) != str(e) for g, e in zip(got, expected, strict=True))
        raise DeployRejected(f"{differ} of {len(expected)} canary predictions differ from the "
                             "model's offline predictions")
    log.info("canary: %d holdout rows predicted as offline by %s", len(expected), url)
    return len(expected)


def json_values(column) -> list:
    """A column as JSON-ready values: None for missing, ISO strings for date-times."""
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(column):
        return [None if pd.isna(v) else v.isoformat() for v in column]
    values = column.astype(object).where(column.notna(), None).tolist()
    return [v.item() if hasattr(v, "item") else v for v in values]


def _post_json(url: str, body: dict) -> dict | None:
    return http.try_json(url, body, headers=http.serving_headers())


def _get_json(url: str) -> dict | None:
    for _ in range(20):
        answer = http.try_json(url, headers=http.serving_headers())
        if answer is not None:
            return answer
        time.sleep(0.25)
    return None


def _record_uri(record: dict, config: PipelineConfig) -> str:
    stamp = record["started_at"].replace(":", "").replace("-", "")[:15]
    name = f"{stamp}-v{record['version']}-{record['deployment_id']}.json"
    return storage.join(deployments_uri(record["model_name"], config), name)


def _write(record: dict, config: PipelineConfig) -> str:
    record["finished_at"] = datetime.now(UTC).isoformat()
    uri = _record_uri(record, config)
    storage.atomic_write_json(uri, record)
    return uri


def _fail(record: dict, config: PipelineConfig, why: str) -> NoReturn:
    record.update(status="failed", outcome=why)
    uri = _write(record, config)
    log.error("deployment of %s v%s failed; the previous version keeps serving: %s",
              record["model_name"], record["version"], why)
    raise DeployRejected(why, result={"record_uri": uri})


def _result(record: dict, config: PipelineConfig) -> DeploymentResult:
    uri = _write(record, config)
    log.info("%s: %s", record["action"], record["outcome"])
    previous = record["previous"]
    return DeploymentResult(
        deployment_id=record["deployment_id"], model_name=record["model_name"],
        version=record["version"], target=record["target"], endpoint=record["endpoint"],
        status=record["status"], pid=record.get("pid"), private_port=record.get("private_port"),
        previous_version=previous["version"] if previous and
        previous["model_name"] == record["model_name"] else None,
        reason=record["reason"], canary_rows=record.get("canary_rows", 0), record_uri=uri,
        breaking_change=bool(record.get("breaking_change")))


def _tag_versions(model_name: str, version: str, previous: str | None, record: dict,
                  config: PipelineConfig) -> None:
    tracking.configure_mlflow(config)
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    tags = {
        "deployment_status": "live",
        "deployment_id": record["deployment_id"],
        "deployment_target": record["target"],
        "deployment_endpoint": record["endpoint"],
        "deployment_pid": "" if record.get("pid") is None else str(record["pid"]),
        "deployment_container": (record.get("container") or {}).get("name", ""),
        "deployment_image": (record.get("image") or {}).get("tag", ""),
        "deployed_at": record["finished_at"],
        "deployment_reason": record["reason"][:4000],
    }
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, key, value)
    if previous and previous != version:
        client.set_model_version_tag(model_name, previous, "deployment_status",
                                     f"replaced by v{version}")
