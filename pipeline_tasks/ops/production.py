"""The production profile as data: the env file that switches the stack to PostgreSQL, Celery,
an MLflow server and a shared store, and the databases it names.

``docker/production.env.example`` is the documented template. ``write_env_file`` fills its
secrets (the values left empty) with random values into a file only its owner reads;
``read_env_file`` reads such a file the way ``set -a; . ./production.env`` does (``KEY=VALUE``
lines, ``${NAME}`` refers to a variable set before it), so tests, benchmarks and the Makefile use
the same file. ``provision`` creates what the profile names (PostgreSQL role and databases, the
Redis ACL user of the broker) with the credentials the file holds.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
from pathlib import Path
from urllib.parse import unquote, urlparse, urlsplit

from pipeline_tasks.core.config import PROJECT_DIR
from pipeline_tasks.core.errors import ConfigError
from pipeline_tasks.core.locks import libpq_url

log = logging.getLogger(__name__)

TEMPLATE = PROJECT_DIR / "docker" / "production.env.example"
GENERATE = "__GENERATE__"
#: Variables whose value is a secret: a template leaves them empty, ``write_env_file`` fills them,
#: ``read_env_file`` refuses them empty.
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET_KEY")
#: A template line whose value is to be generated: empty, or the older ``__GENERATE__`` marker.
_TO_GENERATE = re.compile(rf"^((?:export\s+)?([A-Za-z_][A-Za-z0-9_]*))=[ \t]*(?:{GENERATE})?[ \t]*$",
                          re.MULTILINE)
#: The variables that hold PostgreSQL databases of the profile.
DATABASE_VARS = ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__RESULT_BACKEND",
                 "MLOPS_MLFLOW_BACKEND_STORE_URI", "MLOPS_REGISTRY_LOCK_URL")
_LINE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def read_env_file(path: str | Path, overrides: dict[str, str] | None = None,
                  environ: dict[str, str] | None = None) -> dict[str, str]:
    """The variables an env file sets, in order. ``overrides`` replace a variable's value where
    the file sets it (later lines see the new value); ``${NAME}`` falls back to ``environ``."""
    return parse_env(Path(path).read_text(), path, overrides, environ)


def parse_env(text: str, path: str | Path, overrides: dict[str, str] | None = None,
              environ: dict[str, str] | None = None) -> dict[str, str]:
    """``read_env_file`` of ``text`` (``path`` names it in errors)."""
    overrides = dict(overrides or {})
    environ = os.environ if environ is None else environ
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            raise ConfigError(f"{path}:{number}: not a KEY=VALUE line: {line[:60]!r}")
        name, value = match.group(1), match.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if name in overrides:
            value = overrides.pop(name)

        def expand(ref: re.Match, number=number) -> str:
            key = ref.group(1)
            if key in values:
                return values[key]
            if key in environ:
                return environ[key]
            raise ConfigError(f"{path}:{number}: ${{{key}}} is not set above this line")

        values[name] = _REF.sub(expand, value)
    values.update(overrides)  # names the file does not set
    missing = sorted(k for k, v in values.items()
                     if v == GENERATE or (not v and SECRET_NAME.search(k)))
    if missing:
        raise ConfigError(f"{path}: the secret(s) {', '.join(missing)} are empty (or still hold "
                          f"{GENERATE}); make the file with `make production-env` (it fills in "
                          "random secrets)")
    return values


def generate_secret(name: str) -> str:
    """A random value for the secret ``name``: a Fernet key for ``*FERNET_KEY`` (32 url-safe
    base64 bytes, what Airflow's ``[core] fernet_key`` takes), else 48 random url-safe bytes
    (safe inside a URL's userinfo without quoting)."""
    if name.endswith("FERNET_KEY"):
        from cryptography.fernet import Fernet

        return Fernet.generate_key().decode()
    return secrets.token_urlsafe(48)


def fill_secrets(text: str) -> str:
    """``text`` (a template) with each empty or ``__GENERATE__`` value replaced by a new secret."""
    return _TO_GENERATE.sub(lambda m: f"{m.group(1)}={generate_secret(m.group(2))}", text)


def local_env(shared_dir: str | Path, tag: str, *, pg_host: str = "127.0.0.1:5432",
              redis_host: str = "127.0.0.1:6379",
              overrides: dict[str, str] | None = None) -> dict[str, str]:
    """The profile from the template for a throwaway stack on this machine (tests, benchmarks):
    databases ``mlops_<tag>_airflow`` / ``_mlflow`` and a PostgreSQL role and Redis user
    ``mlops_<tag>`` (``provision`` creates them), fresh secrets, free ports, a Celery queue of
    its own (the broker may be shared), the shared folder ``shared_dir``, nightly schedule off.
    ``overrides`` win."""
    from pipeline_tasks.core.http import free_port

    env = parse_env(fill_secrets(TEMPLATE.read_text()), TEMPLATE, environ={}, overrides={
        "PG_HOST": pg_host, "PG_USER": f"mlops_{tag}", "PG_AIRFLOW_DB": f"mlops_{tag}_airflow",
        "PG_MLFLOW_DB": f"mlops_{tag}_mlflow", "REDIS_HOST": redis_host,
        "REDIS_USER": f"mlops_{tag}", "SHARED_DIR": str(shared_dir),
        "MLOPS_MLFLOW_PORT": str(free_port()),
    })
    env.update({
        "MLOPS_AIRFLOW_PORT": str(free_port()),
        "MLOPS_SERVING_PORT": str(free_port()),
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": f"mlops_{tag}",
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
    })
    env.update(overrides or {})
    return env


def config_from_env(env: dict[str, str]):
    """The ``PipelineConfig`` a process started with ``env`` loads (its MLOPS_* variables)."""
    from pipeline_tasks.core.config import PipelineConfig, load_config

    names = set(PipelineConfig.__dataclass_fields__)
    return load_config(**{key[len("MLOPS_"):].lower(): value for key, value in env.items()
                          if key.startswith("MLOPS_") and key[len("MLOPS_"):].lower() in names})


def write_env_file(dest: str | Path, template: str | Path = TEMPLATE) -> Path:
    """Copy ``template`` to ``dest`` with each empty value (and ``__GENERATE__``) replaced by a
    random secret (``generate_secret``).

    The file is created with mode 600 and never overwritten (secrets must stay stable: every
    component shares them, and the Fernet key decrypts what the metadata DB holds).
    """
    dest = Path(dest)
    if dest.exists():
        raise ConfigError(f"{dest} exists; remove it first to make new secrets")
    text = fill_secrets(Path(template).read_text())
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    log.info("wrote %s with fresh secrets (mode 600)", dest)
    return dest


def profile_databases(env: dict[str, str]) -> list[str]:
    """The distinct PostgreSQL databases the profile's variables name, as libpq URLs."""
    urls: list[str] = []
    for name in DATABASE_VARS:
        value = env.get(name, "")
        scheme = value.split("://", 1)[0]
        if "postgres" in scheme:
            url = libpq_url(value)
            if url not in urls:
                urls.append(url)
    return urls


def _split(url: str) -> tuple[str, str]:
    """``(maintenance URL, database name)`` of a PostgreSQL database URL."""
    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    if not name or not re.fullmatch(r"[A-Za-z0-9_]+", name):
        raise ConfigError(f"database name {name!r} in {parsed.scheme}://{parsed.hostname}/... "
                          "must be letters, digits and underscores")
    return parsed._replace(path="/postgres").geturl(), name


def admin_url(url: str, environ: dict[str, str] | None = None) -> str:
    """The superuser connection that creates roles and databases: ``$PG_ADMIN_URL``, else the
    ``postgres`` role on ``url``'s server (its password, if any, from ``PGPASSWORD`` or
    ``~/.pgpass``, as libpq reads them). The components never get it."""
    environ = os.environ if environ is None else environ
    if environ.get("PG_ADMIN_URL"):
        return libpq_url(environ["PG_ADMIN_URL"])
    parts = urlsplit(libpq_url(url))
    return parts._replace(netloc=f"postgres@{parts.netloc.rsplit('@', 1)[-1]}",
                          path="/postgres").geturl()


def _credentials(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return unquote(parts.username or ""), unquote(parts.password or "")


def run_as_admin(url: str, sql_for_name, admin: str | None = None):
    """Run ``sql_for_name(cursor, name, user, password)`` as the admin (``admin``, else
    ``admin_url(url)``) for ``url``'s database."""
    import psycopg2

    _, name = _split(url)
    conn = psycopg2.connect(libpq_url(admin) if admin else admin_url(url), connect_timeout=30)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            return sql_for_name(cur, name, *_credentials(url))
    finally:
        conn.close()


def is_admin(cur, user: str) -> bool:
    """True when ``user`` is who the admin connection runs as (nothing to create for it)."""
    cur.execute("SELECT current_user")
    return not user or cur.fetchone()[0] == user


def _ensure_role(cur, user: str, password: str) -> None:
    """The login role ``user`` with ``password``: created, or its password set (so the role
    always has the profile's). Only the SCRAM verifier travels (libpq's PQencryptPasswordConn),
    so the password is not in the server's statement log."""
    from psycopg2 import sql
    from psycopg2.extensions import encrypt_password

    if is_admin(cur, user) or not password:
        return
    verifier = encrypt_password(password, user, cur.connection, None)
    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,))
    verb = "ALTER" if cur.fetchone() else "CREATE"
    cur.execute(sql.SQL(verb + " ROLE {} WITH LOGIN PASSWORD %s").format(sql.Identifier(user)),
                (verifier,))
    log.info("%s PostgreSQL role %s", "updated" if verb == "ALTER" else "created", user)


def create_databases(urls: list[str], admin: str | None = None) -> list[str]:
    """Create each database that does not exist yet, owned by its URL's role (created with the
    URL's password first; ``admin_url`` says who creates them); returns the names created."""
    from psycopg2 import sql

    def create(cur, name: str, user: str, password: str) -> str:
        _ensure_role(cur, user, password)
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if cur.fetchone() is not None:
            return ""
        if is_admin(cur, user):
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        else:
            cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(user)))
        return name

    created = [name for name in (run_as_admin(url, create, admin) for url in urls) if name]
    log.info("databases created: %s", ", ".join(created) or "none (all existed)")
    return created


