"""The shape every background loop of the router shares: work until there is nothing left,
then sleep until kicked (new rows were just committed) or until a sweep interval passes
(rows left by a stopped process, retries that became due)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from router.log_safety import describe

log = logging.getLogger(__name__)


class Wakeable:
    def __init__(self) -> None:
        self._wake = asyncio.Event()

    def kick(self) -> None:
        self._wake.set()

    async def loop(
        self,
        stopping: asyncio.Event,
        step: Callable[[], Awaitable[int]],
        interval: float,
        what: str,
    ) -> None:
        """Call `step` while it reports work done; a database or network error is logged and
        the loop goes on after the interval."""
        while not stopping.is_set():
            self._wake.clear()
            try:
                while not stopping.is_set() and await step():
                    pass
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("%s failed (%s); retrying", what, describe(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=interval)
