"""The outbox: claiming due deliveries and recording what happened to them.

Every state change is one set-based statement over a batch. Claims use
`FOR UPDATE SKIP LOCKED`, so any number of workers in any number of processes share the
table without handing the same delivery to two of them. A claim is a lease: if its worker
dies, `recover_expired` returns the delivery to 'pending' (or, when a send without provider
de-duplication had already begun, to 'uncertain', never to a second send).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import msgspec

from router import delivery_events, reach
from router.content import Content
from router.database import Connection
from router.intents import NOTIFY_CHANNEL


class Claimed(msgspec.Struct, frozen=True):
    delivery_id: UUID
    intent_id: UUID
    address: str
    attempts: int
    first_attempt_at: datetime
    content_id: bytes
    # False: on its first attempt, the member can no longer be reached at this address on
    # this channel (opted out, unfollowed, unlinked since the intent was accepted).
    reachable: bool = True


class Result(msgspec.Struct, frozen=True):
    """What to record for one claimed delivery."""

    delivery_id: UUID
    status: str  # 'sent' | 'failed' | 'pending'
    provider_ref: str | None = None
    error: str | None = None
    retry_in_seconds: float | None = None
    fallback: bool = False
    # How a 'failed' delivery is reported: 'bounce' (the provider refused it), 'blocked'
    # (retries ran out) or 'dropped' (never sent: quota, retry window, unusable content).
    failure: str = "bounce"


# Whether a delivery may still go out, checked as it is first sent, against the member as
# they are now: a campaign scheduled for tomorrow must not reach someone who opts out
# tonight. A delivery already attempted is left to finish what it started (its retry key
# makes the resend safe; withholding it could not recall a message LINE already took).
REACHABLE_NOW = f"""
    CASE WHEN d.attempts > 1 OR m.member_id IS NULL THEN true
         WHEN d.channel = 'line'
              THEN coalesce({reach.LINE_REACHABLE_SQL} AND m.line_user_id = d.address, false)
         WHEN d.channel = 'email' THEN coalesce({reach.EMAIL_REACHABLE_SQL}, false)
         ELSE true END"""


def not_reachable_now(channel: str) -> tuple[str, bool]:
    """Why a delivery found unreachable at send time is not sent, and whether the intent's
    fallback may carry it instead (a LINE friend who left may still read email; someone who
    opted out of email has said no)."""
    if channel == "line":
        return (
            "not sent: since the intent was accepted the member unfollowed, was unlinked or "
            "opted out of LINE",
            True,
        )
    return "not sent: since the intent was accepted the member opted out of this channel", False


_CLAIM = f"""
UPDATE deliveries d
SET status = 'claimed',
    attempts = d.attempts + 1,
    claim_token = $3,
    lease_expires_at = now() + make_interval(secs => $4),
    first_attempt_at = coalesce(d.first_attempt_at, now()),
    updated_at = now()
FROM intents i LEFT JOIN members m ON m.member_id = i.member_id
WHERE d.id IN (
        SELECT id FROM deliveries
        WHERE channel = $1 AND status = 'pending' AND send_group_id IS NULL
          AND next_attempt_at <= now()
        ORDER BY next_attempt_at
        LIMIT $2
        FOR UPDATE SKIP LOCKED)
  AND i.id = d.intent_id
RETURNING d.id, d.intent_id, d.address, d.attempts, d.first_attempt_at, i.content_id,
          {REACHABLE_NOW} AS reachable
"""  # noqa: S608 - only constants are interpolated


async def claim(
    conn: Connection, channel: str, limit: int, token: UUID, lease_seconds: float
) -> list[Claimed]:
    rows = await conn.fetch(_CLAIM, channel, limit, token, lease_seconds)
    return [Claimed(*r) for r in rows]


async def mark_sending(conn: Connection, delivery_id: UUID, token: UUID) -> bool:
    """Record that the provider is about to be contacted (channels without de-duplication)."""
    done = await conn.fetchval(
        "UPDATE deliveries SET status = 'sending', updated_at = now()"
        " WHERE id = $1 AND claim_token = $2 AND status = 'claimed' RETURNING true",
        delivery_id,
        token,
    )
    return bool(done)


_RECORD = """
UPDATE deliveries d
SET status = r.status,
    provider_ref = coalesce(r.ref, d.provider_ref),
    last_error = coalesce(r.err, d.last_error),
    next_attempt_at = CASE WHEN r.status = 'pending'
                           THEN now() + make_interval(secs => r.delay)
                           ELSE d.next_attempt_at END,
    sent_at = CASE WHEN r.status = 'sent' THEN now() ELSE d.sent_at END,
    claim_token = NULL,
    lease_expires_at = NULL,
    updated_at = now()
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::float8[])
     AS r(id, status, ref, err, delay)
