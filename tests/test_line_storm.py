"""A storm of LINE faults: pushes through 20 % 500s, 10 % 429s and 5 % late answers (LINE
carried the push out, the router timed out first) each reach their member exactly once."""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from linesim import parse_fault_rates
from tests.harness import LINE_TOKEN, SmtpSink, running_router
from tests.test_multicast import add_members, friend_id

PUSHES = 1000
RATES = {"500": 0.2, "429": 0.1, "timeout": 0.05}


async def test_every_push_arrives_once_through_the_storm(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    env = {
        "ROUTER_LINE_TIMEOUT_SECONDS": "0.5",
        "ROUTER_WORKERS_MAX_ATTEMPTS": "30",
        "ROUTER_WORKERS_CONCURRENCY": "8",
        "ROUTER_LINE_MULTICAST": "false",
    }
    async with running_router(dsn, line_sim.base_url, smtp, **env) as r:
        await add_members(r, PUSHES)
        async with httpx.AsyncClient(base_url=line_sim.base_url) as control:
            resp = await control.post(
                "/__simulator/faults",
                json={"rates": {"rates": RATES, "seed": 10, "late_seconds": 0.8}},
            )
            assert resp.status_code == 200, resp.text
        intents = [
            {
                "member_id": f"f{i:05}",
                "route": "line_only",
                "line": {"messages": [{"type": "text", "text": f"hi {i}"}]},
            }
            for i in range(PUSHES)
        ]
        resp = await r.client.post("/v1/intents/batch", json={"intents": intents})
        assert resp.status_code == 200, resp.text
        deadline = time.monotonic() + 60
        while True:
            async with r.runtime.pool.acquire() as conn:
                states = dict(
                    await conn.fetch("SELECT status, count(*) FROM deliveries GROUP BY status")
                )
            if states == {"sent": PUSHES}:
                break
            assert "failed" not in states and time.monotonic() < deadline, states
            await asyncio.sleep(0.2)
    statuses = Counter(q.status for q in line_sim.received if q.path == "/v2/bot/message/push")
    # The storm happened: each kind of fault, and retries LINE recognised by their key.
    assert statuses[500] > PUSHES * 0.1 and statuses[429] > PUSHES * 0.05, statuses
    assert statuses[409] > 0, statuses
    received = Counter(q.body["to"] for q in line_sim.accepted_pushes())
    assert received == Counter(friend_id(i) for i in range(PUSHES))  # each once, none lost
    assert smtp.mails == []


async def test_rate_faults_are_reproducible_from_their_seed(line_sim: Any) -> None:
    async def statuses() -> list[int]:
        line_sim.reset()
        line_sim.set_fault_rates({"500": 0.3, "429": 0.2}, seed=3)
        async with httpx.AsyncClient(base_url=line_sim.base_url) as client:
            return [
                (
                    await client.post(
                        "/v2/bot/message/push",
                        json={"to": friend_id(1), "messages": [{"type": "text", "text": "x"}]},
                        headers={"Authorization": f"Bearer {LINE_TOKEN}"},
                    )
                ).status_code
                for _ in range(100)
            ]

    first = await statuses()
    assert first == await statuses()
    counts = Counter(first)
    assert set(counts) == {200, 429, 500} and 15 < counts[500] < 45, counts


def test_fault_rates_from_the_command_line() -> None:
    assert parse_fault_rates("500=0.2,429=0.1,timeout=0.05") == RATES
    for bad in ("500=2", "200=0.1", "late=0.1", "500=0.6,429=0.6", "500"):
        with pytest.raises(ValueError):
            parse_fault_rates(bad)


async def test_the_control_endpoint_refuses_bad_rates(line_sim: Any) -> None:
    async with httpx.AsyncClient(base_url=line_sim.base_url) as control:
        resp = await control.post("/__simulator/faults", json={"rates": {"rates": {"503": 1.5}}})
        assert resp.status_code == 400
        resp = await control.post("/__simulator/faults", json={"rates": {"rates": {"ok": 0.1}}})
        assert resp.status_code == 400 and "HTTP status" in resp.json()["message"]


async def test_line_simulator_command_takes_fault_rates() -> None:
    command = [sys.executable, "-m", "router", "line-simulator", "--listen", "127.0.0.1:0"]
    refused = await asyncio.create_subprocess_exec(
        *command, "--token", "t", "--faults", "500=2", stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await refused.communicate()
    assert refused.returncode == 2 and b"--faults" in stderr
    process = await asyncio.create_subprocess_exec(
        *command,
        "--token",
        "t",
        "--faults",
        "503=1",
        "--faults-seed",
        "4",
        "--channel-secret",
        "webhook-secret",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        base_url = line.decode().rsplit(" ", 1)[1].strip()
        async with httpx.AsyncClient(base_url=base_url) as client:
            resp = await client.post(
                "/v2/bot/message/push",
                json={"to": friend_id(1), "messages": [{"type": "text", "text": "x"}]},
                headers={"Authorization": "Bearer t"},
            )
            assert resp.status_code == 503
            # webhooks it sends are signed with the secret given
            wiring = await client.post("/__simulator/webhook", json={"url": None})
            assert wiring.json()["signed"] is True
    finally:
        process.terminate()
        await process.wait()
