"""The embedded stack's pieces that need no running Airflow: its config, secrets and API client."""

from __future__ import annotations

import json
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from pipeline_tasks.core.config import load_config
from pipeline_tasks.ops.airflow_api import AirflowAPI, StackError, _log_line
from pipeline_tasks.ops.airflow_home import (
    log_tail,
    prepare_airflow_home,
    private_log,
    render_airflow_cfg,
    stack_env,
)


@pytest.fixture
def config(tmp_path):
    return load_config(home=str(tmp_path / "home"), airflow_port=18123)


def test_airflow_cfg_is_rendered_for_this_home(config):
    text = render_airflow_cfg(config)
    assert "${" not in text
    assert f"dags_folder = {config.project_dir}/dags" in text
    assert "executor = LocalExecutor" in text and "parallelism = 4" in text
    assert f"sqlite:///{config.airflow_home}/airflow.db" in text
    assert "18123" in text
    assert "mp_forkserver_preload = " in text and "pipeline_tasks.ops.preload" in text


#: A writer of the metadata DB as Airflow's components are: its engine, from the stack's config.
WRITER = """
import sys, time
from sqlalchemy import text
from airflow import settings
settings.configure_orm()
print("ready", flush=True)
sys.stdin.readline()
start = time.monotonic()
with settings.engine.begin() as conn:
    conn.execute(text("UPDATE slot_pool SET slots = slots"))
print(f"written after {time.monotonic() - start:.1f}", flush=True)
"""


def test_a_writer_of_the_embedded_metadata_db_waits_out_a_lock_held_past_five_seconds(config):
    # SQLite's writers wait 5 s for the lock by default, then fail ("database is locked"; a 500
    # from the API): a loaded machine's scheduler held it longer in CI. The stack's config waits
    # longer: a lock held 10 s delays Airflow's write and does not fail it.
    prepare_airflow_home(config)
    writer = subprocess.Popen([sys.executable, "-c", WRITER], env=stack_env(config), text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    try:
        assert writer.stdout.readline().strip() == "ready", writer.stderr.read()
        holder = sqlite3.connect(f"{config.airflow_home}/airflow.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        writer.stdin.write("go\n")
        writer.stdin.flush()
        time.sleep(10)  # how long the lock is held, not a wait for a state
        holder.execute("COMMIT")
        holder.close()
        out, err = writer.communicate(timeout=60)
    finally:
        writer.kill()
    assert writer.returncode == 0, err[-2000:]
    waited = float(out.split("written after ")[1])
    assert waited > 5, f"the writer waited only {waited} s: it did not meet the held lock"


def test_components_share_one_secret_kept_private_in_the_home(config, tmp_path):
    first, second = stack_env(config), stack_env(config)
    secret = first["AIRFLOW__API_AUTH__JWT_SECRET"]
    assert len(secret) > 40 and secret == second["AIRFLOW__API_AUTH__JWT_SECRET"]
    path = tmp_path / "home" / "airflow" / ".jwt_secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first["AIRFLOW_HOME"] == config.airflow_home
    other = load_config(home=str(tmp_path / "other"))
    assert stack_env(other)["AIRFLOW__API_AUTH__JWT_SECRET"] != secret


def test_a_private_log_is_the_owners_and_its_tail_quotes_the_last_lines(tmp_path):
    path = tmp_path / "logs" / "scheduler.log"
    with private_log(path) as out:
        out.write("".join(f"line {i}\n" for i in range(50)).encode())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert log_tail(path, lines=3) == "line 47\nline 48\nline 49"
    assert log_tail(tmp_path / "missing.log") == "(no log)"


def test_log_entries_carry_their_exception():
    entry = {"event": "Task failed with exception", "error_detail": [
        {"exc_type": "AirflowFailException", "exc_value": "IngestError: /x.csv: the file is empty"}]}
    assert _log_line(entry) == ("Task failed with exception\n"
                                "AirflowFailException: IngestError: /x.csv: the file is empty")
    assert _log_line("plain text") == "plain text"


class _Answer(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/auth/token":
            body, code = {"access_token": "t"}, 201
        else:
            body, code = {"detail": f"The Dag with ID: `{self.path.split('/')[4]}` was not found"}, 404
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_api_errors_name_the_call_and_the_answer():
    server = HTTPServer(("127.0.0.1", 0), _Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        api = AirflowAPI(f"http://127.0.0.1:{server.server_port}")
        with pytest.raises(StackError, match=r"GET /api/v2/dags/nope/details: HTTP 404: .*nope"):
            api.get("/api/v2/dags/nope/details")
    finally:
        server.shutdown()


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "example.org"])
def test_login_off_refuses_a_non_loopback_host_before_starting_anything(tmp_path, host):
    from pipeline_tasks.ops.stack import Stack

    stack = Stack(load_config(home=str(tmp_path), airflow_host=host))
    with pytest.raises(StackError, match=f"login is off .* not '{host}'"):
        stack.start()
    assert stack.procs == {}
    # with login on, the same host is allowed (the production profile, compose)
    on = Stack(load_config(home=str(tmp_path), airflow_host=host),
               extra_env={"AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False"})
    from pipeline_tasks.ops.airflow_home import login_enabled
    from pipeline_tasks.ops.stack import is_loopback

    assert login_enabled(stack_env(on.config, on.extra_env)) and not is_loopback(host)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
