"""Reserved events for journeys that start on something other than a company's event: the
hooks the modules where those things happen call, in their own transactions.

Each writes its events only when an enabled, live journey starts on that trigger, so nothing
is written (and one look at the journeys is all it costs) when none does. Attribute set is
written by a trigger on `members` (migration 0024), since every member write goes there.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from router.database import Connection
from router.queue.wakeups import notify

QUEUE = "journey_events"

_LIVE = """
SELECT 1 FROM journeys j JOIN journey_versions v ON v.journey_id = j.id AND v.version = j.version
WHERE NOT j.paused AND j.deleted_at IS NULL
  AND coalesce((v.definition->>'enabled')::boolean, true)"""

_LINE_FOLLOWED = f"""
INSERT INTO events (id, member_id, name, occurred_at, source)
SELECT gen_random_uuid(), m, 'router:line_follow', $2, 'router' FROM unnest($1::text[]) AS m
WHERE EXISTS ({_LIVE} AND (v.definition->'trigger'->>'line_follow')::boolean)
RETURNING 1"""  # noqa: S608 - built from constants only


async def line_followed(conn: Connection, member_ids: Sequence[str], at: datetime) -> None:
    """`router:line_follow` for members who followed (or unblocked) the LINE account."""
    if not member_ids:
        return
    written = await conn.fetch(_LINE_FOLLOWED, list(member_ids), at)
    if written:
        await notify(conn, QUEUE)
