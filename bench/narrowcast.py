"""A campaign's LINE part as multicasts (the baseline) and as one narrowcast, same friends.

Everything runs in this one process (embedded PostgreSQL in a temporary directory, or
DATABASE_URL; the LINE simulator at LINE's default limits; one router): the figures are the
router's own cost, on a loop it shares with the simulator. Steps:

  seed      --friends linked LINE friends, written straight into PostgreSQL, and a
            line_user_id audience of all of them (not a figure)
  sync      POST /v1/audiences/{id}/line-sync: seconds and requests. The router's spacing of
            upload requests (LINE: 60 a minute) is shortened to 10 ms here, so this is the
            router's cost, not LINE's pacing (which adds ~1 s per 10,000 friends).
  multicast (baseline) a campaign to the audience, LINE text, route line_only: seconds from
            the POST until every LINE delivery is final (and until the fan-out ended: the
            multicasts go out while it runs), LINE requests (multicasts), LINE recipients/s.
  narrowcast the same with "line_delivery": "narrowcast" and other text: seconds from the
            POST until every LINE delivery is final (the narrowcast goes once the fan-out
            has ended: the time after that is its own), LINE requests (1 narrowcast + progress
            polls, every 0.2 s here), and the part of that spent waiting for LINE (the
            simulator's narrowcast takes --line-seconds, split between waiting and sending).
  ratio     multicast seconds / narrowcast seconds, and LINE requests both ways.

Usage: python bench/narrowcast.py [--friends N] [--line-seconds S]
(defaults: 20,000 friends, 0.5 s; the quiet-machine run uses --friends 500000)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import tempfile
import time
from typing import Any

import asyncpg

from linesim import NARROWCAST_PATH, NARROWCAST_PROGRESS_PATH, LineSimulator
from router.database import migrate
from router.line import audience_sync
from tests.harness import LINE_TOKEN, running_router


async def seed(dsn: str, friends: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO members (member_id)"
            " SELECT 'f' || lpad(i::text, 8, '0') FROM generate_series(0, $1 - 1) i",
            friends,
        )
        await conn.execute(
            "INSERT INTO member_line_accounts (member_id, account, user_id, friend)"
            " SELECT 'f' || lpad(i::text, 8, '0'), 'default', 'U' || md5('f' || i), true"
            " FROM generate_series(0, $1 - 1) i",
            friends,
        )
    finally:
        await conn.close()


async def audience(router: Any, dsn: str, friends: int) -> str:
    first = await router.client.post(
        "/v1/audiences",
        data={"name": "friends", "type": "line_user_id"},
        files={"file": ("ids.csv", b"U" + b"0" * 32, "text/csv")},
    )
    assert first.status_code == 201, first.text
    audience_id: str = first.json()["id"]
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO audience_entries (audience_id, value_sha256)"
            " SELECT $1, sha256(convert_to('U' || md5('f' || i), 'UTF8'))"
            " FROM generate_series(0, $2 - 1) i ON CONFLICT DO NOTHING",
            audience_id,
            friends,
        )
        # The entries were written behind the API's back: the audience is as uploaded now.
        await conn.execute("UPDATE audiences SET updated_at = now() WHERE id = $1", audience_id)
    finally:
        await conn.close()
    return audience_id


async def until_final(
    router: Any, campaign_id: str, friends: int, started: float
) -> tuple[dict[str, Any], float]:
    """The campaign's view once every LINE delivery is final, and when its fan-out ended."""
    fanned_out = 0.0
    while True:
        view: dict[str, Any] = (await router.client.get(f"/v1/campaigns/{campaign_id}")).json()
        final = sum(
            c["deliveries"]
            for c in view["deliveries"]
            if c["channel"] == "line" and c["status"] in ("sent", "failed", "uncertain")
        )
        if view["status"] != "fanning_out" and not fanned_out:
            fanned_out = time.perf_counter() - started
        if fanned_out and final == friends:
            return view, fanned_out
        # Each read counts the campaign's deliveries: not so often that it slows what it times.
        await asyncio.sleep(0.25)


