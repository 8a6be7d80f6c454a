"""Forwarding verified LINE webhook bodies to the company's other bots.

A LINE channel has one webhook URL; the router takes it and passes every verified body on,
byte for byte with LINE's original `X-Line-Signature`, so the other bots' own verification
still passes. Each URL gets its bodies in the order they arrived: only the oldest unfinished
body of a URL is ever in flight (the URL's turn, router/queue/claims.py), so several router
processes never overtake each other.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp

from router import http_post
from router.database import Pool
from router.queue.backoff import retry_delay
from router.queue.loops import QueueWorker
from router.store import webhook_forwards

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 12
BACKOFF_BASE_SECONDS = 2.0
BACKOFF_MAX_SECONDS = 3600.0


class WebhookForwarder(QueueWorker):
    def __init__(self, pool: Pool, timeout_seconds: float = 10.0) -> None:
        super().__init__(webhook_forwards.QUEUE.queue_name)
        self._pool = pool
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout_seconds), trust_env=False
        )
        self.backoff_base = BACKOFF_BASE_SECONDS

    async def next_due(self) -> float | None:
        async with self._pool.acquire() as conn:
            return await webhook_forwards.next_due(conn)

    async def step(self) -> int:
        """Try the head of every URL's queue that is due; how many were finished."""
        async with self._pool.acquire() as conn:
            urls = await webhook_forwards.urls(conn)
        done = await asyncio.gather(*(self._forward_head(url) for url in urls))
        return sum(done)

    async def _forward_head(self, url: str) -> int:
        async with self._pool.acquire() as conn, conn.transaction():
            head = await webhook_forwards.head(conn, url)
            if head is None:
                return 0
            headers = {"Content-Type": "application/json", "X-Line-Signature": head["signature"]}
            error = await http_post.post(self._session, url, head["body"], headers)
            attempts = head["attempts"] + 1
            if error is None:
                await webhook_forwards.finish(conn, head["id"], attempts, "delivered")
                return 1
            if attempts >= MAX_ATTEMPTS:
                await webhook_forwards.finish(conn, head["id"], attempts, "gave up", error)
                log.warning("gave up forwarding a webhook after %d attempts: %s", attempts, error)
                return 1
            delay = retry_delay(attempts, self.backoff_base, BACKOFF_MAX_SECONDS)
            await webhook_forwards.retry_later(conn, head["id"], attempts, error, delay)
        self.due_in(delay)
        return 0

    async def aclose(self) -> None:
        await self._session.close()
