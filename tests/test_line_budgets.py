"""LINE budgets through the real path: campaigns and intents against the LINE simulator and
real SMTP, two routers reserving from one budget, the dry run, plans that sell no extras,
the usage endpoint and /metrics."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import httpx

from tests.harness import LINE_TOKEN, RouterUnderTest, SmtpSink, running_router
from tests.test_multicast import MULTICAST, add_members, friend_id

MAIL = {"subject": "Sale", "text": "This week only"}
LINE_MESSAGES = [{"type": "text", "text": "This week only"}]


async def audience(r: RouterUnderTest, friends: int) -> str:
    lines = [f"f{i}@example.jp" for i in range(friends)]
    resp = await r.client.post(
        "/v1/audiences",
        data={"name": "friends", "type": "email"},
        files={"file": ("list.csv", "\n".join(lines).encode(), "text/csv")},
    )
    assert resp.status_code == 201, resp.text
    audience_id: str = resp.json()["id"]
    return audience_id


def campaign_body(audience_id: str, budget: object, **more: object) -> dict[str, Any]:
    return {
        "audience_ids": [audience_id],
        "email": MAIL,
        "line": {"messages": LINE_MESSAGES},
        "line_budget": budget,
        **more,
    }


async def counts_when_done(r: RouterUnderTest, campaign_id: str, total: int) -> dict[str, int]:
    """The campaign's deliveries by channel and status once `total` members are settled."""
    deadline = time.monotonic() + 30
    while True:
        view = (await r.client.get(f"/v1/campaigns/{campaign_id}")).json()
        counts = {f"{d['channel']}:{d['status']}": d["deliveries"] for d in view["deliveries"]}
        done = counts.get("line:sent", 0) + counts.get("email:sent", 0)
        if view["status"] == "sending" and done == total:
            return counts
        assert time.monotonic() < deadline, (view["status"], counts)
        await asyncio.sleep(0.05)


def line_recipients(sim: Any) -> int:
    return sum(len(q.body["to"]) for q in sim.received if q.path == MULTICAST and q.status == 200)


async def consume(sim: Any, messages: int) -> None:
    """Use `messages` of the month at the simulator, as another sender of the account would."""
    async with httpx.AsyncClient(base_url=sim.base_url) as client:
        for start in range(0, messages, 500):
            to = [f"U{10**9 + i:032x}" for i in range(start, min(messages, start + 500))]
            resp = await client.post(
                MULTICAST,
                headers={"Authorization": f"Bearer {LINE_TOKEN}"},
                json={"to": to, "messages": LINE_MESSAGES},
            )
            assert resp.status_code == 200, resp.text


