"""Finished rows that hold personal data are deleted after `[retention] days`; rows still in
use, and recent ones, are kept."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import asyncpg

from router import retention
from tests.harness import SmtpSink, running_router

OLD, RECENT = "40 days", "2 days"


async def seed(conn: asyncpg.Connection) -> None:
    """Of each kind: one finished long ago, one finished recently, one not finished."""
    await conn.execute(
        "INSERT INTO members (member_id, email) VALUES ('m1', 'm1@example.jp');"
        "INSERT INTO contents (id, body) VALUES ('\\x00', '{}');"
        "INSERT INTO intents (id, member_id, content_id, route)"
        " VALUES ('00000000-0000-7000-8000-000000000001', 'm1', '\\x00', 'email_only')"
    )
    for age in (OLD, RECENT, None):
        done = "NULL" if age is None else f"now() - interval '{age}'"
        await conn.execute(
            "INSERT INTO webhook_forwards (url, body, signature, finished_at)"
            f" VALUES ('http://bot.example/hook', 'x', 's', {done})"
        )
        await conn.execute(
            "INSERT INTO delivery_events (event, intent_id, channel, email, sent_at)"
            " VALUES ('processed', '00000000-0000-7000-8000-000000000001', 'email',"
            f" 'm1@example.jp', {done})"
        )
        await conn.execute(
            "INSERT INTO line_webhook_events"
            " (webhook_event_id, event_type, occurred_at, body, processed_at)"
            f" VALUES ($1, 'message', now(), '{{}}', {done})",
            f"event-{age}",
        )
        expires = "now() + interval '10 minutes'" if age is None else done
        await conn.execute(
            "INSERT INTO line_link_nonces (nonce, member_id, link_token, expires_at)"
            f" VALUES ($1, 'm1', 't', {expires})",
            f"nonce-{age}",
        )
        await conn.execute(
            "INSERT INTO shopify_webhooks (webhook_id, topic, received_at)"
            f" VALUES ($1, 'orders/create', {done if age else 'now()'})",
            f"webhook-{age}",
        )
        # A relayed message no content names is finished when received; one a content
        # names is in use however old it is.
        message_id = hashlib.sha256(f"relayed-{age}".encode()).hexdigest()
        await conn.execute(
            "INSERT INTO relayed_messages (id, data, created_at)"
            f" VALUES (decode($1, 'hex'), 'x', now() - interval '{age or OLD}')",
            message_id,
        )
        if age is None:
            await conn.execute(
                "INSERT INTO contents (id, body) VALUES ('\\x01', $1::jsonb)",
                f'{{"relayed": {{"message_sha256": "{message_id}", "envelope_from": ""}}}}',
            )


async def counts(conn: asyncpg.Connection) -> dict[str, int]:
    return {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in retention._PRUNE}


def swept(each: int) -> dict[str, int]:
    """What one sweep reports: `each` from every table, none of the (absent) consent records
    (tests/test_consent.py sweeps those) and paused deliveries (tests/test_compat_sendgrid_batches.py)."""
    return dict.fromkeys(retention._PRUNE, each) | {
        "email_consent_records": 0,
        "expired_paused_deliveries": 0,
    }


async def test_prune_deletes_only_what_finished_before_the_window(dsn: str) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            await seed(conn)
        assert await retention.prune(pool, days=30) == swept(1)
        assert await retention.prune(pool, days=30) == swept(0)
        async with pool.acquire() as conn:
            assert await counts(conn) == dict.fromkeys(retention._PRUNE, 2)
            # A one-day window also takes the recent ones; unfinished work always stays.
            assert await retention.prune(pool, days=1, batch=1) == swept(1)
            assert await counts(conn) == dict.fromkeys(retention._PRUNE, 1)
            assert (
                await conn.fetchval(
                    "SELECT count(*) FROM webhook_forwards WHERE finished_at IS NULL"
                )
                == 1
            )
    finally:
        await pool.close()


async def test_a_running_router_prunes_on_its_own(dsn: str, line_sim: Any, smtp: SmtpSink) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await seed(conn)
        async with running_router(dsn, line_sim.base_url, smtp, ROUTER_RETENTION_DAYS="30"):
            deadline = time.monotonic() + 10
            while await counts(conn) != dict.fromkeys(retention._PRUNE, 2):
                assert time.monotonic() < deadline, await counts(conn)
                await asyncio.sleep(0.05)
    finally:
        await conn.close()
