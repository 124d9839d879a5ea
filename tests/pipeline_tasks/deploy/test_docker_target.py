"""The docker serving target, for real: a Docker engine, an image per model set, containers,
HTTP. One container serves the port's whole set of models; a deploy switches one of them.

If no engine answers, ``docker/engine.sh`` starts one and ``docker/base-image.sh`` makes the
local base image (Docker Hub cannot be reached from every machine).
"""

from __future__ import annotations

import json
import re
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
OTHER = "diamonds_serving"  # conftest.py's OTHER_MODEL: a regression on other columns


@pytest.fixture(scope="module")
def client(docker_engine):
    client = di.docker_client()
    yield client
    for container in client.containers.list(all=True, filters={"label": di.LABEL_ROLE}):
        if container.name.startswith(("mlops-test-", f"mlops-serving-{_PORT[0]}")):
            container.remove(force=True)
    # the set images the tests built (reused from test to test, removed once at the end)
    for built in client.images.list(filters={"label": di.LABEL_MODELS}):
        held = di.parse_models_label((built.labels or {}).get(di.LABEL_MODELS))
        if held and set(held) <= {MODEL, OTHER}:
            for tag in built.tags:
                _rmi(client, tag)
    client.close()


_PORT: list[int] = [0]


@pytest.fixture(scope="module")
def config(serving_config):
    _PORT[0] = http.free_port()
    return serving_config.with_overrides(serving_port=_PORT[0])


@pytest.fixture(scope="module")
def image(client, config, registered):
    """The image of the set {MODEL: v1} (removed with the module's other set images)."""
    started = time.monotonic()
    info = di.build_image(config, di.resolve_set(config, {MODEL: "1"}), client=client)
    print(f"first build: {time.monotonic() - started:.1f} s")
    return info


def _rmi(client, tag: str) -> None:
    import docker.errors

    try:
        client.images.remove(tag, force=True)
    except docker.errors.ImageNotFound:
        pass


def _deploy_docker(config, version, holdout, features, *, client, model=MODEL):
    """Blue/green onto the docker target (the orchestrator, with the test's engine client)."""
    return deploy_to(DockerTarget(config, client=client), model_name=model, version=version,
                     holdout_uri=holdout, feature_columns=features, config=config,
                     reason="docker target test")


def _deploy(config, model, version, *, client):
    """``_deploy_docker`` with the version's own holdout and columns."""
    holdout, features = version_inputs(model, version, config)
    return _deploy_docker(config, version, holdout, features, client=client, model=model)


def _served(url: str, model: str) -> str:
    """The version of ``model`` that ``url`` serves (by name)."""
    return http.fetch_json(f"{url}/models/{model}/metadata")["model_version"]


def _servers_behind(client, config) -> list:
    return client.containers.list(all=True, filters={"label": [
        f"{di.LABEL_PORT}={config.serving_port}", f"{di.LABEL_ROLE}=server"]})


def _records(frame: pd.DataFrame) -> list[dict]:
    return frame.to_dict(orient="records")


def _entry(name: str, version: str, sha: str = "a" * 64) -> di.ModelEntry:
    return di.ModelEntry(model_name=name, model_version=version, sha256=sha)


