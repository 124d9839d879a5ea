"""Blue/green deploys on the local target, for real: supervisor, server processes, HTTP."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline_tasks.core import http, storage
from pipeline_tasks.core.errors import DeployRejected
from pipeline_tasks.deploy.bluegreen import deploy_version
from pipeline_tasks.deploy.canary import canary_check
from pipeline_tasks.deploy.local import SupervisorClient

MODEL = "flights_serving"  # registered (v1, champion) by conftest.py


@pytest.fixture(scope="module")
def config(serving_config):
    return serving_config.with_overrides(serving_port=http.free_port())


@pytest.fixture(scope="module")
def supervisor(config):
    client = SupervisorClient(config)
    yield client
    status = client.call("status") if client.running() else None
    client.shutdown()
    pids = [] if status is None else [status["pid"]] + [
        c["pid"] for c in ([status["active"]] if status["active"] else []) + status["candidates"]]
    for pid in pids:  # nothing is left behind
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().split()[2] == "Z"


@pytest.fixture(scope="module")
def second(flights_frame, train_and_register, config, registered):
    """v2: trained on other rows, so its predictions differ from v1's."""
    trained, registration = train_and_register(
        flights_frame.sample(frac=0.6, random_state=3), "serving-2", config, blessed=False,
        champion_version="1")
    assert registration.version == "2"
    return trained


def served_version(config) -> str:
    return http.fetch_json(config.serving_url + "/metadata", timeout=10)["model_version"]


def predict(config, rows) -> dict:
    return http.fetch_json(config.serving_url + "/predict", {"records": rows}, timeout=10)


def deploy(config, trained, version, reason="test"):
    return deploy_version(model_name=MODEL, version=version, holdout_uri=trained.holdout_uri,
                          feature_columns=trained.feature_columns, config=config, reason=reason,
                          lineage={"airflow.run_id": "test"})


def test_first_deploy_serves_the_version_on_the_stable_endpoint(supervisor, config, registered,
                                                                 flights_rows):
    result = deploy(config, registered, "1", reason="first deploy")
    assert result.status == "live" and result.previous_version is None
    assert result.endpoint == config.serving_url and result.canary_rows > 0
    assert served_version(config) == "1"
    answer = predict(config, flights_rows.head(5).to_dict(orient="records"))
    assert len(answer["predictions"]) == 5 and answer["model_version"] == "1"
    record = storage.read_json(result.record_uri)
    assert record["status"] == "live" and record["pid"] == result.pid
    assert record["reason"] == "first deploy" and record["lineage"] == {"airflow.run_id": "test"}
    tags = MlflowClient(config.mlflow_tracking_uri).get_model_version(MODEL, "1").tags
    assert tags["deployment_status"] == "live" and tags["deployment_endpoint"] == config.serving_url
    again = deploy(config, registered, "1")
    assert again.status == "unchanged" and again.pid == result.pid


def test_switching_versions_drops_no_request(supervisor, config, registered, second, flights_rows):
    rows = flights_rows.head(3).to_dict(orient="records")
    outcomes: list = []
    stop = threading.Event()

    def hammer():
        while not stop.is_set():
            try:
                outcomes.append(predict(config, rows)["model_version"])
            except Exception as exc:  # noqa: BLE001 (any failure is what we look for)
                outcomes.append(exc)

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        result = deploy(config, second, "2", reason="new version")
        time.sleep(1.0)
    finally:
        stop.set()
        thread.join()
    assert result.status == "live" and result.previous_version == "1"
    failures = [o for o in outcomes if isinstance(o, Exception)]
    assert not failures, failures[:3]
    assert outcomes[0] == "1" and outcomes[-1] == "2"
    assert served_version(config) == "2"
    tags = MlflowClient(config.mlflow_tracking_uri).get_model_version(MODEL, "1").tags
    assert tags["deployment_status"] == "replaced by v2"


