"""A campaign's deliveries counted by channel and status, read from counters, not rows.

`campaign_counts` is kept by triggers on `deliveries` (migration: campaign_counts) in the
transactions that change deliveries, sharded by backend; this module only reads it. A read
touches a few rows per send group, whatever the campaign's size.
"""

from __future__ import annotations

from uuid import UUID

import msgspec

from router.database import Connection


class Counted(msgspec.Struct, frozen=True):
    channel: str
    status: str
    deliveries: int
    send_groups: int  # distinct send groups among these deliveries (0: each sent alone)


_READ = """
SELECT channel, status, sum(n)::bigint AS deliveries,
       count(*) FILTER (WHERE send_group_id <> '00000000-0000-0000-0000-000000000000')
           AS send_groups
FROM (SELECT channel, status, send_group_id, sum(deliveries) AS n
      FROM campaign_counts WHERE campaign_id = $1
      GROUP BY channel, status, send_group_id HAVING sum(deliveries) <> 0) AS per_group
GROUP BY channel, status ORDER BY channel, status
"""


async def read(conn: Connection, campaign_id: UUID) -> list[Counted]:
    return [
        Counted(r["channel"], r["status"], r["deliveries"], r["send_groups"])
        for r in await conn.fetch(_READ, campaign_id)
    ]
