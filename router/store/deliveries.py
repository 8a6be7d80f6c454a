"""Deliveries after acceptance: how they are claimed, and every statement that changes them.

Every state change is one set-based statement over a claim. The claim itself is a lease
(router/queue/claims.py): if its worker dies, the lease sweep returns the delivery to
'pending', or, when a send without provider de-duplication had already begun ('sending'), to
'uncertain', never to a second send. Deliveries in a send group are claimed and swept only
with their group (router/store/send_groups.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import asyncpg
import msgspec

from router import channel_rules
from router.database import Connection
from router.queue import claims
from router.queue.wakeups import notify
from router.reach import DEFAULT_LINE_ACCOUNT, line_identity_join
from router.store import delivery_events, line_budgets


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
    member_id: str | None = None
    kind: str = "promotional"
    category: str | None = None
    # Why the channel may not carry it now although it reaches them (a suppressed address).
    refusal: str | None = None
    # 'cancel' or 'pause': the intent's SendGrid batch is held (router.store.mail_batches).
    batch_hold: str | None = None
    line_account: str = DEFAULT_LINE_ACCOUNT  # the intent's LINE Official Account
    # LINE only (router.store.line_budgets): the budget to reserve under (None: none) and
    # whether this delivery's message was reserved already.
    line_budget_id: UUID | None = None  # a campaign's stored budget
    line_budget: str | None = None  # the intent's own (JSON), None: the default by kind
    line_budget_granted: bool = False


BATCH_HELD = "batch_held"
"""A claimed delivery's outcome when its SendGrid batch is held: not sent, settled by
`router.store.mail_batches.settle_claimed`."""


class Result(msgspec.Struct, frozen=True):
    """What to record for one claimed delivery."""

    delivery_id: UUID
    status: str  # 'sent' | 'failed' | 'pending' | 'uncertain' | BATCH_HELD
    provider_ref: str | None = None
    error: str | None = None
    retry_in_seconds: float | None = None
    fallback: bool = False
    # How a 'failed' delivery is reported: 'bounce' (the provider refused it), 'blocked'
    # (retries ran out) or 'dropped' (never sent: quota, retry window, unusable content).
    failure: str = "bounce"
    queue_id: str | None = None  # the receiving SMTP server's final reply
    # The attempt timed out: the provider may have taken it, so a cancel leaves it 'uncertain'.
    maybe_sent: bool = False
    # The recipient's server refused the address for good: suppress it ('bounce' | 'invalid')
    # with the server's reply, in the transaction that records the failure.
    suppress: str | None = None
    suppress_detail: str | None = None
    # A relayed email's outcome to report to its envelope sender (router.delivery.
    # relay_reports): 'failed', or 'relayed' (sent to an upstream that reports no DSN).
    relay_report: str | None = None
    # For the delivery events only: the provider's status code (SMTP enhanced: 5.1.1) and the
    # connection it answered on (the router's local address; whether it was encrypted).
    status_code: str | None = None
    local_ip: str | None = None
    tls: bool | None = None


# The hold of the intent's SendGrid batch, looked up only for an intent that has one.
BATCH_HOLD_SQL = (
    "CASE WHEN i.batch_id IS NULL THEN NULL"
    " ELSE (SELECT b.hold FROM mail_batches b WHERE b.batch_id = i.batch_id) END"
)

# Deliveries sent on their own, one queue per channel. The claim joins the member as they are
# now, for the send-time reachability check.
QUEUE = claims.Leased(
    table="deliveries",
    alias="d",
    lane="channel",
    only="send_group_id IS NULL",
    joins=(
        "intents i LEFT JOIN members m ON m.member_id = i.member_id "
        + line_identity_join("i.line_account")
    ),
    join_on="i.id = d.intent_id",
    returning=lambda channel: (
        f"""d.id, d.intent_id, d.address, d.attempts, d.first_attempt_at,
          i.content_id, {channel_rules.still_reachable(channel)} AS reachable,
          i.member_id, coalesce(i.kind, 'promotional'), i.category,
          {channel_rules.refusal(channel)} AS refusal, {BATCH_HOLD_SQL} AS batch_hold,
          i.line_account {line_budgets.delivery_columns(channel)}"""
    ),
    requeued_error="the worker holding this delivery stopped; requeued",
    in_doubt=claims.InDoubt(
        "sending",
        "uncertain",
        "the worker stopped while the provider was being contacted; not resent,"
        " because this channel cannot tell a resend from a new message",
    ),
)


async def mark_sending(conn: Connection, delivery_ids: Sequence[UUID], token: UUID) -> set[UUID]:
    """Record that the provider is about to be contacted (channels without de-duplication),
    for some deliveries of one claim at once: the ids still held under `token`, now 'sending'."""
    rows = await conn.fetch(
        "UPDATE deliveries SET status = 'sending', updated_at = now()"
        " WHERE id = ANY($1::uuid[]) AND claim_token = $2 AND status = 'claimed' RETURNING id",
        list(delivery_ids),
        token,
    )
    return {r["id"] for r in rows}


_RECORD = """
UPDATE deliveries d
SET status = r.status,
    provider_ref = coalesce(r.ref, d.provider_ref),
    smtp_queue_id = coalesce(r.queue_id, d.smtp_queue_id),
    last_error = coalesce(r.err, d.last_error),
    next_attempt_at = CASE WHEN r.status = 'pending'
                           THEN now() + make_interval(secs => r.delay)
                           ELSE d.next_attempt_at END,
    sent_at = CASE WHEN r.status = 'sent' THEN now() ELSE d.sent_at END,
    maybe_sent = d.maybe_sent OR r.maybe_sent,
    claim_token = NULL,
    lease_expires_at = NULL,
    updated_at = now()
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::float8[], $7::text[],
            $8::boolean[])
     AS r(id, status, ref, err, delay, queue_id, maybe_sent)
