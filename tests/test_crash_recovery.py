"""kill -9 a real `router serve` process mid-delivery, restart two: nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from typing import Any

import asyncpg
import httpx

from router.store import deliveries
from tests.harness import API_KEY, DERIVED, SmtpSink, _free_port
from tests.router_processes import (
    UNFINISHED,
    add_members_and_intents,
    finish_with_two_routers,
    start_router,
    wait_healthy,
)

FRIENDS = 1200
MAIL_ONLY = 300


async def test_kill_mid_delivery_then_two_routers_finish_exactly_once(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    port = _free_port()
    first = start_router(dsn, line_sim.base_url, smtp, port)
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(base)
        await add_members_and_intents(base, FRIENDS, MAIL_ONLY)
        # Kill while deliveries are in flight.
        deadline = time.monotonic() + 30
        while len(line_sim.accepted_pushes()) < 200:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.005)
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()

    conn = await asyncpg.connect(dsn)
    try:
        by_status = dict(
            await conn.fetch("SELECT status, count(*) FROM deliveries GROUP BY status")
        )
        assert sum(by_status.values()) == FRIENDS + MAIL_ONLY
        assert by_status.get("pending", 0) + by_status.get("claimed", 0) > 0, by_status

        await finish_with_two_routers(conn, dsn, line_sim.base_url, smtp, UNFINISHED, 60)
        final = dict(await conn.fetch("SELECT status, count(*) FROM deliveries GROUP BY status"))
        uncertain = {
            r["address"]
            for r in await conn.fetch("SELECT address FROM deliveries WHERE status = 'uncertain'")
        }
    finally:
        await conn.close()

    # LINE: every friend exactly once (repeats were answered 409 by the retry key).
    pushed = Counter(r.body["to"] for r in line_sim.accepted_pushes())
    assert len(pushed) == FRIENDS and max(pushed.values()) == 1
    # Email: nobody twice; everyone once, except deliveries the crash left 'uncertain'.
    mailed = Counter(rcpt for m in smtp.mails for rcpt in m.rcpt_to)
    assert max(mailed.values()) == 1
    assert final.get("sent", 0) == FRIENDS + MAIL_ONLY - len(uncertain)
    assert set(mailed) | uncertain == {f"e{i}@example.jp" for i in range(MAIL_ONLY)}


CAMPAIGN_FRIENDS = 1500
CAMPAIGN_MAIL_ONLY = 100


async def test_kill_mid_fan_out_and_mid_multicast_then_restart_exactly_once(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    """Small fan-out chunks (so the kill lands between them) and multicasts that LINE accepts
    but answers late (so the kill lands while batches are with LINE, unrecorded)."""
    chunk = {"ROUTER_CAMPAIGNS_FAN_OUT_CHUNK": "40"}
    port = _free_port()
    first = start_router(dsn, line_sim.base_url, smtp, port, **chunk)
    base = f"http://127.0.0.1:{port}"
    conn = await asyncpg.connect(dsn)
    try:
        await wait_healthy(base)
        async with httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60
        ) as client:
            people = [
                {"member_id": f"f{i:05}", "email": f"f{i}@example.jp", "line_user_id": f"U{i:032x}"}
                for i in range(CAMPAIGN_FRIENDS)
            ] + [
                {"member_id": f"e{i:05}", "email": f"e{i}@example.jp"}
                for i in range(CAMPAIGN_MAIL_ONLY)
            ]
            resp = await client.post("/v1/members/batch", json={"members": people})
            assert resp.status_code == 200
            resp = await client.post(
                "/v1/audiences",
                data={"name": "all", "type": "email"},
                files={"file": ("all.csv", "\n".join(p["email"] for p in people).encode())},
            )
            assert resp.status_code == 201, resp.text
            line_sim.delay_next(1000, 5.0)  # accepted at once, answered after the kill
            resp = await client.post(
                "/v1/campaigns",
                json={"audience_ids": [resp.json()["id"]], "email": {"subject": "S", "text": "T"}},
            )
            assert resp.status_code == 202
        deadline = time.monotonic() + 30
        while len(line_sim.accepted_pushes()) < 3:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.005)
        first.send_signal(signal.SIGKILL)
        first.wait()
        line_sim.delay_next(0, 0.0)
        row = await conn.fetchrow("SELECT status, targeted FROM campaigns")
        assert row["status"] == "fanning_out" and 0 < row["targeted"] < len(people), dict(row)
        in_flight = await conn.fetchval("SELECT count(*) FROM send_groups WHERE status = 'claimed'")
        assert in_flight >= 3

        unfinished = (
            f"SELECT ({UNFINISHED}) + (SELECT count(*) FROM campaigns WHERE status = 'fanning_out')"
        )
        await finish_with_two_routers(conn, dsn, line_sim.base_url, smtp, unfinished, 90, **chunk)
        assert await conn.fetchval("SELECT count(*) FROM intents") == len(people)
        assert await conn.fetchval("SELECT count(DISTINCT member_id) FROM intents") == len(people)
        line_status = dict(
            await conn.fetch(f"SELECT status, count(*) {DERIVED} WHERE channel = 'line' GROUP BY 1")
        )
        assert line_status == {"sent": CAMPAIGN_FRIENDS}
    finally:
        if first.poll() is None:
            first.kill()
        await conn.close()

    # Every friend got the message exactly once: batches resent after the crash were answered
    # 409 under their own retry key, and none was split or re-formed.
    received = Counter(to for r in line_sim.accepted_pushes() for to in r.body["to"])
    assert len(received) == CAMPAIGN_FRIENDS and max(received.values()) == 1
    replays = [r for r in line_sim.received if r.status == 409]
    assert len(replays) >= 3
    mailed = Counter(rcpt for m in smtp.mails for rcpt in m.rcpt_to)
    assert max(mailed.values()) == 1


PAIR_FRIENDS = 400
PAIR_MAIL_ONLY = 120
PAIR_LOOPS = 4
PAIR_CLAIM_SIZE = 4


async def test_kill_one_of_two_routers_mid_delivery_the_other_finishes_exactly_once(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    """Both routers deliver; every email takes longer than a lease, so only renewed leases
    keep each router's sends its own. One is killed; the other sweeps up what the dead one
    held once its renewed leases run out, and finishes."""
    lease = {
        "ROUTER_WORKERS_LEASE_SECONDS": "1",
        "ROUTER_WORKERS_CONCURRENCY": str(PAIR_LOOPS),
        "ROUTER_WORKERS_CLAIM_SIZE": str(PAIR_CLAIM_SIZE),
        "ROUTER_EMAIL_CONNECTIONS": "12",
    }
    ports = [_free_port(), _free_port()]
    routers = [start_router(dsn, line_sim.base_url, smtp, p, **lease) for p in ports]
    conn = await asyncpg.connect(dsn)
    try:
        for port in ports:
            await wait_healthy(f"http://127.0.0.1:{port}")
        smtp.answer_data_after(1.5)
        line_sim.delay_next(40, 0.5)
        await add_members_and_intents(f"http://127.0.0.1:{ports[0]}", PAIR_FRIENDS, PAIR_MAIL_ONLY)
        # Kill one while both hold claims, some of them past their first lease.
        deadline = time.monotonic() + 30
        while len(smtp.mails) < 12:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        routers[0].send_signal(signal.SIGKILL)
        routers[0].wait()
        smtp.answer_data_after(0.2)

        deadline = time.monotonic() + 60
        while await conn.fetchval(UNFINISHED):
            assert time.monotonic() < deadline, "the surviving router did not finish the work"
            await asyncio.sleep(0.1)
        final = dict(await conn.fetch("SELECT status, count(*) FROM deliveries GROUP BY status"))
        in_doubt = await conn.fetch(
            "SELECT address, claim_token FROM deliveries WHERE status = 'uncertain'"
        )
        uncertain = {r["address"] for r in in_doubt}
        # A send of a router that was alive was never put in doubt, even for a while.
        doubted_then_sent = await conn.fetchval(
            "SELECT count(*) FROM deliveries WHERE status = 'sent' AND last_error = $1",
            deliveries.QUEUE.in_doubt.error if deliveries.QUEUE.in_doubt else None,
        )
        assert routers[1].poll() is None
    finally:
        await conn.close()
        for r in routers:
            if r.poll() is None:
                r.send_signal(signal.SIGTERM)
        assert routers[1].wait(timeout=30) == 0

    # LINE: every friend exactly once (what the dead router held was resent under the same
    # retry key and answered 409).
    pushed = Counter(r.body["to"] for r in line_sim.accepted_pushes())
    assert len(pushed) == PAIR_FRIENDS and max(pushed.values()) == 1
    # Email: nobody twice. 'uncertain' only for what the dead router was sending when it was
    # killed (at most the claim each of its loops held), never for the survivor's own sends,
    # whose first leases ran out while the SMTP server took its time.
    mailed = Counter(rcpt for m in smtp.mails for rcpt in m.rcpt_to)
    assert max(mailed.values()) == 1
    assert doubted_then_sent == 0
    assert len({r["claim_token"] for r in in_doubt}) <= PAIR_LOOPS
    assert len(uncertain) <= PAIR_LOOPS * PAIR_CLAIM_SIZE
    assert final.get("sent", 0) == PAIR_FRIENDS + PAIR_MAIL_ONLY - len(uncertain)
    assert set(mailed) | uncertain == {f"e{i}@example.jp" for i in range(PAIR_MAIL_ONLY)}
