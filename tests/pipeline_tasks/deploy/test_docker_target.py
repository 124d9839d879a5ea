"""The docker serving target, for real: a Docker engine, an image per version, containers, HTTP.

If no engine answers, ``docker/engine.sh`` starts one and ``docker/base-image.sh`` makes the
local base image (Docker Hub cannot be reached from every machine).
"""

from __future__ import annotations

import tempfile
import threading
import time
import urllib.error
from pathlib import Path

import mlflow.sklearn
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from pipeline_tasks.core import http, storage
from pipeline_tasks.core.errors import DeployRejected
from pipeline_tasks.deploy import docker_container as dc
from pipeline_tasks.deploy import docker_image as di
from pipeline_tasks.deploy import docker_router as dr
from pipeline_tasks.deploy.bluegreen import deploy_to, deploy_version
from pipeline_tasks.deploy.canary import version_inputs
from pipeline_tasks.deploy.docker_target import DockerTarget

MODEL = "flights_serving"  # registered (v1, champion) by conftest.py


@pytest.fixture(scope="module")
def client(docker_engine):
    client = di.docker_client()
    yield client
    for container in client.containers.list(all=True, filters={"label": di.LABEL_ROLE}):
        if container.name.startswith(("mlops-test-", f"mlops-serving-{_PORT[0]}")):
            container.remove(force=True)
    client.close()


_PORT: list[int] = [0]


@pytest.fixture(scope="module")
def config(serving_config):
    _PORT[0] = http.free_port()
    return serving_config.with_overrides(serving_port=_PORT[0])


@pytest.fixture(scope="module")
def image(client, config, registered):
    started = time.monotonic()
    info = di.build_image(config, MODEL, "1", client=client)
    print(f"first build: {time.monotonic() - started:.1f} s")
    yield info
    _rmi(client, info.tag)


def _rmi(client, tag: str) -> None:
    import docker.errors

    try:
        client.images.remove(tag, force=True)
    except docker.errors.ImageNotFound:
        pass


def _deploy_docker(config, version, holdout, features, *, client):
    """Blue/green onto the docker target (the orchestrator, with the test's engine client)."""
    return deploy_to(DockerTarget(config, client=client), model_name=MODEL, version=version,
                     holdout_uri=holdout, feature_columns=features, config=config,
                     reason="docker target test")


def _records(frame: pd.DataFrame) -> list[dict]:
    return frame.to_dict(orient="records")


def test_tag_follows_docker_rules():
    assert di.image_tag("Flights Is__Late!", "12") == "mlops-serving/flights-is-late:v12"
    assert di.image_tag("flights_is_late", "3") == "mlops-serving/flights_is_late:v3"


