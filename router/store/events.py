"""The only writer of `events` (what members did, as the company reports it) and of
`shopify_webhooks` (which Shopify deliveries were taken).

Every function runs in the caller's transaction; none opens its own. Inserting events wakes
the `journey_events` queue in that same transaction, so the journeys see each event once it
is committed and never before.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec

from router.database import Connection
from router.queue.wakeups import notify

QUEUE_NAME = "journey_events"


class EventRow(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    id: UUID
    member_id: str
    name: str
    properties: str  # a JSON object, already encoded
    occurred_at: datetime
    source: str
    idempotency_key: str | None
    fingerprint: bytes | None


class StoredEvent(msgspec.Struct, kw_only=True):
    """An event as `GET /v1/members/{id}/events` shows it."""

    id: UUID
    member_id: str
    name: str
    properties: dict[str, Any]
    occurred_at: datetime
    received_at: datetime
    source: str
    idempotency_key: str | None


# Rows whose member is gone by now are skipped (the join), as are keys another transaction
# took first (the conflict): the caller tells the two apart by what it asked for.
_INSERT = """
INSERT INTO events (id, member_id, name, properties, occurred_at, source, idempotency_key,
                    fingerprint)
SELECT u.id, u.member_id, u.name, u.properties::jsonb, u.occurred_at, u.source,
       u.idempotency_key, u.fingerprint
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[],
            $7::text[], $8::bytea[])
     AS u(id, member_id, name, properties, occurred_at, source, idempotency_key, fingerprint)
JOIN members m ON m.member_id = u.member_id
ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id
"""


async def insert(conn: Connection, rows: Sequence[EventRow]) -> set[UUID]:
    """Insert events in one statement and wake the journeys; the ids that were inserted."""
    if not rows:
        return set()
    inserted = await conn.fetch(
        _INSERT,
        [r.id for r in rows],
        [r.member_id for r in rows],
        [r.name for r in rows],
        [r.properties for r in rows],
        [r.occurred_at for r in rows],
        [r.source for r in rows],
        [r.idempotency_key for r in rows],
        [r.fingerprint for r in rows],
    )
    if inserted:
        await notify(conn, QUEUE_NAME)
    return {r["id"] for r in inserted}


async def idempotency_keys(
    conn: Connection, keys: Sequence[str]
) -> dict[str, tuple[UUID, bytes | None]]:
    """Stored events by idempotency key: their id and request fingerprint."""
    rows = await conn.fetch(
        "SELECT idempotency_key, id, fingerprint FROM events"
        " WHERE idempotency_key = ANY($1::text[])",
        list(set(keys)),
    )
    return {r["idempotency_key"]: (r["id"], r["fingerprint"]) for r in rows}


_OF_MEMBER = """
SELECT id, member_id, name, properties::text AS properties, occurred_at, received_at, source,
       idempotency_key
FROM events
WHERE member_id = $1
  AND ($2::uuid IS NULL OR (occurred_at, id) < (
        SELECT occurred_at, id FROM events WHERE id = $2 AND member_id = $1))
ORDER BY occurred_at DESC, id DESC
LIMIT $3
"""


async def of_member(
    conn: Connection, member_id: str, before: UUID | None, limit: int
) -> list[StoredEvent]:
    """A member's events, newest first; with `before`, those older than that event."""
    rows = await conn.fetch(_OF_MEMBER, member_id, before, limit)
    return [
        StoredEvent(**{**dict(r), "properties": msgspec.json.decode(r["properties"])}) for r in rows
    ]


async def is_event_of(conn: Connection, event_id: UUID, member_id: str) -> bool:
    found: bool | None = await conn.fetchval(
        "SELECT true FROM events WHERE id = $1 AND member_id = $2", event_id, member_id
    )
    return bool(found)


async def take_shopify_webhook(conn: Connection, webhook_id: str, topic: str) -> bool:
    """Record a Shopify delivery as taken; False if it was taken before (a repeat)."""
    taken: bool | None = await conn.fetchval(
        "INSERT INTO shopify_webhooks (webhook_id, topic) VALUES ($1, $2)"
        " ON CONFLICT (webhook_id) DO NOTHING RETURNING true",
        webhook_id,
        topic,
    )
    return bool(taken)