# ------------------------------------------------------------------------------------- Redis

def redis_broker(env: dict[str, str]) -> tuple[str, str, str] | None:
    """``(admin URL, user, password)`` of a Redis broker URL with credentials, else None."""
    url = env.get("AIRFLOW__CELERY__BROKER_URL", "")
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.password:
        return None
    admin = env.get("REDIS_ADMIN_URL") or parts._replace(
        netloc=parts.netloc.rsplit("@", 1)[-1]).geturl()
    return admin, unquote(parts.username or "default"), unquote(parts.password)


def create_redis_user(env: dict[str, str]) -> str | None:
    """The broker URL's Redis ACL user, with its password (only its SHA-256 is sent), created
    or updated through ``$REDIS_ADMIN_URL`` (default: the broker's host, default user).

    ACL users live in the server's memory: on a Redis of your own, persist them (``aclfile`` +
    ``ACL SAVE``) and turn the password-less default user off (``ACL SETUSER default off``).
    """
    import redis

    broker = redis_broker(env)
    if broker is None:
        return None
    admin, user, password = broker
    if user == "default":
        raise ConfigError("AIRFLOW__CELERY__BROKER_URL: name a Redis ACL user of the profile "
                          "(redis://USER:PASSWORD@host/0), not the default user")
    client = redis.Redis.from_url(admin, socket_timeout=30)
    try:
        client.acl_setuser(user, enabled=True, reset=True,
                           hashed_passwords=["+" + hashlib.sha256(password.encode()).hexdigest()],
                           keys=["*"], channels=["*"], categories=["+@all", "-@admin",
                                                                    "-@dangerous"])
    finally:
        client.close()
    log.info("Redis ACL user %s set", user)
    return user


def provision(env: dict[str, str]) -> list[str]:
    """What the profile ``env`` names, with its credentials: the PostgreSQL role and databases
    (``create_databases``) and the broker's Redis ACL user; returns the databases created.
    ``make production-db`` runs it."""
    created = create_databases(profile_databases(env), env.get("PG_ADMIN_URL"))
    create_redis_user(env)
    return created
