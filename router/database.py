"""PostgreSQL: the one store. Embedded server when no URL is configured, pool, migrations.

Migrations are plain numbered SQL files in `router/migrations/`, applied in order inside
one transaction each and recorded in `schema_migrations`. A session-level advisory lock
makes concurrent `router migrate` / `router serve` start-ups safe: the second waits, then
finds nothing left to do.
"""

from __future__ import annotations

import logging
import os
import socket
import urllib.parse
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg
import msgspec

from router.log_safety import ExceptionInOneLine

log = logging.getLogger(__name__)
_POOL_LOG = ExceptionInOneLine()

MIGRATION_LOCK_ID = 0x64725F6D6967  # "dr_mig": any constant shared by all router processes
MIGRATIONS_TABLE = "schema_migrations"  # which migrations ran; not part of the schema they make

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    from router.config import Config

    Pool: TypeAlias = asyncpg.Pool[asyncpg.Record]
    # A plain connection or one borrowed from the pool: both speak the same API.
    Connection: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]
else:
    Pool = asyncpg.Pool
    Connection = asyncpg.Connection


@dataclass(frozen=True)
class DatabaseTarget:
    """Where the router's PostgreSQL is, and a description safe to print."""

    dsn: str
    description: str


def database_target(config: Config) -> DatabaseTarget:
    """The configured database: `[database] url`, else the embedded server in `data_dir`.
    Here, not in router.service, so that commands that only need the database (`router
    migrate`, `router keys ...`) do not load the channels and the LINE SDK first."""
    if config.database.url:
        return url_target(config.database.url)
    return embedded_target(config.database.data_dir)


def embedded_target(data_dir: str | Path) -> DatabaseTarget:
    """Start (or reuse) the PostgreSQL server shipped by `pgserver` in `data_dir`."""
    with warnings.catch_warnings():
        # pgserver keeps its lock file in the user's runtime directory, which platformdirs
        # replaces with /tmp/runtime-<uid> when XDG_RUNTIME_DIR is unset (a server, a
        # container) and says so on stderr: harmless, and the first line a new user saw.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        from pgserver.postgres_server import get_server

    path = Path(data_dir).resolve()
    path.mkdir(parents=True, exist_ok=True)
    server = get_server(path, cleanup_mode="stop")
    return DatabaseTarget(dsn=server.get_uri(), description=f"embedded PostgreSQL in {path}")


def url_target(url: str) -> DatabaseTarget:
    return DatabaseTarget(dsn=url, description=f"PostgreSQL at {redact_dsn(url)}")


def redact_dsn(dsn: str) -> str:
    """Hide the password (in the user info or as a `password=` parameter) before showing a DSN."""
    try:
        parts = urllib.parse.urlsplit(dsn)
    except ValueError:
        return "(unparsable database URL)"
    if not parts.scheme:
        return dsn
    userinfo, at, hostport = parts.netloc.rpartition("@")
    netloc = (
        f"{userinfo.split(':', 1)[0]}:***@{hostport}" if at and ":" in userinfo else parts.netloc
    )
    query = "&".join(
        "password=***" if item.split("=", 1)[0].lower() == "password" else item
        for item in parts.query.split("&")
    )
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


class DatabaseUnreachable(Exception):
    """The database could not be connected to at start; the message is one line saying
    where (host and port, never the password) and why."""


CONNECT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    ValueError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)
"""What connecting raises for an unreachable server, a refused login or an unusable URL."""


def connect_failure(dsn: str, exc: BaseException) -> str:
    """Why connecting to `dsn` failed, in one line: "cannot reach PostgreSQL at db:5432
    (connection refused)". The URL's password never appears."""
    try:
        parts = urllib.parse.urlsplit(dsn)
        where = f"{parts.hostname or 'localhost'}:{parts.port or 5432}"
    except ValueError:
        return f"the database URL is not valid: {redact_dsn(dsn)}"
    if isinstance(exc, socket.gaierror):
        return f"cannot reach PostgreSQL at {where} (host name not found)"
    if isinstance(exc, OSError) and (exc.errno or exc.strerror):
        # asyncpg words its own strerror ("connect call failed ..."); the errno says it plainly.
        reason = os.strerror(exc.errno) if exc.errno else str(exc.strerror)
        return f"cannot reach PostgreSQL at {where} ({reason.lower()})"
    if isinstance(exc, TimeoutError):
        return f"cannot reach PostgreSQL at {where} (no answer in time)"
    if isinstance(exc, asyncpg.PostgresError):
        return f"PostgreSQL at {where} refused the connection: {exc}"
    reason = (
        str(exc).replace(dsn, redact_dsn(dsn)).splitlines()[0] if str(exc) else type(exc).__name__
    )
    return f"the database URL {redact_dsn(dsn)} cannot be used: {reason}"


async def _init_connection(conn: Connection) -> None:
    # jsonb travels as text; msgspec does the (de)serialisation at the edges.
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: v if isinstance(v, str) else msgspec.json.encode(v).decode(),
        decoder=msgspec.json.decode,
        schema="pg_catalog",
    )


async def _keep_session(conn: Connection) -> None:
    """Returning a connection to the pool costs no round trip. asyncpg's default reset
    (UNLISTEN, advisory unlock, CLOSE ALL, RESET ALL) undoes session state the router never
    leaves on a pool connection: the queues' one LISTEN connection is its own, advisory locks
    are transaction-scoped (migrations lock on a connection of their own), no session setting
    is changed, and cursors close with their transaction. asyncpg still rolls back a
    transaction left open before it calls this."""


async def create_pool(dsn: str, size: int) -> Pool:
    # While the database is down the pool retries its connection floor, logging each failure
    # with a traceback: one line each is enough.
    logging.getLogger("asyncpg.pool").addFilter(_POOL_LOG)
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=1,
            max_size=size,
            init=_init_connection,
            reset=_keep_session,
            command_timeout=60,
        )
    except CONNECT_ERRORS as exc:
        raise DatabaseUnreachable(connect_failure(dsn, exc)) from exc
    assert pool is not None
    return pool


def migration_files() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every `NNNN_name.sql`, in version order."""
    found: list[tuple[int, str, str]] = []
    for entry in resources.files("router.migrations").iterdir():
        name = entry.name
        if not name.endswith(".sql"):
            continue
        number, _, _ = name.partition("_")
        found.append((int(number), name, entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [v for v, _, _ in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration numbers in {[n for _, n, _ in found]}")
    return found


async def migrate(dsn: str) -> list[str]:
    """Apply pending migrations; return the names applied by this call."""
    try:
        conn: Any = await asyncpg.connect(dsn)
    except CONNECT_ERRORS as exc:
        raise DatabaseUnreachable(connect_failure(dsn, exc)) from exc
    applied: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
        try:
            await conn.execute(
                f"""CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (
                       version integer PRIMARY KEY,
                       name text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = {
                r["version"]
                for r in await conn.fetch(f"SELECT version FROM {MIGRATIONS_TABLE}")  # noqa: S608
            }
            for version, name, sql in migration_files():
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(
                        f"INSERT INTO {MIGRATIONS_TABLE} (version, name) VALUES ($1, $2)",  # noqa: S608
                        version,
                        name,
                    )
                log.info("applied migration %s", name)
                applied.append(name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
    finally:
        await conn.close()
    return applied
