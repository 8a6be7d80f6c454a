"""A campaign's deliveries counted by channel and status, read from counters, not rows.

`campaign_counts` is kept by triggers on `deliveries` (migration: campaign_counts) in the
transactions that change deliveries, sharded by backend; this module only reads it. A read
touches a few rows per send group, whatever the campaign's size.
"""

from __future__ import annotations

from uuid import UUID

import msgspec

from router.database import Connection
from router.store import group_state


class Counted(msgspec.Struct, frozen=True):
    channel: str
    status: str
    deliveries: int
    send_groups: int  # distinct send groups among these deliveries (0: each sent alone)


# Grouped deliveries are counted under 'grouped' and read as their group's status (one
# primary-key probe of send_groups per group with grouped deliveries left).
_READ = f"""
SELECT channel, status, sum(n)::bigint AS deliveries,
       count(*) FILTER (WHERE send_group_id <> '00000000-0000-0000-0000-000000000000')
           AS send_groups
FROM (SELECT c.channel, {group_state.status("c", "s")} AS status, c.send_group_id,
             sum(c.n) AS n
      FROM (SELECT channel, status, send_group_id, sum(deliveries) AS n
            FROM campaign_counts WHERE campaign_id = $1
            GROUP BY channel, status, send_group_id HAVING sum(deliveries) <> 0) AS c
      LEFT JOIN send_groups s ON c.status = '{group_state.GROUPED}' AND s.id = c.send_group_id
      GROUP BY 1, 2, 3) AS per_group
GROUP BY channel, status ORDER BY channel, status
"""  # noqa: S608 - built from constant fragments only


async def read(conn: Connection, campaign_id: UUID) -> list[Counted]:
    return [
        Counted(r["channel"], r["status"], r["deliveries"], r["send_groups"])
        for r in await conn.fetch(_READ, campaign_id)
    ]