def test_tag_follows_docker_rules():
    """A set's tag is a valid docker reference whatever its names, and names the set: the same
    set gives the same tag, another version, sha256 or default model (the order) another."""
    weird = [_entry("Flights Is__Late!", "12"), _entry("other/model:x", "3")]
    tag = di.image_tag(weird)
    repo, _, version = tag.partition(":")
    assert repo == di.IMAGE_REPO
    assert re.fullmatch(r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*", repo)
    assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", version)
    assert tag == di.image_tag(list(weird))
    assert len({tag, di.image_tag([weird[0], _entry("other/model:x", "4")]),
                di.image_tag([weird[0], _entry("other/model:x", "3", "b" * 64)]),
                di.image_tag(weird[::-1])}) == 4


def test_the_set_label_says_what_the_image_serves():
    models = [_entry("flights_is_late", "3", "a" * 64), _entry("other_model", "1", "b" * 64)]
    label = di.models_label(models)
    assert di.parse_models_label(label) == {
        "flights_is_late": {"version": "3", "sha256": "a" * 64},
        "other_model": {"version": "1", "sha256": "b" * 64}}
    assert list(json.loads(label)) == ["flights_is_late", "other_model"]  # the default first
    assert di.parse_models_label(None) == di.parse_models_label("not json") == {}
    info = di.ImageInfo(tag=di.image_tag(models), image_id="x", digest=di.set_digest(models),
                        models=tuple(models))
    assert info.versions() == {"flights_is_late": "3", "other_model": "1"}
    assert info.sha256_of("other_model") == "b" * 64 and info.sha256_of("nope") == ""


def test_the_live_set_is_read_from_the_container_else_the_state_file():
    """The set label first; a container of a single-model release has its model's labels; the
    state file when the container is gone (of this release: ``models``; older: one model)."""
    from types import SimpleNamespace

    from pipeline_tasks.deploy.docker_target import live_set

    models = [_entry("a", "3", "a" * 64), _entry("b", "1", "b" * 64)]
    labelled = SimpleNamespace(labels={di.LABEL_MODELS: di.models_label(models),
                                       di.LABEL_NAME: "b", di.LABEL_VERSION: "1"})
    assert live_set({"models": {"x": "9"}}, labelled) == {
        "a": {"version": "3", "sha256": "a" * 64}, "b": {"version": "1", "sha256": "b" * 64}}
    older = SimpleNamespace(labels={di.LABEL_NAME: "a", di.LABEL_VERSION: "2",
                                    di.LABEL_SHA256: "c" * 64})
    assert live_set({"model_name": "a", "model_version": "2"}, older) == {
        "a": {"version": "2", "sha256": "c" * 64}}
    assert live_set({"models": {"a": "3", "b": "1"}, "model_name": "b"}, None) == {
        "a": {"version": "3", "sha256": ""}, "b": {"version": "1", "sha256": ""}}
    assert live_set({"model_name": "a", "model_version": "2"}, None) == {
        "a": {"version": "2", "sha256": ""}}
    assert live_set(None, None) == {}


def test_a_live_version_gone_from_the_registry_is_named(serving_config, registered):
    with pytest.raises(di.DockerTargetError, match=f"{MODEL} v999 is not in the registry"):
        di.resolve_set(serving_config, {MODEL: "999"})


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
    registered_sha = MlflowClient(config.mlflow_tracking_uri).get_model_version(
        MODEL, "1").tags["artifact_sha256"]
    assert image.models == (di.ModelEntry(MODEL, "1", registered_sha),)
    assert image.models[0].run_id == registered.run_id
    assert labels[di.LABEL_SHA256] == image.digest == di.set_digest(image.models)
    assert di.parse_models_label(labels[di.LABEL_MODELS]) == {
        MODEL: {"version": "1", "sha256": registered_sha}}
    assert image.tag == di.image_tag(image.models)
    assert attrs["Config"]["Cmd"][-6:] == ["--models-manifest", "/opt/models/manifest.json",
                                           "--host", "0.0.0.0", "--port", "8000"]
    assert attrs["Config"]["User"] == "10001:10001"
    assert attrs["Config"]["Healthcheck"]["Test"][0] == "CMD"
    assert "/ready" in " ".join(attrs["Config"]["Healthcheck"]["Test"])
    print(f"image size: {attrs['Size'] / 1e6:.0f} MB")
    # idempotent: the same version is not built again
    started = time.monotonic()
    again = di.build_image(config, di.resolve_set(config, {MODEL: "1"}), client=client)
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
        assert meta["artifact_sha256"] == image.models[0].sha256
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
            files = sorted(lake.glob("date=*/model=*/part-*.parquet"))
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

    for folder in [lake, *(p for p in lake.rglob("*") if p.is_dir())]:
        assert not folder.stat().st_mode & stat.S_IWOTH, (folder, oct(folder.stat().st_mode))


def test_tampered_model_refuses_to_start(client, config, registered):
    """A manifest whose sha256 is not the folder's: the container exits with code 2."""
    tag = "mlops-serving/test-tampered:bad"
    with tempfile.TemporaryDirectory(prefix="mlops-test-ctx-") as tmp:
        context = Path(tmp) / "ctx"
        manifest = di.prepare_context(config, di.resolve_set(config, {MODEL: "1"}), context)
        assert [m["dir"] for m in manifest["models"]] == [f"0-{MODEL}"]
        assert (context / "models" / f"0-{MODEL}" / "MLmodel").is_file()
        manifest["models"][0]["sha256"] = "0" * 64
        (context / "models" / di.MANIFEST).write_text(json.dumps(manifest))
        di.build_from_context(client, context, tag,
                              {"BASE_IMAGE": di.choose_base_image(client)}, {})
    try:
        container = client.containers.run(tag, name="mlops-test-tampered", detach=True,
                                          labels={di.LABEL_ROLE: "test"})
        try:
            assert container.wait(timeout=120)["StatusCode"] == 2
            logs = container.logs().decode()
            assert "refusing to serve /opt/models/manifest.json" in logs, logs
            assert "does not match" in logs, logs
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


@pytest.fixture(scope="module")
def other_model(other_registered, regression_frame, train_and_register, config):
    """OTHER's versions: v1 (conftest's ``other_registered``, a diamonds price regression on
    columns of its own) and one trained on another sample (registered, not champion)."""
    registry = MlflowClient(config.mlflow_tracking_uri)
    first = next(mv.version for mv in registry.search_model_versions(f"name='{OTHER}'")
                 if mv.run_id == other_registered.run_id)
    _, registration = train_and_register(regression_frame.sample(frac=0.6, random_state=5),
                                         "docker-diamonds-2", config, blessed=False,
                                         champion_version=str(first), model_name=OTHER,
                                         target="price")
    return [str(first), str(registration.version)]


def test_blue_green_on_the_stable_port(client, image, config, second_version, other_model,
                                       flights_rows, other_rows):
    """Two models behind one port, one container: deploying one switches it alone, under load
    on both (zero failed requests), and the other keeps its version throughout."""
    stable = f"http://127.0.0.1:{config.serving_port}"
    other_v1 = other_model[0]
    try:
        holdout, features = version_inputs(MODEL, "1", config)
        first = _deploy_docker(config, "1", holdout, features, client=client)
        assert first.status == "live" and first.canary_rows > 0 and first.previous is None
        assert first.image["tag"] == image.tag and first.models == {MODEL: "1"}
        assert http.fetch_json(stable + "/metadata")["model_version"] == "1"
        router = client.containers.get(dr.stable_name(config))
        assert router.labels[di.LABEL_ROLE] == "router"
        _assert_hardened(router)
        _assert_hardened(client.containers.get(first.container["id"]))
        _assert_not_world_writable(storage.local_path(config.predictions_uri))
        assert router.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
        again = _deploy_docker(config, "1", holdout, features, client=client)
        assert again.status == "unchanged" and again.container["id"] == first.container["id"]

        # a second model joins the port: one container serves both, MODEL stays the default
        joined = _deploy(config, OTHER, other_v1, client=client)
        assert joined.status == "live" and joined.canary_rows > 0
        assert joined.previous is None and joined.previous_version is None  # OTHER was not live
        assert joined.models == {MODEL: "1", OTHER: other_v1}
        assert (_served(stable, MODEL), _served(stable, OTHER)) == ("1", other_v1)
        assert http.fetch_json(stable + "/ready")["models"] == {MODEL: "1", OTHER: other_v1}
        answer = http.fetch_json(stable + "/predict", {"records": _records(flights_rows.head(1))})
        assert (answer["model_name"], answer["model_version"]) == (MODEL, "1")
        assert [c.id for c in _servers_behind(client, config)] == [joined.container["id"]]
        labels = client.containers.get(joined.container["id"]).labels
        assert di.parse_models_label(labels[di.LABEL_MODELS]) == {
            MODEL: {"version": "1", "sha256": image.models[0].sha256},
            OTHER: {"version": other_v1, "sha256": joined.image["model_sha256"]}}
        assert dr.read_backend(config)["models"] == {MODEL: "1", OTHER: other_v1}

        # clients keep calling both models on the stable port (and the default's /predict), a
        # new connection each time, through the switch of MODEL
        calls = [(f"/models/{MODEL}/predict", _records(flights_rows.head(1))),
                 ("/predict", _records(flights_rows.head(1))),
                 (f"/models/{OTHER}/predict", _records(other_rows.head(1)))]
        outcomes: list = []
        stop = threading.Event()

        def hammer():
            while not stop.is_set():
                for path, rows in calls:
                    try:
                        got = http.fetch_json(stable + path, {"records": rows})
                        outcomes.append((got["model_name"], got["model_version"]))
                    except Exception as exc:  # noqa: BLE001 (counted as a failed request)
                        outcomes.append(exc)

        threads = [threading.Thread(target=hammer) for _ in range(2)]
        for thread in threads:
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
            for thread in threads:
                thread.join()
        print(f"deploy of v{second_version} (build from cached layers): "
              f"{time.monotonic() - started:.1f} s, {len(outcomes)} requests meanwhile")
        failures = [o for o in outcomes if isinstance(o, Exception)]
        assert not failures, failures[:3]
        mine = [v for name, v in outcomes if name == MODEL]
        assert mine[0] == "1" and mine[-1] == second_version and set(mine) == {"1",
                                                                               second_version}
        assert {v for name, v in outcomes if name == OTHER} == {other_v1}
        assert len([o for o in outcomes if o[0] == OTHER]) > 10
        second = storage.read_json(result.record_uri)
        assert result.status == "live" and result.previous_version == "1"
        assert second["router"] == dr.stable_name(config)
        assert second["container"]["name"].startswith(dr.stable_name(config) + "-")
        assert second["previous"]["version"] == "1"
        assert second["previous"]["models"] == {MODEL: "1", OTHER: other_v1}
        assert second["models"] == {MODEL: second_version, OTHER: other_v1}
        tags = MlflowClient(config.mlflow_tracking_uri).get_model_version(
            MODEL, second_version).tags
        assert tags["deployment_image"] == second["image"]["tag"]
        assert tags["deployment_container"] == second["container"]["name"]
        assert second["image"]["model_sha256"] == tags["artifact_sha256"]
        assert (_served(stable, MODEL), _served(stable, OTHER)) == (second_version, other_v1)
        assert http.fetch_json(stable + "/metadata")["model_version"] == second_version
        # the old set's container is gone, the new one runs behind the same router
        assert [c.name for c in _servers_behind(client, config)] == [second["container"]["name"]]
        assert client.containers.get(dr.stable_name(config)).id == router.id
    finally:
        dr.stop_endpoint(config, client=client)
    with pytest.raises(urllib.error.URLError):
        http.fetch_json(stable + "/ready")
    assert not client.containers.list(all=True, filters={
        "label": f"{di.LABEL_PORT}={config.serving_port}"})


def test_a_failing_candidate_never_takes_the_port(client, image, config, other_model):
    """A candidate for the second model that fails validation (here: deployed with a row limit
    below the canary's 200 rows, so it refuses the canary) is removed; both models keep
    serving at their versions from the same container."""
    stable = f"http://127.0.0.1:{config.serving_port}"
    other_v1, other_v2 = other_model
    try:
        _deploy(config, MODEL, "1", client=client)
        _deploy(config, OTHER, other_v1, client=client)
        before = dr.read_backend(config)
        misconfigured = config.with_overrides(serving_max_rows=1)
        with pytest.raises(DeployRejected, match="gave no predictions"):
            _deploy(misconfigured, OTHER, other_v2, client=client)
        assert dr.read_backend(config) == before
        assert (_served(stable, MODEL), _served(stable, OTHER)) == ("1", other_v1)
        assert http.fetch_json(stable + "/metadata")["model_version"] == "1"
        assert [c.id for c in _servers_behind(client, config)] == [before["container_id"]]
    finally:
        dr.stop_endpoint(config, client=client)


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
