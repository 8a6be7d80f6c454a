"""`[retention] audience_days`: audiences unused for that long are deleted with their entries;
ones uploaded to, synced to LINE or named by a campaign in the window, or named by a campaign
still fanning out, are kept; with the default (0) none is deleted."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg

from router import retention
from tests.harness import SmtpSink, running_router

OLD, RECENT = "40 days", "2 days"


async def add_audience(conn: asyncpg.Connection, name: str, updated: str) -> uuid.UUID:
    audience_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO audiences (id, name, type, updated_at)"
        " VALUES ($1, $2, 'email', now() - $3::text::interval)",
        audience_id,
        name,
        updated,
    )
    await conn.execute(
        "INSERT INTO audience_entries (audience_id, value_sha256) VALUES ($1, '\\x01'), ($1, '\\x02')",
        audience_id,
    )
    return audience_id


async def add_campaign(
    conn: asyncpg.Connection, audience: uuid.UUID, created: str, status: str, *, exclude: bool
) -> None:
    targets, excluded = ([uuid.uuid4()], [audience]) if exclude else ([audience], [])
    await conn.execute(
        "INSERT INTO campaigns (id, audience_ids, exclude_audience_ids, template, request_sha256,"
        " status, created_at) VALUES ($1, $2, $3, '{}', '\\x00', $4, now() - $5::text::interval)",
        uuid.uuid4(),
        targets,
        excluded,
        status,
        created,
    )


async def seed(conn: asyncpg.Connection) -> dict[str, uuid.UUID]:
    """Audiences by what keeps them (or not), each last uploaded to long ago unless named so."""
    audiences = {
        name: await add_audience(conn, name, RECENT if name == "uploaded recently" else OLD)
        for name in (
            "unused",
            "named by an old finished campaign",
            "uploaded recently",
            "synced recently",
            "excluded by a recent campaign",
            "named by an old campaign still fanning out",
        )
    }
    await conn.execute(
        "UPDATE audiences SET line_synced_at = now() - $2::text::interval WHERE id = $1",
        audiences["synced recently"],
        RECENT,
    )
    await add_campaign(
        conn, audiences["named by an old finished campaign"], OLD, "sending", exclude=False
    )
    await add_campaign(
        conn, audiences["excluded by a recent campaign"], RECENT, "sending", exclude=True
    )
    await add_campaign(
        conn,
        audiences["named by an old campaign still fanning out"],
        OLD,
        "fanning_out",
        exclude=False,
    )
    return audiences


async def names(conn: asyncpg.Connection) -> set[str]:
    return {r["name"] for r in await conn.fetch("SELECT name FROM audiences")}


KEPT = {
    "uploaded recently",
    "synced recently",
    "excluded by a recent campaign",
    "named by an old campaign still fanning out",
}


async def test_audiences_unused_for_the_window_are_deleted_with_their_entries(dsn: str) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            audiences = await seed(conn)
            # Off by default: the other tables are pruned, audiences are not.
            assert "audiences" not in await retention.prune(pool, days=30)
            assert len(await names(conn)) == 6

            assert (await retention.prune(pool, days=30, audience_days=30))["audiences"] == 2
            assert await names(conn) == KEPT
            gone = [audiences["unused"], audiences["named by an old finished campaign"]]
            assert not await conn.fetchval(
                "SELECT count(*) FROM audience_entries WHERE audience_id = ANY($1::uuid[])", gone
            )
            assert (await retention.prune(pool, days=None, audience_days=30)) == {
                "audiences": 0,
                "email_consent_records": 0,
                "expired_paused_deliveries": 0,
            }
            # A shorter window takes what was used within the longer one.
            await retention.prune(pool, days=None, audience_days=1)
            assert await names(conn) == {"named by an old campaign still fanning out"}
    finally:
        await pool.close()


async def test_a_running_router_deletes_unused_audiences_on_its_own(
    dsn: str, smtp: SmtpSink
) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await seed(conn)
        async with running_router(
            dsn, None, smtp, ROUTER_RETENTION_DAYS="0", ROUTER_RETENTION_AUDIENCE_DAYS="30"
        ):
            deadline = time.monotonic() + 10
            while await names(conn) != KEPT:
                assert time.monotonic() < deadline, await names(conn)
                await asyncio.sleep(0.05)
    finally:
        await conn.close()
