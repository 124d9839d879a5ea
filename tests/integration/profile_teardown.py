"""Teardown of the throwaway production profiles that tests and benchmarks provision: drop the
databases, the PostgreSQL roles and the Redis ACL user that ``ops.production.provision`` made.

A test helper, not part of the library (no command of the tooling drops a profile): the tests
import it by name (``tests/conftest.py`` puts this folder on ``sys.path``), and
``benchmarks/bench_backfill.py`` puts this folder on ``sys.path`` itself.
"""

from __future__ import annotations

from pipeline_tasks.ops.production import (
    is_admin,
    profile_databases,
    redis_broker,
    run_as_admin,
)


def drop_databases(urls: list[str], admin: str | None = None) -> None:
    """Drop the databases (closing their sessions first), then their roles; missing ones are
    fine."""
    from psycopg2 import sql

    def drop(cur, name: str, user: str, password: str) -> None:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))

    def drop_role(cur, name: str, user: str, password: str) -> None:
        if not is_admin(cur, user) and password:
            cur.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(user)))

    for url in urls:
        run_as_admin(url, drop, admin)
    for url in urls:
        run_as_admin(url, drop_role, admin)


def drop_redis_user(env: dict[str, str]) -> None:
    """Delete the broker URL's Redis ACL user (never the default user); a missing one is fine."""
    import redis

    broker = redis_broker(env)
    if broker is not None and broker[1] != "default":
        client = redis.Redis.from_url(broker[0], socket_timeout=30)
        try:
            client.acl_deluser(broker[1])
        finally:
            client.close()


def unprovision(env: dict[str, str]) -> None:
    """Undo ``provision`` (throwaway profiles of tests and benchmarks)."""
    drop_databases(profile_databases(env), env.get("PG_ADMIN_URL"))
    drop_redis_user(env)
