"""Provider limits shared by every router process, counted in PostgreSQL.

Each wall-clock second has a row per bucket; a worker reserves the requests of a claim right
after making it, before sending, so the sum over all processes never exceeds the limit. A
bucket can also space single requests (`wait_for_turn`): each row is then one request's time,
or be a token bucket (`take_token`, API keys' request rates): one row per bucket.
The only writer of `rate_buckets`.
"""

from __future__ import annotations

import asyncio
import time

from router.database import Connection, Pool

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


async def wait_for_room(conn: Connection, bucket: str, requests: int, per_second: int) -> None:
    """Reserve `requests`, waiting for the next second while this one is full. The window is
    a wall-clock second in PostgreSQL, so waiting for it is the point."""
    while not await reserve(conn, bucket, requests, per_second):  # noqa: ASYNC110
        await asyncio.sleep(seconds_to_next_window())


def seconds_to_next_window() -> float:
    return 1.0 - (time.time() % 1.0) + 0.001


async def prune(conn: Connection) -> None:
    await conn.execute("DELETE FROM rate_buckets WHERE second < now() - interval '1 minute'")


_UNTIL_TURN = """
SELECT extract(epoch FROM max(second) + make_interval(secs => $2) - clock_timestamp())::float8
FROM rate_buckets WHERE bucket = $1
"""


async def wait_for_turn(pool: Pool, bucket: str, spacing: float) -> None:
    """Wait until `bucket`'s last request, by any process, is `spacing` seconds old; record this
    one. The time recorded is when the turn is taken, not when it was due, so a late wake-up
    cannot bring two requests closer together than the spacing."""
    while True:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", bucket)
            wait: float | None = await conn.fetchval(_UNTIL_TURN, bucket, spacing)
            if wait is None or wait <= 0:
                await conn.execute(
                    "INSERT INTO rate_buckets (bucket, second, granted)"
                    " VALUES ($1, clock_timestamp(), 1)",
                    bucket,
                )
                return
        await asyncio.sleep(wait)


# A token bucket as one row: `second` holds the bucket's theoretical arrival time (when it
# would be full again, GCRA), moved on by $2 (seconds per token) for each request taken while
# it stays within $3 (the burst, in seconds) of now. A missing row is a full bucket; an idle
# row is pruned with the rest after a minute, which is the same thing.
_GCRA = """
WITH clock AS (SELECT clock_timestamp() AS now),
taken AS (
    UPDATE rate_buckets AS b
    SET second = greatest(b.second, clock.now) + make_interval(secs => $2)
    FROM clock
    WHERE b.bucket = $1
      AND greatest(b.second, clock.now) + make_interval(secs => $2)
          <= clock.now + make_interval(secs => $3)
    RETURNING 0::float8 AS wait
),
refused AS (
    SELECT extract(epoch FROM greatest(b.second, clock.now) - clock.now)::float8 + $2 - $3
        AS wait
    FROM rate_buckets AS b, clock
    WHERE b.bucket = $1 AND NOT EXISTS (SELECT FROM taken)
),
fresh AS (
    INSERT INTO rate_buckets (bucket, second, granted)
    SELECT $1, clock.now + make_interval(secs => $2), 1 FROM clock
    WHERE NOT EXISTS (SELECT FROM taken) AND NOT EXISTS (SELECT FROM refused)
    ON CONFLICT DO NOTHING
    RETURNING 0::float8 AS wait
)
SELECT wait FROM taken UNION ALL SELECT wait FROM refused UNION ALL SELECT wait FROM fresh
LIMIT 1
"""


async def take_token(conn: Connection, bucket: str, per_second: float, burst: int) -> float:
    """Take one request from a token bucket of `burst` requests refilled at `per_second`,
    shared by every router process: 0 if taken, else the seconds until one is free."""
    wait: float | None = await conn.fetchval(_GCRA, bucket, 1.0 / per_second, burst / per_second)
    return max(wait or 0.0, 0.0)
