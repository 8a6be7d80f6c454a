"""Coupon pools and the hand-out of their codes: each code to one holder at most, and one code
per holder, however many routers and retries ask at once.

A holder is whatever must keep its one code (a journey run's use of a pool). The hand-out takes
a free code with one UPDATE whose row is locked with SKIP LOCKED, so concurrent takers never
wait for each other nor get the same code; the unique index on (pool, holder) turns a second
take by the same holder into an error, after which the code it already holds is read.
"""

from __future__ import annotations

import re
from datetime import datetime

import asyncpg
import msgspec

from router.database import Connection

POOL_ID_PATTERN = "^[a-z0-9][a-z0-9_-]{0,63}$"
POOL_ID_RULE = "a pool ID is 1 to 64 of a-z, 0-9, '_' and '-', starting with a letter or a digit"
_POOL_ID = re.compile(POOL_ID_PATTERN)


def is_pool_id(value: str) -> bool:
    return _POOL_ID.fullmatch(value) is not None


class CouponPool(msgspec.Struct, kw_only=True):
    """A pool and its figures: codes in all, held by someone, and left to hand out."""

    id: str
    name: str | None
    codes: int
    held: int
    left: int
    created_at: datetime


async def create(conn: Connection, pool_id: str, name: str | None) -> bool:
    """Create the pool, or rename it when `name` is given; True if it was created."""
    created: bool = await conn.fetchval(
        "INSERT INTO coupon_pools (id, name) VALUES ($1, $2)"
        " ON CONFLICT (id) DO UPDATE SET name = coalesce($2, coupon_pools.name)"
        " RETURNING xmax = 0",
        pool_id,
        name,
    )
    return created


async def hold(conn: Connection, pool_id: str) -> bool:
    """Create the pool if it does not exist, and hold it until the transaction ends (one
    upload at a time per pool); True if it was created."""
    created = await create(conn, pool_id, None)
    await conn.execute("SELECT FROM coupon_pools WHERE id = $1 FOR UPDATE", pool_id)
    return created


async def pool_exists(conn: Connection, pool_id: str) -> bool:
    return bool(await conn.fetchval("SELECT true FROM coupon_pools WHERE id = $1", pool_id))


_FIGURES = (
    "SELECT p.id, p.name, p.created_at, count(c.code) AS codes, count(c.holder) AS held"
    " FROM coupon_pools p LEFT JOIN coupon_codes c ON c.pool_id = p.id"
)


def _pool(row: asyncpg.Record) -> CouponPool:
    return CouponPool(
        id=row["id"],
        name=row["name"],
        codes=row["codes"],
        held=row["held"],
        left=row["codes"] - row["held"],
        created_at=row["created_at"],
    )


async def get(conn: Connection, pool_id: str) -> CouponPool | None:
    row = await conn.fetchrow(_FIGURES + " WHERE p.id = $1 GROUP BY p.id", pool_id)
    return None if row is None else _pool(row)


async def list_all(conn: Connection) -> list[CouponPool]:
    return [_pool(r) for r in await conn.fetch(_FIGURES + " GROUP BY p.id ORDER BY p.id")]


async def _held(conn: Connection, pool_id: str, holder: str) -> str | None:
    code: str | None = await conn.fetchval(
        "SELECT code FROM coupon_codes WHERE pool_id = $1 AND holder = $2", pool_id, holder
    )
    return code


# The holder's code if it has one, else a free code taken for it, in one statement. No free
# code is locked when the holder has one (the NOT EXISTS is evaluated once, first). The free
# code is locked with SKIP LOCKED, so concurrent takers pass over each other's rows.
_HAND_OUT = """
WITH held AS (
    SELECT code FROM coupon_codes WHERE pool_id = $1 AND holder = $2
), free AS (
    SELECT ctid FROM coupon_codes
    WHERE pool_id = $1 AND holder IS NULL AND NOT EXISTS (SELECT 1 FROM held)
    LIMIT 1 FOR UPDATE SKIP LOCKED
), taken AS (
    UPDATE coupon_codes c SET holder = $2, held_at = now()
    FROM free WHERE c.ctid = free.ctid
    RETURNING c.code
)
SELECT code FROM held UNION ALL SELECT code FROM taken
"""


async def hand_out(conn: Connection, pool_id: str, holder: str) -> str | None:
    """The code `holder` holds in the pool, else a free one now held by `holder`; None when
    the pool has no free code or does not exist.

    Best called outside a transaction: then it is one statement, and the code is the
    holder's from then on, so a send that fails after it and is retried gets the same code.
    Inside a transaction it runs in a savepoint (a lost race with the same holder does not
    spoil the caller's transaction), and the code is free again if the caller rolls back."""
    try:
        if not conn.is_in_transaction():
            return await _take(conn, pool_id, holder)
        async with conn.transaction():
            return await _take(conn, pool_id, holder)
    except asyncpg.UniqueViolationError:
        # The same holder took a code meanwhile (another router, a retry) and has committed.
        return await _held(conn, pool_id, holder)


async def _take(conn: Connection, pool_id: str, holder: str) -> str | None:
    code: str | None = await conn.fetchval(_HAND_OUT, pool_id, holder)
    return code
