"""The lease-queue core on real PostgreSQL, through a queue of its own (a table made for the
test, as any new queue would be): wake-ups reach one loop, not all; rows due later are found
by the queue's timer without polling; expired leases are swept; leases in hand are renewed
and claims cut off by the database are given back or recorded at once; an ordered queue keeps
one transaction per key; the retry delay stays in its bounds."""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from router.database import Connection, Pool, create_pool
from router.queue import claims
from router.queue.backoff import retry_delay
from router.queue.loops import LeasedWorker, LeaseHeartbeat, QueueWorker, Workers
from router.queue.wakeups import CHANNEL, Notices, notify

JOBS = claims.Leased(
    table="queue_test_jobs",
    alias="j",
    lane="lane",
    returning=lambda lane: "j.id, j.attempts",
    requeued_error="its worker stopped",
    in_doubt=claims.InDoubt("sending", "uncertain", "stopped while sending"),
)
POSTS = claims.Ordered(
    table="queue_test_posts",
    alias="p",
    key="key",
    unfinished="p.finished_at IS NULL",
    columns="p.id",
)
TASKS = claims.Locked(
    table="queue_test_posts", columns="id", pending="finished_at IS NULL", order="id"
)

_TABLES = """
DROP TABLE IF EXISTS queue_test_jobs, queue_test_posts;
CREATE TABLE queue_test_jobs (
    id bigserial PRIMARY KEY,
    lane text NOT NULL,
    status text NOT NULL DEFAULT 'pending',
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    claim_token uuid,
    lease_expires_at timestamptz,
    first_attempt_at timestamptz,
    last_error text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE queue_test_posts (
    id bigserial PRIMARY KEY,
    key text NOT NULL,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
"""


@pytest.fixture
async def pool(migrated: str) -> AsyncIterator[Pool]:
    conn = await asyncpg.connect(migrated)
    await conn.execute(_TABLES)
    pool = await create_pool(migrated, 6)
    try:
        yield pool
    finally:
        await pool.close()
        await conn.execute("DROP TABLE queue_test_jobs, queue_test_posts")
        await conn.close()


class Jobs(QueueWorker):
    """Lane 'a' of the test table; counts every query it makes, and how many of its loops
    were claiming at once."""

    def __init__(self, pool: Pool, loops: int, full: int = 10, work_seconds: float = 0.0):
        super().__init__(JOBS.queue_name("a"), concurrency=loops, full=full, recheck_seconds=3600)
        self.pool = pool
        self.work_seconds = work_seconds
        self.claims = 0
        self.due_asked = 0
        self.busy = 0
        self.most_busy = 0

    async def step(self) -> int:
        self.claims += 1
        self.busy += 1
        self.most_busy = max(self.most_busy, self.busy)
        try:
            async with self.pool.acquire() as conn:
                rows = await claims.claim(conn, JOBS, "a", self.full, uuid.uuid4(), 60)
                await asyncio.sleep(self.work_seconds)
                await conn.execute(
                    "UPDATE queue_test_jobs SET status = 'done' WHERE id = ANY($1::bigint[])",
                    [r["id"] for r in rows],
                )
            return len(rows)
        finally:
            self.busy -= 1

    async def next_due(self) -> float | None:
        self.due_asked += 1
        async with self.pool.acquire() as conn:
            return await claims.next_due(conn, JOBS, "a")


async def until(check: Callable[[], bool | Awaitable[bool]], seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, "the queue never got there"
        await asyncio.sleep(0.01)


async def add_job(pool: Pool, due: datetime | None = None, *, wake: bool = True) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO queue_test_jobs (lane, next_attempt_at) VALUES ('a', coalesce($1, now()))",
            due,
        )
        if wake:
            await notify(conn, JOBS.queue_name("a"), due)


async def done(pool: Pool) -> int:
    async with pool.acquire() as conn:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM queue_test_jobs WHERE status = 'done'"
        )
        return count


