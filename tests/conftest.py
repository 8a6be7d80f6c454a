"""Shared test fixtures: real PostgreSQL, the LINE simulator, a real SMTP sink, the router.

PostgreSQL is the server named by DATABASE_URL, or an embedded one (pgserver) started once
per test run in a temporary directory.
"""

from __future__ import annotations

import gc
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from router.database import MIGRATIONS_TABLE, migrate
from tests.harness import LINE_TOKEN, SmtpSink, running_router

# Every router start makes TLS client contexts (LINE's API clients, the SMTP upstream, the test's
# httpx client), and each parsed the system's ~150 certificate authorities: about 0.3 s of CPU
# per start, a large share of the suite. No test reaches a public server and every test of TLS
# names its own private CA (`[email] ca_file`, a cert bundle), so the run trusts by default
# only a CA that signed nothing (also in the router processes tests start, which inherit it).
# Set even where the environment names a bundle already (many images set SSL_CERT_FILE to the
# system's): that bundle is the very parse this avoids.
os.environ["SSL_CERT_FILE"] = str(Path(__file__).with_name("no_public_cas.pem"))

# A test process holds some 350,000 long-lived objects (the LINE SDK's models, Litestar, the
# test modules), and Python's cyclic garbage collector walked them again and again: about a
# third of building the router's app, which every test that starts a router does. Collections
# come less often (every 10,000 new objects instead of 700), and what was loaded when the tests
# were collected is left out of them (`gc.freeze` in `pytest_collection_finish`). Garbage is
# still collected; only the bookkeeping is cheaper.
gc.set_threshold(10_000, 10, 10)


@pytest.fixture(scope="session")
def database_dsn() -> Iterator[str]:
    url = os.environ.get("DATABASE_URL")
    if url:
        # Test processes run side by side (pytest-xdist): each gets a database of its own on
        # that server, since every test starts by emptying the tables.
        worker = os.environ.get("PYTEST_XDIST_WORKER")
        yield url if worker is None else _worker_database(url, worker)
        return
    import pgserver

    with tempfile.TemporaryDirectory(prefix="router-test-pg-") as tmp:
        server = pgserver.get_server(tmp, cleanup_mode="stop")
        # A server that lives only as long as this run: commits need not wait for the disk
        # (tests/separate_postgres.py does the same). A commit still reaches the operating
        # system before it is answered, so a crash of PostgreSQL or of the router loses none.
        server.psql("ALTER SYSTEM SET fsync = off")
        server.psql("SELECT pg_reload_conf()")
        yield server.get_uri()
        server.cleanup()


def _worker_database(url: str, worker: str) -> str:
    """A fresh database named for this test process on the server of `url`; its URL."""
    import asyncio
    from urllib.parse import urlsplit, urlunsplit

    name = f"router_test_{worker}"

    async def create() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
async def migrated(database_dsn: str) -> str:
    await migrate(database_dsn)
    return database_dsn


@pytest.fixture(scope="session")
async def tables(migrated: str) -> list[str]:
    """Every table the migrations made, read from the catalog once per run."""
    conn = await asyncpg.connect(migrated)
    try:
        rows = await conn.fetch(
            "SELECT quote_ident(tablename) AS name FROM pg_tables"
            " WHERE schemaname = 'public' AND tablename <> $1 ORDER BY tablename",
            MIGRATIONS_TABLE,
        )
    finally:
        await conn.close()
    return [r["name"] for r in rows]


# The tables written since they were last emptied: a table's file has no page until a row is
# written to it (TRUNCATE gives it a new, empty file), whether that row is still there, deleted
# or rolled back. Asking costs a few ms, where TRUNCATE of every table (new files for each
# table and index) cost seconds on a busy machine.
WRITTEN_TABLES = (
    "SELECT coalesce(array_agg(name ORDER BY name), '{}') FROM unnest($1::text[]) AS name"
    " WHERE pg_relation_size(name::regclass) > 0"
)


@pytest.fixture
async def dsn(migrated: str, tables: list[str]) -> str:
    """A migrated database with no rows left by earlier tests: every table written since it
    was last emptied is emptied (TRUNCATE ... CASCADE, as every table was before); the
    others are exactly as TRUNCATE left them."""
    conn = await asyncpg.connect(migrated)
    try:
        written: list[str] = await conn.fetchval(WRITTEN_TABLES, tables)
        if written:
            await conn.execute(f"TRUNCATE {', '.join(written)} CASCADE")
    finally:
        await conn.close()
    return migrated


@pytest.fixture(scope="session")
async def line_simulator() -> AsyncIterator[object]:
    from linesim import LineSimulator

    sim = LineSimulator(access_tokens=[LINE_TOKEN])
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
def line_sim(line_simulator: object) -> object:
    line_simulator.reset()  # type: ignore[attr-defined]
    return line_simulator


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture
def smtp(smtp_server: SmtpSink) -> SmtpSink:
    smtp_server.reset()
    return smtp_server


@pytest.fixture
async def router(dsn: str, line_sim: object, smtp: SmtpSink) -> AsyncIterator[object]:
    async with running_router(dsn, line_sim.base_url, smtp) as r:  # type: ignore[attr-defined]
        yield r


def pytest_collection_finish(session: pytest.Session) -> None:
    """Where a test of this process's run uses the browser, chromium starts being installed
    now if it is missing (in each test process: a lock makes one of them install it), so that
    the install overlaps the tests that run before the first browser test. What is loaded by
    now stays out of the garbage collector's walks (see `gc.set_threshold` above)."""
    runs_tests = hasattr(session.config, "workerinput") or not session.config.getoption(
        "numprocesses", None
    )
    if runs_tests:
        gc.collect()
        gc.freeze()
    if runs_tests and any("browser" in getattr(i, "fixturenames", ()) for i in session.items):
        from tests.browser import start_installing_chromium

        start_installing_chromium()


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    """Headless Debian chromium for the dashboard's tests (tests/browser.py), one per process;
    it waits for the install started at session start where one was needed."""
    from tests.browser import chromium

    async with chromium() as launched:
        yield launched


# For the simulator's own tests: each of those modules defines the `simulator` these use and
# the access `TOKEN` it accepts.
@pytest.fixture(scope="module")
async def api_client(simulator: Any, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    from linebot.v3.messaging import AsyncApiClient, Configuration

    token = request.module.TOKEN
    client = AsyncApiClient(Configuration(host=simulator.base_url, access_token=token))
    yield client
    await client.close()


@pytest.fixture
def api(api_client: Any) -> Any:
    from linebot.v3.messaging import AsyncMessagingApi

    return AsyncMessagingApi(api_client)


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
