"""The deployment record type and the blue/green orchestrator, without a server: a fake target
shows the order of the steps and what happens on each failure."""

from __future__ import annotations

import json

import pytest

from pipeline_tasks.core import storage
from pipeline_tasks.core.config import load_config
from pipeline_tasks.core.errors import ConfigError, DeployRejected
from pipeline_tasks.deploy import bluegreen
from pipeline_tasks.deploy.records import (
    RESULT_KEYS,
    DeploymentRecord,
    deployment_history,
    deployments_uri,
    serving_place,
    write_record,
)
from pipeline_tasks.deploy.targets import Candidate, Live

#: A record as the local target wrote them before the record type was one.
OLD_LOCAL = {
    "deployment_id": "abc123", "action": "deploy", "model_name": "m", "version": "2",
    "target": "local", "endpoint": "http://127.0.0.1:8123",
    "previous": {"model_name": "m", "version": "1", "pid": 10}, "reason": "promoted",
    "lineage": {"airflow.run_id": "r"}, "breaking_change": False,
    "started_at": "2024-01-02T03:04:05+00:00", "status": "live", "pid": 11,
    "private_port": 40000, "canary_rows": 200, "outcome": "v2 is live on http://127.0.0.1:8123",
    "finished_at": "2024-01-02T03:04:09+00:00"}
#: ... and as the docker target wrote them.
OLD_DOCKER = {
    **OLD_LOCAL, "deployment_id": "def456", "target": "docker", "pid": None,
    "private_port": None,
    "previous": {"model_name": "m", "version": "1", "container": "c1", "image": "i:v1"},
    "container": {"id": "x", "name": "mlops-serving-8123-m-v2-abc", "host_port": 40001},
    "image": {"tag": "mlops-serving/m:v2", "id": "sha256:1", "model_sha256": "f" * 64},
    "router": "mlops-serving-8123"}


@pytest.fixture
def config(tmp_path):
    return load_config(home=str(tmp_path / "home"))


@pytest.mark.parametrize("old", [OLD_LOCAL, OLD_DOCKER], ids=["local", "docker"])
def test_an_old_record_reads_and_writes_back_the_same_keys(old):
    record = DeploymentRecord.from_dict(old, record_uri="file:///x.json")
    assert record.to_dict() == old
    assert record.previous_version == "1" and record.record_uri == "file:///x.json"
    assert DeploymentRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record


def test_a_minimal_record_reads_with_defaults():
    record = DeploymentRecord.from_dict({"deployment_id": "a", "model_name": "m", "version": 3,
                                         "previous": None, "status": "live"})
    assert (record.action, record.version, record.lineage, record.breaking_change) == \
        ("deploy", "3", {}, False)
    assert record.previous_version is None and record.canary_rows is None
    assert "container" not in record.to_dict()


def test_previous_of_another_model_is_no_previous_version():
    record = DeploymentRecord.from_dict({**OLD_LOCAL, "previous": {"model_name": "other",
                                                                   "version": "7"}})
    assert record.previous_version is None


def test_the_stage_result_keeps_its_keys():
    result = DeploymentRecord.from_dict(OLD_DOCKER, record_uri="file:///r.json").to_xcom()
    assert tuple(result) == RESULT_KEYS
    assert result["previous_version"] == "1" and result["record_uri"] == "file:///r.json"
    assert result["canary_rows"] == 200 and result["pid"] is None


def test_records_live_where_they_always_did(config):
    assert deployments_uri("m", config) == storage.join(config.lake_uri, "deployments", "m")
    record = write_record(DeploymentRecord.begin(model_name="m", version="2", target="local",
                                                 endpoint="http://127.0.0.1:8123",
                                                 reason="r").update(status="live"), config)
    stamp = record.started_at.replace(":", "").replace("-", "")[:15]
    assert record.record_uri == storage.join(config.lake_uri, "deployments", "m",
                                             f"{stamp}-v2-{record.deployment_id}.json")
    assert storage.read_json(record.record_uri) == record.to_dict()
    assert record.finished_at
    [again] = deployment_history("m", config)
    assert again == record and again.record_uri == record.record_uri
    assert serving_place("m", config) == {"serving_target": "local", "serving_port": 8123}
    assert serving_place("never", config) == {}


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", ""])
def test_a_name_that_is_not_one_segment_is_refused(config, name):
    with pytest.raises(ConfigError, match="cannot name a folder"):
        deployments_uri(name, config)


class FakeTarget:
    """Records the steps it is driven through; ``fail`` names the step that goes wrong."""

    name = "fake"
    endpoint = "http://127.0.0.1:8123"

    def __init__(self, live: tuple[str, str] | None = ("m", "1"), fail: str = ""):
        self.live, self.fail, self.steps = live, fail, []

    def _step(self, step: str) -> None:
        self.steps.append(step)
        if self.fail == step:
            raise DeployRejected(f"{step} went wrong")

    def prepare(self, model_name, version):
        self._step("prepare")

    def current(self):
        if self.live is None:
            return None
        model, version = self.live
        return Live(model, version, {"model_name": model, "version": version})

    def start_candidate(self, model_name, version, live):
        self._step("start")
        same = live is not None and (live.model_name, live.version) == (model_name, version)
        return Candidate(url="http://candidate", record={"pid": 5, "private_port": 6},
                         unchanged=same)

    def switch(self, candidate):
        self._step("switch")

    def verify(self, candidate, version):
        self.steps.append("verify")
        return "it answered 9" if self.fail == "verify" else None

    def restore(self, live, candidate):
        self.steps.append("restore")
        return "v1 serves again"

    def stop(self, candidate):
        self.steps.append("stop")

    def retire(self, live, candidate):
        self.steps.append("retire")