def done_is(pool: Pool, n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await done(pool) == n

    return check


async def test_each_notification_wakes_one_loop_and_no_loop_asks_when_next(
    pool: Pool, migrated: str
) -> None:
    jobs = Jobs(pool, loops=4)
    workers = Workers(migrated, [jobs])
    workers.start()
    try:
        # Once listening, the queue looks once and asks once when its next row is due.
        await until(lambda: jobs.claims == 1 and jobs.due_asked == 1)
        for n in range(1, 11):
            await add_job(pool)
            await until(done_is(pool, n))
        await asyncio.sleep(0.3)  # room for any stray wake-up to show in the counts
        # Ten notifications with four idle loops: ten claims, not forty, and no loop asked
        # for the next due time after its claim.
        assert (jobs.claims, jobs.due_asked) == (11, 1)
    finally:
        await workers.stop()


async def test_a_full_claim_wakes_a_sibling_until_everything_due_is_taken(
    pool: Pool, migrated: str
) -> None:
    jobs = Jobs(pool, loops=3, full=2, work_seconds=0.05)
    workers = Workers(migrated, [jobs])
    workers.start()
    try:
        await until(lambda: jobs.claims == 1)
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO queue_test_jobs (lane) SELECT 'a' FROM generate_series(1, 9)"
            )
            await notify(conn, JOBS.queue_name("a"))
        await until(done_is(pool, 9))
        assert jobs.most_busy >= 2  # the one notification's loop brought in help
        # Four full claims and one of a single row. Each wake-up (the notification's, and
        # one per full claim) ends in one short claim, so at most five short ones.
        assert 1 + 5 <= jobs.claims <= 1 + 4 + 5
    finally:
        await workers.stop()


async def test_a_row_due_later_is_claimed_by_the_timer_without_polling(
    pool: Pool, migrated: str
) -> None:
    # Stored before the process starts, with no notification: the start-up look finds it
    # not yet due and asks when it will be; the timer then wakes one loop for it.
    await add_job(pool, datetime.now(UTC) + timedelta(seconds=2), wake=False)
    jobs = Jobs(pool, loops=4)
    workers = Workers(migrated, [jobs])
    workers.start()
    try:
        await until(done_is(pool, 1))
        await until(lambda: jobs.due_asked == 2)
        assert jobs.claims == 2  # the start-up look, and the one the timer woke
        # A notification for a row due later sets the timer instead of waking a loop.
        await add_job(pool, datetime.now(UTC) + timedelta(seconds=1))
        await asyncio.sleep(0.3)
        assert jobs.claims == 2
        await until(done_is(pool, 2))
        assert jobs.claims == 3
    finally:
        await workers.stop()


async def test_an_expired_lease_is_swept_back_to_pending_and_its_lane_woken(
    pool: Pool, migrated: str
) -> None:
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO queue_test_jobs (lane) VALUES ('a'), ('a'), ('b'), ('c')")
        dead = uuid.uuid4()
        [a1, a2] = await claims.claim(conn, JOBS, "a", 5, dead, lease_seconds=0.01)
        [b1] = await claims.claim(conn, JOBS, "b", 5, dead, lease_seconds=0.01)
        # The worker holding this one had begun what must not be repeated.
        await conn.execute("UPDATE queue_test_jobs SET status = 'sending' WHERE id = $1", b1["id"])
        [c1] = await claims.claim(conn, JOBS, "c", 5, uuid.uuid4(), lease_seconds=60)
    await asyncio.sleep(0.05)

    heard: list[str] = []
    listener = await asyncpg.connect(migrated)
    await listener.add_listener(CHANNEL, lambda *args: heard.append(args[3]))
    try:
        async with pool.acquire() as conn, conn.transaction():
            swept = await claims.sweep(conn, JOBS)
        assert swept.lanes == {"a"} and sorted(swept.ids) == sorted([a1["id"], a2["id"]])
        async with pool.acquire() as conn:
            rows = {
                r["id"]: tuple(r)[1:]
                for r in await conn.fetch(
                    "SELECT id, status, claim_token, attempts, last_error FROM queue_test_jobs"
                )
            }
        assert rows[a1["id"]] == ("pending", None, 1, "its worker stopped")
        assert rows[b1["id"]][0::3] == ("uncertain", "stopped while sending")
        assert rows[c1["id"]][0] == "claimed"  # its lease has not run out
        await until(lambda: heard == [JOBS.queue_name("a")])
        # Claimed again, it counts a second attempt.
        async with pool.acquire() as conn:
            again = await claims.claim(conn, JOBS, "a", 5, uuid.uuid4(), lease_seconds=60)
        assert sorted(r["attempts"] for r in again) == [2, 2]
    finally:
        await listener.close()


