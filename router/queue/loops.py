"""The one loop framework: every queue of the router runs as a `QueueWorker` in `Workers`.

A queue worker is `concurrency` loops that each claim, work and record (`step`), plus the
queue's timer. A loop that claimed a full claim wakes one idle sibling and goes on; one that
claimed less goes idle until woken, since what was due has been taken. Errors are logged and
the loop goes on after a pause, so a failure never stops a queue.

A queue of a `Leased` table is a `LeasedWorker`: its claims are held in the process's
`Holdings` while the work is in hand, and `LeaseHeartbeat` renews their leases, so a lease
only has to outlive a process that died. When the database goes away mid-claim, the worker
keeps what it learned (a provider's answer) in memory and stores it once the database is
back, and gives back at once a claim it could not finish: neither waits for the lease.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar
from uuid import UUID

import asyncpg

from router import database_outage
from router.database import Connection, Pool
from router.log_safety import describe, frames
from router.queue import claims
from router.queue.backoff import retry_delay
from router.queue.wakeups import Listener, Wakeups

log = logging.getLogger(__name__)

RECHECK_SECONDS = 30.0
ERROR_PAUSE_SECONDS = 1.0
# Storing an outcome while the database is away: the first retry after this, then doubling
# up to the cap, so the outcome is stored within about the cap of the database's return.
STORE_RETRY_BASE_SECONDS = 0.1
STORE_RETRY_MAX_SECONDS = 1.0

DATABASE_AWAY = database_outage.TRANSIENT_ERRORS

# ... and every error PostgreSQL answers with: a loop logs it and goes on after a pause.
DATABASE_AWAY_OR_REFUSED: tuple[type[BaseException], ...] = (*DATABASE_AWAY, asyncpg.PostgresError)

Work = TypeVar("Work")


class QueueWorker(ABC):
    """The loops of one queue in this process.

    `full`: a claim this large suggests more is due. `recheck_seconds`: how often an idle queue
    looks for work nobody announced (left by a stopped process, or a lost notification); a
    queue without notifications (a periodic sweep) runs once per interval."""

    def __init__(
        self,
        name: str,
        *,
        concurrency: int = 1,
        full: int = 1,
        recheck_seconds: float = RECHECK_SECONDS,
    ) -> None:
        self.name = name
        self.concurrency = concurrency
        self.full = full
        self.recheck_seconds = recheck_seconds
        self._wakeups = Wakeups(concurrency, self.next_due, lambda: self.recheck_seconds)

    @abstractmethod
    async def step(self) -> int:
        """Claim once, do the work and record it; how many items the claim held."""

    async def next_due(self) -> float | None:
        """Seconds until the queue's earliest scheduled item falls due (<= 0: now); None when
        nothing is scheduled. Queues whose items are all due at once keep this default."""
        return None

    def kick(self) -> None:
        """Work was committed for this queue: have one idle loop of this process look now."""
        self._wakeups.wake()

    def due_in(self, seconds: float) -> None:
        """An item of this queue falls due in `seconds` (a retry this process scheduled)."""
        self._wakeups.due_in(seconds)

    async def aclose(self) -> None:  # noqa: B027 - most queues hold nothing to release
        """Release what the loops used; called once they have stopped."""

    async def _loop(self) -> None:
        wakeups = self._wakeups
        while await wakeups.idle():
            while not wakeups.stopped.is_set():
                try:
                    claimed = await self.step()
                except DATABASE_AWAY_OR_REFUSED as exc:
                    log.warning("%s failed (%s); retrying", self.name, describe(exc))
                    await wakeups.pause(ERROR_PAUSE_SECONDS)
                    continue
                except Exception as exc:
                    log.error(
                        "%s dispatch loop error (%s); continuing\n%s",
                        self.name,
                        describe(exc),
                        frames(exc),
                    )
                    await wakeups.pause(ERROR_PAUSE_SECONDS)
                    continue
                wakeups.found(claimed)
                if claimed < self.full:
                    break
                wakeups.wake_sibling()


class LeasedWorker(QueueWorker, Generic[Work]):
    """The loops of one lane of a leased table: claim (`claim`), do the work without the
    database's help where it can (`work`), store the outcome (`record`).

    The claim's token is held (and its lease renewed) from just before the claim statement
    until the outcome is stored. If the database goes away before the work has an outcome,
    whatever the token holds is given back as soon as the database answers, even a claim whose
    answer was lost on the way; once there is an outcome (the provider has answered), it is
    kept and stored when the database answers again, its lease renewed meanwhile. Only an
    unexpected error leaves the claim to its lease and the sweep."""

    def __init__(
        self,
        table: claims.Leased,
        lane: str,
        pool: Pool,
        holdings: claims.Holdings,
        *,
        concurrency: int = 1,
        full: int = 1,
    ) -> None:
        super().__init__(table.queue_name(lane), concurrency=concurrency, full=full)
        self.table = table
        self.lane = lane
        self.pool = pool
        self.holdings = holdings

    @abstractmethod
    async def claim(self, token: UUID) -> list[asyncpg.Record]:
        """Claim due rows of the lane under `token`."""

    @abstractmethod
    async def work(self, rows: list[asyncpg.Record], token: UUID) -> Work:
        """Do the claimed work; what to store."""

    @abstractmethod
    async def record(self, conn: Connection, token: UUID, outcome: Work) -> None:
        """Store the outcome of the claim under `token` (in one transaction: on a lost
        connection it is stored again, so it must be all or nothing, and storing what is no
        longer this token's must change nothing)."""

    async def next_due(self) -> float | None:
        async with self.pool.acquire() as conn:
            return await claims.next_due(conn, self.table, self.lane)

    async def step(self) -> int:
        token = self.holdings.hold(self.table)
        try:
            try:
                rows = await self.claim(token)
                if not rows:
                    return 0
                outcome = await self.work(rows, token)
            except DATABASE_AWAY:
                await self._store("give back", lambda conn: self._release(conn, token))
                raise
            await self._store("record", lambda conn: self.record(conn, token, outcome))
            return len(rows)
        finally:
            self.holdings.drop(self.table, token)

    async def _release(self, conn: Connection, token: UUID) -> None:
        async with conn.transaction():  # the rows and the wake-up of their lanes together
            await claims.release(conn, self.table, token)

    async def _store(self, what: str, write: Callable[[Connection], Awaitable[object]]) -> None:
        """Write until the database takes it, backing off while it is away."""
        attempt = 0
        while True:
            try:
                async with self.pool.acquire() as conn:
                    await write(conn)
            except DATABASE_AWAY as exc:
                attempt += 1
                if attempt == 1:
                    log.warning(
                        "%s: could not %s a claim (%s); kept until the database answers",
                        self.name,
                        what,
                        describe(exc),
                    )
                await asyncio.sleep(
                    retry_delay(attempt, STORE_RETRY_BASE_SECONDS, STORE_RETRY_MAX_SECONDS)
                )
                continue
            if attempt:
                log.info("%s: claim stored after %d retries", self.name, attempt)
            return


class LeaseHeartbeat(QueueWorker):
    """Renews the leases of every claim this process holds: one statement per leased table
    that has any, three times per lease. When the database comes back after an outage it
    runs again within a second, before the leases it holds can be swept (see `claims.sweep`
    for the grace after a restart)."""

    def __init__(self, pool: Pool, holdings: claims.Holdings, lease_seconds: float) -> None:
        super().__init__("lease_heartbeat", recheck_seconds=lease_seconds / 3)
        self._pool = pool
        self._holdings = holdings
        self._lease_seconds = lease_seconds

    async def step(self) -> int:
        held = [(table, tokens) for table, tokens in self._holdings.tables() if tokens]
        if held:
            async with self._pool.acquire() as conn:
                for table, tokens in held:
                    await claims.extend(conn, table, tokens, self._lease_seconds)
        return 0


class Workers:
    """Every queue worker of this process, and the LISTEN connection that wakes them."""

    def __init__(self, dsn: str, workers: Sequence[QueueWorker]) -> None:
        self._by_name = {w.name: w for w in workers}
        if len(self._by_name) != len(workers):
            raise ValueError("two queue workers with one name")
        self._listener = Listener(dsn, self._received, self._connected)
        self._stopped = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start every loop and timer; each queue looks for work once the listener is up."""
        self._tasks.append(asyncio.create_task(self._listener.run(self._stopped), name="listen"))
        for worker in self._by_name.values():
            wakeups = worker._wakeups
            self._tasks.append(
                asyncio.create_task(wakeups.keep_time(), name=f"{worker.name}-timer")
            )
            self._tasks.extend(
                asyncio.create_task(worker._loop(), name=f"{worker.name}-{n}")
                for n in range(worker.concurrency)
            )

    async def stop(self, grace_seconds: float = 15.0) -> None:
        """Stop claiming; let claims in flight finish and be recorded, then close."""
        self._stopped.set()
        for worker in self._by_name.values():
            worker._wakeups.stop()
        if self._tasks:
            _, still = await asyncio.wait(self._tasks, timeout=grace_seconds)
            for task in still:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks.clear()
        for worker in self._by_name.values():
            await worker.aclose()

    def _received(self, queue: str, due_in: float | None) -> None:
        worker = self._by_name.get(queue)
        if worker is None:
            return  # a queue this process does not run
        if due_in is None:
            worker.kick()
        else:
            worker.due_in(due_in)

    def _connected(self) -> None:
        for worker in self._by_name.values():
            worker._wakeups.recheck()