@pytest.fixture
def deploy(config, monkeypatch):
    canary = {"fail": False}

    def fake_canary(url, *args):
        if canary["fail"]:
            raise DeployRejected("3 of 200 canary predictions differ")
        return 200

    monkeypatch.setattr(bluegreen, "canary_check", fake_canary)
    monkeypatch.setattr(bluegreen, "_tag_versions", lambda record, config: None)

    def run(target, version="2", canary_fails=False):
        canary["fail"] = canary_fails
        return bluegreen.deploy_to(target, model_name="m", version=version, holdout_uri="h",
                                   feature_columns=["a"], config=config, reason="test")
    return run


def test_a_good_deploy_runs_every_step_and_records_it(deploy, config):
    target = FakeTarget()
    record = deploy(target)
    assert target.steps == ["prepare", "start", "switch", "verify", "retire"]
    assert (record.status, record.canary_rows, record.previous_version, record.pid) == \
        ("live", 200, "1", 5)
    assert storage.read_json(record.record_uri)["outcome"] == f"v2 is live on {target.endpoint}"


def test_the_live_version_is_unchanged(deploy):
    target = FakeTarget(live=("m", "2"))
    record = deploy(target)
    assert target.steps == ["prepare", "start"]
    assert (record.status, record.canary_rows, record.outcome) == \
        ("unchanged", 0, "v2 is already live")


@pytest.mark.parametrize("fail, steps, why", [
    ("prepare", ["prepare"], "v2 did not start: prepare went wrong"),
    ("start", ["prepare", "start"], "v2 did not start: start went wrong"),
    ("canary", ["prepare", "start", "stop"], "v2 failed validation: 3 of 200 canary"),
    ("switch", ["prepare", "start", "switch", "stop"],
     "v2 could not take the endpoint: switch went wrong"),
    ("verify", ["prepare", "start", "switch", "verify", "restore"],
     r"the endpoint does not report v2 after the switch \(it answered 9\); v1 serves again"),
])
def test_a_failure_is_recorded_and_the_previous_version_keeps_serving(deploy, config, fail,
                                                                      steps, why):
    target = FakeTarget(fail=fail)
    with pytest.raises(DeployRejected, match=why) as raised:
        deploy(target, canary_fails=fail == "canary")
    assert target.steps == steps
    record = storage.read_json(raised.value.result["record_uri"])
    assert record["status"] == "failed"
    # what served is known once the target is prepared (a docker image that does not build
    # fails before the router is asked)
    assert record["previous"] == (None if fail == "prepare" else {"model_name": "m",
                                                                  "version": "1"})


def test_an_infrastructure_error_after_the_switch_restores_and_propagates(deploy):
    target = FakeTarget()
    target.verify = lambda candidate, version: (_ for _ in ()).throw(OSError("engine gone"))
    with pytest.raises(OSError, match="engine gone"):
        deploy(target)
    assert target.steps == ["prepare", "start", "switch", "restore"]


def test_an_unknown_target_is_a_config_error(config):
    with pytest.raises(ConfigError, match="is not one of"):
        bluegreen.make_target("kubernetes", config)


def test_one_deployment_at_a_time_per_endpoint(deploy, config):
    """A deployment holds its endpoint's lock from ``prepare`` to the end: another one on the
    same endpoint (a second model, say, whose candidate would be built on the same live set)
    waits; one on another port does not."""
    import threading

    from pipeline_tasks.core.locks import LockTimeout, named_lock

    seen: dict[str, object] = {}

    class Probe(FakeTarget):
        def prepare(self, model_name, version):
            super().prepare(model_name, version)
            for port in (8123, 8124):  # from another thread: another holder, as another task
                name = f"serving-endpoint-fake-{config.serving_host}-{port}"
                worker = threading.Thread(target=self._try, args=(name, port))
                worker.start()
                worker.join()

        def _try(self, name, port):
            try:
                with named_lock(config.with_overrides(serving_port=port), name, timeout=0.2):
                    seen[str(port)] = "free"
            except LockTimeout:
                seen[str(port)] = "held"

    config_port = config.with_overrides(serving_port=8123)
    target = Probe()
    bluegreen.deploy_to(target, model_name="m", version="2", holdout_uri="h",
                        feature_columns=["a"], config=config_port, reason="test")
    assert seen == {"8123": "held", "8124": "free"}
    with named_lock(config_port, f"serving-endpoint-fake-{config.serving_host}-8123",
                    timeout=0.2):
        pass  # released once the deployment is done