async def statuses(pool: Pool) -> dict[int, tuple[str, uuid.UUID | None]]:
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT id, status, claim_token FROM queue_test_jobs")
    return {r["id"]: (r["status"], r["claim_token"]) for r in rows}


async def test_a_renewed_lease_outlives_its_first_expiry_and_runs_out_once_renewals_stop(
    pool: Pool,
) -> None:
    token = uuid.uuid4()
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO queue_test_jobs (lane) VALUES ('a'), ('a'), ('a')")
        [kept, done, doubted] = await claims.claim(conn, JOBS, "a", 5, token, lease_seconds=0.2)
        await conn.execute(
            "UPDATE queue_test_jobs SET status = 'sending' WHERE id = $1", doubted["id"]
        )
        assert await claims.extend(conn, JOBS, [token], 0.6) == 3
        await asyncio.sleep(0.3)  # past the first lease, within the renewed one
        assert (await claims.sweep(conn, JOBS)).ids == []
        # One is recorded (its token cleared), one put in doubt by a sweep that got there
        # first; renewing the claim brings neither back.
        await conn.execute(
            "UPDATE queue_test_jobs SET status = 'done', claim_token = NULL WHERE id = $1",
            done["id"],
        )
        await conn.execute(
            "UPDATE queue_test_jobs SET status = 'uncertain' WHERE id = $1", doubted["id"]
        )
        assert await claims.extend(conn, JOBS, [token], 0.2) == 1
        await asyncio.sleep(0.3)  # no more renewals: the holder died
        swept = await claims.sweep(conn, JOBS)
    assert swept.ids == [kept["id"]]
    assert await statuses(pool) == {
        kept["id"]: ("pending", None),
        done["id"]: ("done", None),
        doubted["id"]: ("uncertain", token),
    }


async def test_renewing_leases_skips_rows_a_recorder_holds_instead_of_waiting_for_it(
    pool: Pool,
) -> None:
    # A recorder writing its outcome locks its rows; the heartbeat must neither wait for it
    # (locking in another order than the recorder deadlocks) nor lose the other leases.
    token = uuid.uuid4()
    async with pool.acquire() as conn, pool.acquire() as recorder:
        await conn.execute("INSERT INTO queue_test_jobs (lane) VALUES ('a'), ('a')")
        [busy, idle] = await claims.claim(conn, JOBS, "a", 5, token, lease_seconds=0.2)
        async with recorder.transaction():
            await recorder.execute(
                "UPDATE queue_test_jobs SET attempts = attempts WHERE id = $1", busy["id"]
            )
            renewed = await asyncio.wait_for(claims.extend(conn, JOBS, [token], 60), 5)
            assert renewed == 1
        await asyncio.sleep(0.3)  # past the first lease: only the renewed one still holds
        swept = await claims.sweep(conn, JOBS)
    assert swept.ids == [busy["id"]]
    assert (await statuses(pool))[idle["id"]] == ("claimed", token)


async def test_release_gives_a_claim_back_at_once_and_the_sweep_spares_the_claims_in_hand(
    pool: Pool, migrated: str
) -> None:
    mine, theirs = uuid.uuid4(), uuid.uuid4()
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO queue_test_jobs (lane) VALUES ('a'), ('a'), ('b')")
        [a1, a2] = await claims.claim(conn, JOBS, "a", 5, mine, lease_seconds=0.01)
        [b1] = await claims.claim(conn, JOBS, "b", 5, theirs, lease_seconds=0.01)
        await conn.execute("UPDATE queue_test_jobs SET status = 'sending' WHERE id = $1", a2["id"])
        await asyncio.sleep(0.05)
        # Within the grace after the server's start nothing is swept, whatever the leases say.
        assert (await claims.sweep(conn, JOBS, grace_seconds=10_000_000)).ids == []
        # The sweeping process's own claims are not taken from it.
        swept = await claims.sweep(conn, JOBS, spare=[mine])
        assert swept.ids == [b1["id"]]
        heard: list[str] = []
        listener = await asyncpg.connect(migrated)
        await listener.add_listener(CHANNEL, lambda *args: heard.append(args[3]))
        try:
            async with conn.transaction():
                released = await claims.release(conn, JOBS, mine)
            await until(lambda: heard == [JOBS.queue_name("a")])
        finally:
            await listener.close()
        rows = {
            r["id"]: (r["status"], r["last_error"])
            for r in await conn.fetch("SELECT id, status, last_error FROM queue_test_jobs")
        }
    assert released.ids == [a1["id"]]
    assert rows[a1["id"]] == ("pending", claims.RELEASED_ERROR)
    assert rows[a2["id"]] == ("uncertain", "stopped while sending")


