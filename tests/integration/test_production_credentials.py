"""The production profile's credentials on real PostgreSQL and Redis servers (issue 12,
point 10): `make production-env` generates a PostgreSQL role password, a Redis ACL user's
password and the model server's token; `make production-db` (``provision``) creates the role
with that password (owner of the profile's databases) and the Redis user; ``unprovision``
removes them again."""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid

import psycopg2
import pytest
import redis
from profile_teardown import unprovision

from pipeline_tasks.ops.production import (
    profile_databases,
    provision,
    read_env_file,
    write_env_file,
)


def _scram_matches(verifier: str, password: str) -> bool:
    """True when the SCRAM-SHA-256 verifier PostgreSQL stores was made from ``password``
    (RFC 5802/7677: StoredKey = H(HMAC(SaltedPassword, "Client Key")))."""
    method, rest = verifier.split("$", 1)
    assert method == "SCRAM-SHA-256", verifier[:20]
    params, keys = rest.split("$")
    iterations, salt = params.split(":")
    stored_key, server_key = keys.split(":")
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt),
                                 int(iterations))
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server = hmac.new(salted, b"Server Key", "sha256").digest()
    return (base64.b64encode(hashlib.sha256(client_key).digest()).decode() == stored_key
            and base64.b64encode(server).decode() == server_key)


@pytest.fixture
def profile(tmp_path, postgres_server, redis_server):
    """A production.env made by `make production-env`, on the session's throwaway PostgreSQL
    and Redis, with names of its own (the servers are shared by the session's tests)."""
    tag = "itcred_" + uuid.uuid4().hex[:8]
    path = write_env_file(tmp_path / "production.env")
    env = read_env_file(path, environ={}, overrides={
        "PG_HOST": postgres_server, "REDIS_HOST": redis_server,
        "PG_USER": tag, "PG_AIRFLOW_DB": f"{tag}_airflow", "PG_MLFLOW_DB": f"{tag}_mlflow",
        "REDIS_USER": tag})
    try:
        yield tag, env
    finally:
        unprovision(env)


def test_the_profile_carries_generated_credentials(profile):
    tag, env = profile
    password = env["PG_PASSWORD"]
    for name in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__RESULT_BACKEND",
                 "MLOPS_MLFLOW_BACKEND_STORE_URI", "MLOPS_REGISTRY_LOCK_URL"):
        assert f"{tag}:{password}@" in env[name], name
    assert env["AIRFLOW__CELERY__BROKER_URL"] == \
        f"redis://{tag}:{env['REDIS_PASSWORD']}@{env['REDIS_HOST']}/0"
    assert len(env["MLOPS_SERVING_TOKEN"]) >= 48
    assert len({password, env["REDIS_PASSWORD"], env["MLOPS_SERVING_TOKEN"]}) == 3


def test_provision_creates_the_role_with_its_password_and_the_redis_user(profile):
    tag, env = profile
    admin_url = f"postgresql://postgres@{env['PG_HOST']}/postgres"
    redis_host, redis_port = env["REDIS_HOST"].rsplit(":", 1)
    created = provision(env)
    assert created == [f"{tag}_airflow", f"{tag}_mlflow"]
    with psycopg2.connect(admin_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolpassword "
                    "FROM pg_authid WHERE rolname = %s", (tag,))
        login, superuser, createrole, createdb, verifier = cur.fetchone()
        cur.execute("SELECT datname, pg_get_userbyid(datdba) FROM pg_database "
                    "WHERE datname LIKE %s ORDER BY 1", (f"{tag}_%",))
        owners = dict(cur.fetchall())
    conn.close()
    # a login role with no other power, whose stored SCRAM verifier is of the profile's password
    assert login and not (superuser or createrole or createdb)
    assert _scram_matches(verifier, env["PG_PASSWORD"])
    assert not _scram_matches(verifier, env["PG_PASSWORD"] + "x")
    assert owners == {f"{tag}_airflow": tag, f"{tag}_mlflow": tag}
    # the profile's URLs connect as the role, which can build its schema in its databases
    for url in profile_databases(env):
        with psycopg2.connect(url) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE it_probe (x int)")
            cur.execute("SELECT current_user")
            assert cur.fetchone()[0] == tag
        conn.close()
    # Redis: the broker URL's user answers with its password, and only with it
    broker = redis.Redis.from_url(env["AIRFLOW__CELERY__BROKER_URL"], socket_timeout=5)
    assert broker.ping() and broker.acl_whoami() == tag
    # and it cannot administer the server (no CONFIG, no ACL, no FLUSHALL)
    for command in (("CONFIG", "GET", "requirepass"), ("ACL", "LIST"), ("FLUSHALL",)):
        with pytest.raises(redis.exceptions.NoPermissionError):
            broker.execute_command(*command)
    broker.close()
    wrong = redis.Redis(host=redis_host, port=int(redis_port), username=tag, password="not-it",
                        socket_timeout=5)
    with pytest.raises(redis.AuthenticationError):
        wrong.ping()
    admin = redis.Redis(host=redis_host, port=int(redis_port), socket_timeout=5)
    # run again (a new password in the file): the role and the user take the new one
    again = dict(env, PG_PASSWORD="second-" + env["PG_PASSWORD"])
    for name in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "MLOPS_MLFLOW_BACKEND_STORE_URI",
                 "AIRFLOW__CELERY__RESULT_BACKEND", "MLOPS_REGISTRY_LOCK_URL"):
        again[name] = env[name].replace(env["PG_PASSWORD"], again["PG_PASSWORD"])
    assert provision(again) == []  # the databases exist
    with psycopg2.connect(admin_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (tag,))
        assert _scram_matches(cur.fetchone()[0], again["PG_PASSWORD"])
    conn.close()
    unprovision(env)
    with psycopg2.connect(admin_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s", (tag,))
        assert cur.fetchone()[0] == 0
    conn.close()
    assert tag not in admin.acl_users()
    admin.close()