async def test_max_messages_holds_across_two_routers_and_the_dry_run_said_so(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    env = {"ROUTER_CAMPAIGNS_FAN_OUT_CHUNK": "25"}  # twelve groups, claimed by both routers
    async with (
        running_router(dsn, line_sim.base_url, smtp, **env) as first,
        running_router(dsn, line_sim.base_url, smtp, **env) as second,
    ):
        await add_members(first, 300)
        audience_id = await audience(first, 300)
        body = campaign_body(audience_id, {"max_messages": 100})
        resp = await second.client.post("/v1/campaigns", json={**body, "dry_run": True})
        assert resp.status_code == 200, resp.text
        dry = resp.json()
        assert dry["dry_run"] is True
        assert (dry["members"], dry["line_messages"], dry["email_messages"]) == (300, 100, 200)
        assert (dry["line_messages_included"], dry["extra_cost_yen"], dry["unreachable"]) == (
            100,
            0.0,
            0,
        )
        assert dry["budget"] == {"max_messages": 100}
        assert dry["by_policy"]["unlimited"]["line_messages"] == 300
        assert dry["by_policy"]["max_messages"]["email_messages"] == 200
        conn = await asyncpg.connect(dsn)
        try:  # nothing was written
            assert await conn.fetchval("SELECT count(*) FROM campaigns") == 0
            assert await conn.fetchval("SELECT count(*) FROM line_budgets") == 0
        finally:
            await conn.close()
        resp = await first.client.post("/v1/campaigns", json=body)
        assert resp.status_code == 202, resp.text
        counts = await counts_when_done(first, resp.json()["id"], 300)
    assert counts == {"line:sent": 100, "line:failed": 200, "email:sent": 200}
    assert line_recipients(line_sim) == 100 == dry["line_messages"]
    assert len(smtp.mails) == 200 == dry["email_messages"]
    conn = await asyncpg.connect(dsn)
    try:
        errors = await conn.fetch(
            "SELECT DISTINCT last_error FROM deliveries WHERE channel = 'line'"
            " AND status = 'failed'"
        )
        assert {e["last_error"].split(" (")[0] for e in errors} == {
            "not sent: LINE budget: max_messages 100 reached"
        }
        spent = await conn.fetchrow("SELECT spent_messages, spent_yen FROM line_budgets")
        assert tuple(spent) == (100, 0.0)
    finally:
        await conn.close()


async def test_included_only_on_a_free_plan_sends_what_the_month_has_left(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    await consume(line_sim, 150)
    async with running_router(dsn, line_sim.base_url, smtp, ROUTER_LINE_PLAN="free") as r:
        await add_members(r, 100)
        audience_id = await audience(r, 100)
        body = campaign_body(audience_id, "included_only")
        dry = (await r.client.post("/v1/campaigns", json={**body, "dry_run": True})).json()
        assert (dry["line_messages"], dry["email_messages"]) == (50, 50), dry
        resp = await r.client.post("/v1/campaigns", json=body)
        assert resp.status_code == 202, resp.text
        counts = await counts_when_done(r, resp.json()["id"], 100)
        assert counts == {"line:sent": 50, "line:failed": 50, "email:sent": 50}
        usage = (await r.client.get("/v1/line/accounts/default/usage")).json()
        assert (usage["plan"], usage["included"], usage["used"]) == ("free", 200, 200)
        assert (usage["included_left"], usage["price_of_next_message_yen"]) == (0, None)
        # A transactional intent is unlimited, but the free plan refuses past its limit.
        resp = await r.client.post(
            "/v1/intents",
            json={
                "member_id": "f00000",
                "kind": "transactional",
                "email": MAIL,
                "line": {"messages": LINE_MESSAGES},
            },
        )
        assert resp.status_code == 202, resp.text
        seen = await r.wait_for(resp.json()["id"], ("delivered", "sent"))
        [line] = [d for d in seen["deliveries"] if d["channel"] == "line"]
        assert line["status"] == "failed" and "not sent: LINE plan" in line["last_error"]
        metrics = (await r.client.get("/metrics")).text
        assert 'router_line_messages_used{account="default"} 200.0' in metrics
        assert 'router_line_included_left{account="default"} 0.0' in metrics
        assert 'router_line_spent_yen{account="default"} 0.0' in metrics
    assert line_recipients(line_sim) == 150 + 50


async def test_max_yen_on_standard_buys_extras_up_to_the_yen(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    env = {"ROUTER_LINE_PLAN": "standard", "ROUTER_LINE_INCLUDED_MESSAGES": "10"}
    async with running_router(dsn, line_sim.base_url, smtp, **env) as r:
        await add_members(r, 40)
        audience_id = await audience(r, 40)
        body = campaign_body(audience_id, {"max_yen": 30})
        dry = (await r.client.post("/v1/campaigns", json={**body, "dry_run": True})).json()
        assert (dry["line_messages"], dry["line_messages_included"], dry["extra_cost_yen"]) == (
            20,
            10,
            30.0,
        )
        assert dry["by_policy"]["included_only"]["line_messages"] == 10
        assert dry["by_policy"]["unlimited"]["extra_cost_yen"] == 90.0
        resp = await r.client.post("/v1/campaigns", json=body)
        counts = await counts_when_done(r, resp.json()["id"], 40)
        assert counts == {"line:sent": 20, "line:failed": 20, "email:sent": 20}
        usage = (await r.client.get("/v1/line/accounts/default/usage")).json()
        assert (usage["used"], usage["extra_messages"], usage["extra_cost_yen"]) == (20, 10, 30.0)
        assert (usage["monthly_fee_yen"], usage["price_of_next_message_yen"]) == (15_000, 3.0)
        missing = await r.client.get("/v1/line/accounts/shop2/usage")
        assert missing.status_code == 404 and "shop2" in missing.json()["detail"]
        # A single intent's own budget: none left for it, so email.
        resp = await r.client.post(
            "/v1/intents",
            json={
                "member_id": "f00001",
                "email": MAIL,
                "line": {"messages": LINE_MESSAGES},
                "line_budget": {"max_messages": 0},
            },
        )
        assert resp.status_code == 202, resp.text
        seen = await r.wait_for(resp.json()["id"], ("delivered", "sent"))
        [line] = [d for d in seen["deliveries"] if d["channel"] == "line"]
        assert "not sent: LINE budget: max_messages 0 reached" in line["last_error"]
        for bad in ({"max_messages": -1}, {"max_messages": 1, "max_yen": 2}, "cheap", {"x": 1}):
            resp = await r.client.post("/v1/campaigns", json=campaign_body(audience_id, bad))
            assert resp.status_code == 400 and "line_budget" in resp.text, (bad, resp.text)
    assert line_recipients(line_sim) == 20
    assert friend_id(0)  # the members are the simulator's friends by these IDs


async def test_a_crash_between_reservation_and_send_never_reserves_twice(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    """The worker dies (an exception stands in for kill -9) after its reservation committed
    and before the multicast: the group's lease runs out, another claim sends the granted
    recipients without reserving them again, and the budget is never passed."""
    env = {"ROUTER_WORKERS_LEASE_SECONDS": "1"}
    async with running_router(dsn, line_sim.base_url, smtp, **env) as r:
        line = r.runtime.channels["line"]
        real_send_group = line.send_group  # type: ignore[attr-defined]
        crashes: list[str] = []

        async def crash_once(group: Any) -> Any:
            if not crashes:
                crashes.append(str(group.group_id))
                raise RuntimeError("the worker died before LINE was asked")
            return await real_send_group(group)

        line.send_group = crash_once  # type: ignore[attr-defined]
        await add_members(r, 30)
        audience_id = await audience(r, 30)
        resp = await r.client.post(
            "/v1/campaigns", json=campaign_body(audience_id, {"max_messages": 20})
        )
        counts = await counts_when_done(r, resp.json()["id"], 30)

    assert crashes  # the fault happened, after the reservation
    assert counts == {"line:sent": 20, "line:failed": 10, "email:sent": 10}
    assert line_recipients(line_sim) == 20
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT spent_messages FROM line_budgets") == 20
        # the group was reserved once, its refused deliveries marked so a retry leaves them out
        assert await conn.fetchval("SELECT bool_and(line_budget_reserved) FROM send_groups")
        refused = await conn.fetchval("SELECT count(*) FROM deliveries WHERE line_budget_refused")
        assert refused == 10
    finally:
        await conn.close()
