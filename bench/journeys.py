"""Journey timers at scale: --members members enter one journey at once, their first step
(a personalised send) due at the same instant, against the intake rate of the same intents
posted directly, in the same run.

Starts PostgreSQL (embedded, or DATABASE_URL), the LINE simulator and an SMTP sink, then on
two fresh databases with the same members (each a LINE friend):
  (j) a router with workers; a journey `{"wait": {"after": "PT1S", "of": "event.due_at"}},
      {"send": ...personal text...}` is stored (PUT /v1/journeys/bench) and one event per
      member written in one SQL statement (all of them at once, as no API request can), each
      with `due_at` --lead seconds ahead less the wait's second (so every first step falls
      due in the same second). Printed: seconds for every member to enter (runs created), and from
      the due time until every send step has fired (its intent accepted and the run
      advanced): timers fired per second.
  (a) a router with workers as well (deliveries compete for the CPU as in (j)); the same
      intents (same texts, pushed) posted directly with POST /v1/intents/batch in batches of
      --batch: intents accepted per second.
The ratio (j)/(a) is the figure to watch (goal >= 0.5).

Usage, from the tree's root with the venv active:
    PYTHONPATH=$PWD python bench/journeys.py [--members 100000] [--lead 60] [--batch 10000]
Reduced while developing: --members 5000 --lead 15.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx

# Run as a script, this directory is on the path: the helpers of bench/throughput.py.
from throughput import (
    API_KEY,
    add_members,
    free_port,
    fresh_database,
    post_intents,
    process,
    router_env,
    wait_http,
)

TEXT = "20% off until Sunday, {{ member.member_id }}."


async def store_journey(base: str) -> None:
    definition = {
        "name": "Bench",
        "trigger": {"event": "bench_entered"},
        "quiet_hours": None,
        "steps": [
            {"wait": {"after": "PT1S", "of": "event.due_at"}},
            # The campaign name and text match what (a) posts.
            {"send": {"campaign": "bench-j", "email": {"subject": "Autumn sale", "text": TEXT}}},
        ],
    }
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60
    ) as client:
        r = await client.put("/v1/journeys/bench", json=definition)
        assert r.status_code in (200, 201), r.text


async def wait_for_count(conn: asyncpg.Connection, sql: str, target: int, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while (await conn.fetchval(sql)) < target:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{sql}: not {target} after {timeout}s")
        await asyncio.sleep(0.2)
    return time.perf_counter()


async def journey_figures(
    dsn: str, sim: str, smtp_port: int, args: argparse.Namespace
) -> tuple[float, float]:
    """(seconds for every member to enter, seconds from the due time to the last send)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with process(
        [sys.executable, "-m", "router", "serve"], router_env(dsn, sim, smtp_port, port, True)
    ):
        await wait_http(f"{base}/healthz")
        await add_members(base, args.members)
        conn = await asyncpg.connect(dsn)
        try:
            await store_journey(base)
            due = datetime.now(UTC) + timedelta(seconds=args.lead)
            start = time.perf_counter()
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO events (id, member_id, name, properties, occurred_at)"
                    " SELECT gen_random_uuid(), 'f' || i, 'bench_entered',"
                    "  jsonb_build_object('due_at', $2::text), now()"
                    " FROM generate_series(0, $1 - 1) AS i",
                    args.members,
                    (due - timedelta(seconds=1)).isoformat(),
                )
                await conn.execute("SELECT pg_notify('router_queues', 'journey_events')")
            entered = await wait_for_count(
                conn, "SELECT count(*) FROM journey_runs", args.members, args.lead + 600
            )
            if entered - start > args.lead:
                print(f"  warning: entering took longer than --lead ({entered - start:.1f} s)")
            due_at = start + args.lead
            fired = await wait_for_count(
                conn,
                "SELECT count(*) FROM journey_steps WHERE outcome = 'sent'",
                args.members,
                3600,
            )
            failed = await conn.fetchval(
                "SELECT count(*) FROM journey_steps WHERE outcome <> 'sent'"
            )
            if failed:
                print(f"  warning: {failed} steps did not send")
        finally:
            await conn.close()
    return entered - start, fired - due_at


async def direct_figures(dsn: str, sim: str, smtp_port: int, args: argparse.Namespace) -> float:
    """Seconds to post the same intents with POST /v1/intents/batch."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with process(
        [sys.executable, "-m", "router", "serve"], router_env(dsn, sim, smtp_port, port, True)
    ):
        await wait_http(f"{base}/healthz")
        await add_members(base, args.members)
        return await post_intents(base, 0, args.members, args.batch, "bench-j", personal=True)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--lead", type=float, default=60.0)
    parser.add_argument("--batch", type=int, default=10_000)
    args = parser.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="router-bench-") as tmp:
        dsn = os.environ.get("DATABASE_URL")
        server = None
        if not dsn:
            from pgserver.postgres_server import get_server

            server = get_server(tmp, cleanup_mode="delete")
            dsn = server.get_uri()
        sim_port, smtp_port = free_port(), free_port()
        sim = f"http://127.0.0.1:{sim_port}"
        sink = [py, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{smtp_port}", "-c",
                "aiosmtpd.handlers.Sink"]  # fmt: skip
        with (
            process(
                [
                    py,
                    "-m",
                    "router",
                    "line-simulator",
                    "--listen",
                    f"127.0.0.1:{sim_port}",
                    "--token",
                    "bench-token",
                ]
            ),  # fmt: skip
            process(sink),
        ):
            await wait_http(f"{sim}/__simulator/stats")
            figures = {}
            for name in ("journeys", "direct"):
                target = await fresh_database(dsn, f"bench_{name}")
                subprocess.run(
                    [py, "-m", "router", "migrate"],
                    env=os.environ | {"ROUTER_DATABASE_URL": target},
                    check=True,
                    capture_output=True,
                )
                figures[name] = target
            enter, fire = await journey_figures(figures["journeys"], sim, smtp_port, args)
            posted = await direct_figures(figures["direct"], sim, smtp_port, args)
        if server is not None:
            server.cleanup()
    n = args.members
    timers, intake = n / fire, n / posted
    print(f"(j) {n:,} members entered in {enter:.2f} s ({n / enter:,.0f} /s)")
    print(f"(j) every first step fired {fire:.2f} s after falling due: {timers:,.0f} timers/s")
    print(
        f"(a) the same intents via /v1/intents/batch: {posted:.2f} s, {intake:,.0f} intents/s"
        f" (batches of {args.batch:,})"
    )
    print(f"ratio (j)/(a) = {timers / intake:.2f}  (goal >= 0.5)")


if __name__ == "__main__":
    asyncio.run(main())
