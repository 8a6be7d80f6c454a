"""How long finished work is kept. Forwarded webhook bodies hold what users wrote to the
account, delivery events hold addresses, webhook events hold both: once they have done their
job they are deleted after `[retention] days`, in small batches so no sweep holds long locks.
Members, intents and deliveries are the record of what was sent; they are not pruned here
(erasing a member removes theirs, with the contents and relayed messages no one else uses).
A relayed message lives as long as a content names it; one no content ever named (the relay
refused every recipient) is finished from the start and goes after the same window."""

from __future__ import annotations

from router.database import Pool
from router.queue.loops import QueueWorker
from router.store import relayed_messages

SWEEP_SECONDS = 600.0
BATCH = 5_000


def _finished(table: str, key: str, finished: str) -> str:
    """At most $2 rows of `table` whose `finished` time is more than $1 days ago."""
    return f"""
        DELETE FROM {table} WHERE {key} IN (
            SELECT {key} FROM {table}
            WHERE {finished} < now() - make_interval(days => $1) LIMIT $2)"""  # noqa: S608


# One statement per table, from constants only.
_PRUNE = {
    "webhook_forwards": _finished("webhook_forwards", "id", "finished_at"),
    "delivery_events": _finished("delivery_events", "id", "sent_at"),
    "line_webhook_events": _finished("line_webhook_events", "webhook_event_id", "processed_at"),
    "line_link_nonces": _finished("line_link_nonces", "nonce", "expires_at"),
    "relayed_messages": relayed_messages.PRUNE_UNNAMED,
}


async def prune(pool: Pool, days: int, batch: int = BATCH) -> dict[str, int]:
    """Delete one batch of expired rows from each table; how many went from each."""
    deleted: dict[str, int] = {}
    async with pool.acquire() as conn:
        for table, statement in _PRUNE.items():
            status = await conn.execute(statement, days, batch)
            deleted[table] = int(status.rsplit(" ", 1)[-1])
    return deleted


class Retention(QueueWorker):
    """Prunes every few minutes, batch after batch until nothing expired is left."""

    def __init__(self, pool: Pool, days: int) -> None:
        super().__init__("retention", recheck_seconds=SWEEP_SECONDS)
        self._pool = pool
        self._days = days

    async def step(self) -> int:
        return sum((await prune(self._pool, self._days)).values())
