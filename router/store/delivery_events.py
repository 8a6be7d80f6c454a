"""Delivery events: rows written in the transaction of the change they report, and posted from
here in order (router/delivery/event_posting.py).

Every statement that inserts events wakes the events queue, so the poster runs as soon as
they are committed; the intake statement, which inserts `processed` events itself, does too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal
from uuid import UUID

import asyncpg
import msgspec

from router import channel_rules
from router.database import Connection
from router.intents import CUSTOM_ARGS_KEY
from router.queue import claims
from router.queue.wakeups import notify
from router.store import group_state

EventName = Literal[
    "processed",
    "delivered",
    "deferred",
    "bounce",
    "dropped",
    "unsubscribe",
    "group_unsubscribe",
    "spamreport",
]


class Recorded(msgspec.Struct, frozen=True):
    """One event about a delivery, to be stored with the state change that caused it."""

    delivery_id: UUID
    event: EventName
    reason: str | None = None
    response: str | None = None
    bounce_type: str | None = None  # 'bounce' (refused) | 'blocked' (gave up retrying)
    category: str | None = None  # what a group_unsubscribe unsubscribed from
    status: str | None = None  # the provider's status code (SMTP enhanced: 5.1.1)
    ip: str | None = None  # the router's local address on the connection that answered
    tls: bool | None = None  # whether that connection was encrypted


# One queue for the whole table: events reach the receiver in the order they were recorded.
QUEUE = claims.Ordered(
    table="delivery_events",
    alias="e",
    key=None,
    unfinished="e.sent_at IS NULL",
    columns=f"""e.id, e.event_id, e.event, e.intent_id, e.delivery_id, e.channel, e.email,
       e.reason, e.response, e.bounce_type, e.attempt, e.occurred_at, e.post_attempts,
       e.category, e.status_code, e.local_ip, e.tls,
       i.member_id, i.tags::text AS tags, i.category AS intent_category,
       (i.metadata -> '{CUSTOM_ARGS_KEY}')::text AS custom_args,
       coalesce(i.metadata ->> 'sg_message_id', i.id::text) AS sg_message_id,
       {channel_rules.smtp_id_sql()} AS smtp_id""",
    joins="JOIN intents i ON i.id = e.intent_id LEFT JOIN deliveries d ON d.id = e.delivery_id",
)


def _record_sql() -> str:
    return f"""
INSERT INTO delivery_events (event, intent_id, delivery_id, channel, email, reason, response,
                             bounce_type, attempt, category, status_code, local_ip, tls)
SELECT e.event, d.intent_id, d.id, d.channel, {channel_rules.event_email_sql()},
       e.reason, e.response, e.bounce_type, {group_state.field("d", "s", "attempts")},
       e.category, e.status_code, e.local_ip, e.tls
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::text[], $8::text[], $9::bool[])
     WITH ORDINALITY AS e(delivery_id, event, reason, response, bounce_type, category,
                          status_code, local_ip, tls, n)
JOIN deliveries d ON d.id = e.delivery_id
LEFT JOIN send_groups s ON s.id = d.send_group_id
JOIN intents i ON i.id = d.intent_id
LEFT JOIN members m ON m.member_id = i.member_id
ORDER BY e.n
"""  # noqa: S608 - built from the channels' constant fragments only


async def record(conn: Connection, events: Sequence[Recorded]) -> int:
    """Store events in the caller's transaction, in the order given; how many were stored
    (an event about a delivery that no longer exists is not)."""
    if not events:
        return 0
    status: str = await conn.execute(
        _record_sql(),
        [e.delivery_id for e in events],
        [e.event for e in events],
        [e.reason for e in events],
        [e.response for e in events],
        [e.bounce_type for e in events],
        [e.category for e in events],
        [e.status for e in events],
        [e.ip for e in events],
        [e.tls for e in events],
    )
    await notify(conn, QUEUE.queue_name)
    return int(status.rsplit(" ", 1)[-1])


async def head(conn: Connection, limit: int) -> list[asyncpg.Record]:
    """The oldest unsent events, if they are due and this transaction has the turn."""
    return await claims.take_head(conn, QUEUE, limit)


async def mark_sent(conn: Connection, ids: Sequence[int]) -> None:
    await conn.execute(
        "UPDATE delivery_events SET sent_at = now(), post_attempts = post_attempts + 1"
        " WHERE id = ANY($1::bigint[])",
        list(ids),
    )


async def retry_later(conn: Connection, ids: Sequence[int], error: str, delay: float) -> None:
    await conn.execute(
        "UPDATE delivery_events SET post_attempts = post_attempts + 1, last_error = $2,"
        " next_attempt_at = now() + make_interval(secs => $3)"
        " WHERE id = ANY($1::bigint[])",
        list(ids),
        error,
        delay,
    )


async def next_due(conn: Connection) -> float | None:
    return await claims.next_due_ordered(conn, QUEUE)
