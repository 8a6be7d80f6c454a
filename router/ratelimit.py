"""Provider request limits shared by every router process, counted in PostgreSQL.

Each wall-clock second has a row per bucket; a worker reserves the requests of a whole
claim before sending any of it, so the sum over all processes never exceeds the limit.
"""

from __future__ import annotations

import asyncio
import time

from router.database import Connection

_RESERVE = """
INSERT INTO rate_buckets AS b (bucket, second, granted)
VALUES ($1, date_trunc('second', clock_timestamp()), $2)
ON CONFLICT (bucket, second) DO UPDATE SET granted = b.granted + excluded.granted
    WHERE b.granted + excluded.granted <= $3
RETURNING granted
"""


async def reserve(conn: Connection, bucket: str, requests: int, per_second: int) -> bool:
    """Reserve `requests` in the current second; False if that would pass the limit."""
    if requests > per_second:
        raise ValueError(f"a batch of {requests} can never fit a limit of {per_second}/s")
    granted = await conn.fetchval(_RESERVE, bucket, requests, per_second)
    return granted is not None


async def take(conn: Connection, bucket: str, requests: int, per_second: int) -> None:
    """Reserve `requests` in the first second that has room for them. The window is a
    wall-clock second in PostgreSQL, so waiting for the next one is the point."""
    while not await reserve(conn, bucket, requests, per_second):  # noqa: ASYNC110
        await asyncio.sleep(_seconds_to_next_window())


def _seconds_to_next_window() -> float:
    return 1.0 - (time.time() % 1.0) + 0.001


async def prune(conn: Connection) -> None:
    await conn.execute("DELETE FROM rate_buckets WHERE second < now() - interval '1 minute'")