async def campaign(router: Any, audience_id: str, text: str, **extra: Any) -> str:
    r = await router.client.post(
        "/v1/campaigns",
        json={
            "audience_ids": [audience_id],
            "route": "line_only",
            "line": {"messages": [{"type": "text", "text": text}]},
        }
        | extra,
    )
    assert r.status_code == 202, r.text
    campaign_id: str = r.json()["id"]
    return campaign_id


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--friends", type=int, default=20_000)
    parser.add_argument("--line-seconds", type=float, default=0.5)
    args = parser.parse_args()
    audience_sync.REQUEST_SPACING_SECONDS = 0.01
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-narrowcast-pg-") as tmp:
        url = os.environ.get("DATABASE_URL")
        server = None
        if not url:
            import pgserver

            server = pgserver.get_server(tmp, cleanup_mode="stop")
            url = server.get_uri()
        try:
            await run(url, args)
        finally:
            if server is not None:
                server.cleanup()


async def run(dsn: str, args: argparse.Namespace) -> None:
    await migrate(dsn)
    sim = LineSimulator(access_tokens=[LINE_TOKEN])
    await sim.start()
    friends = args.friends
    try:
        sim.set_audience_limit(requests=100_000)
        sim.set_narrowcast_timing(waiting=args.line_seconds / 2, sending=args.line_seconds / 2)
        env = {"ROUTER_LINE_NARROWCAST_POLL_SECONDS": "0.2", "ROUTER_LINE_TIMEOUT_SECONDS": "30"}
        async with running_router(dsn, sim.base_url, None, **env) as router:
            await seed(dsn, friends)
            conn = await asyncpg.connect(dsn)
            ids = [r[0] for r in await conn.fetch("SELECT user_id FROM member_line_accounts")]
            await conn.close()
            sim.set_followers(ids)
            audience_id = await audience(router, dsn, friends)

            started = time.perf_counter()
            synced = await router.client.post(f"/v1/audiences/{audience_id}/line-sync")
            sync_seconds = time.perf_counter() - started
            assert synced.status_code == 200, synced.text
            sync_requests = synced.json()["requests"]

            before = len(sim.accepted_pushes())
            started = time.perf_counter()
            baseline = await campaign(router, audience_id, "multicast")
            _, multicast_fan_out = await until_final(router, baseline, friends, started)
            multicast_seconds = time.perf_counter() - started
            multicasts = len(sim.accepted_pushes()) - before

            started = time.perf_counter()
            narrow = await campaign(router, audience_id, "narrowcast", line_delivery="narrowcast")
            view, narrowcast_fan_out = await until_final(router, narrow, friends, started)
            narrowcast_seconds = time.perf_counter() - started
            requests = [
                r for r in sim.received if r.path in (NARROWCAST_PATH, NARROWCAST_PROGRESS_PATH)
            ]
            [state] = sim.narrowcasts
            assert len(state.delivered) == friends, len(state.delivered)
            assert view["narrowcast"]["status"] == "succeeded", view["narrowcast"]
    finally:
        await sim.stop()

    print(f"friends: {friends:,}")
    print(f"sync: {sync_seconds:.2f} s, {sync_requests} upload requests")
    print(
        f"multicast (baseline): {multicast_seconds:.2f} s (fan-out {multicast_fan_out:.2f} s),"
        f" {multicasts} requests,"
        f" {friends / multicast_seconds:,.0f} LINE recipients/s"
    )
    print(
        f"narrowcast: {narrowcast_seconds:.2f} s (fan-out {narrowcast_fan_out:.2f} s, then"
        f" {narrowcast_seconds - narrowcast_fan_out:.2f} s to the end, {args.line_seconds:.2f} s"
        f" of it LINE's simulated sending), {len(requests)} requests"
        f" (1 narrowcast + {len(requests) - 1} progress polls),"
        f" {friends / narrowcast_seconds:,.0f} LINE recipients/s"
    )
    print(
        f"ratio multicast/narrowcast: {multicast_seconds / narrowcast_seconds:.2f}x time,"
        f" {multicasts / len(requests):.1f}x LINE requests"
    )


if __name__ == "__main__":
    asyncio.run(main())
