"""named_lock: a file lock by default, a PostgreSQL advisory lock when registry_lock_url is set."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest

from pipeline_tasks.core.config import load_config
from pipeline_tasks.core.errors import ConfigError
from pipeline_tasks.core.locks import LockTimeout, libpq_url, lock_key, named_lock


def _pg_config(tmp_path, server):
    """A config whose registry lock is on ``server`` (the session's throwaway PostgreSQL)."""
    return load_config(home=str(tmp_path),
                       registry_lock_url=f"postgresql+psycopg2://postgres@{server}/postgres")


def _hold(config, name, ready, seconds):
    with named_lock(config, name):
        ready.set()
        time.sleep(seconds)


def _other_process_holds(config, name, seconds=60.0):
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=_hold, args=(config, name, ready, seconds))
    proc.start()
    assert ready.wait(60), "the holder did not get the lock"
    return proc


@pytest.mark.parametrize("kind", ["file", "postgres"])
def test_a_held_lock_excludes_and_times_out(tmp_path, kind, request):
    config = (_pg_config(tmp_path, request.getfixturevalue("postgres_server"))
              if kind == "postgres" else load_config(home=str(tmp_path)))
    holder = _other_process_holds(config, f"m-{kind}-{os.getpid()}")
    try:
        with (pytest.raises(LockTimeout, match="not acquired within 1 s"),
              named_lock(config, f"m-{kind}-{os.getpid()}", timeout=1)):
            pass
        with named_lock(config, f"other-{kind}-{os.getpid()}", timeout=1):  # other names are free
            pass
    finally:
        holder.kill()
        holder.join()


def test_the_advisory_lock_of_a_killed_holder_is_released(tmp_path, postgres_server):
    config = _pg_config(tmp_path, postgres_server)
    name = f"killed-{os.getpid()}"
    holder = _other_process_holds(config, name)
    os.kill(holder.pid, signal.SIGKILL)  # a lost worker: no unlock, its connection just ends
    holder.join()
    started = time.monotonic()
    with named_lock(config, name, timeout=30):
        assert time.monotonic() - started < 30


def test_urls_and_keys():
    assert libpq_url("postgresql+psycopg2://u@h:5/db") == "postgresql://u@h:5/db"
    with pytest.raises(ConfigError, match="not a PostgreSQL URL"):
        libpq_url("mysql://u@h/db")
    assert lock_key("a") == lock_key("a") != lock_key("b")
    assert -(2**63) <= lock_key("a") < 2**63
    with pytest.raises(ConfigError, match="registry_lock_url must be a postgresql"):
        load_config(registry_lock_url="redis://x")
