"""The lease sweep: what makes a claim a lease, plus the delivery path's other timed chores.

Several times per lease it requeues the claims of workers that stopped (a send group with
its deliveries, in one statement; a delivery stopped mid-send becomes 'uncertain', never a
second send), fails notifications LINE never confirmed, and prunes old rate-limit buckets.
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


async def requeue_expired(conn: Connection, *, events: bool = False) -> None:
    """Release leases whose worker is gone and wake the queues that have work again.

    A requeued delivery is `deferred`; one left 'uncertain' gets no event, since none of
    SendGrid's says "may or may not have been sent"."""
    async with conn.transaction():
        groups = await claims.sweep(conn, send_groups.QUEUE)
        singles = await claims.sweep(conn, deliveries.QUEUE)
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
    """Runs every quarter lease (at most once a second), in every process with workers."""

    def __init__(
        self,
        pool: Pool,
        config: WorkersConfig,
        unconfirmed_after: float | None,
        *,
        events: bool = False,
    ) -> None:
        super().__init__("lease_sweep", recheck_seconds=max(1.0, config.lease_seconds / 4))
        self._pool = pool
        self._unconfirmed_after = unconfirmed_after
        self._events = events

    async def step(self) -> int:
        """One pass takes every expired lease, so there is never more to do at once: 0."""
        async with self._pool.acquire() as conn:
            await requeue_expired(conn, events=self._events)
            if self._unconfirmed_after is not None:
                await expire_unconfirmed(conn, self._unconfirmed_after, events=self._events)
            await ratelimit.prune(conn)
        return 0
