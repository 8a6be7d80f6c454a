"""What the SendGrid batch hold costs the email claim (router/store/deliveries.py `QUEUE`):
the claim reads `mail_batches.hold` only for an intent with a `batch_id`, and the send-time
refusal looks up the address-only member of an intent without one
(router/deliverability/rules.py `SEND_TIME_REFUSAL_SQL`).

Seeds --deliveries pending email deliveries in an embedded PostgreSQL (half to members, half
to recipients known only by an address; --batched percent of the intents in a batch that is
not held), then times the email lane's claim statement (--claim rows at a time, inside a
transaction rolled back after each run, so every run claims the same rows) against a baseline
in the same run: the same statement without the hold column and with the refusal reading
`i.member_id` alone (the claim before these). Prints the median and best milliseconds of
--runs runs of each and the ratio claim/baseline.

Usage: python bench/batch_hold_claim.py [--deliveries N] [--claim N] [--batched PCT] [--runs N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid

import asyncpg

import channels.email  # noqa: F401 - registers the email channel's send-time rules
from router.database import migrate
from router.deliverability import rules
from router.store import deliveries


def baseline_sql(sql: str) -> str:
    """The claim statement as it was before the batch hold."""
    hold = f", {deliveries.BATCH_HOLD_SQL} AS batch_hold"
    member = f"coalesce(i.member_id, {rules.address_only_id_sql('d.address')})"
    assert hold in sql and member in sql, "the claim reads the hold and the address-only member"
    return sql.replace(hold, "").replace(member, "i.member_id")


async def seed(conn: asyncpg.Connection, n: int, batched: int) -> None:
    await conn.execute(
        'INSERT INTO contents (id, body) VALUES (\'\\x01\', \'{"email": {"subject": "s"}}\')'
    )
    await conn.execute("INSERT INTO mail_batches (batch_id) VALUES ('bench-batch')")
    address = "('u' || n || '@example.jp')"
    await conn.execute(
        "INSERT INTO members (member_id, email, email_sha256)"
        f" SELECT 'm' || n, {address}, sha256({address}::bytea)"
        f" FROM generate_series(1, {n}, 2) n"
    )
    await conn.execute(
        "INSERT INTO intents (id, member_id, email_address, content_id, route, kind, category,"
        " batch_id)"
        f" SELECT md5(n::text)::uuid, CASE WHEN n % 2 = 1 THEN 'm' || n END,"
        f" CASE WHEN n % 2 = 0 THEN {address} END, '\\x01', 'email_only', 'promotional',"
        " 'news', CASE WHEN n % 100 < $1 THEN 'bench-batch' END"
        f" FROM generate_series(1, {n}) n",
        batched,
    )
    await conn.execute(
        "INSERT INTO deliveries (intent_id, channel, address, status, next_attempt_at)"
        f" SELECT md5(n::text)::uuid, 'email', {address}, 'pending', now() - interval '1 hour'"
        f" FROM generate_series(1, {n}) n"
    )
    await conn.execute("ANALYZE")


async def timed(conn: asyncpg.Connection, sql: str, claim: int, runs: int) -> list[float]:
    took: list[float] = []
    for _ in range(runs):
        tx = conn.transaction()
        await tx.start()
        try:
            started = time.perf_counter()
            rows = await conn.fetch(sql, "email", claim, uuid.uuid4(), 30.0)
            took.append(time.perf_counter() - started)
            assert len(rows) == claim
        finally:
            await tx.rollback()
    return took


async def run(n: int, claim: int, batched: int, runs: int) -> None:
    import pgserver

    with tempfile.TemporaryDirectory(prefix="bench-batch-hold-") as tmp:
        server = pgserver.get_server(tmp, cleanup_mode="stop")
        try:
            dsn = server.get_uri()
            await migrate(dsn)
            conn = await asyncpg.connect(dsn)
            try:
                await seed(conn, n, batched)
                ours_sql = deliveries.QUEUE.claim_sql("email")
                base_sql = baseline_sql(ours_sql)
                await timed(conn, ours_sql, claim, 3)  # warm both plans and caches
                await timed(conn, base_sql, claim, 3)
                base: list[float] = []
                ours: list[float] = []
                for _ in range(runs // 5 or 1):  # interleaved, so load hits both alike
                    base += await timed(conn, base_sql, claim, 5)
                    ours += await timed(conn, ours_sql, claim, 5)
            finally:
                await conn.close()
        finally:
            server.cleanup()
    print(
        f"{n:,} pending email deliveries, {batched}% of intents in a batch; claims of {claim}"
        f" ({len(base)} runs each, ms)"
    )
    print(f"{'':<10}{'median':>10}{'best':>10}")
    for name, took in (("baseline", base), ("claim", ours)):
        print(f"{name:<10}{statistics.median(took) * 1000:>10.2f}{min(took) * 1000:>10.2f}")
    ratio = statistics.median(ours) / statistics.median(base)
    print(f"ratio claim/baseline (median): {ratio:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=200_000)
    parser.add_argument("--claim", type=int, default=200)
    parser.add_argument("--batched", type=int, default=10)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(run(args.deliveries, args.claim, args.batched, args.runs))


if __name__ == "__main__":
    main()
