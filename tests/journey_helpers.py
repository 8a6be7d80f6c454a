"""Journeys, events and members through the API, and the engine's tables read back, for the
engine's tests."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import httpx

from tests.harness import RouterUnderTest


async def put_journey(
    client: httpx.AsyncClient, journey_id: str, definition: dict[str, Any]
) -> int:
    """Store `definition` as the journey's next version through the API."""
    r = await client.put(f"/v1/journeys/{journey_id}", json=definition)
    assert r.status_code in (200, 201), r.text
    version: int = r.json()["version"]
    return version


async def add_event(
    client: httpx.AsyncClient,
    member_id: str,
    name: str,
    properties: dict[str, Any] | None = None,
) -> None:
    body = {"member_id": member_id, "name": name, "properties": properties or {}}
    r = await client.post("/v1/events", json=body)
    assert r.status_code == 202, r.text


async def add_events(client: httpx.AsyncClient, events: list[tuple[str, str]]) -> None:
    """(member, name) events, in one batch."""
    body = {"events": [{"member_id": m, "name": n} for m, n in events]}
    r = await client.post("/v1/events/batch", json=body)
    assert r.status_code == 200, r.text
    assert all(item["status"] == "accepted" for item in r.json()["results"]), r.text[:300]


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
