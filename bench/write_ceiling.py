"""What PostgreSQL on this machine can write, as a ceiling for the fan-out and batch figures.

A campaign's fan-out writes, per member, one `intents` row and one `deliveries` row (and its
share of a send group). However the router builds them, it cannot beat the rate at which
PostgreSQL stores those rows with their indexes. This measures, on one embedded PostgreSQL
and one connection (one core of PostgreSQL, as one fan-out loop uses):

  copy, bare      COPY of intent-shaped rows into a table with no index, no trigger, no
                  constraint: the figure usually quoted as "COPY speed"
  insert, bare    the same rows by INSERT ... SELECT from generate_series
  intents         INSERT ... SELECT into the real `intents` table: its indexes, its
                  per-statement reference checks
  intents + deliveries
                  the same, then one delivery per intent into the real `deliveries` (its
                  indexes, checks and campaign-count triggers): what one member costs
  the same, no triggers
                  `session_replication_role = replica` skips every trigger: the indexes'
                  share alone

Each figure is rows (or members) per second, best of --repeat runs of --rows rows, with the
ratio to "copy, bare" measured in the same run. The fan-out figure of bench/campaign.py
divided by "intents + deliveries" says how close the router is to the database's own rate.

Usage: python bench/write_ceiling.py [--rows 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable

import asyncpg

from router.database import migrate

BARE = """
CREATE TABLE IF NOT EXISTS bare_intents (
    id uuid, member_id text, content_id bytea, route text, campaign_id uuid,
    tags jsonb, created_at timestamptz DEFAULT now()
)"""
ROWS = """
SELECT gen_random_uuid(), 'm' || lpad(n::text, 9, '0'), '\\x01'::bytea, 'prefer_line', $2::uuid,
       '[]'::jsonb
FROM generate_series($1::int * {rows} + 1, ($1::int + 1) * {rows}) n"""


async def best_of(repeat: int, rows: int, run: Callable[[int], Awaitable[None]]) -> float:
    """Rows a second, the best of `repeat` runs (each run numbered, for fresh keys)."""
    best = float("inf")
    for i in range(repeat):
        started = time.perf_counter()
        await run(i)
        best = min(best, time.perf_counter() - started)
    return rows / best


async def measure(conn: asyncpg.Connection, rows: int, repeat: int) -> None:
    total = rows * repeat * 5  # members enough for every run of every figure below
    await conn.execute(
        "INSERT INTO members (member_id) SELECT 'm' || lpad(n::text, 9, '0')"
        f" FROM generate_series(1, {total}) n"
    )
    await conn.execute("INSERT INTO contents (id, body) VALUES ('\\x01', '{}')")
    await conn.execute(BARE)
    await conn.execute("VACUUM ANALYZE")
    select = ROWS.format(rows=rows)
    records = [(uuid.uuid4(), f"m{n:09}", b"\x01", "prefer_line", None, "[]") for n in range(rows)]
    runs = iter(range(10 * repeat))  # run numbers: each run its own member range

    async def copy_bare(_: int) -> None:
        await conn.copy_records_to_table(
            "bare_intents",
            records=records,
            columns=["id", "member_id", "content_id", "route", "campaign_id", "tags"],
        )

    async def insert_bare(_: int) -> None:
        await conn.execute(
            "INSERT INTO bare_intents (id, member_id, content_id, route, campaign_id, tags)"
            + select,
            next(runs),
            None,
        )

    async def intents(_: int) -> None:
        await conn.execute(
            "INSERT INTO intents (id, member_id, content_id, route, campaign_id, tags)" + select,
            next(runs),
            uuid.uuid4(),
        )

    async def members(_: int) -> None:
        campaign = uuid.uuid4()
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO intents (id, member_id, content_id, route, campaign_id, tags)"
                + select,
                next(runs),
                campaign,
            )
            await conn.execute(
                "INSERT INTO deliveries (intent_id, channel, address, status, campaign_id)"
                " SELECT id, 'email', member_id, 'pending', campaign_id FROM intents"
                " WHERE campaign_id = $1",
                campaign,
            )

    async def members_no_triggers(i: int) -> None:
        await conn.execute("SET session_replication_role = replica")
        try:
            await members(i)
        finally:
            await conn.execute("RESET session_replication_role")

    figures = [
        ("copy, bare", await best_of(repeat, rows, copy_bare)),
        ("insert, bare", await best_of(repeat, rows, insert_bare)),
        ("intents", await best_of(repeat, rows, intents)),
        ("intents + deliveries", await best_of(repeat, rows, members)),
        ("the same, no triggers", await best_of(repeat, rows, members_no_triggers)),
    ]
    ceiling = figures[0][1]
    print(f"{rows:,} rows a run, best of {repeat}; one connection")
    print(f"{'what':<24}{'rows (members)/s':>18}{'vs copy, bare':>15}")
    for name, rate in figures:
        print(f"{name:<24}{rate:>18,.0f}{rate / ceiling:>14.2f}x")


async def run(rows: int, repeat: int) -> None:
    import pgserver

    with tempfile.TemporaryDirectory(prefix="bench-ceiling-") as tmp:
        server = pgserver.get_server(tmp, cleanup_mode="stop")
        try:
            dsn = server.get_uri()
            await migrate(dsn)
            conn = await asyncpg.connect(dsn)
            try:
                await measure(conn, rows, repeat)
            finally:
                await conn.close()
        finally:
            server.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(run(args.rows, args.repeat))


if __name__ == "__main__":
    main()
