"""The allow-lists that keep trigger params inside what an operator allowed: which locations a
``source``/``current``/``labels`` param may name (``allowed_source_roots``, after the landing
folder) and which Airflow connections a ``sql_conn_id`` may use (``allowed_sql_conn_ids``).

Local paths are compared after resolving symlinks and '..' the way fsspec opens them; remote URLs
by scheme, host and normalised path. The checks take any object with the two settings (the
``PipelineConfig``), so this module never imports the config (which uses it to check them).
"""

from __future__ import annotations

import os
from typing import Protocol

from pipeline_tasks.core.errors import ConfigError
from pipeline_tasks.core.http import strip_userinfo


class Allowed(Protocol):
    """What the checks need of the configuration."""

    @property
    def source_roots(self) -> tuple[str, ...]: ...

    allowed_sql_conn_ids: tuple[str, ...]


#: What an Airflow connection id may be (``allowed_sql_conn_ids``).
CONN_ID_PATTERN = r"[A-Za-z0-9_.-]+"
LOCAL_PROTOCOLS = (None, "file", "local")


def _local_path(uri: str) -> str | None:
    """The local path fsspec opens for ``uri`` (the same parsing as the readers), with symlinks
    and '..' resolved; None when ``uri`` is not local."""
    import fsspec.core

    protocol, _ = fsspec.core.split_protocol(uri)
    if protocol not in LOCAL_PROTOCOLS:
        return None
    _, path = fsspec.core.url_to_fs(uri)
    return os.path.realpath(path)


def _url_parts(uri: str) -> tuple[str, str, str]:
    """``(scheme, netloc, path)`` of a remote URI, normalised: lower-case scheme and host,
    percent-escapes decoded, '.' and '..' folded (so ``/a/../b`` is ``/b``)."""
    import posixpath
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(uri)
    path = posixpath.normpath("/" + unquote(parts.path).lstrip("/"))
    return parts.scheme.lower(), parts.netloc.lower(), path.rstrip("/") or "/"


def is_under(path: str, root: str) -> bool:
    """``path`` is ``root`` or inside it, whole components only (``/landing2`` is not under
    ``/landing``)."""
    return root == "/" or path == root or path.startswith(root.rstrip("/") + "/")


def root_problem(root: str) -> str | None:
    """Why an ``allowed_source_roots`` entry is unusable, or None."""
    if "::" in root:
        return "is a chained fsspec URL ('::'): list the plain URL"
    if _local_path(root) is None:
        scheme, netloc, _ = _url_parts(root)
        if not netloc:
            return (f"needs a host or bucket (e.g. {scheme or 's3'}://bucket/prefix/): a bare "
                    "scheme would allow every location")
        return None
    written = root.split("://", 1)[1] if "://" in root else root.removeprefix("file:")
    if not written.startswith("/"):
        return "is not an absolute path (write /abs/path or file:///abs/path)"
    return None


def source_outside_roots(uri: str, roots: tuple[str, ...] | list[str]) -> str | None:
    """None when ``uri`` lies under one of ``roots``; else why not (for the error message).

    Local paths (plain, ``file://``) are resolved the way fsspec opens them, symlinks and '..'
    included, and compared by whole path components with the resolved roots. Any other URI must
    have the scheme and host of a listed root and a normalised path inside the root's path."""
    uri = uri.strip()
    if "::" in uri:
        return "chained fsspec URLs ('::') are not allowed"
    local = _local_path(uri)
    if local is not None:
        for root in roots:
            root_path = _local_path(root)
            if root_path is not None and is_under(local, root_path):
                return None
        written = uri.split("://", 1)[1] if "://" in uri else uri.removeprefix("file:")
        return f"it resolves to {local}" if local != written else ""
    scheme, netloc, path = _url_parts(uri)
    for root in roots:
        if _local_path(root) is not None:
            continue
        r_scheme, r_netloc, r_path = _url_parts(root)
        if (scheme, netloc) == (r_scheme, r_netloc) and is_under(path, r_path):
            return None
    return f"{scheme or 'its'} URLs are reachable only under a listed root"


def check_source_param(param: str, uri: str, config: Allowed) -> None:
    """Refuse a trigger param that names data outside ``config.source_roots``."""
    if not uri or not str(uri).strip():
        return
    why = source_outside_roots(str(uri), config.source_roots)
    if why is None:
        return
    shown = ", ".join(strip_userinfo(r) for r in config.source_roots)
    raise ConfigError(
        f"param {param}: {strip_userinfo(str(uri))} is outside allowed_source_roots "
        f"(MLOPS_ALLOWED_SOURCE_ROOTS){': ' + why if why else ''}. Allowed: {shown}. An operator "
        f"can list another root in MLOPS_ALLOWED_SOURCE_ROOTS.")


def check_sql_conn_id(conn_id: str | None, config: Allowed) -> None:
    """Refuse a ``sql_conn_id`` param that is not in ``config.allowed_sql_conn_ids``: checked
    before the connection is read."""
    if not conn_id:
        return
    if conn_id not in config.allowed_sql_conn_ids:
        listed = ", ".join(config.allowed_sql_conn_ids) or "none: SQL sources are off"
        raise ConfigError(
            f"param sql_conn_id: {conn_id!r} is not in allowed_sql_conn_ids "
            f"(MLOPS_ALLOWED_SQL_CONN_IDS). Allowed: {listed}. An operator can list a "
            f"connection (with a read-only database role) in MLOPS_ALLOWED_SQL_CONN_IDS.")


def check_output_conn_id(conn_id: str | None, config) -> None:
    """Refuse an ``output_conn_id`` param (where batch scores are written) that is not in
    ``config.allowed_output_conn_ids``: checked before the connection is read."""
    if not conn_id:
        return
    allowed = tuple(getattr(config, "allowed_output_conn_ids", ()) or ())
    if conn_id not in allowed:
        listed = ", ".join(allowed) or "none: SQL output is off"
        raise ConfigError(
            f"param output_conn_id: {conn_id!r} is not in allowed_output_conn_ids "
            f"(MLOPS_ALLOWED_OUTPUT_CONN_IDS). Allowed: {listed}. An operator can list a "
            f"connection whose role may write the output table in MLOPS_ALLOWED_OUTPUT_CONN_IDS.")


#: An output table: a SQL identifier, optionally schema-qualified (``schema.table``).
TABLE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$"


def check_table_name(param: str, name: str | None) -> tuple[str | None, str] | None:
    """``(schema, table)`` of an ``output_table`` param, or None when it is empty; a name that
    is not a plain (optionally schema-qualified) SQL identifier is refused, so a trigger param
    never reaches SQL as anything but a quoted identifier."""
    import re

    if not name:
        return None
    if not re.fullmatch(TABLE_PATTERN, name):
        raise ConfigError(f"param {param}: not a table name (letters, digits and '_', starting "
                          f"with a letter or '_', at most 63 characters, optionally "
                          f"'schema.table')")
    schema, _, table = name.rpartition(".")
    return (schema or None, table)