WHERE d.id = r.id AND d.claim_token = $6
RETURNING d.id, d.intent_id, d.channel
"""

# The fallback is addressed from the member as they are now: an address removed or opted out
# since the intent was accepted is not used.
_ACTIVATE_FALLBACK = f"""
-- With events ($2), a created fallback is `processed` and one that could not be is `dropped`.
WITH added AS (
    INSERT INTO deliveries (intent_id, channel, address, status, is_fallback)
    SELECT i.id, i.fallback, m.email, 'pending', true
    FROM intents i JOIN members m ON m.member_id = i.member_id
    WHERE i.id = ANY($1::uuid[]) AND i.fallback = 'email' AND {reach.EMAIL_REACHABLE_SQL}
    ON CONFLICT (intent_id, channel) DO NOTHING
    RETURNING id, intent_id, channel, address
), processed AS (
    INSERT INTO delivery_events (event, intent_id, delivery_id, channel, email)
    SELECT 'processed', intent_id, id, channel, address FROM added WHERE $2::boolean
), dropped AS (
    INSERT INTO delivery_events (event, intent_id, channel, email, reason)
    SELECT 'dropped', i.id, i.fallback, m.email,
           CASE WHEN m.email IS NULL THEN 'no email fallback: the member has no email address'
                ELSE 'no email fallback: the member opted out of email' END
    FROM intents i JOIN members m ON m.member_id = i.member_id
    WHERE $2::boolean AND i.id = ANY($1::uuid[]) AND i.fallback = 'email'
      AND NOT {reach.EMAIL_REACHABLE_SQL}
)
SELECT channel FROM added
"""  # noqa: S608 - only constants are interpolated


async def record(
    conn: Connection, token: UUID, results: Sequence[Result], *, events: bool = False
) -> int:
    """Store outcomes of one claim, activating fallbacks of permanent failures, atomically.

    Returns how many rows were still ours to record (a lease may have been taken over)."""
    if not results:
        return 0
    async with conn.transaction():
        rows = await conn.fetch(
            _RECORD,
            [r.delivery_id for r in results],
            [r.status for r in results],
            [r.provider_ref for r in results],
            [r.error for r in results],
            [r.retry_in_seconds or 0.0 for r in results],
            token,
        )
        by_id = {r.delivery_id: r for r in results}
        failed_over = [
            row["intent_id"]
            for row in rows
            if by_id[row["id"]].status == "failed" and by_id[row["id"]].fallback
        ]
        if events:
            channels = {row["id"]: row["channel"] for row in rows}
            await delivery_events.record(
                conn, [e for r in results if (e := _event(r, channels.get(r.delivery_id)))]
            )
        if failed_over:
            await activate_fallbacks(conn, failed_over, events=events)
    return len(rows)


def _event(result: Result, channel: str | None) -> delivery_events.Recorded | None:
    """The event a recorded outcome means. A LINE notification is `delivered` only when
    LINE confirms it (see `confirm`), not when LINE accepts the request."""
    if channel is None:
        return None  # no longer ours: the new holder reports it
    Recorded = delivery_events.Recorded
    if result.status == "sent":
        if channel == "line_notification":
            return None
        return Recorded(result.delivery_id, "delivered", response=result.provider_ref)
    if result.status == "pending":
        return Recorded(result.delivery_id, "deferred", reason=result.error, response=result.error)
    if result.failure == "dropped":
        return Recorded(result.delivery_id, "dropped", reason=result.error)
    return Recorded(result.delivery_id, "bounce", reason=result.error, bounce_type=result.failure)


async def activate_fallbacks(
    conn: Connection, intent_ids: Sequence[UUID], *, events: bool = False
) -> set[str]:
    """Create the fallback deliveries of these intents (in the caller's transaction)."""
    channels = {
        r["channel"] for r in await conn.fetch(_ACTIVATE_FALLBACK, list(intent_ids), events)
    }
    for channel in sorted(channels):
        await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, channel)
    return channels


