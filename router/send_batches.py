"""Send batches: a campaign's LINE deliveries with the same content, sent as one multicast.

Batches are formed by the statement that accepts a campaign's intents (router/intents.py), so
no worker ever sees those deliveries unbatched. From then on the batch is the unit of work: it
is claimed whole (`FOR UPDATE SKIP LOCKED` on `send_groups`), sent under a retry key derived
from its id, and its outcome is recorded for every delivery in it at once. A batch is never
resent with different recipients under the same key: LINE would answer 409 for people who
never got the message. Only a 400 (nothing sent) lets recipients move to a new batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import msgspec

from router import delivery_events, outbox
from router.database import Connection
from router.intents import NOTIFY_CHANNEL


class ClaimedBatch(msgspec.Struct, frozen=True):
    batch_id: UUID
    content_id: bytes
    attempts: int
    first_attempt_at: datetime
    delivery_ids: list[UUID]  # to send, in the order of `addresses`
    addresses: list[str]
    unreachable: list[UUID]  # not to send: see outbox.REACHABLE_NOW


# The batch rows are locked first, then their deliveries: the same order `cancel_pending`
# takes, so the two never deadlock. A batch with no pending delivery left (all cancelled,
# or their members erased) comes back empty and is closed by the caller. Recipients found
# unreachable on a first attempt are left out; sending fewer under a key never sent before
# is safe, and they are failed, so the key is never used for them later.
_CLAIM = f"""
WITH b AS (
    UPDATE send_groups s
    SET status = 'claimed', attempts = s.attempts + 1, claim_token = $3,
        lease_expires_at = now() + make_interval(secs => $4),
        first_attempt_at = coalesce(s.first_attempt_at, now()), updated_at = now()
    WHERE s.id IN (
        SELECT id FROM send_groups
        WHERE channel = $1 AND status = 'pending' AND next_attempt_at <= now()
        ORDER BY next_attempt_at
        LIMIT $2
        FOR UPDATE SKIP LOCKED)
    RETURNING s.id, s.content_id, s.attempts, s.first_attempt_at
), d AS (
    UPDATE deliveries d
    SET status = 'claimed', attempts = d.attempts + 1, claim_token = $3,
        lease_expires_at = now() + make_interval(secs => $4),
        first_attempt_at = coalesce(d.first_attempt_at, now()), updated_at = now()
    FROM b, intents i LEFT JOIN members m ON m.member_id = i.member_id
    WHERE d.send_group_id = b.id AND d.status = 'pending' AND i.id = d.intent_id
    RETURNING d.id, d.address, d.send_group_id, {outbox.REACHABLE_NOW} AS reachable
)
SELECT b.id, b.content_id, b.attempts, b.first_attempt_at,
       coalesce(array_agg(d.id ORDER BY d.id) FILTER (WHERE d.reachable), '{{}}') AS ids,
       coalesce(array_agg(d.address ORDER BY d.id) FILTER (WHERE d.reachable), '{{}}')
           AS addresses,
       coalesce(array_agg(d.id) FILTER (WHERE NOT d.reachable), '{{}}') AS unreachable
FROM b LEFT JOIN d ON d.send_group_id = b.id
GROUP BY b.id, b.content_id, b.attempts, b.first_attempt_at
"""  # noqa: S608 - only constants are interpolated


async def claim(
    conn: Connection, channel: str, limit: int, token: UUID, lease_seconds: float
) -> list[ClaimedBatch]:
    rows = await conn.fetch(_CLAIM, channel, limit, token, lease_seconds)
    return [ClaimedBatch(*r) for r in rows]


class BatchResult(msgspec.Struct, frozen=True):
    """What to record for one claimed batch: its own state and each delivery's result.

    `split_off`: deliveries that go on, unsent, in a new batch (after a 400 that named
    other recipients). `halve`: split them into two new batches instead of one."""

    batch_id: UUID
    status: str  # 'done' | 'pending' | 'split'
    deliveries: list[outbox.Result]
    provider_ref: str | None = None
    error: str | None = None
    retry_in_seconds: float = 0.0
    split_off: list[UUID] = msgspec.field(default_factory=list)
    halve: bool = False


_RECORD_BATCH = """
UPDATE send_groups
SET status = $3, provider_ref = coalesce($4, provider_ref), last_error = coalesce($5, last_error),
    next_attempt_at = CASE WHEN $3 = 'pending' THEN now() + make_interval(secs => $6)
                           ELSE next_attempt_at END,
    claim_token = NULL, lease_expires_at = NULL, updated_at = now()
