"""Credentials from Airflow Connections, as plain values for the library.

Every lookup goes through ``airflow.sdk.Connection.get``: the secrets backends in their order
(``AIRFLOW_CONN_*`` variables, the metadata DB through the API server in a task, any configured
backend such as Vault). The library never sees a connection: this module turns one into what the
library reads anyway.

- MLflow (``config.mlflow_conn_id``, default ``mlflow_default``): when the connection exists,
  its tracking URI becomes ``MLOPS_MLFLOW_TRACKING_URI`` (and the registry's, unless the operator
  set a different one) and its credentials MLflow's own ``MLFLOW_TRACKING_USERNAME`` /
  ``MLFLOW_TRACKING_PASSWORD`` or ``MLFLOW_TRACKING_TOKEN``, in this process's environment only
  (the task process, or the API server for the lineage pages; a model server a task starts
  inherits them).
- The lake (``config.lake_conn_id``, default ``mlops_lake``): the connection's extra (JSON) is
  the fsspec options of the lake's object store (``MLOPS_LAKE_STORAGE_OPTIONS``).
- SQL (``sql_url``): a connection's common.sql hook builds the SQLAlchemy URL, the way the
  provider does for its own engines.

A connection that does not exist changes nothing: the ``MLOPS_*`` settings are the embedded
default. Every secret is registered with the secrets masker before anything can print it, and
no error message carries one.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from mlops_airflow.masking import mask_url, mask_url_password, mask_value

log = logging.getLogger(__name__)

#: MLflow's own variables for the credentials of a tracking server.
USERNAME_ENV, PASSWORD_ENV, TOKEN_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                                         "MLFLOW_TRACKING_TOKEN")


def get_connection(conn_id: str):
    """The Airflow connection ``conn_id`` from the secrets backends, or None if none has it."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    if not conn_id:
        return None
    try:
        return Connection.get(conn_id)
    except AirflowNotFoundException:
        return None


def _extra(conn) -> dict[str, Any]:
    try:
        extra = conn.extra_dejson
    except Exception:  # noqa: BLE001 - a broken extra: say which connection, not its text
        extra = None
    if not isinstance(extra, dict):
        from pipeline_tasks.core.errors import ConfigError

        raise ConfigError(f"Airflow connection {conn.conn_id!r}: its extra is not a JSON object")
    return extra


def tracking_uri(conn) -> str:
    """The MLflow tracking URI a connection names: its extra ``tracking_uri``, else its host
    (``http``/``https`` from the connection type or its schema field; the port; a path in the
    schema field), without any credentials (they travel apart)."""
    from pipeline_tasks.core.errors import ConfigError

    extra = _extra(conn)
    if extra.get("tracking_uri"):
        return str(extra["tracking_uri"])
    host = (conn.host or "").strip()
    if not host:
        raise ConfigError(f"Airflow connection {conn.conn_id!r} (mlflow_conn_id) names no MLflow "
                          "tracking server: set its host (and port), or its extra "
                          "'tracking_uri'")
    schema = (conn.schema or "").strip().strip("/")
    if "://" in host:
        scheme, _, rest = host.partition("://")
    else:
        scheme = schema if schema in ("http", "https") else (
            "https" if conn.conn_type == "https" else "http")
        rest = host
    netloc, _, path = rest.rstrip("/").partition("/")
    netloc = netloc.rpartition("@")[2]  # credentials travel apart, never in the URI
    if conn.port and ":" not in netloc:
        netloc = f"{netloc}:{conn.port}"
    if schema and schema not in ("http", "https"):  # a path prefix (a proxy's /mlflow)
        path = "/".join(part for part in (path, schema) if part)
    return f"{scheme}://{netloc}" + (f"/{path}" if path else "")


def mlflow_environment(conn, config) -> dict[str, str | None]:
    """The environment that points MLflow at the connection's server, with its credentials:
    login and password (basic auth), else extra ``token`` or a lone password (bearer token).
    None: a variable to remove (credentials of the other kind the process had)."""
    uri = tracking_uri(conn)
    extra = _extra(conn)
    env: dict[str, str | None] = {"MLOPS_MLFLOW_TRACKING_URI": uri}
    if extra.get("registry_uri"):
        env["MLOPS_MLFLOW_REGISTRY_URI"] = str(extra["registry_uri"])
    elif config.mlflow_registry_uri == config.mlflow_tracking_uri:  # it followed the tracking URI
        env["MLOPS_MLFLOW_REGISTRY_URI"] = uri
    token = extra.get("token")
    if conn.login:
        env.update({USERNAME_ENV: conn.login, PASSWORD_ENV: conn.password or "", TOKEN_ENV: None})
    elif token or conn.password:
        env.update({TOKEN_ENV: str(token or conn.password), USERNAME_ENV: None,
                    PASSWORD_ENV: None})
    return env


