"""How long finished work is kept. Forwarded webhook bodies hold what users wrote to the
account, delivery events hold addresses, webhook events hold both: once they have done their
job they are deleted after `[retention] days`, in small batches so no sweep holds long locks.
Members, intents and deliveries are the record of what was sent; they are not pruned here
(erasing a member removes theirs, with the contents and relayed messages no one else uses).
A relayed message lives as long as a content names it; one no content ever named (the relay
refused every recipient) is finished from the start and goes after the same window.

Audiences (hashes of uploaded addresses, numbers and LINE user IDs) are kept until deleted,
unless `[retention] audience_days` is set: then one unused for that long is deleted.

The email consent of an erased member is kept until its `keep_until` (one month after the last
promotional email sent to them) and deleted then, whatever `[retention]` says: the law sets
that window.

Deliveries of a paused SendGrid batch that were never resumed are cancelled 72 hours after
their send time, as SendGrid discards them (router.store.mail_batches), by the same sweep."""

from __future__ import annotations

from router.database import Pool
from router.queue.loops import QueueWorker
from router.store import consent_records, mail_batches, relayed_messages

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
    # Shopify retries a delivery for hours, not weeks: its id is needed only that long.
    "shopify_webhooks": _finished("shopify_webhooks", "webhook_id", "received_at"),
}


# An audience is in use while it is uploaded to, synced to LINE, or named (as a target or an
# exclusion) by a campaign created in the window or still fanning out. Its entries go with it
# (the delete trigger on audiences); an audience can hold 1.5 million, so few go per statement.
_PRUNE_AUDIENCES = """
    DELETE FROM audiences WHERE id IN (
        SELECT a.id FROM audiences AS a
        WHERE greatest(a.updated_at, a.line_synced_at) < now() - make_interval(days => $1)
          AND NOT EXISTS (
              SELECT 1 FROM campaigns AS c
              WHERE (a.id = ANY(c.audience_ids) OR a.id = ANY(c.exclude_audience_ids))
                AND (c.status = 'fanning_out'
                     OR c.created_at >= now() - make_interval(days => $1)))
        LIMIT $2)"""
AUDIENCE_BATCH = 10


async def prune(
    pool: Pool, days: int | None, batch: int = BATCH, audience_days: int | None = None
) -> dict[str, int]:
    """Delete one batch of rows finished more than `days` ago from each table, and of
    audiences unused for `audience_days` (None: not these); how many went from each."""
    deleted: dict[str, int] = {}
    async with pool.acquire() as conn:
        status = await conn.execute(consent_records.PRUNE_EXPIRED, batch)
        deleted["email_consent_records"] = _count(status)
        deleted["expired_paused_deliveries"] = await mail_batches.expire_paused(conn, batch)
        if days is not None:
            for table, statement in _PRUNE.items():
                deleted[table] = _count(await conn.execute(statement, days, batch))
        if audience_days is not None:
            status = await conn.execute(_PRUNE_AUDIENCES, audience_days, min(batch, AUDIENCE_BATCH))
            deleted["audiences"] = _count(status)
    return deleted


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


class Retention(QueueWorker):
    """Prunes every few minutes, batch after batch until nothing expired is left. Runs in
    every router: expired consent records go even with both windows off."""

    def __init__(self, pool: Pool, days: int, audience_days: int = 0) -> None:
        """`days`, `audience_days`: the configured windows, 0 for off."""
        super().__init__("retention", recheck_seconds=SWEEP_SECONDS)
        self._pool = pool
        self._days = days or None
        self._audience_days = audience_days or None

    async def step(self) -> int:
        deleted = await prune(self._pool, self._days, audience_days=self._audience_days)
        return sum(deleted.values())
