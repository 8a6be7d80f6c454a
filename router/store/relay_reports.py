"""Delivery status notifications for relayed email, as rows: what a report is about, and the
report itself stored as relayed email to the envelope sender.

A report is an intent of its own (email only, no fallback, never LINE) whose content is a
relayed message sent from the null reverse path, written in the transaction that records the
outcome it reports: a crash loses neither the outcome nor its report, and cannot repeat
either (the intent's idempotency key names the delivery and the action reported).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import msgspec

from router.content import Content, EmailContent, Relayed, RelayRecipient, content_id
from router.database import Connection
from router.queue.wakeups import notify
from router.store.deliveries import QUEUE as DELIVERIES
from router.store.row_ids import uuid7s


class Reported(msgspec.Struct, frozen=True, kw_only=True):
    """A relayed delivery whose outcome may be reported, with what the report needs."""

    delivery_id: UUID
    final_recipient: str
    error: str | None
    arrival: datetime
    relayed: Relayed
    recipient: RelayRecipient | None
    message: bytes


class Report(msgspec.Struct, frozen=True, kw_only=True):
    """One report to send: its key, the envelope sender it goes to, its bytes, and the
    subject and text an intent's content carries."""

    key: str
    to: str
    data: bytes
    subject: str
    text: str


_ABOUT = """
SELECT d.id, d.address, d.last_error, i.created_at, (c.body -> 'relayed')::text AS relayed,
       r.notify, r.orcpt, m.data
FROM deliveries d
JOIN intents i ON i.id = d.intent_id
JOIN contents c ON c.id = i.content_id
JOIN relayed_messages m ON m.id = c.relayed_message_id
LEFT JOIN relayed_recipients r ON r.intent_id = i.id
WHERE d.id = ANY($1::uuid[])
"""


async def about(conn: Connection, delivery_ids: Sequence[UUID]) -> list[Reported]:
    """What reports on these relayed deliveries need (those whose message is still kept)."""
    rows = await conn.fetch(_ABOUT, list(delivery_ids))
    return [
        Reported(
            delivery_id=r["id"],
            final_recipient=r["address"],
            error=r["last_error"],
            arrival=r["created_at"],
            relayed=msgspec.json.decode(r["relayed"], type=Relayed),
            recipient=None
            if r["notify"] is None and r["orcpt"] is None
            else RelayRecipient(
                notify=None if r["notify"] is None else list(r["notify"]), orcpt=r["orcpt"]
            ),
            message=r["data"],
        )
        for r in rows
    ]


_ADD = """
WITH new_contents AS (
    INSERT INTO contents (id, body)
    SELECT id, body::jsonb FROM unnest($2::bytea[], $3::text[]) AS c(id, body)
    ON CONFLICT DO NOTHING
), added AS (
    INSERT INTO intents (id, email_address, content_id, route, idempotency_key, kind)
    SELECT id, address, content_id, 'email_only', key, 'transactional'
    FROM unnest($1::uuid[], $4::text[], $2::bytea[], $5::text[]) AS i(id, address, content_id, key)
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id, email_address
)
INSERT INTO deliveries (intent_id, channel, address, status)
SELECT id, 'email', email_address, 'pending' FROM added
"""


async def add(conn: Connection, reports: Sequence[Report]) -> None:
    """Queue these reports for sending, in the caller's transaction."""
    if not reports:
        return
    digests = [hashlib.sha256(r.data).digest() for r in reports]
    await conn.execute(
        "INSERT INTO relayed_messages (id, data)"
        " SELECT * FROM unnest($1::bytea[], $2::bytea[]) ON CONFLICT DO NOTHING",
        digests,
        [r.data for r in reports],
    )
    bodies = [
        Content(
            email=EmailContent(subject=r.subject, text=r.text),
            relayed=Relayed(message_sha256=digest.hex(), envelope_from=""),
        ).encode()
        for r, digest in zip(reports, digests, strict=True)
    ]
    await conn.execute(
        _ADD,
        uuid7s(len(reports)),  # time-ordered, like every intent id
        [content_id(body) for body in bodies],
        [body.decode() for body in bodies],
        [r.to for r in reports],
        [r.key for r in reports],
    )
    await notify(conn, DELIVERIES.queue_name("email"))
