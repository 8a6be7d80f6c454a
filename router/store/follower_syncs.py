"""The only writer of `line_follower_syncs` and `line_follower_sync_ids`: how far each LINE
account's follower sync got, and the follower list it has read so far (one row, and one list,
per account).

Each function is one short step of a sync and runs in the caller's transaction; the steps
that record progress check the lease first, so a sync that lost it (it stopped for longer
than the lease, and another took over) changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Literal

import msgspec

from router.database import Connection

Phase = Literal["reading", "followers", "line_users", "members"]
NEXT_PHASE: dict[str, Phase] = {
    "followers": "line_users",
    "line_users": "members",
}


class FollowerSyncState(msgspec.Struct, frozen=True):
    """Where the sync stands: what a resumed sync goes on from."""

    holder: uuid.UUID
    account: str
    started_at: datetime
    phase: Phase
    next_page: str | None
    after_id: str | None
    followers: int
    members_changed: int


async def take(conn: Connection, account: str, lease_seconds: float) -> FollowerSyncState | None:
    """Start `account`'s sync, or take over the one that stopped; None while another holds
    its lease. A sync starting from the first page starts from an empty list."""
    holder = uuid.uuid4()
    row = await conn.fetchrow(
        "INSERT INTO line_follower_syncs AS s (account, started_at, phase, holder, lease_until)"
        " VALUES ($3, now(), 'reading', $1, now() + make_interval(secs => $2))"
        " ON CONFLICT (account) DO UPDATE SET holder = $1,"
        "   lease_until = now() + make_interval(secs => $2)"
        " WHERE s.lease_until IS NULL OR s.lease_until < now()"
        " RETURNING started_at, phase, next_page, after_id, followers, members_changed",
        holder,
        lease_seconds,
        account,
    )
    if row is None:
        return None
    if row["phase"] == "reading" and row["next_page"] is None:
        await _forget_list(conn, account)
    return FollowerSyncState(holder=holder, account=account, **dict(row))


async def _forget_list(conn: Connection, account: str) -> None:
    await conn.execute("DELETE FROM line_follower_sync_ids WHERE account = $1", account)


async def restart(conn: Connection, state: FollowerSyncState) -> datetime | None:
    """Read the list again from its first page (LINE no longer knows the stored token); the
    sync's new start, or None if the lease was lost."""
    started: datetime | None = await conn.fetchval(
        "UPDATE line_follower_syncs SET started_at = now(), phase = 'reading',"
        " next_page = NULL, after_id = NULL, followers = 0, members_changed = 0"
        " WHERE holder = $1 RETURNING started_at",
        state.holder,
    )
    if started is not None:
        await _forget_list(conn, state.account)
    return started


async def record_page(
    conn: Connection,
    state: FollowerSyncState,
    user_ids: Sequence[str],
    next_page: str | None,
    lease_seconds: float,
) -> int | None:
    """Add a page LINE answered, and the token of the next (None: the list is read, the
    corrections come next); the followers listed so far, or None if the lease was lost."""
    holder = state.holder
    status = await conn.execute(
        "INSERT INTO line_follower_sync_ids (account, line_user_id)"
        " SELECT $2, unnest($1::text[]) ON CONFLICT DO NOTHING",
        list(user_ids),
        state.account,
    )
    added = int(status.rsplit(" ", 1)[1])
    followers: int | None = await conn.fetchval(
        "UPDATE line_follower_syncs SET next_page = $2, followers = followers + $3,"
        " phase = CASE WHEN $2::text IS NULL THEN 'followers' ELSE 'reading' END,"
        " lease_until = now() + make_interval(secs => $4)"
        " WHERE holder = $1 RETURNING followers",
        holder,
        next_page,
        added,
        lease_seconds,
    )
    return followers


async def record_chunk(
    conn: Connection,
    holder: uuid.UUID,
    phase: Phase,
    after_id: str | None,
    changed: int,
    lease_seconds: float,
) -> bool:
    """A chunk of corrections is done: the phase and last ID to go on from (`after_id` None:
    the phase is done, the next starts). False if the lease was lost."""
    if after_id is None and phase in NEXT_PHASE:
        phase = NEXT_PHASE[phase]
    status = await conn.execute(
        "UPDATE line_follower_syncs SET phase = $2, after_id = $3,"
        " members_changed = members_changed + $4,"
        " lease_until = now() + make_interval(secs => $5) WHERE holder = $1",
        holder,
        phase,
        after_id,
        changed,
        lease_seconds,
    )
    return status.endswith(" 1")


async def finish(conn: Connection, state: FollowerSyncState) -> bool:
    """The sync is done: its state and its copy of the list go."""
    status = await conn.execute("DELETE FROM line_follower_syncs WHERE holder = $1", state.holder)
    if not status.endswith(" 1"):
        return False
    await _forget_list(conn, state.account)
    return True


async def release(conn: Connection, holder: uuid.UUID) -> None:
    """Let go, keeping where the sync stopped for the next one to resume."""
    await conn.execute(
        "UPDATE line_follower_syncs SET holder = NULL, lease_until = NULL WHERE holder = $1",
        holder,
    )
