"""Posting delivery events to the sender's own systems, in SendGrid's Event Webhook format.

Email systems already consume SendGrid's `processed`, `delivered`, `deferred`, `bounce`,
`dropped`, `unsubscribe` and `group_unsubscribe` events (bounce handling, suppression lists);
posting the same shape lets them follow LINE deliveries too. Events are rows in `delivery_events` (router/store/delivery_events.py),
written in the transaction of the state change that causes them. `EventPoster` posts them in
order of recording, in batches signed with `X-Router-Signature` and, as SendGrid signs them,
with ECDSA (router/delivery/event_signing.py); a batch is marked sent only
after a 2xx, so delivery to the receiver is at least once and a receiver drops an
`sg_event_id` it has already seen.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import aiohttp
import asyncpg
import msgspec
from cryptography.hazmat.primitives.asymmetric import ec

from router import http_post
from router.config import EventsConfig
from router.database import Connection, Pool
from router.delivery import event_signing
from router.delivery.bounce_classes import bounce_classification
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
    status: str | None = None
    bounce_classification: str | None = None
    ip: str | None = None
    tls: int | None = None
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
    status: str | None = row["status_code"] if event in ("deferred", "bounce") else None
    tls: bool | None = row["tls"]
    ip: str | None = row["local_ip"] if event in ("delivered", "deferred", "bounce") else None
    group = row["category"] if event == "group_unsubscribe" else row["intent_category"]
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
        status=status,
        bounce_classification=(
            bounce_classification(status, row["reason"]) if event == "bounce" else None
        ),
        ip=ip,
        tls=None if ip is None or tls is None else int(tls),
        asm_group_id=_asm_group_id(group),
        unsubscribed_category=row["category"] if event == "group_unsubscribe" else None,
    )


_ENCODER = msgspec.json.Encoder()
RESERVED = frozenset(f.encode_name for f in msgspec.structs.fields(DeliveryEvent))
"""Every field name the router posts, on any event: a custom arg of the same name is left
off, so SendGrid's fields always mean what SendGrid's receivers expect."""


_ARGS = msgspec.json.Decoder(dict[str, Any])


def custom_args(text: str | None) -> dict[str, str]:
    """An intent's `metadata.custom_args` as the strings SendGrid echoes: numbers and booleans
    as their JSON text; nested values, nulls and SendGrid's own field names left off."""
    if text is None or not text.startswith("{"):
        return {}
    stored = _ARGS.decode(text)
    if RESERVED.isdisjoint(stored) and all(type(v) is str for v in stored.values()):
        return stored  # as the SendGrid door stores them
    return {
        key: value if isinstance(value, str) else _ENCODER.encode(value).decode()
        for key, value in stored.items()
        if key not in RESERVED and isinstance(value, str | int | float)
    }


def encode(rows: Sequence[asyncpg.Record]) -> bytes:
    """The posted body: each event's fields, then its intent's custom args at the top level
    (SendGrid's place for them), joined into the event's object as encoded: no key repeats,
    since custom args never take a field's name."""
    parts: list[bytes] = []
    for row in rows:
        encoded = _ENCODER.encode(to_wire(row))
        extra = custom_args(row["custom_args"])
        if extra:
            encoded = encoded[:-1] + b"," + _ENCODER.encode(extra)[1:]
        parts.append(encoded)
    return b"[" + b",".join(parts) + b"]"


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
        self._key = event_signing.configured_key(config)
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=config.timeout_seconds), trust_env=False
        )

    async def next_due(self) -> float | None:
        async with self._pool.acquire() as conn:
            return await delivery_events.next_due(conn)

    async def step(self) -> int:
        """Post the oldest unsent events if due; how many the receiver accepted."""
        async with self._pool.acquire() as conn:
            if self._key is None:
                self._key = await event_signing.signing_key(conn, self._config)
            return await self._post_head(conn, self._key)

    async def _post_head(self, conn: Connection, key: ec.EllipticCurvePrivateKey) -> int:
        async with conn.transaction():
            rows = await delivery_events.head(conn, self._config.events_per_post)
            if not rows:
                return 0
            ids = [r["id"] for r in rows]
            body = encode(rows)
            timestamp = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                SIGNATURE_HEADER: signature(self._config.signing_secret, body),
                event_signing.TIMESTAMP_HEADER: timestamp,
                event_signing.SIGNATURE_HEADER: event_signing.sign(key, timestamp, body),
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
