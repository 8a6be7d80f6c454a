"""kill -9 a real `router serve` while journey timers are due: after the restart every due
step fires exactly once, or is skipped and recorded when it is later than `max_lateness`."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from typing import Any

import asyncpg
import httpx

from tests.harness import API_KEY, SmtpSink, _free_port
from tests.journey_helpers import add_events, put_journey, until
from tests.router_processes import exit_report, start_router, wait_healthy

MEMBERS = 100


async def test_kill_with_timers_due_then_restart_fires_each_step_once(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    first = start_router(dsn, line_sim.base_url, smtp, port)
    conn = await asyncpg.connect(dsn)
    try:
        await wait_healthy(base)
        async with httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60
        ) as client:
            people = [{"member_id": f"m{i}", "email": f"m{i}@example.jp"} for i in range(MEMBERS)]
            r = await client.post("/v1/members/batch", json={"members": people})
            assert r.status_code == 200
            steps = [
                {"wait": "PT1S"},
                {"send": {"email": {"subject": "Cart", "text": "{{ member.member_id }}"}}},
            ]
            await put_journey(
                client,
                "cart",
                {"name": "Cart", "trigger": {"event": "cart"}, "quiet_hours": None, "steps": steps},
            )
            await put_journey(
                client,
                "strict",
                {
                    "name": "Strict",
                    "trigger": {"event": "cart"},
                    "quiet_hours": None,
                    "max_lateness": "PT1S",
                    "steps": [{"wait": "PT3S"}, *steps[1:]],
                },
            )
            await add_events(client, [(f"m{i}", "cart") for i in range(MEMBERS)])

        async def entered() -> bool:
            n: int = await conn.fetchval("SELECT count(*) FROM journey_runs")
            return n == 2 * MEMBERS

        await until(entered, 30)
        # Kill once some sends have fired (or the timers are at least due).
        await until(lambda: conn.fetchval("SELECT count(*) > 0 FROM journey_steps"), 30)
        first.send_signal(signal.SIGKILL)
        first.wait()
        # Every router down until the strict journey's sends are later than its max_lateness.
        await asyncio.sleep(4)
        second = start_router(dsn, line_sim.base_url, smtp, port)
        try:
            await wait_healthy(base)

            async def finished() -> bool:
                n: int = await conn.fetchval(
                    "SELECT count(*) FROM journey_runs WHERE status = 'active'"
                )
                return n == 0

            await until(finished, 60)
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=30) == 0, exit_report(second)
        per_step = await conn.fetch(
            "SELECT run_id, step, count(*) AS n, array_agg(outcome) AS outcomes"
            " FROM journey_steps GROUP BY run_id, step"
        )
        intents = await conn.fetch(
            "SELECT journey_run, count(*) AS n FROM intents GROUP BY journey_run"
        )
        outcomes = Counter(
            (journey, outcome)
            for journey, outcome in await conn.fetch(
                "SELECT journey_id, outcome FROM journey_steps"
            )
        )
    finally:
        if first.poll() is None:
            first.kill()
        await conn.close()
    assert len(per_step) == 2 * MEMBERS and all(r["n"] == 1 for r in per_step)
    assert all(r["n"] == 1 for r in intents)
    # The lenient journey sent to everyone once; the strict one's sends fell due while no
    # router ran, later than its max_lateness: skipped and recorded.
    assert outcomes[("cart", "sent")] == MEMBERS
    assert outcomes[("strict", "skipped")] == MEMBERS
    env = os.environ | {"ROUTER_DATABASE_URL": dsn}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router", "journeys", "status", "strict",
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines[0].startswith(f"{MEMBERS} entered, 0 active, {MEMBERS} completed")
    assert lines[-1].split(":")[0].split() == ["skipped", str(MEMBERS)]
    assert "max_lateness (PT1S)" in lines[-1]
    mailed = Counter(rcpt for m in smtp.mails for rcpt in m.rcpt_to)
    assert max(mailed.values()) == 1  # (a mail cut off by the kill is left uncertain)
