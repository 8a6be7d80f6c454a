"""The dashboard's reads at size: the overview's window counts and a member's history page.

Fills an embedded PostgreSQL with N intents spread evenly over the last 30 days (time-ordered
ids, as the router makes them), one delivery each (one in 20 with a fallback delivery too),
over N/100 members, then prints for each figure the router's statement against a baseline in
the same run, with the ratio and the indexes the router's plan uses:

- overview, 24h / 7d / 30d: `router.ui.overview_reads.window_counts` (a range of the intents
  primary key, deliveries through `(intent_id, channel)`) against the same counts filtered on
  `created_at` alone, which can only scan the whole table;
- member history: the page statement of `router.ui.member_reads.history` (keyset over
  `intents_member_recent`) against the same page ordered by `created_at`, which sorts all of
  the member's intents (N/100 members: 100 intents each).

Usage: python bench/ui_reads.py [--intents N]   (default 300,000; 2,000,000 for the record)
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg

from router.database import migrate
from router.ui import member_reads, overview_reads

# A version-7 UUID whose millisecond is the row's created_at (like router/store/row_ids.py).
_UUID7_AT = (
    "encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) placing"
    " substring(int8send((extract(epoch FROM {at}) * 1000)::bigint) FROM 3)"
    " FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid"
)
_FILL = f"""
INSERT INTO members (member_id, email) SELECT 'm' || g, 'm' || g || '@example.jp'
FROM generate_series(1, $2) g;
INSERT INTO contents (id, body) VALUES ('\\x00', '{{}}');
INSERT INTO intents (id, member_id, content_id, route, created_at)
SELECT {_UUID7_AT.format(at="t.at")}, 'm' || (1 + g % $2), '\\x00', 'prefer_line', t.at
FROM generate_series(1, $1) g,
     LATERAL (SELECT now() - interval '30 days' * g / $1 AS at) t;
INSERT INTO deliveries (intent_id, channel, address, status, created_at)
SELECT id, CASE WHEN random() < 0.6 THEN 'line' ELSE 'email' END, 'x',
       CASE WHEN random() < 0.03 THEN 'failed' ELSE 'sent' END, created_at FROM intents;
INSERT INTO deliveries (intent_id, channel, address, status, is_fallback, created_at)
SELECT intent_id, 'email', 'x', 'sent', true, created_at FROM deliveries
WHERE channel = 'line' AND status = 'failed';
ANALYZE;
"""

_BASELINE_WINDOW = """
SELECT date_bin($1::interval, i.created_at, $2::timestamptz) AS bucket, d.channel, count(*)
FROM intents i JOIN deliveries d ON d.intent_id = i.id
WHERE i.created_at >= $2 GROUP BY 1, 2
"""
_BASELINE_HISTORY = """
SELECT id, created_at, route, campaign FROM intents WHERE member_id = $1
ORDER BY created_at DESC LIMIT $2
"""


async def best_of(runs: int, call: Callable[[], Awaitable[object]]) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        await call()
        best = min(best, time.perf_counter() - started)
    return best


def indexes(plan: str) -> str:
    names = sorted(
        {w for line in plan.splitlines() for w in line.split() if w.endswith(("_pkey", "_key"))}
        | {
            w
            for line in plan.splitlines()
            for w in line.split()
            if w.startswith(("intents_", "deliveries_", "members_"))
        }
    )
    return ", ".join(names) or "none"


class OnePool:
    """What `window_counts` needs of a pool: a connection to acquire."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    def acquire(self) -> _Held:
        return _Held(self._conn)


class _Held:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def __aenter__(self) -> asyncpg.Connection:
        return self._conn

    async def __aexit__(self, *exc: object) -> None:
        return None


async def measure(conn: asyncpg.Connection, intents: int) -> None:
    started = time.perf_counter()
    await conn.execute(_FILL.replace("$1", str(intents)).replace("$2", str(intents // 100)))
    print(f"filled {intents:,} intents in {time.perf_counter() - started:.1f} s")
    pool = OnePool(conn)
    now = datetime.now(UTC)
    print(f"{'figure':<22}{'router ms':>11}{'baseline ms':>13}{'ratio':>8}  router's indexes")
    for name in overview_reads.RANGES:
        win = overview_reads.window(name, now)
        ours = await best_of(3, lambda win=win: overview_reads.window_counts(pool, win))  # type: ignore[misc]
        base = await best_of(3, lambda win=win: conn.fetch(_BASELINE_WINDOW, win.step, win.start))  # type: ignore[misc]
        plan = "\n".join(
            r[0]
            for r in await conn.fetch(
                "EXPLAIN " + overview_reads._CHANNEL_BUCKETS,
                overview_reads.first_id_at(win.start),
                win.step,
                win.start,
            )
        )
        print(
            f"overview {name:<13}{ours * 1000:>11.1f}{base * 1000:>13.1f}"
            f"{base / ours:>8.2f}  {indexes(plan)}"
        )
    member = "m7"
    page = member_reads.HISTORY_PAGE + 1
    ours = await best_of(5, lambda: conn.fetch(member_reads._HISTORY, member, None, page))
    base = await best_of(5, lambda: conn.fetch(_BASELINE_HISTORY, member, page))
    plan = "\n".join(
        r[0] for r in await conn.fetch("EXPLAIN " + member_reads._HISTORY, member, None, page)
    )
    print(
        f"{'member history':<22}{ours * 1000:>11.1f}{base * 1000:>13.1f}"
        f"{base / ours:>8.2f}  {indexes(plan)}"
    )


async def run(intents: int) -> None:
    import pgserver

    with tempfile.TemporaryDirectory(prefix="bench-ui-reads-") as tmp:
        server = pgserver.get_server(tmp, cleanup_mode="stop")
        try:
            dsn = server.get_uri()
            await migrate(dsn)
            conn = await asyncpg.connect(dsn)
            try:
                await measure(conn, intents)
            finally:
                await conn.close()
        finally:
            server.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--intents", type=int, default=300_000)
    args = parser.parse_args()
    asyncio.run(run(args.intents))


if __name__ == "__main__":
    main()
