"""Group commit for intents sent one request each: many requests, one transaction.

Most API clients send one transactional message per request. Each accepted intent must be
committed before its 202, and a transaction per request costs a pool connection, several
round trips and a commit each; at a few hundred requests a second they queue behind one
another. Here the intents that arrive while a transaction is in flight wait for it, and are
then accepted together by the next one: one `accept` (one statement per table, one NOTIFY
per queue, one commit) for all of them, each request answered with its own result after
that commit. Under light load a group is one intent and nothing waits.

One intent never affects another: results are per intent, as in a batch (an idempotency key
repeated within a group is answered like one repeated within a batch), and if a group's
transaction fails for any reason other than the database being unreachable, each of its
intents is tried again alone, so only the one that caused it fails.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from uuid import UUID

from router.database import Pool
from router.database_outage import is_unavailable
from router.intake_port import AcceptIntents
from router.intents import IntentRequest, IntentResult, IntentView, view
from router.log_safety import describe

log = logging.getLogger(__name__)

MAX_GROUP = 1_000
"""Most intents one transaction takes; more waiting go in the next one."""


class GroupCommit:
    """Accepts single intents in groups: one transaction in flight, the next group gathering
    while it runs."""

    def __init__(self, pool: Pool, accept_intents: AcceptIntents, max_group: int = MAX_GROUP):
        self._pool = pool
        self._accept_intents = accept_intents
        self._max_group = max_group
        self._waiting: list[tuple[IntentRequest, asyncio.Future[IntentResult]]] = []
        self._committer: asyncio.Task[None] | None = None

    async def accept(self, request: IntentRequest) -> IntentResult:
        """Accept one intent; returns once the transaction that holds it has committed."""
        answer: asyncio.Future[IntentResult] = asyncio.get_running_loop().create_future()
        self._waiting.append((request, answer))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_waiting())
        return await answer

    async def original(self, intent_id: UUID) -> IntentView | None:
        """The intent a replayed request (same idempotency key, same body) is answered with."""
        async with self._pool.acquire() as conn:
            return await view(conn, intent_id)

    async def _commit_waiting(self) -> None:
        while self._waiting:
            group = self._waiting[: self._max_group]
            del self._waiting[: self._max_group]
            try:
                await self._commit(group)
            except BaseException:  # cancelled (shutdown): no request waits forever
                for _, answer in (*group, *self._waiting):
                    if not answer.done():
                        answer.cancel()
                self._waiting.clear()
                raise

    async def _commit(
        self, group: Sequence[tuple[IntentRequest, asyncio.Future[IntentResult]]]
    ) -> None:
        try:
            results = await self._accept([request for request, _ in group])
        except Exception as exc:
            if len(group) == 1 or is_unavailable(exc):
                for _, answer in group:
                    _fail(answer, exc)
                return
            log.warning(
                "a group of %d intents failed (%s); each is accepted alone",
                len(group),
                describe(exc),
            )
            for item in group:
                await self._commit([item])
            return
        for (_, answer), result in zip(group, results, strict=True):
            if not answer.done():  # its client may have gone away
                answer.set_result(result)

    async def _accept(self, requests: list[IntentRequest]) -> list[IntentResult]:
        async with self._pool.acquire() as conn:
            return await self._accept_intents(conn, requests, multicast=False)


def _fail(answer: asyncio.Future[IntentResult], exc: Exception) -> None:
    if not answer.done():
        answer.set_exception(exc)
