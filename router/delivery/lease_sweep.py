"""The lease sweep: what makes a claim a lease, plus the delivery path's other timed chores.

Several times per lease it requeues the claims of workers that stopped (a send group with
its deliveries, in one statement; a delivery stopped mid-send becomes 'uncertain', never a
second send), fails notifications LINE never confirmed, and prunes old rate-limit buckets.
Claims still in hand are not requeued: their holders renew the leases (`LeaseHeartbeat`).
"""

from __future__ import annotations

from router import ratelimit
from router.config import WorkersConfig
from router.database import Connection, Pool
from router.delivery.outcomes import expire_unconfirmed
from router.queue import claims
from router.queue.loops import QueueWorker
from router.store import deliveries, delivery_events, send_groups
from router.store.delivery_events import Recorded


async def requeue_expired(
    conn: Connection,
    *,
    events: bool = False,
    holdings: claims.Holdings | None = None,
    grace_seconds: float = 0.0,
) -> None:
    """Release leases whose worker is gone and wake the queues that have work again; the
    claims this process holds (`holdings`) are not gone, whatever their leases say.

    A requeued delivery is `deferred`; one left 'uncertain' gets no event, since none of
    SendGrid's says "may or may not have been sent"."""
    held = holdings or claims.Holdings()
    async with conn.transaction():
        groups = await claims.sweep(
            conn,
            send_groups.QUEUE,
            spare=held.tokens(send_groups.QUEUE),
            grace_seconds=grace_seconds,
        )
        singles = await claims.sweep(
            conn,
            deliveries.QUEUE,
            spare=held.tokens(deliveries.QUEUE),
            grace_seconds=grace_seconds,
        )
        if events:
            await delivery_events.record(
                conn,
                [
                    Recorded(i, "deferred", reason=reason, response=reason)
                    for ids, reason in (
                        (groups.part_ids, send_groups.QUEUE.requeued_error),
                        (singles.ids, deliveries.QUEUE.requeued_error),
                    )
                    for i in ids
                ],
            )


class LeaseSweep(QueueWorker):
    """Runs every quarter lease (at most once a second), in every process with workers.

    For one lease after the database server starts it takes nothing: every lease then looks
    expired, and the processes holding them get that long to renew them or record them."""

    def __init__(
        self,
        pool: Pool,
        holdings: claims.Holdings,
        config: WorkersConfig,
        unconfirmed_after: float | None,
        *,
        events: bool = False,
    ) -> None:
        super().__init__("lease_sweep", recheck_seconds=max(1.0, config.lease_seconds / 4))
        self._pool = pool
        self._holdings = holdings
        self._grace_seconds = config.lease_seconds
        self._unconfirmed_after = unconfirmed_after
        self._events = events

    async def step(self) -> int:
        """One pass takes every expired lease, so there is never more to do at once: 0."""
        async with self._pool.acquire() as conn:
            await requeue_expired(
                conn,
                events=self._events,
                holdings=self._holdings,
                grace_seconds=self._grace_seconds,
            )
            if self._unconfirmed_after is not None:
                await expire_unconfirmed(conn, self._unconfirmed_after, events=self._events)
            await ratelimit.prune(conn)
        return 0
