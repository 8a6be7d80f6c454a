"""The one loop framework: every queue of the router runs as a `QueueWorker` in `Workers`.

A queue worker is `concurrency` loops that each claim, work and record (`step`), plus the
queue's timer. A loop that claimed a full claim wakes one idle sibling and goes on; one that
claimed less goes idle until woken, since what was due has been taken. Errors are logged and
the loop goes on after a pause: a claim's leases expire and its work is done again, so a
failure never stops a queue.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence

import asyncpg

from router.log_safety import describe, frames
from router.queue.wakeups import Listener, Wakeups

log = logging.getLogger(__name__)

RECHECK_SECONDS = 30.0
ERROR_PAUSE_SECONDS = 1.0


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
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
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
