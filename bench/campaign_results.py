"""What keeping campaign results costs where events and fallbacks are recorded, and what
reading them costs against counting rows.

`campaign_results` is kept by two statement-level insert triggers (migration
campaign_results): on `delivery_events` (one primary-key probe of `intents` per event that
is not `processed`) and on `deliveries` (fallbacks). The baseline, measured in the same run
on the same embedded PostgreSQL, is the same inserts with both triggers disabled. Prints,
for claims of `--claim` events recorded as the delivery worker records them (one INSERT per
claim): microseconds per claim with and without the trigger and the ratio; the same for a
fan-out chunk's `processed` events (which the trigger skips); and the time of the results'
read (`campaign_results` by primary key) against a count of the campaign's events over
`intents` and `delivery_events`, for a campaign of `--members` members.

Usage: python bench/campaign_results.py [--members N] [--claim N] [--claims N]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid

import asyncpg

from router.database import migrate

TRIGGERS = ("delivery_events_campaign_results", "deliveries_campaign_fallbacks")
READ = """
SELECT channel, outcome, sum(n)::bigint FROM campaign_results WHERE campaign_id = $1
GROUP BY channel, outcome
"""
COUNTED = """
SELECT e.channel, e.event, count(*) FROM intents i JOIN delivery_events e ON e.intent_id = i.id
WHERE i.campaign_id = $1 AND e.event <> 'processed' GROUP BY 1, 2
"""
INSERT_EVENTS = """
INSERT INTO delivery_events (event, intent_id, delivery_id, channel)
SELECT $1, i, gen_random_uuid(), 'email' FROM unnest($2::uuid[]) AS i
"""


async def seed(conn: asyncpg.Connection, members: int) -> tuple[uuid.UUID, list[uuid.UUID]]:
    campaign = uuid.uuid4()
    content = b"\x01" * 32
    await conn.execute(
        "INSERT INTO contents (id, body) VALUES ($1, '{}'::jsonb) ON CONFLICT DO NOTHING", content
    )
    await conn.execute(
        "INSERT INTO campaigns (id, audience_ids, template, request_sha256, status)"
        " VALUES ($1, '{}', '{}'::jsonb, '\\x00', 'sending')",
        campaign,
    )
    await conn.execute(
        "INSERT INTO members (member_id) SELECT 'm' || g FROM generate_series(1, $1) g", members
    )
    rows = await conn.fetch(
        "INSERT INTO intents (id, member_id, content_id, route, campaign_id)"
        " SELECT gen_random_uuid(), 'm' || g, $1, 'prefer_line', $2"
        " FROM generate_series(1, $3) g RETURNING id",
        content,
        campaign,
        members,
    )
    await conn.execute("ANALYZE")
    return campaign, [r["id"] for r in rows]


async def per_claim_us(
    conn: asyncpg.Connection, event: str, intents: list[uuid.UUID], claim: int, claims: int
) -> float:
    start = time.perf_counter()
    for n in range(claims):
        chunk = intents[(n * claim) % len(intents) :][:claim]
        await conn.execute(INSERT_EVENTS, event, chunk)
    return (time.perf_counter() - start) / claims * 1e6


async def triggers(conn: asyncpg.Connection, on: bool) -> None:
    verb = "ENABLE" if on else "DISABLE"
    await conn.execute(f"ALTER TABLE delivery_events {verb} TRIGGER {TRIGGERS[0]}")
    await conn.execute(f"ALTER TABLE deliveries {verb} TRIGGER {TRIGGERS[1]}")


async def timed_ms(conn: asyncpg.Connection, query: str, campaign: uuid.UUID) -> float:
    await conn.fetch(query, campaign)  # warm
    start = time.perf_counter()
    for _ in range(5):
        await conn.fetch(query, campaign)
    return (time.perf_counter() - start) / 5 * 1000


async def measure(conn: asyncpg.Connection, members: int, claim: int, claims: int) -> None:
    campaign, intents = await seed(conn, members)
    for event in ("delivered", "processed"):
        await triggers(conn, False)
        await per_claim_us(conn, event, intents, claim, 3)  # warm
        baseline = await per_claim_us(conn, event, intents, claim, claims)
        await triggers(conn, True)
        await per_claim_us(conn, event, intents, claim, 3)
        kept = await per_claim_us(conn, event, intents, claim, claims)
        print(
            f"record {claim} {event!r} events per claim: baseline (no trigger)"
            f" {baseline:,.0f} us, with campaign_results {kept:,.0f} us,"
            f" ratio {kept / baseline:.2f}"
        )
    # every member delivered once more, recorded with the trigger on
    for start in range(0, len(intents), 5000):
        await conn.execute(INSERT_EVENTS, "delivered", intents[start : start + 5000])
    counted = await timed_ms(conn, COUNTED, campaign)
    read = await timed_ms(conn, READ, campaign)
    print(
        f"results of a {members:,}-member campaign: counting rows (baseline) {counted:,.1f} ms,"
        f" campaign_results {read:,.2f} ms, ratio {read / counted:.4f}"
    )


async def main(members: int, claim: int, claims: int) -> None:
    import pgserver

    with tempfile.TemporaryDirectory(prefix="bench-campaign-results-") as tmp:
        server = pgserver.get_server(tmp, cleanup_mode="stop")
        try:
            dsn = server.get_uri()
            await migrate(dsn)
            conn = await asyncpg.connect(dsn)
            try:
                await measure(conn, members, claim, claims)
            finally:
                await conn.close()
        finally:
            server.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=200_000)
    parser.add_argument("--claim", type=int, default=100)
    parser.add_argument("--claims", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(main(args.members, args.claim, args.claims))
