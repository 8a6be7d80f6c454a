"""Reserved events for journeys that start on something other than a company's event: the
hooks the modules where those things happen call, in their own transactions.

Each writes its events only when an enabled, live journey starts on that trigger, so nothing
is written (and one look at the journeys is all it costs) when none does. Attribute set is
written by a trigger on `members` (migration 0025), since every member write goes there.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from router.database import Connection
from router.queue.wakeups import notify

QUEUE = "journey_events"

_LIVE = """
SELECT 1 FROM journeys j JOIN journey_versions v ON v.journey_id = j.id AND v.version = j.version
WHERE NOT j.paused AND j.deleted_at IS NULL
  AND coalesce((v.definition->>'enabled')::boolean, true)"""

_LINE_FOLLOWED = f"""
INSERT INTO events (id, member_id, name, properties, occurred_at, source)
SELECT gen_random_uuid(), m, 'router:line_follow', jsonb_build_object('line_account', $3::text),
       $2, 'router'
FROM unnest($1::text[]) AS m
WHERE EXISTS ({_LIVE} AND (v.definition->'trigger'->>'line_follow')::boolean)
RETURNING 1"""  # noqa: S608 - built from constants only


async def line_followed(
    conn: Connection, member_ids: Sequence[str], at: datetime, account: str = "default"
) -> None:
    """`router:line_follow` for members who followed (or unblocked) the LINE account
    `account`, which the event's `line_account` property names."""
    if not member_ids:
        return
    written = await conn.fetch(_LINE_FOLLOWED, list(member_ids), at, account)
    if written:
        await notify(conn, QUEUE)


_AUDIENCE_WANTED = f"""
SELECT EXISTS ({_LIVE} AND v.definition->'trigger'->>'audience' = $1)"""


async def audience_wanted(conn: Connection, audience_id: UUID) -> bool:
    """Whether an enabled, live journey starts on members joining this audience."""
    wanted: bool = await conn.fetchval(_AUDIENCE_WANTED, str(audience_id))
    return wanted


def audience_joined_sql(insert_entries: str, members_by_key: str) -> str:
    """`insert_entries` (an INSERT of the audience's new entries, $1 the audience), returning
    how many entries it added, and writing `router:audience_joined` for each member whose key
    is among them (`members_by_key`: joins after `FROM added` to `members m`), in one
    statement."""
    return f"""
WITH added AS ({insert_entries} RETURNING value_sha256),
joined AS (
    INSERT INTO events (id, member_id, name, properties, occurred_at, source)
    SELECT gen_random_uuid(), m.member_id, 'router:audience_joined',
           jsonb_build_object('audience_id', $1::text), now(), 'router'
    FROM added {members_by_key}
    RETURNING 1),
woken AS (
    SELECT pg_notify('router_queues', '{QUEUE}') FROM (SELECT 1 FROM joined LIMIT 1) j)
SELECT (SELECT count(*) FROM added)::int + 0 * (SELECT count(*) FROM woken)"""  # noqa: S608
