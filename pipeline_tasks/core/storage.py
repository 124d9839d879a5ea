"""Storage through fsspec URIs, with atomic writes and run-derived paths.

``file://`` is the embedded default; ``s3://`` or a shared volume work the same way. Every write
goes to a temporary name beside the target and is then renamed, so a reader never sees half a
file. Output paths come from the run (dag_id, data interval, run id), never from ``now()``.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import socket
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from pipeline_tasks.core.names import safe_name

if TYPE_CHECKING:
    import pandas as pd


#: What this module set in ``fsspec.config.conf``: by protocol, (options, the entry before).
_CONFIGURED: dict[str, tuple[dict, dict | None]] = {}


def lake_protocol(lake_uri: str) -> str:
    """The fsspec protocol of the lake (``file`` for a plain path)."""
    scheme = urlparse(lake_uri).scheme
    return scheme if scheme and len(scheme) > 1 else "file"  # "C:" is a drive, not a scheme


def configure(config) -> None:
    """Give every fsspec filesystem of the lake's protocol ``config.lake_storage_options``
    (its credentials, endpoint...), through fsspec's own defaults (``fsspec.config.conf``, over
    what ``FSSPEC_<PROTOCOL>_*`` variables set there): this module's readers and writers and
    any other fsspec user in the process. Options of an earlier call are taken back first;
    nothing is imported when there is nothing to set."""
    options = dict(config.lake_storage_options or {})
    protocol = lake_protocol(config.lake_uri)
    wanted = {protocol: options} if options and protocol != "file" else {}
    if wanted == {name: values for name, (values, _) in _CONFIGURED.items()}:
        return
    import fsspec.config

    for name, (_, before) in list(_CONFIGURED.items()):
        if before is None:
            fsspec.config.conf.pop(name, None)
        else:
            fsspec.config.conf[name] = before
        del _CONFIGURED[name]
    for name, values in wanted.items():
        before = fsspec.config.conf.get(name)
        _CONFIGURED[name] = (dict(values), None if before is None else dict(before))
        fsspec.config.conf[name] = {**(before or {}), **values}


def url_to_fs(uri: str):
    """Return ``(filesystem, path)`` for a URI or a plain local path."""
    import fsspec

    return fsspec.core.url_to_fs(uri)


def join(base: str, *parts: str) -> str:
    """Join URI parts with single slashes (keeps the scheme of ``base``)."""
    out = base.rstrip("/")
    for part in parts:
        out += "/" + str(part).strip("/")
    return out


def local_path(uri: str) -> Path:
    """The local path of a ``file://`` URI (or a plain path); errors for remote URIs."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(parsed.path if parsed.scheme else uri)
    raise ValueError(f"{uri} is not a local path")


def is_local(uri: str) -> bool:
    return urlparse(uri).scheme in ("", "file")


def exists(uri: str) -> bool:
    fs, path = url_to_fs(uri)
    return fs.exists(path)


log = logging.getLogger(__name__)

#: A temporary file this old is left over by a writer that died, wherever it ran.
STALE_TMP_S = 3600.0


def _tmp_name(path: str) -> str:
    """``.<name>.tmp-<host>.<pid>.<random>`` beside the target: who wrote it, for the sweep."""
    parent, _, name = path.rpartition("/")
    host = safe_name(socket.gethostname())[:40] or "host"
    return f"{parent}/.{name}.tmp-{host}.{os.getpid()}.{uuid.uuid4().hex[:12]}"


def _writer_dead(tmp_name: str) -> bool:
    """True when a temporary file's writer was a process of this machine that is gone."""
    match = re.search(r"\.tmp-(.+)\.(\d+)\.[0-9a-f]{12}$", tmp_name)
    if not match or match.group(1) != (safe_name(socket.gethostname())[:40] or "host"):
        return False
    try:
        os.kill(int(match.group(2)), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def sweep_partial_writes(fs, path: str, *, any_name: bool = False) -> list[str]:
    """Remove the temporary files of earlier writes of ``path`` whose writer died (a task killed
    mid-write): its own machine's dead processes at once, any writer's after ``STALE_TMP_S``.
    ``any_name``: those of every file in ``path``'s folder (``path`` is then the folder)."""
    import time

    if any_name:
        pattern = f"{glob_escape(path.rstrip('/'))}/.*.tmp-*"
    else:
        parent, _, name = path.rpartition("/")
        pattern = f"{parent}/.{glob_escape(name)}.tmp-*"
    removed = []
    for tmp in fs.glob(pattern):
        try:
            modified = fs.modified(tmp).timestamp()
        except (OSError, NotImplementedError, AttributeError):
            modified = time.time()
        if _writer_dead(tmp) or time.time() - modified > STALE_TMP_S:
            try:
                fs.rm(tmp)
                removed.append(tmp)
            except FileNotFoundError:
                pass
    if removed:  # a killed earlier attempt's partial write: say what this attempt cleaned up
        log.warning("removed %d partial file(s) an earlier, killed writer left beside %s: %s",
                    len(removed), path, ", ".join(r.rpartition("/")[2] for r in removed))
    return removed


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[\]])", r"[\1]", name)


def sweep_partial_writes_in(folder_uri: str) -> list[str]:
    """``sweep_partial_writes`` for every file of the folder ``folder_uri`` (nothing if it does
    not exist yet)."""
    fs, path = url_to_fs(folder_uri)
    return sweep_partial_writes(fs, path, any_name=True) if fs.exists(path) else []


def atomic_write_bytes(uri: str, data: bytes, *, sweep: bool = True) -> str:
    """Write ``data`` to ``uri`` through a temporary name and a rename. Returns ``uri``.

    Partial files a killed earlier writer of the same target left behind are removed first
    (``sweep``; a caller whose names are never reused sweeps the folder itself, once:
    ``sweep_partial_writes_in``, since listing a big folder on every write is slow).
    """
    fs, path = url_to_fs(uri)
    fs.makedirs(path.rpartition("/")[0], exist_ok=True)
    if sweep:
        sweep_partial_writes(fs, path)
    tmp = _tmp_name(path)
    try:
        with fs.open(tmp, "wb") as handle:
            handle.write(data)
        fs.mv(tmp, path)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:  # say where: "No space left on device" alone names nothing
            raise OSError(exc.errno, f"no space left on the device holding {uri} "
                                     f"({len(data)} bytes to write)", uri) from exc
        raise
    finally:
        if fs.exists(tmp):
            fs.rm(tmp)
    return uri


def atomic_write_json(uri: str, obj: Any) -> str:
    return atomic_write_bytes(uri, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


def read_json(uri: str) -> Any:
    fs, path = url_to_fs(uri)
    with fs.open(path, "rb") as handle:
        return json.loads(handle.read())


def atomic_write_parquet(df: pd.DataFrame, uri: str) -> str:
    """Write a DataFrame as one Parquet file, atomically."""
    import io

    buffer = io.BytesIO()
    df.to_parquet(buffer, index=False, engine="pyarrow")
    return atomic_write_bytes(uri, buffer.getvalue())


def read_parquet(uri: str) -> pd.DataFrame:
    import pandas as pd

    fs, path = url_to_fs(uri)
    with fs.open(path, "rb") as handle:
        return pd.read_parquet(handle, engine="pyarrow")


def copy(src_uri: str, dst_uri: str) -> str:
    """Copy one file atomically (the destination appears whole or not at all)."""
    fs, path = url_to_fs(src_uri)
    with fs.open(path, "rb") as handle:
        return atomic_write_bytes(dst_uri, handle.read())
