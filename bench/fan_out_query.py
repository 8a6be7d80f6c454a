"""The campaign fan-out's member query, with and without table statistics.

A campaign walks members in id order and keeps those in its audiences (router/campaigns.py,
`_TARGETS`). Right after a large upload PostgreSQL has no statistics on the new audience
entries yet, and a query whose plan depends on them can go badly wrong. This prints the time
of the first 5,000-member chunk of the query as the router writes it (one primary-key probe
of audience_entries per audience type, as LATERAL subqueries) against a baseline in the same run: one EXISTS over
audiences joined to their entries with the member's key chosen by CASE on the audience type.
Both run on the same embedded PostgreSQL, for a large audience (1.5 entries per member) and a
small one (one member in 200), before and after ANALYZE.

Usage: python bench/fan_out_query.py [--members N]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid

import asyncpg

from router import campaigns
from router.database import migrate
from router.reach import line_identity_join

BASELINE = """
SELECT m.member_id FROM members m
LEFT JOIN member_line_accounts l ON l.member_id = m.member_id AND l.account = 'default'
WHERE ($3::text IS NULL OR m.member_id > $3)
  AND EXISTS (
      SELECT 1 FROM audiences a JOIN audience_entries e ON e.audience_id = a.id
      WHERE a.id = ANY($1::uuid[])
        AND e.value_sha256 = CASE a.type WHEN 'email' THEN m.email_sha256
                                         WHEN 'phone' THEN m.phone_sha256
                                         WHEN 'line_user_id' THEN sha256(l.user_id::bytea)
                                         END)
  AND NOT EXISTS (
      SELECT 1 FROM audiences a JOIN audience_entries e ON e.audience_id = a.id
      WHERE a.id = ANY($2::uuid[])
        AND e.value_sha256 = CASE a.type WHEN 'email' THEN m.email_sha256
                                         WHEN 'phone' THEN m.phone_sha256
                                         WHEN 'line_user_id' THEN sha256(l.user_id::bytea)
                                         END)
ORDER BY m.member_id
LIMIT $4
"""
CHUNK = 5_000
# The member walk of the router's chunk statement (router/store/campaign_chunks.py).
ROUTER = f"""
SELECT m.member_id FROM members m {line_identity_join("'default'")} {campaigns.AUDIENCE_JOINS}
WHERE ($1::text IS NULL OR m.member_id > $1) AND {campaigns.AUDIENCE_WHERE}
ORDER BY m.member_id
LIMIT $8
"""


async def timed(conn: asyncpg.Connection, query: str, *args: object) -> tuple[float, list[str]]:
    """The better of two runs, so neither query pays alone for a cold cache."""
    best = float("inf")
    for _ in range(2):
        started = time.perf_counter()
        rows = await conn.fetch(query, *args)
        best = min(best, time.perf_counter() - started)
    return best, [r[0] for r in rows]


async def run(members: int) -> None:
    import pgserver

    with tempfile.TemporaryDirectory(prefix="bench-fan-out-") as tmp:
        server = pgserver.get_server(tmp, cleanup_mode="stop")
        try:
            dsn = server.get_uri()
            await migrate(dsn)
            conn = await asyncpg.connect(dsn)
            try:
                await measure(conn, members)
            finally:
                await conn.close()
        finally:
            server.cleanup()


async def measure(conn: asyncpg.Connection, members: int) -> None:
    # Statistics come only from the ANALYZE below, not from autovacuum at a random moment.
    for table in ("members", "audiences", "audience_entries"):
        await conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
    address = "('u' || n || '@example.jp')"
    await conn.execute(
        "INSERT INTO members (member_id, email, email_sha256)"
        f" SELECT 'm' || lpad(n::text, 9, '0'), {address}, sha256({address}::bytea)"
        f" FROM generate_series(1, {members}) n"
    )
    large, small = uuid.uuid4(), uuid.uuid4()
    await conn.execute(
        "INSERT INTO audiences (id, name, type) VALUES ($1, 'large', 'email'),"
        " ($2, 'small', 'email')",
        large,
        small,
    )
    await conn.execute(
        f"INSERT INTO audience_entries SELECT $1, sha256({address}::bytea)"
        f" FROM generate_series(1, {members * 3 // 2}) n",
        large,
    )
    await conn.execute(
        f"INSERT INTO audience_entries SELECT $1, sha256({address}::bytea)"
        f" FROM generate_series(1, {members}, 200) n",
        small,
    )
    print(f"{members:,} members; first chunk of {CHUNK:,} (ms)")
    print(f"{'statistics':<14}{'audience':<10}{'baseline':>10}{'router':>10}{'ratio':>8}")
    for statistics in ("none", "analyzed"):
        for name, audience in (("large", large), ("small", small)):
            base, expected = await timed(conn, BASELINE, [audience], [], None, CHUNK)
            ours, found = await timed(conn, ROUTER, None, [audience], [], [], [], [], [], CHUNK)
            assert found == expected, "the two queries disagree"
            print(
                f"{statistics:<14}{name:<10}{base * 1000:>10.1f}{ours * 1000:>10.1f}"
                f"{base / ours:>7.1f}x"
            )
        await conn.execute("ANALYZE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=200_000)
    asyncio.run(run(parser.parse_args().members))


if __name__ == "__main__":
    main()
