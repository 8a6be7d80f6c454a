"""Journeys and events written as the definitions and events front doors store them, for the
engine's tests."""

from __future__ import annotations

import asyncio
import hashlib
import time
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from router.journeys.definition import Journey
from router.queue.wakeups import notify
from tests.harness import RouterUnderTest


async def put_journey(dsn: str, journey_id: str, definition: dict[str, Any]) -> int:
    """Store `definition` as the journey's next version (checked against `Journey`)."""
    body = msgspec.json.encode(msgspec.convert(definition, Journey))
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            version: int = await conn.fetchval(
                "INSERT INTO journeys (id, version, source) VALUES ($1, 1, 'api')"
                " ON CONFLICT (id) DO UPDATE SET version = journeys.version + 1,"
                " updated_at = now() RETURNING version",
                journey_id,
            )
            await conn.execute(
                "INSERT INTO journey_versions (journey_id, version, definition, fingerprint)"
                " VALUES ($1, $2, $3::jsonb, $4)",
                journey_id,
                version,
                body.decode(),
                hashlib.sha256(body).digest(),
            )
    finally:
        await conn.close()
    return version


async def add_event(
    dsn: str,
    member_id: str,
    name: str,
    properties: dict[str, Any] | None = None,
    occurred_at: datetime | None = None,
) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO events (id, member_id, name, properties, occurred_at)"
                " VALUES (gen_random_uuid(), $1, $2, $3::jsonb, coalesce($4, now()))",
                member_id,
                name,
                msgspec.json.encode(properties or {}).decode(),
                occurred_at,
            )
            await notify(conn, "journey_events")
    finally:
        await conn.close()


async def add_events(dsn: str, events: list[tuple[str, str]]) -> None:
    """(member, name) events, stored in one transaction."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO events (id, member_id, name, occurred_at)"
                " SELECT gen_random_uuid(), m, n, now() FROM unnest($1::text[], $2::text[])"
                " AS e(m, n)",
                [m for m, _ in events],
                [n for _, n in events],
            )
            await notify(conn, "journey_events")
    finally:
        await conn.close()


async def add_member(router: RouterUnderTest, member_id: str, **fields: Any) -> None:
    body = {"email": f"{member_id}@example.jp", **fields}
    r = await router.client.put(f"/v1/members/{member_id}", json=body)
    assert r.status_code in (200, 201), r.text


async def runs(dsn: str, journey_id: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(
            "SELECT * FROM journey_runs WHERE journey_id = $1 ORDER BY entered_at, id", journey_id
        )
    finally:
        await conn.close()


async def steps(dsn: str, journey_id: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(
            "SELECT s.* FROM journey_steps s WHERE journey_id = $1 ORDER BY at, step", journey_id
        )
    finally:
        await conn.close()


async def until(check: Any, timeout: float = 15.0) -> Any:
    """Poll `check` (an async callable) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout}s; last {found!r}")
        await asyncio.sleep(0.05)
