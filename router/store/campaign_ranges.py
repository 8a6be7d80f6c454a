"""A campaign's member-id ranges: the units several loops and processes fan out at once.

When a campaign's fan-out starts its members are split into ranges of about
`[campaigns] fan_out_range_members` member ids (bounds taken from a block sample of `members`,
so splitting a million members reads a few hundred pages, not the table). Each range is a row
with its own cursor, claimed inside the transaction that makes its next chunk, so a range is
worked on by one transaction at a time and a stopped process's range resumes after its last
committed chunk. The ranges cover every member id between them.
"""

from __future__ import annotations

from uuid import UUID

import msgspec

from router.database import Connection
from router.queue import claims

# A range still to do of a campaign still fanning out; the one advanced longest ago first, so
# campaigns (and ranges) fanning out at once take turns.
TO_DO = claims.Locked(
    table="campaign_ranges",
    columns="campaign_id, range_no, after_member_id, last_member_id, cursor_member_id",
    pending=(
        "NOT done AND EXISTS (SELECT 1 FROM campaigns c"
        " WHERE c.id = campaign_ranges.campaign_id AND c.status = 'fanning_out')"
    ),
    order="updated_at",
)

# Sampled member ids: about this many, whatever the table's size.
SAMPLE_ROWS = 20_000
MAX_RANGES = 1_000


class Range(msgspec.Struct, frozen=True):
    campaign_id: UUID
    range_no: int
    after: str | None  # members after this id (None: from the first)
    last: str | None  # up to and including this id (None: to the last)
    cursor: str | None  # the last member done


async def split(conn: Connection, campaign_id: UUID, members_per_range: int) -> int:
    """Make the campaign's ranges (in the caller's transaction); how many."""
    estimate: float = await conn.fetchval(
        "SELECT reltuples FROM pg_class WHERE oid = 'members'::regclass"
    )
    if estimate < 10 * members_per_range:
        # Never analysed (-1), or analysed while the table was small: statistics that old
        # would make one range of a table that has grown since. Counting a small table is cheap.
        estimate = float(await conn.fetchval("SELECT count(*) FROM members"))
    ranges = min(MAX_RANGES, max(1, -(-int(estimate) // members_per_range)))
    bounds: list[str] = []
    if ranges > 1:
        percent = min(100.0, 100.0 * SAMPLE_ROWS / max(estimate, 1.0))
        found = await conn.fetchval(
            "SELECT percentile_disc($1::float8[]) WITHIN GROUP (ORDER BY member_id)"
            " FROM members TABLESAMPLE SYSTEM ($2::float4)",
            [n / ranges for n in range(1, ranges)],
            percent,
        )
        bounds = sorted({b for b in found or () if b is not None})
    edges: list[str | None] = [None, *bounds, None]
    await conn.execute(
        "INSERT INTO campaign_ranges (campaign_id, range_no, after_member_id, last_member_id)"
        " SELECT $1, n - 1, after_id, last_id"
        " FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS r(after_id, last_id, n)"
        " ON CONFLICT DO NOTHING",
        campaign_id,
        edges[:-1],
        edges[1:],
    )
    return len(edges) - 1


async def claim(conn: Connection) -> Range | None:
    """Lock one range to do that no other transaction holds, until the caller's ends."""
    found = await claims.claim_locked(conn, TO_DO, 1)
    if not found:
        return None
    r = found[0]
    return Range(
        r["campaign_id"],
        r["range_no"],
        r["after_member_id"],
        r["last_member_id"],
        r["cursor_member_id"],
    )


async def advance(conn: Connection, done: Range, cursor: str | None, finished: bool) -> None:
    """Record the range's new cursor, and whether nothing is left in it."""
    await conn.execute(
        "UPDATE campaign_ranges SET cursor_member_id = coalesce($3, cursor_member_id),"
        " done = $4, updated_at = now() WHERE campaign_id = $1 AND range_no = $2",
        done.campaign_id,
        done.range_no,
        cursor,
        finished,
    )


async def any_left(conn: Connection, campaign_id: UUID) -> bool:
    """Whether a range of the campaign is still to do, as committed (plus the caller's own)."""
    left: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM campaign_ranges WHERE campaign_id = $1 AND NOT done)",
        campaign_id,
    )
    return left
