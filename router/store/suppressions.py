"""Suppressed email addresses: written by bounces, complaints, unsubscribes and operators;
read by intake and at each send (router.deliverability.rules)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal
from uuid import UUID

import msgspec
from asyncpg import Record

from router.database import Connection

Reason = Literal["bounce", "invalid", "unsubscribe", "spamreport", "manual"]


class Suppression(msgspec.Struct, frozen=True, kw_only=True):
    """One address email is not sent to. `address` is normalised as members' emails are."""

    address: str
    reason: Reason
    detail: str | None = None
    delivery_id: UUID | None = None
    created_at: datetime | None = None


async def add(conn: Connection, entries: Sequence[Suppression]) -> int:
    """Suppress addresses; one already suppressed keeps its first reason and time. Returns
    how many were new."""
    if not entries:
        return 0
    added: int = await conn.fetchval(
        "WITH new AS ("
        " INSERT INTO email_suppressions (address, reason, detail, delivery_id)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::uuid[])"
        " ON CONFLICT (address) DO NOTHING RETURNING 1)"
        " SELECT count(*) FROM new",
        [e.address for e in entries],
        [e.reason for e in entries],
        [e.detail for e in entries],
        [e.delivery_id for e in entries],
    )
    return added


async def add_for_deliveries(
    conn: Connection, delivery_ids: Sequence[UUID], reasons: Sequence[str], details: Sequence[str]
) -> int:
    """Suppress the addresses these deliveries were sent to (a hard bounce at send time);
    each suppression names its delivery. Returns how many were new."""
    if not delivery_ids:
        return 0
    added: int = await conn.fetchval(
        "WITH new AS ("
        " INSERT INTO email_suppressions (address, reason, detail, delivery_id)"
        " SELECT d.address, b.reason, b.detail, d.id"
        " FROM unnest($1::uuid[], $2::text[], $3::text[]) AS b(id, reason, detail)"
        " JOIN deliveries d ON d.id = b.id"
        " ON CONFLICT (address) DO NOTHING RETURNING 1)"
        " SELECT count(*) FROM new",
        delivery_ids,
        reasons,
        details,
    )
    return added


_COLUMNS = "address, reason, detail, delivery_id, created_at"


def _of(row: Record) -> Suppression:
    return Suppression(
        address=row["address"],
        reason=row["reason"],
        detail=row["detail"],
        delivery_id=row["delivery_id"],
        created_at=row["created_at"],
    )


async def get(conn: Connection, address: str) -> Suppression | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM email_suppressions WHERE address = $1",  # noqa: S608
        address,
    )
    return None if row is None else _of(row)


async def page(
    conn: Connection,
    *,
    reasons: Sequence[str] | None,
    limit: int,
    offset: int = 0,
    start: datetime | None = None,
    end: datetime | None = None,
) -> list[Suppression]:
    """Suppressions newest first (ties by address), of `reasons` (None: all), created in
    [start, end] when given."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM email_suppressions"  # noqa: S608
        " WHERE ($1::text[] IS NULL OR reason = ANY($1))"
        " AND ($2::timestamptz IS NULL OR created_at >= $2)"
        " AND ($3::timestamptz IS NULL OR created_at <= $3)"
        " ORDER BY created_at DESC, address LIMIT $4 OFFSET $5",
        None if reasons is None else list(reasons),
        start,
        end,
        limit,
        offset,
    )
    return [_of(r) for r in rows]


async def remove(
    conn: Connection, addresses: Sequence[str], reasons: Sequence[str] | None = None
) -> list[str]:
    """Lift suppressions (of `reasons`, None: any); the addresses that were suppressed."""
    rows = await conn.fetch(
        "DELETE FROM email_suppressions WHERE address = ANY($1::text[])"
        " AND ($2::text[] IS NULL OR reason = ANY($2)) RETURNING address",
        list(addresses),
        None if reasons is None else list(reasons),
    )
    return [r["address"] for r in rows]


async def remove_all(conn: Connection, reasons: Sequence[str]) -> int:
    """Lift every suppression of these reasons; how many."""
    removed: int = await conn.fetchval(
        "WITH gone AS (DELETE FROM email_suppressions WHERE reason = ANY($1::text[])"
        " RETURNING 1) SELECT count(*) FROM gone",
        list(reasons),
    )
    return removed


async def of(conn: Connection, addresses: Sequence[str]) -> list[Suppression]:
    """The suppressions of these addresses (those that have one), in no particular order."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM email_suppressions WHERE address = ANY($1::text[])",  # noqa: S608
        list(addresses),
    )
    return [_of(r) for r in rows]


async def reasons(conn: Connection, addresses: Sequence[str]) -> dict[str, str]:
    """Why each of these addresses is suppressed ("bounce (550 5.1.1 ...)"), for those that
    are: what `Reach.email_suppressed` says of a recipient with no member record."""
    if not addresses:
        return {}
    rows = await conn.fetch(
        "SELECT address, reason || coalesce(' (' || detail || ')', '') AS why"
        " FROM email_suppressions WHERE address = ANY($1::text[])",
        list(set(addresses)),
    )
    return {r["address"]: r["why"] for r in rows}
