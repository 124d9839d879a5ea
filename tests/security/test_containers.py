"""The compose stack as the compose CLI resolves it (issue 12, points 5, 8 and 16): each service
gets only the secrets it needs, none on a command line; every container runs hardened; a
template copied by hand (secrets left empty) is refused, naming the empty variable."""

from __future__ import annotations

import re

import pytest

from pipeline_tasks.core.errors import ConfigError
from pipeline_tasks.ops import containers
from pipeline_tasks.ops.production import read_env_file, write_env_file

SECRETS = ("POSTGRES_PASSWORD", "AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY",
           "AIRFLOW_FERNET_KEY", "MLOPS_SERVING_TOKEN")
AIRFLOW_SERVICES = {"airflow-init", "airflow-api-server", "airflow-scheduler",
                    "airflow-dag-processor", "airflow-triggerer", "airflow-worker"}
#: What a service may add back after cap_drop: ALL (the official images' entrypoints start as
#: root, own their data folder to their user and drop to it; airflow-init owns the volumes).
CAP_ADD = {"postgres": {"CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID"},
           "redis": {"CHOWN", "SETGID", "SETUID"},
           "airflow-init": {"CHOWN", "DAC_OVERRIDE", "FOWNER"}}


@pytest.fixture(scope="module")
def compose(tmp_path_factory) -> tuple[dict, dict[str, str]]:
    """The resolved compose file with a docker/.env made as `make compose-env` makes it."""
    env_file = write_env_file(tmp_path_factory.mktemp("compose") / ".env",
                              containers.ENV_TEMPLATE)
    return containers.compose_config(env_file), read_env_file(env_file, environ={})


def _volume_sources(service: dict) -> set[str]:
    return {v.split(":")[0] if isinstance(v, str) else v["source"]
            for v in service.get("volumes", [])}


def _command(service: dict) -> str:
    command = service.get("command") or []
    return command if isinstance(command, str) else " ".join(map(str, command))


def test_mlflow_and_the_model_server_get_only_what_they_need(compose):
    config, secrets = compose
    services = config["services"]
    for name in ("mlflow", "model-server"):
        env = {k: str(v) for k, v in services[name].get("environment", {}).items()}
        assert not [k for k in env if k.startswith("AIRFLOW")], (name, sorted(env))
        values = " ".join(env.values())
        for secret in ("AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY", "AIRFLOW_FERNET_KEY"):
            assert secrets[secret] not in values, (name, secret)
        # the shared lake and artifacts only: no task logs, no Airflow auth volume
        assert _volume_sources(services[name]) == {"mlops-shared"}, name
    mlflow = services["mlflow"]["environment"]
    # the database password only in the store URI the server reads from its environment
    assert [k for k, v in mlflow.items() if secrets["POSTGRES_PASSWORD"] in str(v)] == [
        "MLFLOW_BACKEND_STORE_URI"]
    assert "MLOPS_SERVING_TOKEN" not in mlflow
    server = services["model-server"]["environment"]
    assert not [k for k, v in server.items() if secrets["POSTGRES_PASSWORD"] in str(v)]
    assert server["MLOPS_SERVING_TOKEN"] == secrets["MLOPS_SERVING_TOKEN"]
    # the Airflow services share one Fernet key (connections one encrypts, the others read)
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__FERNET_KEY"] == secrets["AIRFLOW_FERNET_KEY"], name
        assert "airflow-auth" in _volume_sources(services[name]), name


def test_no_secret_is_on_a_command_line(compose):
    config, secrets = compose
    for name, service in config["services"].items():
        command = _command(service)
        for secret in SECRETS:
            assert secrets[secret] not in command, (name, secret)
    # the MLflow server's store comes from its environment (mlflow server's envvar option)
    assert "--backend-store-uri" not in _command(config["services"]["mlflow"])


def test_every_container_is_hardened(compose):
    config, _ = compose
    for name, service in config["services"].items():
        assert service.get("read_only") is True, f"{name}: root filesystem is writable"
        assert service.get("cap_drop") == ["ALL"], name
        assert any(re.fullmatch(r"no-new-privileges(:true)?", opt)
                   for opt in service.get("security_opt", [])), name
        tmpfs = service.get("tmpfs", [])
        tmpfs = [tmpfs] if isinstance(tmpfs, str) else tmpfs
        assert any(t.split(":")[0] == "/tmp" for t in tmpfs), f"{name}: no tmpfs /tmp"
        assert set(service.get("cap_add", [])) <= CAP_ADD.get(name, set()), name


def test_the_template_leaves_every_secret_empty():
    template = containers.ENV_TEMPLATE.read_text()
    for name in SECRETS:
        assert re.search(rf"^{name}=$", template, re.MULTILINE), name
    assert "__GENERATE__" not in template


def test_a_template_copied_by_hand_is_refused(tmp_path):
    copy = tmp_path / ".env"
    copy.write_text(containers.ENV_TEMPLATE.read_text())
    with pytest.raises(ConfigError, match="|".join(SECRETS)):
        containers.compose_config(copy)


@pytest.mark.parametrize("empty", SECRETS)
def test_each_empty_secret_is_named(tmp_path, empty):
    filled = write_env_file(tmp_path / "filled.env", containers.ENV_TEMPLATE).read_text()
    copy = tmp_path / ".env"
    copy.write_text(re.sub(rf"^{empty}=.*$", f"{empty}=", filled, flags=re.MULTILINE))
    with pytest.raises(ConfigError, match=empty):
        containers.compose_config(copy)
