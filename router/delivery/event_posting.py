"""Posting delivery events to the sender's own systems, in SendGrid's Event Webhook format.

Email systems already consume SendGrid's `processed`, `delivered`, `deferred`, `bounce`,
`dropped`, `unsubscribe` and `group_unsubscribe` events (bounce handling, suppression lists);
posting the same shape lets them follow LINE deliveries too. Events are rows in `delivery_events` (router/store/delivery_events.py),
written in the transaction of the state change that causes them. `EventPoster` posts them in
order of recording, in batches signed with `X-Router-Signature`; a batch is marked sent only
after a 2xx, so delivery to the receiver is at least once and a receiver drops an
`sg_event_id` it has already seen.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from datetime import datetime

import aiohttp
import asyncpg
import msgspec

from router import http_post
from router.config import EventsConfig
from router.database import Pool
from router.queue.backoff import retry_delay
from router.queue.loops import QueueWorker
from router.store import delivery_events

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Router-Signature"
ASM_CATEGORY_PREFIX = "asm-"
"""The category of mail sent through the SendGrid door with an unsubscribe group."""


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
    asm_group_id: int | None = None
    channel: str
    member_id: str | None
    intent_id: str
    delivery_id: str | None
    unsubscribed_category: str | None = None


def _asm_group_id(category: str | None) -> int | None:
    """SendGrid's unsubscribe group of a category the SendGrid door made from one
    (`asm-<group_id>`), posted as SendGrid's `asm_group_id` so a receiver written for
    SendGrid's groups reads it unchanged; None for the router's own categories."""
    if category is None or not category.startswith(ASM_CATEGORY_PREFIX):
        return None
    number = category.removeprefix(ASM_CATEGORY_PREFIX)
    if not (number.isascii() and number.isdigit()) or len(number) > 18:
        return None
    return int(number)


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
        asm_group_id=_asm_group_id(row["category"]) if event == "group_unsubscribe" else None,
        unsubscribed_category=row["category"] if event == "group_unsubscribe" else None,
    )


def signature(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class EventPoster(QueueWorker):
    """Posts stored events to `[events] webhook_url`, oldest first, one batch at a time.

    Only one batch is in flight across all router processes (the queue's turn), and a failed
    batch is retried before anything newer, so the receiver sees events in the order they
    were recorded."""

    def __init__(self, pool: Pool, config: EventsConfig) -> None:
        super().__init__(delivery_events.QUEUE.queue_name)
        self._pool = pool
        self._config = config
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=config.timeout_seconds), trust_env=False
        )

    async def next_due(self) -> float | None:
        async with self._pool.acquire() as conn:
            return await delivery_events.next_due(conn)

    async def step(self) -> int:
        """Post the oldest unsent events if due; how many the receiver accepted."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await delivery_events.head(conn, self._config.events_per_post)
            if not rows:
                return 0
            ids = [r["id"] for r in rows]
            body = msgspec.json.encode([to_wire(r) for r in rows])
            headers = {
                "Content-Type": "application/json",
                SIGNATURE_HEADER: signature(self._config.signing_secret, body),
            }
            error = await http_post.post(self._session, self._config.webhook_url, body, headers)
            if error is None:
                await delivery_events.mark_sent(conn, ids)
                return len(rows)
            attempts = rows[0]["post_attempts"] + 1
            delay = retry_delay(
                attempts, self._config.backoff_base_seconds, self._config.backoff_max_seconds
            )
            await delivery_events.retry_later(conn, ids, error, delay)
            log.warning("delivery events not accepted (%s); attempt %d", error, attempts)
        self.due_in(delay)
        return 0

    async def aclose(self) -> None:
        await self._session.close()
