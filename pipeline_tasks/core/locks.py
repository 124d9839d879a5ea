"""Named mutual-exclusion locks shared by every process that may run a pipeline task.

- ``config.registry_lock_url`` set (``postgresql://...``): a PostgreSQL session advisory lock.
  Every Celery worker, on any machine, that reaches the database shares it, and the server
  releases it when the holder's connection ends, so a worker that dies (SIGKILL, lost machine)
  never leaves it held.
- empty (the embedded default): a file lock under ``config.locks_dir``, which holds only between
  processes of one machine.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline_tasks.core.config import PipelineConfig
from pipeline_tasks.core.errors import ConfigError
from pipeline_tasks.core.names import safe_name

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 120.0


class LockTimeout(TimeoutError):
    """The lock was not acquired in time (another holder is slow or stuck)."""


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_advisory_lock`` from a lock name."""
    return int.from_bytes(hashlib.sha256(f"mlops:{name}".encode()).digest()[:8], "big",
                          signed=True)


def libpq_url(url: str) -> str:
    """``postgresql+psycopg2://...`` (SQLAlchemy style, or Celery's ``db+postgresql://``) as a
    URL libpq accepts."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.removeprefix("db+")
    if not sep or not scheme.startswith("postgres"):
        raise ConfigError(f"not a PostgreSQL URL: {scheme}://...")
    return f"postgresql://{rest}"


@contextmanager
def named_lock(config: PipelineConfig, name: str,
               timeout: float = DEFAULT_TIMEOUT_S) -> Iterator[None]:
    """Hold the lock ``name`` for the ``with`` block; raise ``LockTimeout`` after ``timeout``."""
    if config.registry_lock_url:
        with _advisory_lock(config.registry_lock_url, name, timeout):
            yield
        return
    from filelock import FileLock, Timeout

    folder = Path(config.locks_dir)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(folder / f"{safe_name(name, 'lock')}.lock"), timeout=timeout):
            yield
    except Timeout as exc:
        raise LockTimeout(f"lock {name!r} not acquired within {timeout:.0f} s") from exc


@contextmanager
def _advisory_lock(url: str, name: str, timeout: float) -> Iterator[None]:
    import psycopg2
    import psycopg2.errors

    key = lock_key(name)
    conn = psycopg2.connect(libpq_url(url), connect_timeout=30,
                            application_name=f"mlops-lock:{name}"[:63])
    try:
        conn.autocommit = True
        started = time.monotonic()
        with conn.cursor() as cur:
            # lock_timeout bounds the wait inside pg_advisory_lock itself
            cur.execute("SET lock_timeout = %s", (f"{int(timeout * 1000)}ms",))
            try:
                cur.execute("SELECT pg_advisory_lock(%s)", (key,))
            except psycopg2.errors.LockNotAvailable as exc:
                raise LockTimeout(f"advisory lock {name!r} not acquired within "
                                  f"{timeout:.0f} s") from exc
        waited = time.monotonic() - started
        if waited > 1.0:
            log.info("waited %.1f s for the advisory lock %r", waited, name)
        try:
            yield
        finally:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", (key,))
    finally:
        conn.close()  # ends the session: the server drops any lock it still held