class LeasedJobs(LeasedWorker[list[int]]):
    """Lane 'a' of the test table on the leased-worker frame. `hold_work` / `hold_record`:
    the first claim's work, or its first recording, waits on a database connection the test
    may cut (its backend's pid is put in `cut_me`)."""

    def __init__(
        self,
        pool: Pool,
        holdings: claims.Holdings,
        lease_seconds: float,
        *,
        work_seconds: float = 0.0,
        hold_work: bool = False,
        hold_record: bool = False,
    ) -> None:
        super().__init__(JOBS, "a", pool, holdings, full=10)
        self.lease_seconds = lease_seconds
        self.work_seconds = work_seconds
        self.hold_work = hold_work
        self.hold_record = hold_record
        self.cut_me: asyncio.Queue[int] = asyncio.Queue()
        self.records = 0

    async def claim(self, token: uuid.UUID) -> list[asyncpg.Record]:
        async with self.pool.acquire() as conn:
            return await claims.claim(conn, JOBS, "a", self.full, token, self.lease_seconds)

    async def work(self, rows: list[asyncpg.Record], token: uuid.UUID) -> list[int]:
        if self.hold_work:
            self.hold_work = False
            await self._held(self.pool)
        await asyncio.sleep(self.work_seconds)
        return [r["id"] for r in rows]

    async def record(self, conn: Connection, token: uuid.UUID, outcome: list[int]) -> None:
        self.records += 1
        if self.hold_record:
            self.hold_record = False
            await self._wait_on(conn)
        await conn.execute(
            "UPDATE queue_test_jobs SET status = 'done', claim_token = NULL"
            " WHERE id = ANY($1::bigint[]) AND claim_token = $2",
            outcome,
            token,
        )

    async def _held(self, pool: Pool) -> None:
        async with pool.acquire() as conn:
            await self._wait_on(conn)

    async def _wait_on(self, conn: Connection) -> None:
        self.cut_me.put_nowait(conn.get_server_pid())
        await conn.execute("SELECT pg_sleep(30)")


async def cut(pool: Pool, jobs: LeasedJobs) -> None:
    """Terminate the database session the worker is waiting on, as a restart would."""
    pid = await asyncio.wait_for(jobs.cut_me.get(), 15)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)


async def test_renewed_leases_keep_a_slow_claim_from_another_process_sweep(
    pool: Pool, migrated: str
) -> None:
    holdings = claims.Holdings()
    jobs = LeasedJobs(pool, holdings, lease_seconds=0.3, work_seconds=1.2)
    workers = Workers(migrated, [jobs, LeaseHeartbeat(pool, holdings, 0.3)])
    workers.start()
    swept: list[object] = []
    try:
        await add_job(pool)
        while await done(pool) < 1:  # another process sweeps all the while
            async with pool.acquire() as conn:
                swept += (await claims.sweep(conn, JOBS)).ids
            await asyncio.sleep(0.05)
    finally:
        await workers.stop()
    assert swept == []
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT attempts FROM queue_test_jobs") == 1
    assert holdings.tokens(JOBS) == []


async def test_a_claim_cut_off_by_the_database_before_its_outcome_is_given_back_at_once(
    pool: Pool, migrated: str
) -> None:
    holdings = claims.Holdings()
    jobs = LeasedJobs(pool, holdings, lease_seconds=3600, hold_work=True)
    workers = Workers(migrated, [jobs, LeaseHeartbeat(pool, holdings, 3600)])
    workers.start()
    try:
        await add_job(pool)
        await cut(pool, jobs)
        # Not an hour later: given back, claimed again and done.
        await until(done_is(pool, 1))
    finally:
        await workers.stop()
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT attempts, last_error FROM queue_test_jobs")
    assert tuple(row) == (2, claims.RELEASED_ERROR)