_EXPIRE_UNCONFIRMED = """
UPDATE deliveries SET status = 'failed', updated_at = now(),
       last_error = 'LINE sent no delivery event within ' || $1::text
                    || ' s: counted as not delivered'
WHERE channel = 'line_notification' AND status = 'sent' AND confirmed_at IS NULL
  AND sent_at < now() - make_interval(secs => $1)
RETURNING id, intent_id, last_error
"""


async def expire_unconfirmed(conn: Connection, seconds: float, *, events: bool = False) -> int:
    """LINE notifications never confirmed in time count as not delivered: fall back."""
    async with conn.transaction():
        rows = await conn.fetch(_EXPIRE_UNCONFIRMED, seconds)
        if events:
            # 'blocked', not 'bounce': nothing says the phone number is bad.
            await delivery_events.record(
                conn,
                [
                    delivery_events.Recorded(
                        r["id"], "bounce", reason=r["last_error"], bounce_type="blocked"
                    )
                    for r in rows
                ],
            )
        if rows:
            await activate_fallbacks(conn, [r["intent_id"] for r in rows], events=events)
    return len(rows)


async def confirm(conn: Connection, delivery_id: UUID, *, events: bool = False) -> bool:
    """LINE's `delivery` event names a notification it delivered."""
    async with conn.transaction():
        done = await conn.fetchval(
            "UPDATE deliveries SET confirmed_at = now(), updated_at = now()"
            " WHERE id = $1 AND channel = 'line_notification' AND confirmed_at IS NULL"
            " RETURNING true",
            delivery_id,
        )
        if done and events:
            await delivery_events.record(
                conn,
                [
                    delivery_events.Recorded(
                        delivery_id, "delivered", response="confirmed by LINE's delivery event"
                    )
                ],
            )
    return bool(done)


_RECOVER_CLAIMED = """
UPDATE deliveries SET status = 'pending', claim_token = NULL, lease_expires_at = NULL,
       next_attempt_at = now(), updated_at = now(),
       last_error = 'the worker holding this delivery stopped; requeued'
WHERE status = 'claimed' AND lease_expires_at < now()
RETURNING id, channel, last_error
"""

_RECOVER_SENDING = """
UPDATE deliveries SET status = 'uncertain', lease_expires_at = NULL, updated_at = now(),
       last_error = 'the worker stopped while the provider was being contacted; not resent,'
                    ' because this channel cannot tell a resend from a new message'
WHERE status = 'sending' AND lease_expires_at < now()
"""


async def recover_expired(conn: Connection, *, events: bool = False) -> set[str]:
    """Release leases whose worker is gone. Returns channels that have work again.

    A requeued delivery is `deferred`; one left 'uncertain' gets no event, since none of
    SendGrid's says "may or may not have been sent"."""
    async with conn.transaction():
        requeued = await conn.fetch(_RECOVER_CLAIMED)
        channels = {r["channel"] for r in requeued}
        if events:
            await delivery_events.record(
                conn,
                [
                    delivery_events.Recorded(
                        r["id"], "deferred", reason=r["last_error"], response=r["last_error"]
                    )
                    for r in requeued
                ],
            )
        await conn.execute(_RECOVER_SENDING)
        for channel in sorted(channels):
            await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, channel)
    return channels


async def next_due(conn: Connection, channel: str) -> datetime | None:
    """When the earliest pending delivery of a channel, sent on its own, becomes due."""
    value: datetime | None = await conn.fetchval(
        "SELECT min(next_attempt_at) FROM deliveries"
        " WHERE channel = $1 AND status = 'pending' AND send_group_id IS NULL",
        channel,
    )
    return value


async def load_contents(conn: Connection, ids: Sequence[bytes]) -> dict[bytes, Content]:
    rows = await conn.fetch(
        "SELECT id, body::text AS body FROM contents WHERE id = ANY($1::bytea[])", list(ids)
    )
    return {r["id"]: msgspec.json.decode(r["body"], type=Content) for r in rows}


async def load_relayed(conn: Connection, sha256_hex: str) -> bytes | None:
    data: bytes | None = await conn.fetchval(
        "SELECT data FROM relayed_messages WHERE id = $1", bytes.fromhex(sha256_hex)
    )
    return data
