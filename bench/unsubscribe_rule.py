"""What refusing members who unsubscribed from all promotional email (category '*') costs
the campaign fan-out and the send-time check: '*' is looked up beside the campaign's
category in the same probe of email_category_opt_outs's primary key (router/deliverability/rules.py, `refusal_sql`).

Seeds --members members in an embedded PostgreSQL (1% unsubscribed from 'newsletter', 1%
from all promotional email, 1% suppressed), then times the campaign rule over every member
(`campaign_refusal_sql`, as the fan-out evaluates it, one statement over the whole table)
against a baseline in the same run: the same rule without the '*' clause (the rule before
it). For a campaign without a category and one with 'newsletter'; the better of three runs
each. Prints milliseconds, the ratio rule/baseline, and how many members each refuses.

Usage: python bench/unsubscribe_rule.py [--members N]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time

import asyncpg

from router.database import migrate
from router.deliverability import rules


def _without_star(rule: str) -> str:
    """The rule as it was before '*': the opt-out look-up for the campaign's category only."""
    star = f"IN ('{rules.ALL_PROMOTIONAL}', "
    assert star in rule, "the rule looks '*' up beside the category"
    return rule.replace(star, "IN (")


async def timed(conn: asyncpg.Connection, rule: str) -> tuple[float, int]:
    query = f"SELECT count(*) FILTER (WHERE ({rule}) IS NOT NULL) FROM members m"
    best = float("inf")
    refused = 0
    for _ in range(3):
        started = time.perf_counter()
        refused = await conn.fetchval(query)
        best = min(best, time.perf_counter() - started)
    return best, refused


async def measure(conn: asyncpg.Connection, members: int) -> None:
    address = "('u' || n || '@example.jp')"
    await conn.execute(
        "INSERT INTO members (member_id, email, email_sha256)"
        f" SELECT 'm' || lpad(n::text, 9, '0'), {address}, sha256({address}::bytea)"
        f" FROM generate_series(1, {members}) n"
    )
    await conn.execute(
        "INSERT INTO email_category_opt_outs (member_id, category)"
        " SELECT 'm' || lpad(n::text, 9, '0'), CASE WHEN n % 200 = 0 THEN '*' ELSE 'newsletter' END"
        f" FROM generate_series(100, {members}, 100) n"
    )
    await conn.execute(
        "INSERT INTO email_suppressions (address, reason)"
        f" SELECT {address}, 'bounce' FROM generate_series(7, {members}, 100) n"
    )
    await conn.execute("ANALYZE")
    print(f"{members:,} members; the campaign rule over all of them (ms, best of 3)")
    print(f"{'category':<12}{'baseline':>10}{'rule':>10}{'ratio':>8}{'refused':>18}")
    for category in (None, "newsletter"):
        rule = rules.campaign_refusal_sql("promotional", category, False)
        base, base_refused = await timed(conn, _without_star(rule))
        ours, refused = await timed(conn, rule)
        print(
            f"{category or '(none)':<12}{base * 1000:>10.1f}{ours * 1000:>10.1f}"
            f"{ours / base:>7.2f}x{base_refused:>9,} -> {refused:,}"
        )


async def run(members: int) -> None:
    import pgserver

    with tempfile.TemporaryDirectory(prefix="bench-unsubscribe-") as tmp:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=200_000)
    asyncio.run(run(parser.parse_args().members))


if __name__ == "__main__":
    main()