WHERE id = $1 AND claim_token = $2
RETURNING channel
"""

_SPLIT_OFF = """
WITH parts AS MATERIALIZED (
    SELECT part, gen_random_uuid() AS batch_id FROM unnest($4::int[]) AS p(part) GROUP BY part
), created AS (
    INSERT INTO send_groups (id, channel, content_id, status, split_from)
    SELECT p.batch_id, s.channel, s.content_id, 'pending', s.id
    FROM parts p, send_groups s WHERE s.id = $1
)
UPDATE deliveries d
SET status = 'pending', send_group_id = p.batch_id, claim_token = NULL,
    lease_expires_at = NULL, next_attempt_at = now(), updated_at = now()
FROM unnest($3::uuid[], $4::int[]) AS x(id, part) JOIN parts p USING (part)
WHERE d.id = x.id AND d.claim_token = $2
"""


async def record(
    conn: Connection, token: UUID, results: Sequence[BatchResult], *, events: bool = False
) -> int:
    """Store the outcomes of claimed batches; returns how many were still ours."""
    ours = 0
    async with conn.transaction():
        woken: set[str] = set()
        for r in results:
            channel = await conn.fetchval(
                _RECORD_BATCH,
                r.batch_id,
                token,
                r.status,
                r.provider_ref,
                r.error,
                r.retry_in_seconds,
            )
            if channel is None:
                continue  # the lease was lost; the batch's new holder records it
            ours += 1
            # One batch's deliveries (at most 500) per statement: the outbox's UPDATE joins
            # its list of ids to deliveries, and with a misleading estimate PostgreSQL reads
            # the list once per row; 4,000 at once (eight batches) took 6 s that way.
            await outbox.record(conn, token, r.deliveries, events=events)
            if r.split_off:
                half = (len(r.split_off) + 1) // 2 if r.halve else len(r.split_off)
                parts = [int(i >= half) for i in range(len(r.split_off))]
                await conn.execute(_SPLIT_OFF, r.batch_id, token, r.split_off, parts)
                woken.add(channel)
        for channel in sorted(woken):
            await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, channel)
    return ours


# A batch and its deliveries are requeued in one statement: a batch pending again while its
# deliveries were still 'claimed' would be claimed empty, closed, and leave them stranded.
_RECOVER = """
WITH b AS (
    UPDATE send_groups SET status = 'pending', claim_token = NULL, lease_expires_at = NULL,
           next_attempt_at = now(), updated_at = now(),
           last_error = 'the worker holding this batch stopped; requeued'
    WHERE status = 'claimed' AND lease_expires_at < now()
    RETURNING id, channel
), d AS (
    UPDATE deliveries d SET status = 'pending', claim_token = NULL, lease_expires_at = NULL,
           updated_at = now(), last_error = 'the worker holding this batch stopped; requeued'
    FROM b WHERE d.send_group_id = b.id AND d.status = 'claimed'
    RETURNING d.id, d.last_error
)
SELECT 'batch' AS kind, channel AS value, NULL::uuid AS id FROM b
UNION ALL
SELECT 'delivery', last_error, id FROM d
"""


async def recover_expired(conn: Connection, *, events: bool = False) -> set[str]:
    """Requeue batches whose worker is gone, with their deliveries; the channels that have
    work again. Resending is safe: the retry key is the batch's, and so are the recipients."""
    async with conn.transaction():
        rows = await conn.fetch(_RECOVER)
        if events:
            await delivery_events.record(
                conn,
                [
                    delivery_events.Recorded(
                        r["id"], "deferred", reason=r["value"], response=r["value"]
                    )
                    for r in rows
                    if r["kind"] == "delivery"
                ],
            )
    return {r["value"] for r in rows if r["kind"] == "batch"}


async def next_due(conn: Connection, channel: str) -> datetime | None:
    value: datetime | None = await conn.fetchval(
        "SELECT min(next_attempt_at) FROM send_groups WHERE channel = $1 AND status = 'pending'",
        channel,
    )
    return value


async def cancel_pending(conn: Connection, campaign_id: UUID) -> None:
    """Cancel the campaign's batches still waiting (in the caller's transaction, before its
    deliveries are cancelled: batch rows are always locked before delivery rows)."""
    await conn.execute(
        "UPDATE send_groups s SET status = 'cancelled', updated_at = now()"
        " WHERE s.status = 'pending' AND s.id IN ("
        "   SELECT d.send_group_id FROM deliveries d JOIN intents i ON i.id = d.intent_id"
        "   WHERE i.campaign_id = $1 AND d.send_group_id IS NOT NULL AND d.status = 'pending')",
        campaign_id,
    )
