"""Recording what happened to claimed deliveries, with the events and fallbacks that follow.

A permanent failure whose intent has a fallback creates the fallback delivery in the same
transaction that records it, and a hard bounce suppresses its address there too; with events configured, each outcome's event is written there
too, so none is lost and none reports a change that was rolled back. The delivery status
notification a relayed email's outcome owes its envelope sender is queued there as well
(relay_reports).
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from asyncpg import Record

from router.channel_rules import confirmed_by_provider, confirmed_response
from router.database import Connection
from router.delivery import relay_reports
from router.metrics import count_recorded
from router.store import deliveries, delivery_events, mail_batches, suppressions
from router.store.deliveries import Result
from router.store.delivery_events import Recorded


async def record(
    conn: Connection, token: UUID, results: Sequence[Result], *, events: bool = False
) -> int:
    """Store outcomes of one claim, activating fallbacks of permanent failures, atomically.

    Returns how many rows were still ours to record (a lease may have been taken over)."""
    if not results:
        return 0
    held = [r.delivery_id for r in results if r.status == deliveries.BATCH_HELD]
    if held:
        results = [r for r in results if r.status != deliveries.BATCH_HELD]
    async with conn.transaction():
        settled = await mail_batches.settle_claimed(conn, token, held)
        rows = await deliveries.record(conn, token, results) if results else []
        await _follow_up(conn, rows, results, events=events)
    _count(rows, results)
    return len(rows) + settled


async def record_grouped(
    conn: Connection, group_id: UUID, results: Sequence[Result], *, events: bool = False
) -> int:
    """Store outcomes of deliveries leaving their send group (in the transaction that has just
    recorded the group under its lease), activating fallbacks as `record` does."""
    if not results:
        return 0
    rows = await deliveries.record_grouped(conn, group_id, results)
    await _follow_up(conn, rows, results, events=events)
    _count(rows, results)
    return len(rows)


def _count(rows: Sequence[Record], results: Sequence[Result]) -> None:
    """The recorded rows in the process's metrics (router/metrics.py)."""
    by_id = {r.delivery_id: r for r in results}
    count_recorded(
        (
            row["channel"],
            by_id[row["id"]].status,
            by_id[row["id"]].status == "failed" and by_id[row["id"]].fallback,
        )
        for row in rows
    )


async def _follow_up(
    conn: Connection, rows: Sequence[Record], results: Sequence[Result], *, events: bool
) -> None:
    """The events and fallbacks of the recorded `rows` (id, intent_id, channel)."""
    by_id = {r.delivery_id: r for r in results}
    failed_over = [
        row["intent_id"]
        for row in rows
        if by_id[row["id"]].status == "failed" and by_id[row["id"]].fallback
    ]
    if events:
        channels = {row["id"]: row["channel"] for row in rows}
        await delivery_events.record(
            conn, [e for r in results if (e := event_of(r, channels.get(r.delivery_id)))]
        )
    bounced = [
        by_id[row["id"]]
        for row in rows
        if by_id[row["id"]].status == "failed" and by_id[row["id"]].suppress is not None
    ]
    if bounced:
        await suppressions.add_for_deliveries(
            conn,
            [r.delivery_id for r in bounced],
            [r.suppress or "bounce" for r in bounced],
            [r.suppress_detail or "" for r in bounced],
        )
    if failed_over:
        await deliveries.add_fallbacks(conn, failed_over, events=events)
    reports = relay_reports.actions_of([(row["id"], by_id[row["id"]].relay_report) for row in rows])
    if reports:
        await relay_reports.queue(conn, reports)


def event_of(result: Result, channel: str | None) -> Recorded | None:
    """The event a recorded outcome means. A delivery that needs confirming is `delivered`
    only when the confirmation comes (see `confirm`), not when the provider takes it."""
    if channel is None:
        return None  # no longer ours: the new holder reports it
    # The status code and the connection's facts, as SendGrid reports them (status, ip, tls).
    status, ip, tls = result.status_code, result.local_ip, result.tls
    if result.status == "sent":
        if channel in confirmed_by_provider():
            return None
        # SendGrid's `response` is the receiving server's reply; `smtp-id` has the Message-ID.
        response = result.queue_id or result.provider_ref
        return Recorded(result.delivery_id, "delivered", response=response, ip=ip, tls=tls)
    if result.status == "uncertain":
        return None  # none of SendGrid's events says "may or may not have been sent"
    if result.status == "pending":
        return Recorded(
            result.delivery_id,
            "deferred",
            reason=result.error,
            response=result.error,
            status=status,
            ip=ip,
            tls=tls,
        )
    if result.failure == "dropped":
        return Recorded(result.delivery_id, "dropped", reason=result.error, status=status)
    return Recorded(
        result.delivery_id,
        "bounce",
        reason=result.error,
        bounce_type=result.failure,
        status=status,
        ip=ip,
        tls=tls,
    )


async def expire_unconfirmed(conn: Connection, seconds: float, *, events: bool = False) -> int:
    """Deliveries never confirmed in time count as not delivered: fall back."""
    async with conn.transaction():
        rows = await deliveries.expire_unconfirmed(conn, seconds)
        if events:
            # 'blocked', not 'bounce': nothing says the address is bad.
            await delivery_events.record(
                conn,
                [
                    Recorded(r["id"], "bounce", reason=r["last_error"], bounce_type="blocked")
                    for r in rows
                ],
            )
        if rows:
            await deliveries.add_fallbacks(conn, [r["intent_id"] for r in rows], events=events)
    return len(rows)


async def confirm(conn: Connection, delivery_id: UUID, *, events: bool = False) -> bool:
    """A webhook names a delivery the provider delivered."""
    async with conn.transaction():
        channel = await deliveries.confirm(conn, delivery_id)
        if channel is not None and events:
            await delivery_events.record(
                conn,
                [Recorded(delivery_id, "delivered", response=confirmed_response(channel))],
            )
    return channel is not None
