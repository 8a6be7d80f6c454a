"""The follower sync page by page: real PostgreSQL, the real line-bot-sdk against the simulator.

A crash is an exception at a chosen step with nothing let go afterwards (a dead process
releases nothing); its lease, shortened here, then runs out and the next sync resumes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest

from linesim import LineSimulator
from router.database import create_pool
from router.line import follower_sync
from router.store import follower_syncs
from router.store import members as member_store
from tests.harness import RouterUnderTest

LISTED = [f"U{i:032x}" for i in range(3_000)]
NEWLY_FRIEND, GONE = "U" + "c3" * 16, "U" + "d4" * 16
FOLLOWERS_PATH = "/v2/bot/followers/ids"


class Crash(Exception):
    """The process dies here."""


async def seed(dsn: str, line_sim: LineSimulator) -> None:
    """3,001 followers; members: 1,500 of them and one more recorded as not friends, and one
    recorded as a friend who is not in the list."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO members (member_id) SELECT 'm-' || i FROM generate_series(0, 1499) i"
            " UNION ALL VALUES ('f'), ('g')"
        )
        await conn.execute(
            "INSERT INTO member_line_accounts (member_id, account, user_id, friend)"
            " SELECT 'm-' || i, 'default', 'U' || lpad(to_hex(i), 32, '0'), false"
            " FROM generate_series(0, 1499) i"
        )
        await conn.execute(
            "INSERT INTO member_line_accounts (member_id, account, user_id, friend)"
            " VALUES ('f', 'default', $1, false), ('g', 'default', $2, true)",
            NEWLY_FRIEND,
            GONE,
        )
    finally:
        await conn.close()
    line_sim.set_followers([*LISTED, NEWLY_FRIEND])


async def check_flags(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        flags = dict(await conn.fetch("SELECT member_id, friend FROM member_line_accounts"))
        assert flags.pop("g") is False
        assert all(flags.values()) and len(flags) == 1_501
        friends = await conn.fetchval("SELECT count(*) FROM line_users WHERE friend")
        assert friends == 3_001
        left = await conn.fetchval(
            "SELECT (SELECT count(*) FROM line_follower_syncs)"
            " + (SELECT count(*) FROM line_follower_sync_ids)"
        )
        assert left == 0  # a finished sync leaves nothing behind
    finally:
        await conn.close()


def follower_requests(line_sim: LineSimulator) -> int:
    return sum(1 for r in line_sim.received if r.path == FOLLOWERS_PATH)


@pytest.mark.parametrize(
    "crash", ["page-unrecorded", "page-recorded", "chunk-unrecorded", "chunk-recorded"]
)
async def test_a_sync_that_died_is_resumed_from_its_last_step_and_counts_exactly(
    router: RouterUnderTest,
    line_sim: LineSimulator,
    monkeypatch: pytest.MonkeyPatch,
    crash: str,
) -> None:
    dsn = router.runtime.target.dsn
    account = router.runtime.line_account
    assert account is not None
    await seed(dsn, line_sim)
    monkeypatch.setattr(follower_sync, "LEASE_SECONDS", 1.0)
    monkeypatch.setattr(follower_sync, "CORRECTION_CHUNK", 1_000)
    record_page, record_chunk = follower_syncs.record_page, follower_syncs.record_chunk
    correct = member_store.correct_friend_flags
    pages = 0

    async def page_unrecorded(*args: Any) -> int | None:
        nonlocal pages
        pages += 1
        if pages == 2:
            raise Crash  # LINE answered page 2; the process dies before it is stored
        return await record_page(*args)

    async def chunk_unrecorded(conn: Any, holder: Any, phase: str, *rest: Any) -> bool:
        if phase == "members":
            raise Crash  # the chunk's corrections roll back with it
        return await record_chunk(conn, holder, phase, *rest)

    async def chunk_recorded(
        conn: Any, account: str, phase: str, started: Any, after: Any, n: int
    ) -> Any:
        if phase == "members" and after is not None:
            raise Crash  # the first members chunk is committed
        return await correct(conn, account, phase, started, after, n)

    def dies_after_page_two(listed: int) -> None:
        if listed == 2_000:
            raise Crash  # page 2 is committed

    async def dead(*args: Any) -> None:
        """A dead process lets go of nothing."""

    progress: Callable[[int], None] | None = None
    if crash == "page-unrecorded":
        monkeypatch.setattr(follower_syncs, "record_page", page_unrecorded)
    elif crash == "page-recorded":
        progress = dies_after_page_two
    elif crash == "chunk-unrecorded":
        monkeypatch.setattr(follower_syncs, "record_chunk", chunk_unrecorded)
    else:
        monkeypatch.setattr(member_store, "correct_friend_flags", chunk_recorded)
    monkeypatch.setattr(follower_syncs, "release", dead)
    pool = await create_pool(dsn, 1)
    try:
        with pytest.raises(Crash):
            await follower_sync.sync_followers(pool, account, progress)
        monkeypatch.undo()
        monkeypatch.setattr(follower_sync, "CORRECTION_CHUNK", 1_000)
        with pytest.raises(follower_sync.FollowerSyncBusy):
            await follower_sync.sync_followers(pool, account)  # the dead one's lease holds
        await asyncio.sleep(1.2)  # the default lease again from here: 120 s

        report = await follower_sync.sync_followers(pool, account)
    finally:
        await pool.close()

    assert (report.followers, report.members_changed) == (3_001, 1_502)
    # Four pages: page 2 is asked again only if it was not stored.
    assert follower_requests(line_sim) == (5 if crash == "page-unrecorded" else 4)
    await check_flags(dsn)


async def test_no_connection_is_held_between_pages_and_changes_meanwhile_count(
    router: RouterUnderTest, line_sim: LineSimulator
) -> None:
    """A pool of one connection is enough, and between pages that connection is idle: no
    transaction, no snapshot. A member linked while the list is read is corrected too."""
    dsn = router.runtime.target.dsn
    account = router.runtime.line_account
    assert account is not None
    await seed(dsn, line_sim)
    states: list[tuple[str, bool]] = []

    async def between_pages(pid: int) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            row = await conn.fetchrow(
                "SELECT state, xact_start IS NOT NULL AS in_transaction"
                " FROM pg_stat_activity WHERE pid = $1",
                pid,
            )
            states.append((row["state"], row["in_transaction"]))
            if len(states) == 1:
                await conn.execute("INSERT INTO members (member_id) VALUES ('late')")
                await conn.execute(
                    "INSERT INTO member_line_accounts (member_id, account, user_id, friend)"
                    " VALUES ('late', 'default', $1, false)",
                    LISTED[-1],
                )
        finally:
            await conn.close()

    pool = await create_pool(dsn, 1)
    try:
        async with pool.acquire() as conn:
            pid = conn.get_server_pid()

        def progress(listed: int) -> None:
            # The sync goes on only once this returns: the check and the change happen
            # between two of its pages, on a connection of their own.
            checker = threading.Thread(target=asyncio.run, args=(between_pages(pid),))
            checker.start()
            checker.join()

        report = await asyncio.wait_for(
            follower_sync.sync_followers(pool, account, progress), timeout=60
        )
    finally:
        await pool.close()
    assert states == [("idle", False)] * 4
    assert (report.followers, report.members_changed) == (3_001, 1_503)
    conn = await asyncpg.connect(dsn)
    try:
        late = await conn.fetchval(
            "SELECT friend FROM member_line_accounts WHERE member_id = 'late'"
        )
    finally:
        await conn.close()
    assert late is True
