"""Migrations: concurrent start-ups apply each migration exactly once, under the advisory lock."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

import router.migrations
from router.database import MIGRATION_LOCK_ID, migrate
from tests.router_command import run_router_command

ROOT = Path(__file__).resolve().parent.parent
MIGRATION_NAMES = sorted(
    p.name for p in Path(router.migrations.__file__).parent.glob("*.sql") if p.name[0].isdigit()
)
TABLES = ("members", "contents", "intents", "deliveries", "api_keys", "rate_buckets")


def with_database(dsn: str, name: str) -> str:
    """The same server and credentials, another database (the DSN's path)."""
    return urlunsplit(urlsplit(dsn)._replace(path="/" + name))


@contextlib.asynccontextmanager
async def fresh_database(server_dsn: str) -> AsyncIterator[str]:
    """Create an empty database on the server of `server_dsn`; drop it afterwards."""
    name = f"router_test_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield with_database(server_dsn, name)
    finally:
        admin = await asyncpg.connect(server_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def recorded_migrations(url: str) -> list[tuple[int, str]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
        return [(r["version"], r["name"]) for r in rows]
    finally:
        await conn.close()


async def missing_tables(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        return [t for t in TABLES if await conn.fetchval("SELECT to_regclass($1)", t) is None]
    finally:
        await conn.close()


async def wait_for_lock_waiters(holder: asyncpg.Connection, count: int) -> None:
    """Until `count` sessions queue behind the migration lock that `holder` holds."""
    deadline = asyncio.get_running_loop().time() + 20
    waiting = 0
    while asyncio.get_running_loop().time() < deadline:
        waiting = await holder.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        if waiting >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{waiting} of {count} sessions waited for the migration lock")


def expected_records() -> list[tuple[int, str]]:
    return [(int(name.partition("_")[0]), name) for name in MIGRATION_NAMES]


def test_there_are_migrations_to_apply() -> None:
    assert MIGRATION_NAMES
    assert MIGRATION_NAMES[0].startswith("0001_")


async def test_fresh_database_helper_gives_an_empty_database(dsn: str) -> None:
    async with fresh_database(dsn) as url:
        assert url != dsn
        assert sorted(await missing_tables(url)) == sorted(TABLES)
        conn = await asyncpg.connect(url)
        try:
            name = await conn.fetchval("SELECT current_database()")
        finally:
            await conn.close()
        assert url.split("?")[0].endswith("/" + name)
    admin = await asyncpg.connect(dsn)
    try:
        assert not await admin.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name)
    finally:
        await admin.close()


async def test_concurrent_tasks_apply_each_migration_exactly_once(dsn: str) -> None:
    async with fresh_database(dsn) as url:
        # Hold the lock until all eight are queued behind it, so that they really race.
        holder = await asyncpg.connect(url)
        try:
            await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
            tasks = asyncio.gather(*(migrate(url) for _ in range(8)))
            try:
                await wait_for_lock_waiters(holder, 8)
            finally:
                await holder.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
            results = await asyncio.wait_for(tasks, 30)
        finally:
            await holder.close()
        applied = Counter(name for names in results for name in names)
        assert applied == Counter(MIGRATION_NAMES)
        # Each task returns the migrations *it* applied: one did everything, the rest nothing.
        assert sorted(len(names) for names in results) == [0] * 7 + [len(MIGRATION_NAMES)]
        assert await recorded_migrations(url) == expected_records()
        assert await missing_tables(url) == []
        assert await migrate(url) == []
        assert await recorded_migrations(url) == expected_records()


async def test_migrate_waits_while_another_session_holds_the_lock(dsn: str) -> None:
    async with fresh_database(dsn) as url:
        holder = await asyncpg.connect(url)
        try:
            await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
            task = asyncio.create_task(migrate(url))
            await asyncio.sleep(0.5)
            assert not task.done()
            assert await holder.fetchval("SELECT to_regclass('schema_migrations')") is None
            await holder.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
            assert await asyncio.wait_for(task, 30) == MIGRATION_NAMES
        finally:
            await holder.close()
        assert await recorded_migrations(url) == expected_records()


async def test_migrate_releases_the_lock(dsn: str) -> None:
    async with fresh_database(dsn) as url:
        await migrate(url)
        conn = await asyncpg.connect(url)
        try:
            # Another session can take the lock at once: no one holds it any more.
            assert await conn.fetchval("SELECT pg_try_advisory_lock($1)", MIGRATION_LOCK_ID)
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
        finally:
            await conn.close()


async def test_two_router_migrate_processes_apply_each_migration_exactly_once(
    dsn: str,
) -> None:
    async with fresh_database(dsn) as url:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")}
        env["ROUTER_DATABASE_URL"] = url
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))

        async def run() -> tuple[int, str, str]:
            return await run_router_command("migrate", env=env, timeout=30)

        holder = await asyncpg.connect(url)
        try:
            await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
            both = asyncio.gather(run(), run())
            try:
                await wait_for_lock_waiters(holder, 2)
            finally:
                await holder.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
            results = await both
        finally:
            await holder.close()
        counts = []
        for code, out, err in results:
            assert code == 0, out + err
            found = re.search(r"applied (\d+) migration", out)
            assert found, out
            counts.append(int(found.group(1)))
        assert sorted(counts) == [0, len(MIGRATION_NAMES)]
        assert await recorded_migrations(url) == expected_records()
        assert await missing_tables(url) == []
