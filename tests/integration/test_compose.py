"""docker/docker-compose.yaml is valid, holds no secret, and every image it builds builds with the
local engine (on the locally made base image where Docker Hub cannot be reached)."""

from __future__ import annotations

import re

import pytest

from pipeline_tasks.core.config import load_config
from pipeline_tasks.deploy import docker_image as dt
from pipeline_tasks.ops import containers
from pipeline_tasks.ops.production import read_env_file, write_env_file

AIRFLOW_SERVICES = {"airflow-api-server", "airflow-scheduler", "airflow-dag-processor",
                    "airflow-triggerer", "airflow-worker"}
SECRETS = ("POSTGRES_PASSWORD", "AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY",
           "AIRFLOW_FERNET_KEY", "MLOPS_SERVING_TOKEN")


@pytest.fixture(scope="module")
def env_file(tmp_path_factory):
    """A docker/.env made from the template the way `make compose-env` makes it."""
    return write_env_file(tmp_path_factory.mktemp("compose") / ".env", containers.ENV_TEMPLATE)


def test_the_compose_file_is_valid_and_complete(env_file):
    config = containers.compose_config(env_file)  # the compose CLI validates it
    services = config["services"]
    assert set(services) >= AIRFLOW_SERVICES | {"postgres", "redis", "mlflow", "model-server",
                                                "airflow-init"}
    for name, service in services.items():
        if name != "airflow-init":
            assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
    worker = services["airflow-worker"]
    # scalable with --scale: no fixed name or host port
    assert "container_name" not in worker and "ports" not in worker
    assert set(config["volumes"]) >= {"postgres-data", "mlops-shared", "airflow-logs"}
    sources = {v.split(":")[0] if isinstance(v, str) else v["source"] for v in worker["volumes"]}
    assert sources <= set(config["volumes"])  # named volumes, no host paths
    # the secrets come from the env file, the same value in every component
    secrets = read_env_file(env_file, environ={})
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == secrets["AIRFLOW_JWT_SECRET"]
        assert secrets["POSTGRES_PASSWORD"] in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] == "False"


def test_no_secret_lives_in_the_compose_file():
    text = containers.COMPOSE_FILE.read_text()
    for name in SECRETS:
        # only ever referenced as ${NAME...}, never given a value
        assert re.search(rf"{name}:\s*\$\{{{name}", text) or f"${{{name}" in text, name
        assert not re.search(rf"{name}[:=]\s*[A-Za-z0-9_-]{{16,}}", text), name
    for name in SECRETS:  # left empty: `make compose-env` fills them, compose refuses them empty
        assert re.search(rf"^{name}=$", containers.ENV_TEMPLATE.read_text(), re.MULTILINE), name


def test_a_missing_secret_is_refused(tmp_path):
    env = tmp_path / ".env"
    env.write_text("AIRFLOW_API_SECRET_KEY=x\nMLOPS_SERVING_TOKEN=y\nPOSTGRES_PASSWORD=z\n"
                   "AIRFLOW_FERNET_KEY=k\n")
    with pytest.raises(Exception, match="AIRFLOW_JWT_SECRET"):
        containers.compose_config(env)


def test_an_empty_value_is_a_config_error_and_a_failed_command_is_transient(tmp_path, env_file):
    """The env file's missing value is the person's to fix (ConfigError, with advice); any other
    failure of the compose CLI is a tool failure worth a retry (TransientError)."""
    from pipeline_tasks.core.errors import ConfigError, TransientError

    env = tmp_path / ".env"
    env.write_text("AIRFLOW_API_SECRET_KEY=x\n")
    with pytest.raises(ConfigError, match="AIRFLOW_JWT_SECRET|POSTGRES_PASSWORD") as refused:
        containers.compose_config(env)
    assert "make compose-env" in refused.value.advice and not refused.value.retryable
    with pytest.raises(TransientError, match="no-such-command") as failed:
        containers._compose(env_file, "no-such-command")
    assert failed.value.retryable


def test_every_image_builds_with_the_local_engine(env_file, docker_engine):
    containers.prepare_image_wheels(load_config())
    output = containers.build_images(env_file, base_image=dt.LOCAL_BASE_IMAGE)
    client = dt.docker_client()
    built = {service["image"] for service in containers.compose_config(env_file)[
        "services"].values() if "build" in service}
    assert built == {"mlops/airflow:latest"}, built
    for tag in built:
        image = client.images.get(tag)
        assert image.attrs["Config"]["User"] == "50000", output[-2000:]
        # the pipeline, Airflow with Celery and MLflow all import inside it
        out = client.containers.run(tag, [
            "python", "-c", ("import pipeline_tasks.ops.stack, airflow.providers.celery, mlflow, "
                             "psycopg2; from pipeline_tasks.core.config import load_config; "
                             "print(load_config().dags_folder)")],
            remove=True, network_mode="none")
        assert out.decode().strip() == "/opt/mlops/src/dags"


def test_the_helm_values_name_real_settings():
    import yaml

    from pipeline_tasks.core.config import PipelineConfig

    values = yaml.safe_load((containers.DOCKER_DIR / "helm-values.yaml").read_text())
    assert values["executor"] in ("CeleryExecutor", "KubernetesExecutor")
    assert values["config"]["core"]["simple_auth_manager_all_admins"] == "False"
    fields = set(PipelineConfig.__dataclass_fields__)
    names = [e["name"] for e in values["env"]]
    assert {"MLOPS_LAKE_URI", "MLOPS_MLFLOW_TRACKING_URI", "MLOPS_TRAINING_POOL"} <= set(names)
    for name in names:
        if name.startswith("MLOPS_"):
            assert name[len("MLOPS_"):].lower() in fields, name
    # the same dags folder as the image puts them in
    assert values["config"]["core"]["dags_folder"] == "/opt/mlops/src/dags"
    assert "/opt/mlops/src/dags" in containers.DOCKER_DIR.joinpath("airflow.Dockerfile").read_text()
