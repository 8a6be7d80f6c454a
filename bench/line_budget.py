"""The LINE half of a campaign with and without a LINE budget, same friends, same run.

Everything runs in this one process (embedded PostgreSQL in a temporary directory, or
DATABASE_URL; the LINE simulator at LINE's default limits; one router). --friends linked LINE
friends are written straight into PostgreSQL with a line_user_id audience of all of them.
Each campaign is route line_only, multicast, with send_at --delay seconds after its POST, so
its fan-out is over before its LINE half starts; the figure is seconds from send_at until
every LINE delivery is final. Rounds alternate:

  baseline  no budget (the default "included_only" with no plan set: nothing to reserve,
            so the send path makes no budget statement)
  budget    "line_budget": {"max_messages": friends + 1}: every send group reserves its
            recipients in PostgreSQL before its multicast

and the best of --rounds of each is compared: ratio = budget / baseline (target <= 1.10).
On a loaded machine the rounds vary more than the budget costs, so the time spent inside the
budget check itself (`LineBudgetGate.reserve` and `release`, summed over the run's budget
rounds, however many loops await them at once) is printed too, per round and as a share of
the best budget round (an upper bound: an await also waits for the loop's other work, the
simulator's included). Last, on a quiet loop, one reservation of a 500-recipient send group is
timed alone (--alone times), and printed against the baseline's LINE half per send group.

Usage: python bench/line_budget.py [--friends N] [--rounds R] [--delay S] [--alone N]
(defaults: 20,000 friends, 2 rounds, 3 s; the quiet-machine run uses --friends 200000)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from linesim import LineSimulator
from router.database import migrate
from router.delivery.line_budget_gate import LineBudgetGate
from tests.harness import LINE_TOKEN, running_router


async def seed(dsn: str, friends: int) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO members (member_id) SELECT 'f' || lpad(i::text, 8, '0')"
            " FROM generate_series(0, $1 - 1) i",
            friends,
        )
        await conn.execute(
            "INSERT INTO member_line_accounts (member_id, account, user_id, friend)"
            " SELECT 'f' || lpad(i::text, 8, '0'), 'default', 'U' || md5('f' || i), true"
            " FROM generate_series(0, $1 - 1) i",
            friends,
        )
        return [r[0] for r in await conn.fetch("SELECT user_id FROM member_line_accounts")]
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
        await conn.execute("UPDATE audiences SET updated_at = now() WHERE id = $1", audience_id)
    finally:
        await conn.close()
    return audience_id


async def line_half(
    router: Any, audience_id: str, friends: int, text: str, delay: float, **extra: Any
) -> float:
    """Seconds from the campaign's send_at until every LINE delivery of it is final."""
    send_at = datetime.now(UTC) + timedelta(seconds=delay)
    r = await router.client.post(
        "/v1/campaigns",
        json={
            "audience_ids": [audience_id],
            "route": "line_only",
            "line": {"messages": [{"type": "text", "text": text}]},
            "send_at": send_at.isoformat(),
        }
        | extra,
    )
    assert r.status_code == 202, r.text
    campaign_id = r.json()["id"]
    while True:
        view = (await router.client.get(f"/v1/campaigns/{campaign_id}")).json()
        final = sum(
            c["deliveries"]
            for c in view["deliveries"]
            if c["channel"] == "line" and c["status"] in ("sent", "failed", "uncertain")
        )
        if view["status"] != "fanning_out" and final == friends:
            sent = sum(
                c["deliveries"]
                for c in view["deliveries"]
                if c["channel"] == "line" and c["status"] == "sent"
            )
            assert sent == friends, view["deliveries"]
            return (datetime.now(UTC) - send_at).total_seconds()
        assert datetime.now(UTC) < send_at + timedelta(minutes=5), view
        await asyncio.sleep(0.1)


class GateClock:
    """Seconds spent in the budget check's reserve and release, and how many calls."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0

    def wrap(self, name: str) -> None:
        real = getattr(LineBudgetGate, name)

        async def timed(gate: LineBudgetGate, *args: Any) -> Any:
            started = time.perf_counter()
            try:
                return await real(gate, *args)
            finally:
                self.seconds += time.perf_counter() - started
                self.calls += 1

        setattr(LineBudgetGate, name, timed)


async def reservation_alone(router: Any, times: int) -> float:
    """Seconds of one reservation of a 500-recipient group under a stored budget, the best of
    `times` (the asks name no real delivery: the statements' cost, not a multicast's)."""
    from uuid import uuid4

    from router.store import line_budgets
    from router.store.line_budgets import Ask

    pool = router.runtime.pool
    budget_id = uuid4()
    async with pool.acquire() as conn:
        await line_budgets.create(conn, budget_id, "default", "unlimited")
    best = float("inf")
    for _ in range(times):
        asks = [Ask(uuid4(), budget_id) for _ in range(500)]
        started = time.perf_counter()
        await line_budgets.reserve(pool, "default", None, asks, None, [uuid4()])
        await line_budgets.release(pool, "default", 500)
        best = min(best, time.perf_counter() - started)
    return best


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--friends", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--delay", type=float, default=3.0)
    parser.add_argument("--alone", type=int, default=50)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for noisy in ("httpx", "pgserver"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-line-budget-pg-") as tmp:
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
    baseline: list[float] = []
    budget: list[float] = []
    gate = GateClock()
    gate.wrap("reserve")
    gate.wrap("release")
    try:
        async with running_router(dsn, sim.base_url, None) as router:
            sim.set_followers(await seed(dsn, friends))
            audience_id = await audience(router, dsn, friends)
            delay = args.delay + friends / 20_000
            for n in range(args.rounds):
                baseline.append(
                    await line_half(router, audience_id, friends, f"baseline {n}", delay)
                )
                budget.append(
                    await line_half(
                        router,
                        audience_id,
                        friends,
                        f"budget {n}",
                        delay,
                        line_budget={"max_messages": friends + 1},
                    )
                )
            alone = await reservation_alone(router, args.alone)
    finally:
        await sim.stop()
    best_base, best_budget = min(baseline), min(budget)
    print(f"friends: {friends:,}, rounds: {args.rounds}")
    print(
        "LINE half, no budget (baseline): "
        + ", ".join(f"{s:.2f}" for s in baseline)
        + f" s; best {best_base:.2f} s, {friends / best_base:,.0f} recipients/s"
    )
    print(
        "LINE half, max_messages budget: "
        + ", ".join(f"{s:.2f}" for s in budget)
        + f" s; best {best_budget:.2f} s, {friends / best_budget:,.0f} recipients/s"
    )
    print(f"ratio budget/baseline: {best_budget / best_base:.3f} (target <= 1.10)")
    groups = -(-friends // 500)
    per_group = best_base / groups
    print(
        f"one reservation alone (500 recipients, one group): {alone * 1000:.2f} ms;"
        f" baseline LINE half per send group: {per_group * 1000:.1f} ms;"
        f" ratio {alone / per_group:.1%} added per group"
    )
    per_round = gate.seconds / max(1, args.rounds)
    print(
        f"budget check: {gate.calls} calls, {gate.seconds:.3f} s in all,"
        f" {per_round:.3f} s per budget round = {per_round / best_budget:.1%} of its best"
    )


if __name__ == "__main__":
    asyncio.run(main())
