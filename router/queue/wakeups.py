"""Waking queue loops: NOTIFY between processes, one idle loop at a time within a process.

A transaction that makes rows of a queue claimable calls `notify` (PostgreSQL delivers it at
commit). Each router process has one LISTEN connection, apart from its pool, and hands every
notification to the `Wakeups` of the queue it names. A notification wakes one idle loop of
that queue, never all of them; one that finds no loop idle is remembered, once however many
arrive, and the next loop to finish looks again instead of sleeping.

Rows due later do not wake anyone: their notification carries the time they fall due, and the
queue's one timer in each process wakes a loop then. The timer also learns due times from
retries scheduled in this process and, when it has fired and the queue has gone quiet, asks
the queue once for its next due time. Apart from that, an idle queue costs one re-check per
interval, which finds what a stopped process or a lost notification left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import asyncpg

from router.database import Connection
from router.log_safety import describe

log = logging.getLogger(__name__)

CHANNEL = "router_queues"
RECONNECT_SECONDS = 1.0

NextDue = Callable[[], Awaitable[float | None]]
Received = Callable[[str, float | None], None]


async def notify(conn: Connection, queue: str, due: datetime | None = None) -> None:
    """Wake `queue` in every process when the caller's transaction commits; with `due`, only
    set its timers for then (a row sent later must not make loops claim in vain now)."""
    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload(queue, due))


def payload(queue: str, due: datetime | None = None) -> str:
    """What a notification on `CHANNEL` carries: the queue, and when set the time its rows
    fall due."""
    return queue if due is None else f"{queue} {due.timestamp():.3f}"


class Notices:
    """Queues to wake for the rows of one transaction: one notification per queue, carrying the
    earliest time any of its rows falls due (None: now)."""

    def __init__(self) -> None:
        self._due: dict[str, datetime | None] = {}

    def add(self, queue: str, due: datetime | None = None) -> None:
        if queue not in self._due:
            self._due[queue] = due
            return
        known = self._due[queue]
        if known is not None and (due is None or due < known):
            self._due[queue] = due

    async def send(self, conn: Connection) -> None:
        for queue, due in sorted(self._due.items()):
            await notify(conn, queue, due)

    def payloads(self) -> list[str]:
        """The notifications `send` would make, for a statement that sends them itself (one
        round trip fewer)."""
        return [payload(queue, due) for queue, due in sorted(self._due.items())]


class Wakeups:
    """When the `loops` loops of one queue in this process look for work.

    Loops wait in `idle` and are woken one at a time by `wake` (a notification, a kick, the
    timer) or by `wake_sibling` (a claim came back full). `keep_time` is the queue's one
    timer; `next_due` answers when the queue's earliest scheduled row falls due."""

    def __init__(self, loops: int, next_due: NextDue, recheck_seconds: Callable[[], float]):
        self._loops = loops
        self._next_due = next_due
        self._recheck_seconds = recheck_seconds
        self._idle: deque[asyncio.Future[None]] = deque()
        self._missed = False  # a wake-up found no loop idle
        self._due: float | None = None  # monotonic time the earliest known scheduled row is due
        self._stale = False  # the timer fired, so the next due time is unknown
        self._found = 0  # items claimed since the timer last fired
        self._changed = asyncio.Event()  # the timer must look again
        self.stopped = asyncio.Event()

    def wake(self) -> None:
        """Have one idle loop look for work; if none is idle, the next one to finish does."""
        if not self._wake_idle():
            self._missed = True

    def wake_sibling(self) -> None:
        """A claim came back full: let one more idle loop help (if none is idle, the loop that
        made the claim goes on anyway)."""
        self._wake_idle()

    def _wake_idle(self) -> bool:
        while self._idle:
            waiter = self._idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return True
        return False

    def due_in(self, seconds: float) -> None:
        """A row of this queue falls due in `seconds`: wake a loop now, or set the timer."""
        if seconds <= 0:
            self.wake()
            return
        at = time.monotonic() + seconds
        if self._due is None or at < self._due:
            self._due = at
            self._changed.set()

    def recheck(self) -> None:
        """Look for work now and then ask for the next due time (start, reconnection)."""
        self._stale = True
        self._found = 0
        self.wake()

    def found(self, items: int) -> None:
        self._found += items

    async def idle(self) -> bool:
        """Wait until woken; False once the queue is stopping."""
        if self.stopped.is_set():
            return False
        if self._missed:
            self._missed = False
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._idle.append(waiter)
        if self._stale and len(self._idle) == self._loops:
            self._changed.set()  # the queue went quiet: the timer may ask for the next due time
        try:
            await waiter
        finally:
            if waiter in self._idle:
                self._idle.remove(waiter)
        return not self.stopped.is_set()

    async def pause(self, seconds: float) -> None:
        """Sleep after an error, but not past a stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopped.wait(), timeout=seconds)

    def stop(self) -> None:
        self.stopped.set()
        while self._wake_idle():
            pass
        self._changed.set()

    async def keep_time(self) -> None:
        """The queue's timer: wakes one loop when the earliest scheduled row falls due and at
        each re-check, and asks for the next due time only once the woken loops are done."""
        checked = time.monotonic()
        while not self.stopped.is_set():
            self._changed.clear()
            if self._stale and len(self._idle) == self._loops:
                self._stale = False
                await self._refresh()
                continue
            deadline = checked + self._recheck_seconds()
            if self._due is not None:
                deadline = min(deadline, self._due)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), max(0.0, deadline - time.monotonic()))
            now = time.monotonic()
            if self._due is not None and now >= self._due:
                self._due = None
                self.recheck()
            if now >= checked + self._recheck_seconds():
                checked = now
                self.recheck()

    async def _refresh(self) -> None:
        try:
            seconds = await self._next_due()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("next due time not read (%s); the re-check will ask again", describe(exc))
            return
        if seconds is None:
            return
        if seconds > 0:
            self.due_in(seconds)
        elif self._found:
            self.recheck()  # rows fell due while the last claim ran
        # Otherwise rows are due but the woken loop found none to take: another process holds
        # them, and they are looked at again at the re-check rather than claimed in a spin.


class Listener:
    """The process's one LISTEN connection. Pool connections never listen, so returning them
    to the pool needs no UNLISTEN."""

    def __init__(self, dsn: str, received: Received, connected: Callable[[], None]) -> None:
        self._dsn = dsn
        self._received = received
        self._connected = connected

    async def run(self, stopped: asyncio.Event) -> None:
        while not stopped.is_set():
            try:
                await self._listen(stopped)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("queue listener lost its connection (%s); reconnecting", describe(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopped.wait(), timeout=RECONNECT_SECONDS)

    async def _listen(self, stopped: asyncio.Event) -> None:
        """Listen until the process stops or the connection is lost."""
        conn: Any = await asyncpg.connect(self._dsn)
        try:
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _conn: lost.set())
            await conn.add_listener(CHANNEL, self._on_notify)
            self._connected()  # anything sent while nobody listened
            await _first(stopped, lost)
        finally:
            if not conn.is_closed():
                await conn.close()

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        queue, _, due = payload.partition(" ")
        self._received(queue, float(due) - time.time() if due else None)


async def _first(*events: asyncio.Event) -> None:
    waits = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()