WHERE d.id = r.id AND d.claim_token = $6
RETURNING d.id, d.intent_id, d.channel
"""

# A grouped delivery leaving its group ($6, whose lease the caller's transaction has just
# used to record it) with an outcome of its own; it keeps the group's attempts.
_RECORD_GROUPED = """
UPDATE deliveries d
SET status = r.status,
    provider_ref = r.ref,
    last_error = r.err,
    attempts = s.attempts,
    first_attempt_at = s.first_attempt_at,
    sent_at = CASE WHEN r.status = 'sent' THEN now() END,
    maybe_sent = s.maybe_sent,
    updated_at = now()
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[]) AS r(id, status, ref, err),
     send_groups s
WHERE d.id = r.id AND d.send_group_id = $5 AND d.status = 'grouped' AND s.id = $5
RETURNING d.id, d.intent_id, d.channel
"""


async def record(conn: Connection, token: UUID, results: Sequence[Result]) -> list[asyncpg.Record]:
    """Store outcomes of one claim; the rows still ours (id, intent_id, channel)."""
    return await conn.fetch(
        _RECORD,
        [r.delivery_id for r in results],
        [r.status for r in results],
        [r.provider_ref for r in results],
        [r.error for r in results],
        [r.retry_in_seconds or 0.0 for r in results],
        token,
        [r.queue_id for r in results],
        [r.maybe_sent for r in results],
    )


async def record_grouped(
    conn: Connection, group_id: UUID, results: Sequence[Result]
) -> list[asyncpg.Record]:
    """Give grouped deliveries of `group_id` a state of their own (final: they leave the
    group); the rows still in it (id, intent_id, channel)."""
    return await conn.fetch(
        _RECORD_GROUPED,
        [r.delivery_id for r in results],
        [r.status for r in results],
        [r.provider_ref for r in results],
        [r.error for r in results],
        group_id,
    )


def _add_fallbacks_sql() -> str:
    """With events ($2), a created fallback is `processed` and one that could not be made is
    `dropped`. Each intent's fallback channel addresses it from the member as they are now."""
    address = channel_rules.fallback_address_sql()
    reachable = channel_rules.fallback_reachable_sql()
    identity = line_identity_join("i.line_account")
    return f"""
WITH added AS (
    INSERT INTO deliveries (intent_id, channel, address, status, is_fallback, campaign_id)
    SELECT i.id, i.fallback, {address}, 'pending', true, i.campaign_id
    FROM intents i JOIN members m ON m.member_id = i.member_id {identity}
    WHERE i.id = ANY($1::uuid[]) AND i.fallback IS NOT NULL AND {reachable}
    ON CONFLICT (intent_id, channel) DO NOTHING
    RETURNING id, intent_id, channel, address
), processed AS (
    INSERT INTO delivery_events (event, intent_id, delivery_id, channel, email)
    SELECT 'processed', a.intent_id, a.id, a.channel, {channel_rules.event_email_sql("a")}
    FROM added a JOIN intents i ON i.id = a.intent_id
    LEFT JOIN members m ON m.member_id = i.member_id
    WHERE $2::boolean
), dropped AS (
    INSERT INTO delivery_events (event, intent_id, channel, email, reason)
    SELECT 'dropped', i.id, i.fallback, m.email, {channel_rules.fallback_refused_sql()}
    FROM intents i JOIN members m ON m.member_id = i.member_id {identity}
    WHERE $2::boolean AND i.id = ANY($1::uuid[]) AND i.fallback IS NOT NULL
      AND NOT {reachable}
)
SELECT channel FROM added
"""  # noqa: S608 - built from the channels' constant fragments only


