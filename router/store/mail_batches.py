"""SendGrid batch ids and their scheduled-send holds (`mail_batches`), and what a hold does
to the batch's deliveries.

A batch's intents carry its id (`intents.batch_id`). Cancelling a batch cancels its
deliveries not yet claimed; pausing one sets them 'held', a status no claim takes, so the
claim statement stays as it is for everyone else. A delivery of a held batch that still
reaches a worker (accepted after the hold, a retry or a fallback made later, or one pending
when a concurrent hold committed) is seen by the claim, which reads its batch's hold when the
intent has a batch (`deliveries.QUEUE`), and is settled here instead of being sent.

Races are settled by the batch row's lock: a hold, a change of hold and a resume update the
row first (FOR UPDATE), and settling claimed deliveries reads it FOR SHARE, so a resume
either sees the deliveries held or the settling sees the batch resumed. A delivery claimed
before a hold committed is already with its worker and may go out.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import timedelta
from typing import Literal
from uuid import UUID

import msgspec

from router.database import Connection
from router.queue.wakeups import notify
from router.store import deliveries

Hold = Literal["cancel", "pause"]

MAX_HELD = 10
"""SendGrid's limit: at most this many batches cancelled or paused at one time."""
PAUSE_EXPIRY = timedelta(hours=72)
"""A paused delivery is discarded this long after its send time, as SendGrid does."""

CANCELLED_ERROR = "the scheduled send was cancelled (batch_id)"
EXPIRED_ERROR = "expired: paused for more than 72 hours past its send time (batch_id)"

# The advisory lock taken while counting held batches, so two new holds cannot both pass it.
_HOLD_COUNT_LOCK = 0x5347_4D42  # "SGMB"


class HeldBatch(msgspec.Struct, frozen=True):
    batch_id: str
    status: Hold


class HoldRefused(Exception):
    """A hold that cannot be set: the batch id is unknown, or too many batches are held."""

    def __init__(self, reason: Literal["unknown", "limit"]) -> None:
        super().__init__(reason)
        self.reason = reason


def new_batch_id() -> str:
    """32 URL-safe characters, as long as SendGrid's batch ids."""
    return secrets.token_urlsafe(24)


async def create(conn: Connection) -> str:
    batch_id = new_batch_id()
    await conn.execute("INSERT INTO mail_batches (batch_id) VALUES ($1)", batch_id)
    return batch_id


async def exists(conn: Connection, batch_id: str) -> bool:
    found: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM mail_batches WHERE batch_id = $1)", batch_id
    )
    return found


async def held(conn: Connection, batch_id: str | None = None) -> list[HeldBatch]:
    """The held batches (one, or all, oldest hold first)."""
    rows = await conn.fetch(
        "SELECT batch_id, hold FROM mail_batches WHERE hold IS NOT NULL"
        " AND ($1::text IS NULL OR batch_id = $1) ORDER BY held_at, batch_id",
        batch_id,
    )
    return [HeldBatch(r["batch_id"], r["hold"]) for r in rows]


async def _lock(conn: Connection, batch_id: str) -> tuple[bool, str | None]:
    """Lock the batch's row for a change of hold: whether it exists, and its hold."""
    row = await conn.fetchrow(
        "SELECT hold FROM mail_batches WHERE batch_id = $1 FOR UPDATE", batch_id
    )
    return (row is not None, None if row is None else row["hold"])


async def set_hold(conn: Connection, batch_id: str, hold: Hold, *, new: bool) -> None:
    """Cancel or pause the batch, and its deliveries not yet claimed with it. `new`: the
    batch must not be held yet (POST); otherwise it must be (PATCH). Raises `HoldRefused`;
    `LookupError` when `new` and the batch is already held, or not `new` and it is not."""
    async with conn.transaction():
        found, current = await _lock(conn, batch_id)
        if not found:
            raise HoldRefused("unknown")
        if new and current is not None:
            raise LookupError("already held")
        if not new and current is None:
            raise LookupError("not held")
        if current is None:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _HOLD_COUNT_LOCK)
            count: int = await conn.fetchval(
                "SELECT count(*) FROM mail_batches WHERE hold IS NOT NULL"
            )
            if count >= MAX_HELD:
                raise HoldRefused("limit")
        await conn.execute(
            "UPDATE mail_batches SET hold = $2, held_at = now() WHERE batch_id = $1",
            batch_id,
            hold,
        )
        if hold == "cancel":
            await _cancel_deliveries(conn, batch_id, ("pending", "held"), CANCELLED_ERROR)
        else:
            await conn.execute(
                "UPDATE deliveries d SET status = 'held', updated_at = now() FROM intents i"
                " WHERE i.batch_id = $1 AND d.intent_id = i.id AND d.status = 'pending'",
                batch_id,
            )


