"""Reconciling friend flags with LINE's follower list, for when webhooks were missed.

The list is read a page at a time (LINE's continuation tokens), each page stored with the
token of the next in one short transaction; then the flags are corrected a chunk of LINE user
IDs at a time (keyset: the next chunk after the last ID done), in three passes: the listed
are friends, users not listed are not, members not listed are not (and each member's copy of
the flag follows). No connection is held while LINE is asked, and no snapshot for longer than
a chunk. A webhook event newer than the start of the sync keeps precedence.

A lease (renewed with every step) keeps a second sync out. A sync that stopped (LINE refused,
or the process died and its lease ran out) is resumed by the next one from the last step
recorded; a step is idempotent, so one done just before a crash and done again changes
nothing twice. A stored token LINE no longer knows starts the list again from its first page.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import msgspec

from channels.base import LineAccount, ProviderError
from router.database import Pool
from router.reach import DEFAULT_LINE_ACCOUNT
from router.store import follower_syncs
from router.store import members as member_store
from router.store.follower_syncs import FollowerSyncState

log = logging.getLogger(__name__)

# How long a sync holds the follower list without a sign of life: a page or chunk takes
# far less, so only a sync that stopped for good loses it.
LEASE_SECONDS = 120.0
CORRECTION_CHUNK = 10_000  # LINE user IDs corrected per transaction


class SyncReport(msgspec.Struct):
    followers: int
    members_changed: int


class FollowerSyncBusy(Exception):
    """Another follower sync holds the lease (or took it over from this one)."""


async def sync_followers(
    pool: Pool,
    account: LineAccount,
    progress: Callable[[int], None] | None = None,
    account_name: str = DEFAULT_LINE_ACCOUNT,
) -> SyncReport:
    """Read the follower list of the LINE account `account_name` (whose operations `account`
    are) and correct its friend flags, or finish its sync that stopped. Raises
    FollowerSyncBusy, or ProviderError when LINE refuses (the next sync resumes)."""
    async with pool.acquire() as conn, conn.transaction():
        state = await follower_syncs.take(conn, account_name, LEASE_SECONDS)
    if state is None:
        raise FollowerSyncBusy(f"another follower sync of LINE account {account_name} is running")
    try:
        return await _run(pool, account, state, progress)
    finally:
        async with pool.acquire() as conn:
            await follower_syncs.release(conn, state.holder)


async def _run(
    pool: Pool,
    account: LineAccount,
    state: FollowerSyncState,
    progress: Callable[[int], None] | None,
) -> SyncReport:
    holder, phase, started = state.holder, state.phase, state.started_at
    followers, changed = state.followers, state.members_changed
    token, after = state.next_page, state.after_id
    while phase == "reading":
        try:
            page = await account.follower_page(token)
        except ProviderError as exc:
            if token is None or exc.status != 400:
                raise
            log.warning("LINE no longer knows the follower list's token; reading it again")
            async with pool.acquire() as conn, conn.transaction():
                restarted = await follower_syncs.restart(conn, state)
            _held(restarted is not None)
            assert restarted is not None
            started, token, followers = restarted, None, 0
            continue
        async with pool.acquire() as conn, conn.transaction():
            listed = await follower_syncs.record_page(
                conn, state, page.user_ids, page.next, LEASE_SECONDS
            )
        _held(listed is not None)
        assert listed is not None
        followers = listed
        if progress is not None:
            progress(followers)
        token = page.next
        if token is None:
            phase, after = "followers", None
    while True:
        async with pool.acquire() as conn, conn.transaction():
            last, chunk_changed = await member_store.correct_friend_flags(
                conn, state.account, phase, started, after, CORRECTION_CHUNK
            )
            if phase == "members" and last is None:
                _held(await follower_syncs.finish(conn, state))
                break
            _held(
                await follower_syncs.record_chunk(
                    conn, holder, phase, last, chunk_changed, LEASE_SECONDS
                )
            )
        changed += chunk_changed
        if last is None:
            phase = follower_syncs.NEXT_PHASE[phase]
        after = last
    return SyncReport(followers=followers, members_changed=changed)


def _held(recorded: bool) -> None:
    """Stop (the transaction rolls back) if the lease was lost to another sync."""
    if not recorded:
        raise FollowerSyncBusy("this follower sync's lease ran out and another took over")