async def add_fallbacks(
    conn: Connection, intent_ids: Sequence[UUID], *, events: bool = False
) -> set[str]:
    """Create the fallback deliveries of these intents (in the caller's transaction) and wake
    their queues; the channels that got one."""
    channels = {
        r["channel"] for r in await conn.fetch(_add_fallbacks_sql(), list(intent_ids), events)
    }
    for channel in sorted(channels):
        await notify(conn, QUEUE.queue_name(channel))
    if events:
        await notify(conn, delivery_events.QUEUE.queue_name)
    return channels


def _expire_unconfirmed_sql() -> str:
    return f"""
UPDATE deliveries SET status = 'failed', updated_at = now(),
       last_error = {channel_rules.unconfirmed_error_sql()}
WHERE channel = ANY($2::text[]) AND status = 'sent' AND confirmed_at IS NULL
  AND sent_at < now() - make_interval(secs => $1)
RETURNING id, intent_id, last_error
"""  # noqa: S608 - built from the channels' constant fragments only


async def expire_unconfirmed(conn: Connection, seconds: float) -> list[asyncpg.Record]:
    """Fail deliveries that needed a confirmation and got none in time (id, intent_id,
    last_error of each)."""
    return await conn.fetch(
        _expire_unconfirmed_sql(), seconds, channel_rules.confirmed_by_provider()
    )


async def confirm(conn: Connection, delivery_id: UUID) -> str | None:
    """A webhook confirmed this delivery: its channel, or None if it is not one awaiting
    confirmation."""
    channel: str | None = await conn.fetchval(
        "UPDATE deliveries SET confirmed_at = now(), updated_at = now()"
        " WHERE id = $1 AND channel = ANY($2::text[]) AND confirmed_at IS NULL"
        " RETURNING channel",
        delivery_id,
        channel_rules.confirmed_by_provider(),
    )
    return channel


async def cancel_campaign(conn: Connection, campaign_id: UUID) -> None:
    """Cancel the campaign's deliveries still waiting (after its send groups: see
    `send_groups.cancel_pending`); one whose earlier attempt timed out may have reached the
    provider, so it becomes 'uncertain' instead."""
    await conn.execute(
        "UPDATE deliveries d SET status = CASE WHEN d.maybe_sent THEN 'uncertain'"
        " ELSE 'cancelled' END, updated_at = now(),"
        " last_error = CASE WHEN d.maybe_sent THEN 'campaign cancelled after an attempt that"
        " timed out: the provider may have sent it' ELSE 'campaign cancelled' END FROM intents i"
        " WHERE i.campaign_id = $1 AND d.intent_id = i.id AND d.status = 'pending'",
        campaign_id,
    )