async def test_an_outcome_whose_recording_was_cut_off_is_kept_and_recorded_again(
    pool: Pool, migrated: str
) -> None:
    holdings = claims.Holdings()
    jobs = LeasedJobs(pool, holdings, lease_seconds=3600, hold_record=True)
    workers = Workers(migrated, [jobs, LeaseHeartbeat(pool, holdings, 3600)])
    workers.start()
    try:
        await add_job(pool)
        await cut(pool, jobs)
        await until(done_is(pool, 1))
    finally:
        await workers.stop()
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT attempts FROM queue_test_jobs") == 1  # not redone
    assert jobs.records == 2


async def test_an_ordered_queue_keeps_one_transaction_per_key_and_its_order(pool: Pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO queue_test_posts (key) VALUES ('x'), ('x'), ('y');"
            "INSERT INTO queue_test_posts (key, next_attempt_at)"
            " VALUES ('z', now() + interval '1 hour'), ('z', now())"
        )
    async with pool.acquire() as first, pool.acquire() as second:
        async with first.transaction():
            [x1] = await claims.take_head(first, POSTS, 1, "x")
            async with second.transaction():
                # x is in flight: the second transaction gets nothing of x, not the next row.
                assert await claims.take_head(second, POSTS, 1, "x") == []
                [y1] = await claims.take_head(second, POSTS, 1, "y")
            await first.execute(
                "UPDATE queue_test_posts SET finished_at = now() WHERE id = $1", x1["id"]
            )
        async with second.transaction():
            [x2] = await claims.take_head(second, POSTS, 5, "x")
            # A head that is not due holds back what is behind it.
            assert await claims.take_head(second, POSTS, 5, "z") == []
        assert x1["id"] < x2["id"] and y1["id"] != x2["id"]
        assert sorted(await claims.keys(first, POSTS)) == ["x", "y", "z"]
        seconds = await claims.next_due_ordered(first, POSTS)
        assert seconds is not None and seconds <= 0  # x's and y's heads are due
        with pytest.raises(RuntimeError):
            await claims.take_head(first, POSTS, 1, "x")  # only inside a transaction


async def test_a_claim_inside_a_transaction_skips_rows_another_holds(pool: Pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO queue_test_posts (key) SELECT 'k' FROM generate_series(1, 3)"
        )
    async with pool.acquire() as first, pool.acquire() as second:
        async with first.transaction():
            held = await claims.claim_locked(first, TASKS, 2)
            async with second.transaction():
                rest = await claims.claim_locked(second, TASKS, 5)
        assert len(held) == 2 and len(rest) == 1
        assert {r["id"] for r in held}.isdisjoint(r["id"] for r in rest)
        with pytest.raises(RuntimeError):
            await claims.claim_locked(first, TASKS, 1)


async def test_notices_send_one_notification_per_queue_with_its_earliest_due_time(
    migrated: str,
) -> None:
    heard: list[str] = []
    listener = await asyncpg.connect(migrated)
    sender = await asyncpg.connect(migrated)
    await listener.add_listener(CHANNEL, lambda *args: heard.append(args[3]))
    later = datetime(2030, 1, 1, tzinfo=UTC)
    try:
        notices = Notices()
        notices.add("q1", later + timedelta(hours=1))
        notices.add("q1", later)
        notices.add("q2", later)
        notices.add("q2")  # due now wins
        notices.add("q2", later)
        async with sender.transaction():
            await notices.send(sender)
        await until(lambda: len(heard) == 2)
        assert heard == [f"q1 {later.timestamp():.3f}", "q2"]
    finally:
        await listener.close()
        await sender.close()


def test_retry_delay_doubles_with_jitter_up_to_its_cap_and_honours_retry_after() -> None:
    for attempts in range(1, 30):
        step = min(600.0, 2.0 * 2 ** (attempts - 1))
        for _ in range(50):
            assert step / 2 <= retry_delay(attempts, 2.0, 600.0) <= step
    assert retry_delay(1, 2.0, 600.0, at_least=30.0) == 30.0
    assert 300.0 <= retry_delay(100_000, 2.0, 600.0) <= 600.0  # no overflow, however many
