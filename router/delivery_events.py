"""Delivery events for the sender's own systems, in SendGrid's Event Webhook format.

Email systems already consume SendGrid's `processed`, `delivered`, `deferred`, `bounce` and
`dropped` events (bounce handling, suppression lists); posting the same shape lets them follow
LINE deliveries too. Events are rows in `delivery_events`, written in the transaction of the
state change that causes them, so none is lost and none describes a change that was rolled
back. `DeliveryEventSender` posts them in order of recording, in batches signed with
`X-Router-Signature`; a batch is marked sent only after a 2xx, so delivery to the receiver is
at least once and a receiver drops an `sg_event_id` it has already seen.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
from collections.abc import Sequence
from datetime import datetime
from typing import Literal
from uuid import UUID

import aiohttp
import asyncpg
import msgspec

from router import http_post
from router.background import Wakeable
from router.config import EventsConfig
from router.database import Connection, Pool

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Router-Signature"
POLL_SECONDS = 1.0

EventName = Literal["processed", "delivered", "deferred", "bounce", "dropped"]


class Recorded(msgspec.Struct, frozen=True):
    """One event about a delivery, to be stored with the state change that caused it."""

    delivery_id: UUID
    event: EventName
    reason: str | None = None
    response: str | None = None
    bounce_type: str | None = None  # 'bounce' (refused) | 'blocked' (gave up retrying)


class DeliveryEvent(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One event on the wire: SendGrid's fields, then the router's own."""

    email: str | None
    timestamp: int
    event: str
    sg_event_id: str
    sg_message_id: str
    smtp_id: str | None = msgspec.field(default=None, name="smtp-id")
    category: list[str] = msgspec.field(default_factory=list)
    reason: str | None = None
    response: str | None = None
    type: str | None = None
    attempt: str | None = None
    channel: str
    member_id: str | None
    intent_id: str
    delivery_id: str | None


# `email` is the address the event concerns: the delivery's own for email, otherwise the
# intent's recipient address, otherwise the member's address as it is now.
_RECORD = """
INSERT INTO delivery_events (event, intent_id, delivery_id, channel, email, reason, response,
                             bounce_type, attempt)
SELECT e.event, d.intent_id, d.id, d.channel,
       CASE WHEN d.channel = 'email' THEN d.address ELSE coalesce(i.email_address, m.email) END,
       e.reason, e.response, e.bounce_type, d.attempts
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[]) WITH ORDINALITY
     AS e(delivery_id, event, reason, response, bounce_type, n)
JOIN deliveries d ON d.id = e.delivery_id
JOIN intents i ON i.id = d.intent_id
LEFT JOIN members m ON m.member_id = i.member_id
ORDER BY e.n
"""


async def record(conn: Connection, events: Sequence[Recorded]) -> None:
    """Store events in the caller's transaction, in the order given."""
    if not events:
        return
    await conn.execute(
        _RECORD,
        [e.delivery_id for e in events],
        [e.event for e in events],
        [e.reason for e in events],
        [e.response for e in events],
        [e.bounce_type for e in events],
    )


_HEAD = """
SELECT e.id, e.event_id, e.event, e.intent_id, e.delivery_id, e.channel, e.email, e.reason,
       e.response, e.bounce_type, e.attempt, e.occurred_at, e.post_attempts,
       e.next_attempt_at <= now() AS due, i.member_id, i.tags::text AS tags,
       coalesce(i.metadata ->> 'sg_message_id', i.id::text) AS sg_message_id,
       CASE WHEN e.channel = 'email' THEN nullif(d.provider_ref, '') END AS smtp_id
FROM delivery_events e
JOIN intents i ON i.id = e.intent_id
LEFT JOIN deliveries d ON d.id = e.delivery_id
WHERE e.sent_at IS NULL
ORDER BY e.id
LIMIT $1
FOR UPDATE OF e SKIP LOCKED
"""


def to_wire(row: asyncpg.Record) -> DeliveryEvent:
    occurred: datetime = row["occurred_at"]
    event: str = row["event"]
    return DeliveryEvent(
        email=row["email"],
        timestamp=int(occurred.timestamp()),
        event=event,
        sg_event_id=str(row["event_id"]),
        sg_message_id=row["sg_message_id"],
        smtp_id=row["smtp_id"],
        category=msgspec.json.decode(row["tags"], type=list[str]),
        reason=row["reason"] if event in ("deferred", "bounce", "dropped") else None,
        response=row["response"] if event in ("deferred", "delivered") else None,
        type=row["bounce_type"] if event == "bounce" else None,
        attempt=str(row["attempt"]) if event == "deferred" and row["attempt"] else None,
        channel=row["channel"],
        member_id=row["member_id"],
        intent_id=str(row["intent_id"]),
        delivery_id=None if row["delivery_id"] is None else str(row["delivery_id"]),
    )


def signature(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class DeliveryEventSender(Wakeable):
    """Posts stored events to `[events] webhook_url`, oldest first, one batch at a time.

    Only one batch is in flight across all router processes (a transaction-scoped advisory
    lock), and a failed batch is retried before anything newer, so the receiver sees events
    in the order they were recorded."""

    def __init__(self, pool: Pool, config: EventsConfig) -> None:
        super().__init__()
        self._pool = pool
        self._config = config
        self._timeout = aiohttp.ClientTimeout(total=config.timeout_seconds)
        self.poll_seconds = POLL_SECONDS

    async def run(self, stopping: asyncio.Event) -> None:
        async with aiohttp.ClientSession(timeout=self._timeout, trust_env=False) as session:
            await self.loop(
                stopping, lambda: self.send_due(session), self.poll_seconds, "delivery events"
            )

    async def send_due(self, session: aiohttp.ClientSession) -> int:
        """Post the oldest unsent events if due; return how many the receiver accepted."""
        async with self._pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval(
                "SELECT pg_try_advisory_xact_lock(hashtext('delivery_events'))"
            ):
                return 0
            rows = await conn.fetch(_HEAD, self._config.batch_size)
            if not rows or not rows[0]["due"]:
                return 0
            ids = [r["id"] for r in rows]
            body = msgspec.json.encode([to_wire(r) for r in rows])
            error = await self._post(session, body)
            if error is None:
                await conn.execute(
                    "UPDATE delivery_events SET sent_at = now(), post_attempts = post_attempts + 1"
                    " WHERE id = ANY($1::bigint[])",
                    ids,
                )
                return len(rows)
            attempts = rows[0]["post_attempts"] + 1
            delay = min(
                self._config.backoff_max_seconds,
                self._config.backoff_base_seconds * 2 ** (attempts - 1),
            )
            await conn.execute(
                "UPDATE delivery_events SET post_attempts = post_attempts + 1, last_error = $2,"
                " next_attempt_at = now() + make_interval(secs => $3)"
                " WHERE id = ANY($1::bigint[])",
                ids,
                error,
                random.uniform(delay / 2, delay),
            )
            log.warning("delivery events not accepted (%s); attempt %d", error, attempts)
            return 0

    async def _post(self, session: aiohttp.ClientSession, body: bytes) -> str | None:
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature(self._config.signing_secret, body),
        }
        return await http_post.post(session, self._config.webhook_url, body, headers)
