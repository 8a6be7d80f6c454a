"""Verified LINE webhook events: stored before LINE gets its 200, worked out afterwards, each
once (router/line/events.py), with the outcome kept next to the event."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg
import msgspec

from router.database import Connection
from router.queue import claims
from router.queue.wakeups import notify

# Claimed inside the transaction that applies them, in order of occurrence.
QUEUE = claims.Locked(
    table="line_webhook_events",
    columns="webhook_event_id, account, occurred_at, body::text AS body",
    pending="processed_at IS NULL",
    order="occurred_at",
)


class NewEvent(msgspec.Struct, frozen=True):
    """What is stored of one event, as the webhook carried it, and the LINE account whose
    webhook it came to."""

    account: str
    webhook_event_id: str
    event_type: str
    line_user_id: str | None
    occurred_at: datetime
    body: str


async def add(conn: Connection, events: Sequence[NewEvent]) -> int:
    """Store events not seen before (a redelivered webhookEventId is kept once) and wake the
    processor; how many were new."""
    inserted = await conn.fetch(
        "INSERT INTO line_webhook_events"
        " (webhook_event_id, event_type, line_user_id, occurred_at, body, account)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::text[],"
        "   $4::timestamptz[], $5::text[]::jsonb[], $6::text[])"
        " ON CONFLICT (webhook_event_id) DO NOTHING RETURNING 1",
        [e.webhook_event_id for e in events],
        [e.event_type for e in events],
        [e.line_user_id for e in events],
        [e.occurred_at for e in events],
        [e.body for e in events],
        [e.account for e in events],
    )
    if inserted:
        await notify(conn, QUEUE.queue_name)
    return len(inserted)


async def claim(conn: Connection, limit: int) -> list[asyncpg.Record]:
    """The oldest events still to do that no other transaction holds (in the caller's)."""
    return await claims.claim_locked(conn, QUEUE, limit)


async def mark_processed(conn: Connection, webhook_event_id: str, outcome: str) -> None:
    await conn.execute(
        "UPDATE line_webhook_events SET processed_at = now(), outcome = $2"
        " WHERE webhook_event_id = $1",
        webhook_event_id,
        outcome,
    )