def test_a_candidate_that_will_not_start_leaves_the_old_one_serving(supervisor, config, second):
    client = MlflowClient(config.mlflow_tracking_uri)
    client.set_model_version_tag(MODEL, "1", "artifact_sha256", "0" * 64)  # files "changed"
    try:
        with pytest.raises(DeployRejected, match=r"(?s)v1 did not start: .*does not match"):
            deploy(config, second, "1")
    finally:
        from pipeline_tasks.core.model_artifacts import model_digest

        client.set_model_version_tag(MODEL, "1", "artifact_sha256",
                                     model_digest(f"models:/{MODEL}/1"))
    assert served_version(config) == "2"
    assert supervisor.call("status")["candidates"] == []
    failed = [storage.read_json(p.as_uri()) for p in storage.local_path(
        storage.join(config.lake_uri, "deployments", MODEL)).glob("*-v1-*.json")]
    assert any(r["status"] == "failed" and "did not start" in r["outcome"] for r in failed)


def test_wrong_predictions_fail_the_canary(supervisor, config, registered, second):
    live_v2 = config.serving_url  # serves v2; claim it is v1: its answers differ from v1 offline
    with pytest.raises(DeployRejected, match="canary predictions differ"):
        canary_check(live_v2, MODEL, "1", registered.holdout_uri, registered.feature_columns,
                     config)


