"""LINE's monthly quota is reserved in PostgreSQL before each request is sent, so requests in
flight at once, in any process, never together pass what is left; what cannot be covered
is not sent, and its email fallback goes out."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from router.database import create_pool
from router.store.line_quota import MonthlyQuota
from tests.harness import DERIVED, RouterUnderTest, SmtpSink
from tests.test_multicast import add_members, campaign, friend_id, multicasts, settled

GROUP = 401


async def deliveries_by_state(r: RouterUnderTest) -> dict[tuple[str, str], int]:
    async with r.runtime.pool.acquire() as conn:
        rows = await conn.fetch(
            f"SELECT channel, status, count(*) AS n {DERIVED} GROUP BY channel, status"
        )
    return {(row["channel"], row["status"]): row["n"] for row in rows}


async def test_concurrent_multicasts_never_pass_the_quota(
    router: RouterUnderTest, line_sim: Any, smtp: SmtpSink
) -> None:
    await add_members(router, 3 * GROUP)
    line_sim.set_monthly_quota(500)
    # LINE answers late, so the three multicasts are in flight together.
    line_sim.delay_next(3, 0.5)
    due = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    for group in range(3):
        emails = [f"f{i}@example.jp" for i in range(group * GROUP, (group + 1) * GROUP)]
        resp = await router.client.post(
            "/v1/audiences",
            data={"name": f"group {group}", "type": "email"},
            files={"file": ("list.csv", "\n".join(emails).encode(), "text/csv")},
        )
        assert resp.status_code == 201, resp.text
        campaign = {
            "audience_ids": [resp.json()["id"]],
            "email": {"subject": f"Sale {group}", "text": "20% off"},
            "send_at": due,
        }
        resp = await router.client.post("/v1/campaigns", json=campaign)
        assert resp.status_code == 202, resp.text
    # One group fits whole; the two that did not fit were never sent as they were: the 99
    # messages left went in a smaller group made from one of them, and the others fell back.
    expected = {
        ("line", "sent"): 500,
        ("line", "failed"): 3 * GROUP - 500,
        ("email", "sent"): 3 * GROUP - 500,
    }
    deadline = time.monotonic() + 30
    while (states := await deliveries_by_state(router)) != expected:
        assert time.monotonic() < deadline, states
        await asyncio.sleep(0.1)
    assert sorted(len(q.body["to"]) for q in multicasts(line_sim, None)) == [99, GROUP]
    assert line_sim.total_usage == 500
    assert len(smtp.mails) == 3 * GROUP - 500
    async with router.runtime.pool.acquire() as conn:
        errors = await conn.fetch(
            "SELECT DISTINCT last_error FROM deliveries WHERE channel = 'line' AND status = 'failed'"
        )
    assert {row["last_error"].split(" (")[0] for row in errors} <= {
        "not sent: LINE's monthly message quota has 99 left, fewer than the 401 needed",
        "not sent: LINE's monthly message quota is used up",
    }, errors
    figures = (await router.client.get("/v1/line/quota")).json()
    assert (figures["remaining"], figures["reserved"]) == (0, 0)


async def test_a_group_larger_than_the_quota_left_uses_it_to_the_last_message(
    router: RouterUnderTest, line_sim: Any, smtp: SmtpSink, dsn: str
) -> None:
    await add_members(router, 40)
    line_sim.set_monthly_quota(25)
    campaign_id = await campaign(router, 40)
    await settled(
        router,
        campaign_id,
        {("line", "sent"): 25, ("line", "failed"): 15, ("email", "sent"): 15},
    )
    [sent] = multicasts(line_sim, None)
    assert len(sent.body["to"]) == 25 and line_sim.total_usage == 25
    assert sorted(r for m in smtp.mails for r in m.rcpt_to) == sorted(
        f"f{i}@example.jp" for i in range(40) if friend_id(i) not in sent.body["to"]
    )
    conn = await asyncpg.connect(dsn)
    try:
        errors = await conn.fetch(
            "SELECT DISTINCT last_error FROM deliveries WHERE channel = 'line' AND status = 'failed'"
        )
    finally:
        await conn.close()
    [error] = [row["last_error"] for row in errors]
    assert "monthly message quota has 25 left, fewer than the 40 needed" in error


async def test_reservations_from_separate_processes_share_one_limit(dsn: str) -> None:
    # Two pools stand for two router processes on one database.
    pools = [await create_pool(dsn, 5) for _ in range(2)]
    try:
        ledgers = [MonthlyQuota(pool) for pool in pools]
        await ledgers[0].refresh(500, 0)
        answers = await asyncio.gather(
            *(ledgers[n % 2].reserve(uuid.uuid4(), 100, None) for n in range(10))
        )
        granted = [a for a in answers if a.granted]
        assert len(granted) == 5
        assert all(
            a.figures.remaining is not None and a.figures.remaining < 100
            for a in answers
            if not a.granted
        )
        figures = await ledgers[1].figures(None)
        assert figures is not None and figures.remaining == 0 and figures.reserved == 500
    finally:
        for pool in pools:
            await pool.close()


async def test_settling_releases_what_was_not_sent(dsn: str) -> None:
    pool = await create_pool(dsn, 2)
    try:
        ledger = MonthlyQuota(pool)
        await ledger.refresh(500, 0)
        failed, sent = uuid.uuid4(), uuid.uuid4()
        assert (await ledger.reserve(failed, 300, None)).granted
        assert (await ledger.reserve(sent, 200, None)).granted
        assert not (await ledger.reserve(uuid.uuid4(), 1, None)).granted
        await ledger.settle(failed, 0)
        await ledger.settle(sent, 200)
        figures = await ledger.figures(None)
        assert figures is not None
        assert (figures.sent_since_read, figures.reserved, figures.remaining) == (200, 0, 300)
        # LINE's next figures include what was sent; the count since starts again.
        await ledger.refresh(500, 200)
        assert await ledger.figures(60) is not None
        assert (await ledger.reserve(uuid.uuid4(), 300, 60)).granted
    finally:
        await pool.close()