async def _cancel_deliveries(
    conn: Connection, batch_id: str, statuses: Sequence[str], error: str, *, expired: bool = False
) -> None:
    """Cancel the batch's deliveries in `statuses` (with `expired`, only those a pause has
    kept past `PAUSE_EXPIRY`); one whose earlier attempt timed out may have reached the
    provider, so it becomes 'uncertain' instead, as a cancelled campaign's does."""
    await conn.execute(
        "UPDATE deliveries d SET status = CASE WHEN d.maybe_sent THEN 'uncertain'"
        " ELSE 'cancelled' END, updated_at = now(),"
        " last_error = CASE WHEN d.maybe_sent THEN $3 || ' after an attempt that timed out:"
        " the provider may have sent it' ELSE $3 END"
        " FROM intents i WHERE i.batch_id = $1 AND d.intent_id = i.id"
        " AND d.status = ANY($2::text[])"
        " AND (NOT $4 OR d.next_attempt_at < now() - make_interval(secs => $5))",
        batch_id,
        list(statuses),
        error,
        expired,
        PAUSE_EXPIRY.total_seconds(),
    )


async def release(conn: Connection, batch_id: str) -> bool:
    """Lift the batch's hold (SendGrid's DELETE: resume a pause, or stop cancelling what is
    sent with the batch id from now on). Held deliveries go back to their queue, due at
    their send time or at once if it has passed; those held more than 72 hours past it are
    discarded. False when the batch is not held."""
    async with conn.transaction():
        _, current = await _lock(conn, batch_id)
        if current is None:
            return False
        await conn.execute(
            "UPDATE mail_batches SET hold = NULL, held_at = NULL WHERE batch_id = $1", batch_id
        )
        await _cancel_deliveries(conn, batch_id, ("held",), EXPIRED_ERROR, expired=True)
        rows = await conn.fetch(
            "UPDATE deliveries d SET status = 'pending', updated_at = now() FROM intents i"
            " WHERE i.batch_id = $1 AND d.intent_id = i.id AND d.status = 'held'"
            " RETURNING d.channel",
            batch_id,
        )
        for channel in sorted({r["channel"] for r in rows}):
            await notify(conn, deliveries.QUEUE.queue_name(channel))
    return True


async def expire_paused(conn: Connection, limit: int) -> int:
    """Cancel at most `limit` held deliveries whose send time is more than 72 hours past
    (SendGrid discards a paused send then); the retention sweep calls this."""
    status: str = await conn.execute(
        "UPDATE deliveries SET status = 'cancelled', last_error = $2, updated_at = now()"
        " WHERE id IN (SELECT id FROM deliveries WHERE status = 'held'"
        " AND next_attempt_at < now() - make_interval(secs => $3) LIMIT $1)",
        limit,
        EXPIRED_ERROR,
        PAUSE_EXPIRY.total_seconds(),
    )
    return int(status.rsplit(" ", 1)[-1])


async def settle_claimed(conn: Connection, token: UUID, delivery_ids: Sequence[UUID]) -> int:
    """Deliveries a claim found in a held batch (in the transaction recording the claim):
    cancelled if their batch is cancelled, 'held' if it is paused (as if never claimed: the
    attempt is not counted), or back to pending if the hold was lifted meanwhile. The batch
    rows are read under FOR SHARE, so a concurrent resume waits for this and then finds the
    deliveries held. Returns how many were still the claim's."""
    if not delivery_ids:
        return 0
    ids = list(delivery_ids)
    await conn.execute(
        "SELECT 1 FROM mail_batches b WHERE b.batch_id IN (SELECT i.batch_id FROM deliveries d"
        " JOIN intents i ON i.id = d.intent_id WHERE d.id = ANY($1::uuid[]))"
        " ORDER BY b.batch_id FOR SHARE OF b",
        ids,
    )
    rows = await conn.fetch(
        "UPDATE deliveries d SET"
        " status = CASE b.hold WHEN 'cancel' THEN 'cancelled' WHEN 'pause' THEN 'held'"
        " ELSE 'pending' END,"
        " last_error = CASE WHEN b.hold = 'cancel' THEN $3 ELSE d.last_error END,"
        " attempts = d.attempts - 1,"
        " first_attempt_at = CASE WHEN d.attempts = 1 THEN NULL ELSE d.first_attempt_at END,"
        " claim_token = NULL, lease_expires_at = NULL, updated_at = now()"
        " FROM intents i JOIN mail_batches b ON b.batch_id = i.batch_id"
        " WHERE d.id = ANY($1::uuid[]) AND d.claim_token = $2 AND i.id = d.intent_id"
        " RETURNING d.channel, d.status",
        ids,
        token,
        CANCELLED_ERROR,
    )
    for channel in sorted({r["channel"] for r in rows if r["status"] == "pending"}):
        await notify(conn, deliveries.QUEUE.queue_name(channel))
    return len(rows)