def lake_options(conn, config) -> dict[str, Any]:
    """The fsspec options of the lake's store from a connection: its extra; for s3:// its
    login and password are the access key id and secret unless the extra names them."""
    from pipeline_tasks.core.storage import lake_protocol

    options = dict(_extra(conn))
    if lake_protocol(config.lake_uri) in ("s3", "s3a") and "key" not in options and conn.login:
        options["key"] = conn.login
        if conn.password and "secret" not in options:
            options["secret"] = conn.password
    return options


def apply_connections(config=None) -> list[str]:
    """Resolve the MLflow and lake connections of ``config`` (default: the loaded one) into
    this process's environment, their secrets masked first. Returns what came from a
    connection (for the log), e.g. ``["MLflow tracking: Airflow connection 'mlflow_default'"]``."""
    from pipeline_tasks.core.config import load_config, secret_option_values

    config = config if config is not None else load_config()
    applied: list[str] = []
    env: dict[str, str | None] = {}
    conn = get_connection(config.mlflow_conn_id)
    if conn is not None:
        found = mlflow_environment(conn, config)
        for name in (PASSWORD_ENV, TOKEN_ENV):
            mask_value(found.get(name))
        for name in ("MLOPS_MLFLOW_TRACKING_URI", "MLOPS_MLFLOW_REGISTRY_URI"):
            mask_url_password(found.get(name))
        env.update(found)
        applied.append(f"MLflow tracking: Airflow connection {config.mlflow_conn_id!r}")
    conn = get_connection(config.lake_conn_id)
    if conn is not None:
        options = lake_options(conn, config)
        for secret in secret_option_values(options):
            mask_value(secret)
        mask_value(conn.password)
        env["MLOPS_LAKE_STORAGE_OPTIONS"] = json.dumps(options, sort_keys=True)
        applied.append(f"lake storage options: Airflow connection {config.lake_conn_id!r}")
    for name, value in env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    if env:
        load_config()  # the lake's options reach fsspec now (storage.configure)
    return applied


#: How long the API server reuses the connections it applied (a page reads several times).
CONNECTED_MAX_AGE_S = 30.0
_applied_at: list[float] = []


def connected_config(**overrides):
    """``load_config`` after the connections are applied (again at most every
    ``CONNECTED_MAX_AGE_S``, so a rotated password is picked up): the API server's pages."""
    import time

    from pipeline_tasks.core.config import load_config

    now = time.monotonic()
    if not _applied_at or now - _applied_at[0] > CONNECTED_MAX_AGE_S:
        apply_connections()
        _applied_at[:] = [now]
    return load_config(**overrides)


def sql_url(conn_id: str, field: str = "sql_conn_id") -> str:
    """The SQLAlchemy URL of connection ``conn_id``, as its common.sql hook builds it
    (``sqlalchemy_url``, else ``get_uri`` as the hook's own engine does). A connection that does
    not exist, or whose type has no SQL hook, is refused naming the id and the type. Call the
    allow-list check first: this reads the connection."""
    from pipeline_tasks.core.errors import ConfigError

    conn = get_connection(conn_id)
    if conn is None:
        raise ConfigError(f"param {field}: Airflow connection {conn_id!r} is not defined (in any "
                          "secrets backend)")
    try:
        hook = conn.get_hook()
    except Exception as exc:  # noqa: BLE001 - an unknown type, or its provider is not installed
        raise ConfigError(f"param {field}: Airflow connection {conn_id!r} has type "
                          f"{conn.conn_type!r}, which has no SQL hook here (install its "
                          f"provider; {type(exc).__name__})") from None
    from airflow.providers.common.sql.hooks.sql import DbApiHook

    if not isinstance(hook, DbApiHook):
        raise ConfigError(f"param {field}: Airflow connection {conn_id!r} has type "
                          f"{conn.conn_type!r}, which is not an SQL database (its hook is "
                          f"{type(hook).__name__}, not a common.sql DbApiHook)")
    try:
        url = hook.sqlalchemy_url
        text = url if isinstance(url, str) else url.render_as_string(hide_password=False)
    except NotImplementedError:
        text = hook.get_uri()
    mask_value(conn.password)
    mask_url(text)
    return text
