"""Webhook bodies to forward to the company's other bots, per URL in the order received."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from router.database import Connection
from router.queue import claims
from router.queue.wakeups import notify

# Each URL is its own queue in order: only its oldest unfinished body is ever in flight.
QUEUE = claims.Ordered(
    table="webhook_forwards",
    alias="f",
    key="url",
    unfinished="f.finished_at IS NULL",
    columns="f.id, f.body, f.signature, f.attempts",
)


async def add(conn: Connection, urls: Sequence[str], body: bytes, signature: str) -> None:
    """Queue the body for every URL (in the caller's transaction) and wake the forwarder."""
    await conn.execute(
        "INSERT INTO webhook_forwards (url, body, signature)"
        " SELECT url, $2, $3 FROM unnest($1::text[]) WITH ORDINALITY AS u(url, n)"
        " ORDER BY n",
        list(urls),
        body,
        signature,
    )
    await notify(conn, QUEUE.queue_name)


async def urls(conn: Connection) -> list[str]:
    """The URLs with bodies still to forward."""
    return await claims.keys(conn, QUEUE)


async def head(conn: Connection, url: str) -> asyncpg.Record | None:
    """The URL's oldest unfinished body, if it is due and this transaction has the URL's turn."""
    rows = await claims.take_head(conn, QUEUE, 1, url)
    return rows[0] if rows else None


async def finish(
    conn: Connection, forward_id: int, attempts: int, outcome: str, error: str | None = None
) -> None:
    await conn.execute(
        "UPDATE webhook_forwards SET attempts = $2, finished_at = now(), outcome = $3,"
        " last_error = coalesce($4, last_error) WHERE id = $1",
        forward_id,
        attempts,
        outcome,
        error,
    )


async def retry_later(
    conn: Connection, forward_id: int, attempts: int, error: str, delay: float
) -> None:
    await conn.execute(
        "UPDATE webhook_forwards SET attempts = $2, last_error = $3,"
        " next_attempt_at = now() + make_interval(secs => $4) WHERE id = $1",
        forward_id,
        attempts,
        error,
        delay,
    )


async def next_due(conn: Connection) -> float | None:
    return await claims.next_due_ordered(conn, QUEUE)
