"""Secrets of the embedded stack and of the env files (issue 12, points 3 and 8): a Fernet key
generated once per home, connection passwords stored encrypted in the real metadata DB, the home
private (700) and every secret-bearing file readable by its owner only (600)."""

from __future__ import annotations

import sqlite3
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from pipeline_tasks.core.config import load_config
from pipeline_tasks.core.errors import ConfigError
from pipeline_tasks.ops import containers
from pipeline_tasks.ops.airflow_home import private_log, run_airflow_cli, stack_env
from pipeline_tasks.ops.production import TEMPLATE, read_env_file, write_env_file

SECRET_FILES = (".jwt_secret", ".api_secret_key", ".fernet_key")
PLAIN = "plain-Pa55word-of-the-test"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    # a home that exists already, open to everyone, as an older release or a user left it
    path = tmp_path_factory.mktemp("secret-home") / "home"
    path.mkdir(mode=0o777)
    path.chmod(0o777)
    return load_config(home=str(path), airflow_port=18125)


def test_the_home_is_private_and_the_secrets_are_its_owner_s(home):
    env = stack_env(home)
    assert _mode(Path(home.home)) == 0o700
    for name in SECRET_FILES:
        assert _mode(Path(home.airflow_home) / name) == 0o600, name
    key = env["AIRFLOW__CORE__FERNET_KEY"]
    Fernet(key)  # a valid key: 32 url-safe base64 bytes
    # stable for the home: a second start (another component) gets the same key
    assert stack_env(home)["AIRFLOW__CORE__FERNET_KEY"] == key
    assert (Path(home.airflow_home) / ".fernet_key").read_text().strip() == key
    # another home, another key
    other = load_config(home=str(Path(home.home).parent / "other"))
    assert stack_env(other)["AIRFLOW__CORE__FERNET_KEY"] != key


def test_a_connection_added_through_the_stack_is_stored_encrypted(home):
    log = Path(home.logs_dir) / "connections-cli.log"
    with private_log(log) as out:
        code = run_airflow_cli(home, ["connections", "add", "it_secret_conn", "--conn-type",
                                      "postgres", "--conn-host", "db.example", "--conn-login",
                                      "reader", "--conn-password", PLAIN],
                               stdout=out, stderr=subprocess.STDOUT)
    assert code == 0, log.read_text()[-2000:]
    assert _mode(log) == 0o600 and _mode(log.parent) == 0o700
    with sqlite3.connect(Path(home.airflow_home) / "airflow.db") as db:
        encrypted, password = db.execute(
            "SELECT is_encrypted, password FROM connection WHERE conn_id = ?",
            ("it_secret_conn",)).fetchone()
    assert encrypted and password != PLAIN and PLAIN not in password
    key = stack_env(home)["AIRFLOW__CORE__FERNET_KEY"]
    assert Fernet(key).decrypt(password.encode()).decode() == PLAIN
    # the metadata DB itself sits in the private home
    assert _mode(Path(home.home)) == 0o700


def test_the_env_files_generate_a_fernet_key_and_keep_it_private(tmp_path):
    for template, name in ((TEMPLATE, "AIRFLOW__CORE__FERNET_KEY"),
                           (containers.ENV_TEMPLATE, "AIRFLOW_FERNET_KEY")):
        path = write_env_file(tmp_path / f"{template.name}.env", template)
        assert _mode(path) == 0o600
        Fernet(read_env_file(path, environ={})[name])


def test_a_production_template_copied_by_hand_is_refused(tmp_path):
    copy = tmp_path / "production.env"
    copy.write_text(TEMPLATE.read_text())
    with pytest.raises(ConfigError, match=r"secret\(s\) .*AIRFLOW__CORE__FERNET_KEY.* are empty"):
        read_env_file(copy, environ={})
