"""The production profile's env file: template, secrets, expansion, databases it names."""

from __future__ import annotations

import stat

import pytest

from pipeline_tasks.core.errors import ConfigError
from pipeline_tasks.ops.production import (
    GENERATE,
    TEMPLATE,
    config_from_env,
    profile_databases,
    read_env_file,
    write_env_file,
)


def test_the_template_makes_a_complete_profile(tmp_path):
    path = write_env_file(tmp_path / "production.env")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert GENERATE not in path.read_text()
    env = read_env_file(path, environ={})
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] == "False"
    assert len(env["AIRFLOW__API_AUTH__JWT_SECRET"]) >= 48
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] != env["AIRFLOW__API__SECRET_KEY"]
    pg = env["PG_PASSWORD"]
    assert len(pg) >= 48
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == \
        f"postgresql+psycopg2://mlops:{pg}@127.0.0.1:5432/mlops_airflow"
    assert profile_databases(env) == [f"postgresql://mlops:{pg}@127.0.0.1:5432/mlops_airflow",
                                      f"postgresql://mlops:{pg}@127.0.0.1:5432/mlops_mlflow"]
    assert env["AIRFLOW__CELERY__BROKER_URL"] == \
        f"redis://mlops:{env['REDIS_PASSWORD']}@127.0.0.1:6379/0"
    assert len(env["MLOPS_SERVING_TOKEN"]) >= 48
    config = config_from_env(env)
    assert config.mlflow_tracking_uri == "http://127.0.0.1:5000"
    assert config.mlflow_backend_store_uri.endswith("/mlops_mlflow")
    assert config.lake_uri == "file:///srv/mlops/lake" and config.registry_lock_url
    # secrets are new each time, and an existing file is never overwritten
    other = read_env_file(write_env_file(tmp_path / "other.env"), environ={})
    assert other["AIRFLOW__API_AUTH__JWT_SECRET"] != env["AIRFLOW__API_AUTH__JWT_SECRET"]
    with pytest.raises(ConfigError, match="exists"):
        write_env_file(path)


def test_overrides_flow_into_later_lines():
    env = read_env_file(TEMPLATE, environ={}, overrides={
        "PG_AIRFLOW_DB": "other", "AIRFLOW__API_AUTH__JWT_SECRET": "s1",
        "AIRFLOW__API__SECRET_KEY": "s2", "AIRFLOW__CORE__FERNET_KEY": "s3", "PG_PASSWORD": "p",
        "REDIS_PASSWORD": "r", "MLOPS_SERVING_TOKEN": "t", "EXTRA": "x"})
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("/other")
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].endswith("/other")
    assert env["EXTRA"] == "x"


@pytest.mark.parametrize("text, message", [
    ("A=__GENERATE__\n", r"the secret\(s\) A are empty \(or still hold __GENERATE__\)"),
    ("DB_PASSWORD=\nX_TOKEN=\n", r"the secret\(s\) DB_PASSWORD, X_TOKEN are empty"),
    ("A=${MISSING}\n", r"\$\{MISSING\} is not set above this line"),
    ("not a line\n", "not a KEY=VALUE line"),
])
def test_bad_env_files_are_refused(tmp_path, text, message):
    path = tmp_path / "bad.env"
    path.write_text("# comment\n" + text)
    with pytest.raises(ConfigError, match=message):
        read_env_file(path, environ={})