def test_the_live_server_is_restarted_when_it_dies(supervisor, config):
    pid = supervisor.call("status")["active"]["pid"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        active = supervisor.call("status")["active"]
        if active and active["pid"] != pid:
            break
        time.sleep(0.5)
    assert active["pid"] != pid and active["models"][MODEL] == "2"
    assert served_version(config) == "2"


def test_rollback_restores_the_previous_versions_predictions(supervisor, config, registered,
                                                            flights_rows):
    from pipeline_tasks.deploy.bluegreen import deployment_history, rollback

    rows = flights_rows.head(50).to_dict(orient="records")
    before = predict(config, rows)
    assert before["model_version"] == "2"
    v1_offline = mlflow_predict(config, "1", flights_rows.head(50))
    with pytest.raises(Exception, match="needs a reason"):
        rollback(model_name=MODEL, to="previous", config=config, reason=" ")
    result = rollback(model_name=MODEL, to="previous", config=config, reason="ops: v2 misbehaves")
    assert result.status == "live" and result.version == "1" and result.previous_version == "2"
    after = predict(config, rows)
    assert after["model_version"] == "1" and after["predictions"] == v1_offline
    assert after["predictions"] != before["predictions"]
    client = MlflowClient(config.mlflow_tracking_uri)
    assert str(client.get_registered_model(MODEL).aliases["champion"]) == "1"
    assert client.get_model_version(MODEL, "1").tags["promotion_reason"] == \
        "rollback to v1: ops: v2 misbehaves"
    last = deployment_history(MODEL, config)[-1]
    assert last.action == "rollback" and last.status == "live"
    assert last.previous["version"] == "2"
    # "previous" now means v2 again: a rollback can be undone the same way
    assert rollback(model_name=MODEL, to="previous", config=config,
                    reason="undo").version == "2"


def mlflow_predict(config, version, rows):
    import mlflow.sklearn

    from pipeline_tasks.core import tracking

    tracking.configure_mlflow(config)
    model = mlflow.sklearn.load_model(f"models:/{MODEL}/{version}")
    return model.predict(rows.infer_objects().fillna(value=float("nan"))).tolist()


def test_a_failed_rollback_changes_nothing(supervisor, config):
    """The rolled-back-to version is refused (its files changed): the champion alias stays on
    the version that keeps serving, as the rollback DAG promises."""
    from pipeline_tasks.core.model_artifacts import model_digest
    from pipeline_tasks.deploy.bluegreen import rollback

    client = MlflowClient(config.mlflow_tracking_uri)
    serving = served_version(config)
    other = "1" if serving == "2" else "2"
    assert str(client.get_registered_model(MODEL).aliases["champion"]) == serving
    client.set_model_version_tag(MODEL, other, "artifact_sha256", "0" * 64)  # files "changed"
    try:
        with pytest.raises(DeployRejected, match=f"(?s)v{other}.*champion restored to "
                                                 f"v{serving}"):
            rollback(model_name=MODEL, to=other, config=config, reason="ops: try the other")
    finally:
        client.set_model_version_tag(MODEL, other, "artifact_sha256",
                                     model_digest(f"models:/{MODEL}/{other}"))
    assert served_version(config) == serving
    assert str(client.get_registered_model(MODEL).aliases["champion"]) == serving
    assert client.get_model_version(MODEL, other).tags["promotion_status"] == "deploy_failed"


def test_a_deployer_killed_while_its_candidate_starts_leaks_no_server(supervisor, config):
    """The deploy task is killed (SIGKILL, a lost worker) while its candidate starts: the
    supervisor stops the candidate, whose deployer is gone, instead of keeping it until
    shutdown."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from pipeline_tasks.core.config import load_config\n"
            "from pipeline_tasks.deploy.local import SupervisorClient\n"
            f"config = load_config(home={config.home!r}, serving_port={config.serving_port})\n"
            "import os\n"
            f"SupervisorClient(config).call('start', models={{{MODEL!r}: '1'}},"
            " owner=os.getpid())\n")
    deployer = subprocess.Popen([sys.executable, "-c", code], env={**os.environ})
    deadline = time.monotonic() + 60
    while not supervisor.call("status")["candidates"]:  # the candidate is starting
        assert deployer.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    deployer.kill()
    deployer.wait()
    [candidate] = supervisor.call("status")["candidates"]
    assert candidate["owner"] == deployer.pid
    deadline = time.monotonic() + 60
    while supervisor.call("status")["candidates"]:
        assert time.monotonic() < deadline, "the orphaned candidate was never stopped"
        time.sleep(0.5)
    stat = Path(f"/proc/{candidate['pid']}/stat")
    assert not stat.exists() or stat.read_text().split()[2] == "Z"
    assert served_version(config) == supervisor.call("status")["active"]["models"][MODEL]


def test_a_killed_supervisor_is_noticed_and_its_live_version_restored(supervisor, config):
    """SIGKILL to the supervisor takes its model servers with it; the serving check (run by
    ``make demo`` every few seconds, and ``python -m pipeline_tasks serving-check``) brings
    back the version the deployment records and the registry name as live."""
    from pipeline_tasks.deploy.bluegreen import restore_serving

    status = supervisor.call("status")
    live = status["active"]["models"][MODEL]
    assert restore_serving(config) == [{"endpoint": config.serving_url, "model_name": MODEL,
                                        "version": live, "answered": live, "action": "none"}]
    os.kill(status["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while http.try_json(config.serving_url + "/metadata", timeout=2) is not None:
        assert time.monotonic() < deadline, "the model server outlived its supervisor"
        time.sleep(0.2)
    [entry] = restore_serving(config)
    assert (entry["action"], entry["status"], entry["answered"]) == ("restored", "live", None)
    assert served_version(config) == live
    client = MlflowClient(config.mlflow_tracking_uri)
    assert str(client.get_registered_model(MODEL).aliases["champion"]) == live


def test_a_switch_the_endpoint_does_not_confirm_puts_the_old_version_back(supervisor, config,
                                                                         registered, second,
                                                                         monkeypatch):
    """After the switch, the endpoint does not report the new version (here: /metadata says
    otherwise once): the deploy fails, and the version that served before serves again."""
    from pipeline_tasks.deploy import local_target as deploy_module

    live = served_version(config)
    other = "1" if live == "2" else "2"
    real = deploy_module._get_json
    answers = iter([{"model_version": "9"}])
    monkeypatch.setattr(deploy_module, "_get_json",
                        lambda url: next(answers, None) or real(url))
    trained = registered if other == "1" else second
    with pytest.raises(DeployRejected, match=f"does not report v{other} after the switch.*"
                                             f"{MODEL} v{live} serves again"):
        deploy(config, trained, other)
    assert served_version(config) == live
    assert supervisor.call("status")["active"]["models"][MODEL] == live
    assert supervisor.call("status")["candidates"] == []


@pytest.mark.parametrize("name", ["../../etc", "a/b", ".hidden", ""])
def test_a_traversal_model_name_never_reaches_a_path(config, name):
    from pipeline_tasks.core.errors import ConfigError
    from pipeline_tasks.deploy.bluegreen import deployment_history, rollback

    with pytest.raises(ConfigError, match="cannot name a folder"):
        deployment_history(name, config)
    with pytest.raises(ConfigError, match="cannot name a folder"):
        rollback(model_name=name, to="1", config=config, reason="security test")


# -- several models behind one endpoint (last: the tests above assume flights alone) ---------

OTHER = "diamonds_serving"  # registered (v1) by conftest.py, with columns of its own


def test_a_second_model_joins_the_endpoint_and_switches_leave_it_alone(
        supervisor, config, registered, second, other_registered, other_rows, flights_rows):
    live = served_version(config)
    added = deploy_version(model_name=OTHER, version="1",
                           holdout_uri=other_registered.holdout_uri,
                           feature_columns=other_registered.feature_columns, config=config,
                           reason="a second model", lineage={})
    assert added.status == "live" and added.previous_version is None
    assert added.models == {MODEL: live, OTHER: "1"}  # flights first: still the default
    assert served_version(config) == live and predict(config, flights_rows.head(2).to_dict(
        orient="records"))["model_name"] == MODEL
    ready = http.fetch_json(config.serving_url + "/ready")
    assert ready["models"] == {MODEL: live, OTHER: "1"}
    other_url = config.serving_url + f"/models/{OTHER}/predict"
    diamonds = other_rows.head(3).to_dict(orient="records")
    assert http.fetch_json(other_url, {"records": diamonds})["model_version"] == "1"

    # switch flights while clients call both models by name: no failure, diamonds untouched
    flights = flights_rows.head(3).to_dict(orient="records")
    flights_url = config.serving_url + f"/models/{MODEL}/predict"
    outcomes: dict[str, list] = {MODEL: [], OTHER: []}
    stop = threading.Event()

    def hammer(model: str, url: str, rows: list) -> None:
        while not stop.is_set():
            try:
                outcomes[model].append(http.fetch_json(url, {"records": rows},
                                                       timeout=10)["model_version"])
            except Exception as exc:  # noqa: BLE001 (any failure is what we look for)
                outcomes[model].append(exc)

    threads = [threading.Thread(target=hammer, args=(MODEL, flights_url, flights)),
               threading.Thread(target=hammer, args=(OTHER, other_url, diamonds))]
    for thread in threads:
        thread.start()
    other_version = "1" if live == "2" else "2"
    try:
        switched = deploy(config, registered if other_version == "1" else second,
                          other_version, reason="switch flights only")
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert switched.status == "live" and switched.previous_version == live
    assert switched.models == {MODEL: other_version, OTHER: "1"}
    failures = [o for calls in outcomes.values() for o in calls if isinstance(o, Exception)]
    assert not failures, failures[:3]
    assert set(outcomes[OTHER]) == {"1"} and len(outcomes[OTHER]) > 10
    assert outcomes[MODEL][0] == live and outcomes[MODEL][-1] == other_version
    # the second model's records and tags never saw the flights switch
    history = [r for r in deployment_history_of(OTHER, config) if r.status == "live"]
    assert [r.version for r in history] == ["1"]


def test_a_rejected_candidate_for_one_model_changes_no_model(supervisor, config, registered,
                                                              second):
    before = http.fetch_json(config.serving_url + "/ready")["models"]
    pid = supervisor.call("status")["active"]["pid"]
    wrong = second if before[MODEL] == "2" else registered  # the other version's holdout rows
    version = "1" if before[MODEL] == "2" else "2"
    with pytest.raises(DeployRejected, match="failed validation"):
        deploy_version(model_name=MODEL, version=version, holdout_uri=wrong.holdout_uri,
                       feature_columns=["no_such_column"], config=config, reason="bad",
                       lineage={})
    assert http.fetch_json(config.serving_url + "/ready")["models"] == before
    assert supervisor.call("status")["active"]["pid"] == pid


def deployment_history_of(model: str, config):
    from pipeline_tasks.deploy.records import deployment_history

    return deployment_history(model, config)
