"""LINE's monthly message quota, shared by every router process: the figures LINE last
reported, what was sent since, and what requests in flight have reserved. Each LINE request
reserves its messages before it is sent and settles after LINE answers, so concurrent
requests in any process never together pass the limit. The only writer of `line_quota` and
`line_quota_reservations`.
"""

# ruff: noqa: S608 - the statements interpolate the two constants below only

from __future__ import annotations

from uuid import UUID

import asyncpg

from channels.base import QuotaAnswer, QuotaFigures
from router.database import Pool
from router.reach import DEFAULT_LINE_ACCOUNT

_MONTH = "date_trunc('month', now() AT TIME ZONE 'Asia/Tokyo')::date"
"""LINE counts messages per calendar month in Japan time."""
_ABANDONED = "interval '10 minutes'"
"""A reservation this old belongs to a process that died while its request was in flight;
it no longer holds quota."""

_FIGURES = f"""
SELECT q.quota_limit, q.line_usage, q.sent_since_read,
       extract(epoch FROM q.read_at)::float8 AS read_at,
       ($1::float8 IS NULL OR q.read_at > now() - make_interval(secs => $1)) AS fresh,
       coalesce((SELECT sum(r.messages) FROM line_quota_reservations r
                 WHERE r.account = q.account AND r.month = q.month
                   AND r.created_at > now() - {_ABANDONED}), 0)::bigint
       AS reserved
FROM line_quota q WHERE q.account = $2 AND q.month = {_MONTH}
"""

_REFRESH = f"""
INSERT INTO line_quota AS q (account, month, quota_limit, line_usage, sent_since_read, read_at)
VALUES ($3, {_MONTH}, $1, $2, 0, now())
ON CONFLICT (account, month) DO UPDATE
SET quota_limit = excluded.quota_limit, line_usage = excluded.line_usage,
    sent_since_read = 0, read_at = excluded.read_at
"""

_LOCK_MONTH = f"SELECT 1 FROM line_quota WHERE account = $1 AND month = {_MONTH} FOR UPDATE"
_DROP_ABANDONED = f"""
DELETE FROM line_quota_reservations
WHERE month < {_MONTH} OR NOT created_at > now() - {_ABANDONED}
"""
_HOLD = f"""
INSERT INTO line_quota_reservations (id, account, month, messages)
VALUES ($1, $3, {_MONTH}, $2)
ON CONFLICT (id) DO UPDATE SET messages = excluded.messages, created_at = now()
"""
_COUNT_SENT = (
    "UPDATE line_quota SET sent_since_read = sent_since_read + $1"
    f" WHERE account = $2 AND month = {_MONTH}"
)


class MonthlyQuota:
    """The `QuotaLedger` every process of one LINE account shares: the month's row is locked
    while a reservation is weighed against what is left, so concurrent requests, in any
    process, are granted one after another and never together pass the limit."""

    def __init__(self, pool: Pool, account: str = DEFAULT_LINE_ACCOUNT) -> None:
        self._pool = pool
        self.account = account

    async def reserve(
        self, key: UUID, messages: int, fresh_for: float | None
    ) -> QuotaAnswer | None:
        async with self._pool.acquire() as conn, conn.transaction():
            # Lock the month first; the figures are then read by a statement of their own, whose
            # snapshot includes every reservation committed while this one waited.
            await conn.execute(_LOCK_MONTH, self.account)
            row = await conn.fetchrow(_FIGURES, fresh_for, self.account)
            if row is None or not row["fresh"]:
                return None
            figures = _figures(row)
            granted = figures.remaining is None or figures.remaining >= messages
            if granted:
                await conn.execute(_DROP_ABANDONED)
                await conn.execute(_HOLD, key, messages, self.account)
            return QuotaAnswer(granted=granted, figures=figures)

    async def refresh(self, limit: int | None, used: int) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(_REFRESH, limit, used, self.account)

    async def settle(self, key: UUID | None, sent: int) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            if key is not None:
                await conn.execute("DELETE FROM line_quota_reservations WHERE id = $1", key)
            if sent:
                await conn.execute(_COUNT_SENT, sent, self.account)

    async def figures(self, fresh_for: float | None) -> QuotaFigures | None:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(_FIGURES, fresh_for, self.account)
        return _figures(row) if row is not None and row["fresh"] else None


def _figures(row: asyncpg.Record) -> QuotaFigures:
    limit: int | None = row["quota_limit"]
    held = row["line_usage"] + row["sent_since_read"] + row["reserved"]
    return QuotaFigures(
        limited=limit is not None,
        limit=limit,
        used_per_line=row["line_usage"],
        sent_since_read=row["sent_since_read"],
        reserved=row["reserved"],
        remaining=None if limit is None else max(0, limit - held),
        read_at=row["read_at"],
    )