def test_the_package_wheel_holds_the_serving_package_only(tmp_path):
    """The image gets the server and what it imports (core), no pipeline steps or tooling; every
    ``pipeline_tasks`` module a packaged module imports is packaged too."""
    import ast
    import zipfile

    wheel = di._package_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {n for n in names if n.startswith("pipeline_tasks/")}
    assert {"pipeline_tasks/__init__.py", "pipeline_tasks/serving/__main__.py",
            "pipeline_tasks/serving/router.py", "pipeline_tasks/core/config.py"} <= modules
    outside = sorted(n for n in modules if n != "pipeline_tasks/__init__.py" and not
                     n.startswith(("pipeline_tasks/core/", "pipeline_tasks/serving/")))
    assert outside == []
    with zipfile.ZipFile(wheel) as zf:
        for name in sorted(n for n in modules if n.endswith(".py")):
            for node in ast.walk(ast.parse(zf.read(name))):
                imported = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                            [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                for module in (m for m in imported if m.startswith("pipeline_tasks.")):
                    path = module.replace(".", "/")
                    assert f"{path}.py" in names or f"{path}/__init__.py" in names, \
                        f"{name} imports {module}, which the wheel lacks"
    # the same bytes for the same source: docker's layer cache holds
    assert di._package_wheel(tmp_path / "again").read_bytes() == wheel.read_bytes()


def test_image_bakes_the_verified_model(client, image, config, registered):
    attrs = client.images.get(image.tag).attrs
    labels = attrs["Config"]["Labels"]
    assert labels[di.LABEL_NAME] == MODEL and labels[di.LABEL_VERSION] == "1"
    assert labels[di.LABEL_RUN_ID] == registered.run_id
    assert labels[di.LABEL_SHA256] == image.digest and len(image.digest) == 64
    assert attrs["Config"]["User"] == "10001:10001"
    assert attrs["Config"]["Healthcheck"]["Test"][0] == "CMD"
    assert "/ready" in " ".join(attrs["Config"]["Healthcheck"]["Test"])
    print(f"image size: {attrs['Size'] / 1e6:.0f} MB")
    # idempotent: the same version is not built again
    started = time.monotonic()
    again = di.build_image(config, MODEL, "1", client=client)
    assert again.image_id == image.image_id
    assert time.monotonic() - started < 20


def test_container_serves_the_model_offline_predictions(client, image, config, registered,
                                                        flights_rows):
    port = http.free_port()
    info = dc.run_container(config, image, "mlops-test-serve", port, client=client)
    try:
        assert info.url == f"http://127.0.0.1:{port}"
        frame = flights_rows.head(200)
        answer = http.fetch_json(info.url + "/predict", {"records": _records(frame)})
        offline = mlflow.sklearn.load_model(registered.model_uri)
        model_frame = frame.infer_objects().fillna(value=float("nan"))
        assert answer["predictions"] == offline.predict(model_frame).tolist()
        assert answer["scores"] == pytest.approx(
            offline.predict_proba(model_frame)[:, 1].tolist(), abs=1e-12)
        assert answer["model_name"] == MODEL and answer["model_version"] == "1"

        meta = http.fetch_json(info.url + "/metadata")
        assert meta["model_version"] == "1" and meta["run_id"] == registered.run_id
        assert meta["artifact_sha256"] == image.digest
        assert meta["dataset_version"] == "sha-serving"

        container = client.containers.get(info.id)
        host = container.attrs["HostConfig"]
        assert host["Memory"] == 1024 ** 3
        assert host["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
        assert host["PortBindings"]["8000/tcp"] == [{"HostIp": "127.0.0.1",
                                                     "HostPort": str(port)}]
        top = container.top(ps_args="-o pid,uid,args")["Processes"]
        assert all(p[1] != "0" for p in top), top  # nothing runs as root
        _assert_hardened(container)

        # the prediction log lands in the host's lake
        # (other tests' servers log to the same lake: wait for this request's rows)
        lake = storage.local_path(config.predictions_uri)
        deadline = time.monotonic() + 30
        logged_ids: set = set()
        while time.monotonic() < deadline and answer["request_id"] not in logged_ids:
            time.sleep(0.5)
            files = sorted(lake.glob("date=*/part-*.parquet"))
            logged_ids = set(pd.concat(pd.read_parquet(f) for f in files)["request_id"]) \
                if files else set()
        assert answer["request_id"] in logged_ids, f"request not in the prediction log {lake}"
        # ... written without opening the folder to everyone
        _assert_not_world_writable(lake)

        # docker's own HEALTHCHECK (GET /ready inside the container) says healthy
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            container.reload()
            if container.attrs["State"]["Health"]["Status"] == "healthy":
                break
            time.sleep(0.5)
        assert container.attrs["State"]["Health"]["Status"] == "healthy"
    finally:
        dc.stop_container(info.id, client=client)
    assert not client.containers.list(all=True, filters={"name": "mlops-test-serve"})


def _assert_hardened(container) -> None:
    """Read-only root filesystem (a private tmpfs /tmp), no capabilities, no-new-privileges."""
    host = container.attrs["HostConfig"]
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd")
    assert "no-new-privileges" in host["SecurityOpt"]
    assert "/tmp" in (host.get("Tmpfs") or {})
    assert not host.get("Privileged")


def _assert_not_world_writable(lake: Path) -> None:
    import stat

    for folder in [lake, *lake.glob("date=*")]:
        assert not folder.stat().st_mode & stat.S_IWOTH, (folder, oct(folder.stat().st_mode))


def test_tampered_model_refuses_to_start(client, config, registered):
    tag = "mlops-serving/test-tampered:bad"
    wrong = "0" * 64
    with tempfile.TemporaryDirectory(prefix="mlops-test-ctx-") as tmp:
        context = Path(tmp) / "ctx"
        meta = di.prepare_context(config, MODEL, "1", context)
        di.build_from_context(client, context, tag, {
            "BASE_IMAGE": di.choose_base_image(client), "MODEL_NAME": MODEL,
            "MODEL_VERSION": "1", "MODEL_SHA256": wrong, "MODEL_RUN_ID": meta["run_id"]}, {})
    try:
        container = client.containers.run(tag, name="mlops-test-tampered", detach=True,
                                          labels={di.LABEL_ROLE: "test"})
        try:
            assert container.wait(timeout=120)["StatusCode"] == 2
            logs = container.logs().decode()
            assert "refusing to serve /opt/model" in logs and "does not match" in logs, logs
        finally:
            container.remove(force=True)
        # run_container says why and leaves nothing behind
        with pytest.raises(di.DockerTargetError, match="exited with code 2"):
            dc.run_container(config, tag, "mlops-test-tampered-2", http.free_port(), client=client)
        assert not client.containers.list(all=True, filters={"name": "mlops-test-tampered-2"})
    finally:
        _rmi(client, tag)


@pytest.fixture(scope="module")
def second_version(flights_frame, train_and_register, config, registered):
    _, registration = train_and_register(flights_frame.sample(frac=0.6, random_state=5),
                                         "docker-2", config, blessed=False, champion_version="1")
    return registration.version


def test_blue_green_on_the_stable_port(client, image, config, second_version, flights_rows):
    stable = f"http://127.0.0.1:{config.serving_port}"
    created = [di.image_tag(MODEL, second_version)]  # removed even if the deploy fails
    try:
        holdout, features = version_inputs(MODEL, "1", config)
        first = _deploy_docker(config, "1", holdout, features, client=client)
        created.append(first.image["tag"])
        assert first.status == "live" and first.canary_rows > 0 and first.previous is None
        assert http.fetch_json(stable + "/metadata")["model_version"] == "1"
        router = client.containers.get(dr.stable_name(config))
        assert router.labels[di.LABEL_ROLE] == "router"
        _assert_hardened(router)
        _assert_hardened(client.containers.get(first.container["id"]))
        _assert_not_world_writable(storage.local_path(config.predictions_uri))
        assert router.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
        again = _deploy_docker(config, "1", holdout, features, client=client)
        assert again.status == "unchanged" and again.container["id"] == first.container["id"]

        # clients keep calling the stable port, a new connection each time, through the switch
        row = _records(flights_rows.head(1))
        outcomes: list = []
        stop = threading.Event()

        def hammer():
            while not stop.is_set():
                try:
                    outcomes.append(http.fetch_json(stable + "/predict", {"records": row})["model_version"])
                except Exception as exc:  # noqa: BLE001 (counted as a failed request)
                    outcomes.append(exc)

        thread = threading.Thread(target=hammer)
        thread.start()
        holdout2, features2 = version_inputs(MODEL, second_version, config)
        started = time.monotonic()
        try:
            # through the deploy stage's entry point, as the DAG calls it (serving_target=docker)
            result = deploy_version(model_name=MODEL, version=second_version,
                                    holdout_uri=holdout2, feature_columns=features2,
                                    config=config, target="docker",
                                    reason="docker blue/green test")
            time.sleep(1)
        finally:
            stop.set()
            thread.join()
        print(f"deploy of v{second_version} (build from cached layers): "
              f"{time.monotonic() - started:.1f} s, {len(outcomes)} requests meanwhile")
        failures = [o for o in outcomes if isinstance(o, Exception)]
        assert not failures, failures[:3]
        assert outcomes[0] == "1" and outcomes[-1] == second_version
        second = storage.read_json(result.record_uri)
        created.append(second["image"]["tag"])
        assert result.status == "live" and result.previous_version == "1"
        assert second["router"] == dr.stable_name(config)
        assert second["container"]["name"].startswith(dr.stable_name(config) + "-")
        assert second["previous"]["version"] == "1"
        tags = MlflowClient(config.mlflow_tracking_uri).get_model_version(
            MODEL, second_version).tags
        assert tags["deployment_image"] == second["image"]["tag"]
        assert tags["deployment_container"] == second["container"]["name"]
        assert http.fetch_json(stable + "/metadata")["model_version"] == second_version
        # the old version's container is gone, the new one runs behind the same router
        behind = client.containers.list(all=True, filters={"label": [
            f"{di.LABEL_PORT}={config.serving_port}", f"{di.LABEL_ROLE}=server"]})
        assert [c.name for c in behind] == [second["container"]["name"]]
        assert client.containers.get(dr.stable_name(config)).id == router.id
    finally:
        dr.stop_endpoint(config, client=client)
        for tag in created:
            if tag != di.image_tag(MODEL, "1"):
                _rmi(client, tag)
    with pytest.raises(urllib.error.URLError):
        http.fetch_json(stable + "/ready")
    assert not client.containers.list(all=True, filters={
        "label": f"{di.LABEL_PORT}={config.serving_port}"})


def test_a_failing_candidate_never_takes_the_port(client, image, config, second_version):
    """A candidate that fails validation (here: deployed with a row limit below the canary's 200
    rows, so it refuses the canary) is removed; the live version keeps the port."""
    stable = f"http://127.0.0.1:{config.serving_port}"
    holdout, features = version_inputs(MODEL, "1", config)
    try:
        _deploy_docker(config, "1", holdout, features, client=client)
        before = dr.read_backend(config)
        misconfigured = config.with_overrides(serving_max_rows=1)
        holdout2, features2 = version_inputs(MODEL, second_version, config)
        with pytest.raises(DeployRejected, match="gave no predictions"):
            _deploy_docker(misconfigured, second_version, holdout2, features2,
                             client=client)
        assert dr.read_backend(config) == before
        assert http.fetch_json(stable + "/metadata")["model_version"] == "1"
        behind = client.containers.list(all=True, filters={"label": [
            f"{di.LABEL_PORT}={config.serving_port}", f"{di.LABEL_ROLE}=server"]})
        assert [c.id for c in behind] == [before["container_id"]]
    finally:
        dr.stop_endpoint(config, client=client)
        _rmi(client, di.image_tag(MODEL, second_version))


def test_a_router_from_older_code_is_replaced(client, image, config):
    """After an upgrade that changed router.py, the next deploy replaces the running router,
    which keeps serving the live version."""
    stable = f"http://127.0.0.1:{config.serving_port}"
    holdout, features = version_inputs(MODEL, "1", config)
    current = dr.router_image(client)
    older = current.rsplit(":", 1)[0] + ":0lder0000000"
    client.images.get(current).tag(older)
    try:
        _deploy_docker(config, "1", holdout, features, client=client)
        dc.stop_container(dr.stable_name(config), client=client)
        dr.start_router(config, client, older)  # the router an earlier release left running
        assert http.fetch_json(stable + "/metadata")["model_version"] == "1"

        again = _deploy_docker(config, "1", holdout, features, client=client)
        assert again.status == "unchanged"
        router = client.containers.get(dr.stable_name(config))
        assert router.attrs["Config"]["Image"] == current and router.status == "running"
        assert http.fetch_json(stable + "/metadata")["model_version"] == "1"
    finally:
        dr.stop_endpoint(config, client=client)
        _rmi(client, older)


def test_a_taken_host_port_fails_cleanly(client, image, config):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(di.DockerTargetError, match="did not start"):
            dc.run_container(config, image, "mlops-test-port-taken", port, client=client)
    assert not client.containers.list(all=True, filters={"name": "mlops-test-port-taken"})
