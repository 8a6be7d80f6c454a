"""Forwarding verified LINE webhook bodies to the company's other bots.

A LINE channel has one webhook URL; the router takes it and passes every verified body on,
byte for byte with LINE's original `X-Line-Signature`, so the other bots' own verification
still passes. Each URL gets its bodies in the order they arrived: only the oldest unfinished
body of a URL is ever in flight, under a transaction-scoped advisory lock, so several router
processes never overtake each other.
"""

from __future__ import annotations

import asyncio
import logging
import random

import aiohttp

from router import http_post
from router.background import Wakeable
from router.database import Pool

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 12
BACKOFF_BASE_SECONDS = 2.0
BACKOFF_MAX_SECONDS = 3600.0
IDLE_SECONDS = 5.0


class WebhookForwarder(Wakeable):
    def __init__(self, pool: Pool, timeout_seconds: float = 10.0) -> None:
        self._pool = pool
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self.backoff_base = BACKOFF_BASE_SECONDS
        super().__init__()

    async def run(self, stopping: asyncio.Event) -> None:
        async with aiohttp.ClientSession(timeout=self._timeout, trust_env=False) as session:
            await self.loop(
                stopping, lambda: self.forward_due(session), IDLE_SECONDS, "webhook forwarding"
            )

    async def forward_due(self, session: aiohttp.ClientSession) -> int:
        """Try the head of every URL's queue that is due; return how many were finished."""
        async with self._pool.acquire() as conn:
            urls = [
                r["url"]
                for r in await conn.fetch(
                    "SELECT DISTINCT url FROM webhook_forwards WHERE finished_at IS NULL"
                )
            ]
        done = await asyncio.gather(*(self._forward_head(session, url) for url in urls))
        return sum(done)

    async def _forward_head(self, session: aiohttp.ClientSession, url: str) -> int:
        async with self._pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval(
                "SELECT pg_try_advisory_xact_lock(hashtext('webhook_forward:' || $1))", url
            ):
                return 0
            head = await conn.fetchrow(
                "SELECT id, body, signature, attempts, next_attempt_at <= now() AS due"
                " FROM webhook_forwards WHERE url = $1 AND finished_at IS NULL"
                " ORDER BY id LIMIT 1",
                url,
            )
            if head is None or not head["due"]:
                return 0
            error = await self._post(session, url, head["body"], head["signature"])
            attempts = head["attempts"] + 1
            if error is None:
                await conn.execute(
                    "UPDATE webhook_forwards SET attempts = $2, finished_at = now(),"
                    " outcome = 'delivered' WHERE id = $1",
                    head["id"],
                    attempts,
                )
                return 1
            if attempts >= MAX_ATTEMPTS:
                await conn.execute(
                    "UPDATE webhook_forwards SET attempts = $2, finished_at = now(),"
                    " last_error = $3, outcome = 'gave up' WHERE id = $1",
                    head["id"],
                    attempts,
                    error,
                )
                log.warning("gave up forwarding a webhook after %d attempts: %s", attempts, error)
                return 1
            delay = min(BACKOFF_MAX_SECONDS, self.backoff_base * 2 ** (attempts - 1))
            await conn.execute(
                "UPDATE webhook_forwards SET attempts = $2, last_error = $3,"
                " next_attempt_at = now() + make_interval(secs => $4) WHERE id = $1",
                head["id"],
                attempts,
                error,
                random.uniform(delay / 2, delay),
            )
            return 0

    async def _post(
        self, session: aiohttp.ClientSession, url: str, body: bytes, signature: str
    ) -> str | None:
        headers = {"Content-Type": "application/json", "X-Line-Signature": signature}
        return await http_post.post(session, url, body, headers)
