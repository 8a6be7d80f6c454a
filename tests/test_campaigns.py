"""Campaigns over real HTTP: audience arithmetic, fan-out through the outbox, cancel, replays."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import asyncpg

from tests.harness import RouterUnderTest, SmtpSink, running_router

MAIL = {"subject": "Coupon", "text": "10% off for registered members"}


async def audience(r: RouterUnderTest, name: str, lines: list[str], kind: str = "email") -> str:
    body = "\n".join(lines).encode()
    resp = await r.client.post(
        "/v1/audiences",
        data={"name": name, "type": kind},
        files={"file": ("list.csv", body, "text/csv")},
    )
    assert resp.status_code in (200, 201), resp.text
    audience_id: str = resp.json()["id"]
    return audience_id


async def members(r: RouterUnderTest, count: int) -> None:
    people = [
        {"member_id": f"m{i:03}", "email": f"m{i}@example.jp"}
        | ({"line_user_id": f"U{i:032x}"} if i % 2 == 0 else {})
        for i in range(count)
    ]
    resp = await r.client.post("/v1/members/batch", json={"members": people})
    assert resp.status_code == 200


def recipients(body: dict[str, Any]) -> list[str]:
    """The user IDs a push (`to`: one ID) or a multicast (`to`: a list) was sent to."""
    to = body["to"]
    return to if isinstance(to, list) else [to]


async def wait_status(r: RouterUnderTest, campaign_id: str, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while True:
        body: dict[str, Any] = (await r.client.get(f"/v1/campaigns/{campaign_id}")).json()
        if body["status"] == status:
            return body
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.05)


async def test_union_minus_exclusions_each_member_once(
    router: RouterUnderTest, line_sim: Any, smtp: SmtpSink
) -> None:
    await members(router, 10)
    registered = await audience(router, "registered", [f"m{i}@example.jp" for i in range(0, 8)])
    newsletter = await audience(router, "newsletter", [f"m{i}@example.jp" for i in range(5, 10)])
    bought = await audience(
        router, "bought", ["+81 90 0000 0000", *(f"U{i:032x}" for i in (2, 4))], "line_user_id"
    )
    resp = await router.client.post(
        "/v1/campaigns",
        json={
            "name": "coupon",
            "audience_ids": [registered, newsletter],
            "exclude_audience_ids": [bought],
            "email": MAIL,
        },
    )
    assert resp.status_code == 202, resp.text
    body = await wait_status(router, resp.json()["id"], "sending")
    assert (body["targeted"], body["accepted"], body["rejected"]) == (8, 8, 0)
    deadline = time.monotonic() + 15
    while len(smtp.mails) + sum(len(recipients(p.body)) for p in line_sim.accepted_pushes()) < 8:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    pushed = Counter(to for p in line_sim.accepted_pushes() for to in recipients(p.body))
    mailed = Counter(m.rcpt_to[0] for m in smtp.mails)
    # m0..m9 minus m2 and m4 (excluded by LINE user ID); even members are LINE friends
    assert set(pushed) == {f"U{i:032x}" for i in (0, 6, 8)} and max(pushed.values()) == 1
    assert set(mailed) == {f"m{i}@example.jp" for i in (1, 3, 5, 7, 9)}
    expected = {("email", "sent"): 5, ("line", "sent"): 3}
    while True:
        view = (await router.client.get(f"/v1/campaigns/{resp.json()['id']}")).json()
        counts = {(d["channel"], d["status"]): d["deliveries"] for d in view["deliveries"]}
        if counts == expected:
            break
        assert time.monotonic() < deadline, counts
        await asyncio.sleep(0.05)


async def test_replay_conflict_and_unknown_audience(router: RouterUnderTest) -> None:
    await members(router, 2)
    target = await audience(router, "a", ["m0@example.jp"])
    request = {"audience_ids": [target], "email": MAIL, "idempotency_key": "coupon-1"}
    first = await router.client.post("/v1/campaigns", json=request)
    again = await router.client.post("/v1/campaigns", json=request)
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    other = await router.client.post("/v1/campaigns", json={**request, "tags": ["x"]})
    assert other.status_code == 409
    missing = await router.client.post(
        "/v1/campaigns",
        json={"audience_ids": ["00000000-0000-7000-8000-000000000000"], "email": MAIL},
    )
    assert missing.status_code == 422 and missing.json()["errors"][0]["field"] == "audience_ids"
    both = await router.client.post(
        "/v1/campaigns",
        json={"audience_ids": [target], "exclude_audience_ids": [target], "email": MAIL},
    )
    # well-formed, but it would reach nobody: 422, as the document says of such requests
    assert both.status_code == 422
    assert both.json()["errors"][0]["field"] == "exclude_audience_ids"


async def test_cancel_stops_what_has_not_been_sent(router: RouterUnderTest, smtp: SmtpSink) -> None:
    await members(router, 6)
    target = await audience(router, "a", [f"m{i}@example.jp" for i in range(6)])
    later = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
    resp = await router.client.post(
        "/v1/campaigns",
        json={"audience_ids": [target], "email": MAIL, "route": "email_only", "send_at": later},
    )
    campaign_id = resp.json()["id"]
    await wait_status(router, campaign_id, "sending")
    cancelled = (await router.client.post(f"/v1/campaigns/{campaign_id}/cancel")).json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["deliveries"] == [
        {"channel": "email", "status": "cancelled", "deliveries": 6, "multicasts": 0}
    ]
    assert smtp.mails == []

    env = os.environ | {"ROUTER_DATABASE_URL": router.runtime.config.database.url}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router", "campaigns", "status", campaign_id,
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines[0] == "cancelled: 6 members targeted, 6 intents, 0 not reachable"
    assert lines[1].split() == ["email", "cancelled", "6"]


async def test_two_routers_fanning_out_one_campaign_create_each_intent_once(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    chunk = {"ROUTER_CAMPAIGNS_FAN_OUT_CHUNK": "3"}  # many chunks, so the two interleave
    async with (
        running_router(dsn, line_sim.base_url, smtp, **chunk) as a,
        running_router(dsn, line_sim.base_url, smtp, **chunk) as b,
    ):
        await members(a, 40)
        target = await audience(a, "all", [f"m{i}@example.jp" for i in range(40)])
        resp = await a.client.post("/v1/campaigns", json={"audience_ids": [target], "email": MAIL})
        b.runtime.campaign_fan_out.kick()  # type: ignore[union-attr]
        body = await wait_status(b, resp.json()["id"], "sending")
        assert (body["targeted"], body["accepted"]) == (40, 40)
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT count(DISTINCT member_id) FROM intents") == 40
        assert await conn.fetchval("SELECT count(*) FROM intents") == 40
    finally:
        await conn.close()


async def test_a_campaign_split_into_ranges_is_fanned_out_by_every_loop_once_each(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    settings = {
        "ROUTER_CAMPAIGNS_FAN_OUT_CHUNK": "3",
        "ROUTER_CAMPAIGNS_FAN_OUT_RANGE_MEMBERS": "7",
        "ROUTER_CAMPAIGNS_FAN_OUT_WORKERS": "3",
    }
    async with (
        running_router(dsn, line_sim.base_url, smtp, **settings) as a,
        running_router(dsn, line_sim.base_url, smtp, **settings) as b,
    ):
        await members(a, 60)
        target = await audience(a, "most", [f"m{i}@example.jp" for i in range(55)])
        left_out = await audience(a, "out", [f"m{i}@example.jp" for i in range(0, 60, 10)])
        resp = await a.client.post(
            "/v1/campaigns",
            json={"audience_ids": [target], "exclude_audience_ids": [left_out], "email": MAIL},
        )
        b.runtime.campaign_fan_out.kick()  # type: ignore[union-attr]
        body = await wait_status(b, resp.json()["id"], "sending")
        assert (body["targeted"], body["accepted"]) == (49, 49)
        counted = sum(d["deliveries"] for d in body["deliveries"])
    conn = await asyncpg.connect(dsn)
    try:
        ranges = await conn.fetch(
            "SELECT after_member_id, last_member_id, done FROM campaign_ranges"
            " WHERE campaign_id = $1 ORDER BY range_no",
            resp.json()["id"],
        )
        assert len(ranges) > 2 and all(r["done"] for r in ranges)
        # each range starts where the one before it ends, from the first member to the last
        assert ranges[0]["after_member_id"] is None and ranges[-1]["last_member_id"] is None
        assert all(
            before["last_member_id"] == after["after_member_id"]
            for before, after in pairwise(ranges)
        )
        made = await conn.fetch("SELECT member_id FROM intents ORDER BY member_id")
        wanted = sorted(f"m{i:03}" for i in range(55) if i % 10)
        assert [r["member_id"] for r in made] == wanted
        assert await conn.fetchval("SELECT count(DISTINCT intent_id) FROM deliveries") == 49
        assert await conn.fetchval("SELECT count(*) FROM deliveries") == counted
    finally:
        await conn.close()


async def test_a_chunk_that_keeps_failing_stops_the_campaign_visibly(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    conn = await asyncpg.connect(dsn)
    # Every campaign intent this database is given fails: the chunk statement fails the same
    # way each time it is tried.
    await conn.execute("""
        CREATE FUNCTION refuse_campaign_intents() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'campaign intents refused here'; END $$;
        CREATE TRIGGER refuse_campaign_intents BEFORE INSERT ON intents FOR EACH ROW
            WHEN (NEW.campaign_id IS NOT NULL) EXECUTE FUNCTION refuse_campaign_intents();
    """)
    try:
        async with running_router(
            dsn, line_sim.base_url, smtp, ROUTER_CAMPAIGNS_FAN_OUT_MAX_FAILURES="2"
        ) as r:
            await members(r, 3)
            target = await audience(r, "a", [f"m{i}@example.jp" for i in range(3)])
            resp = await r.client.post(
                "/v1/campaigns", json={"audience_ids": [target], "email": MAIL}
            )
            body = await wait_status(r, resp.json()["id"], "failed")
            assert body["error"] == (
                "the fan-out stopped: a chunk failed 2 times in a row (RaiseError [SQLSTATE P0001])"
            )
            assert (body["targeted"], body["accepted"], body["deliveries"]) == (0, 0, [])
            assert await conn.fetchval("SELECT count(*) FROM intents") == 0
            # A stopped campaign is not taken up again.
            assert not await conn.fetchval(
                "SELECT count(*) FROM campaigns WHERE status = 'fanning_out'"
            )
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "router", "campaigns", "status", resp.json()["id"],
                env=os.environ | {"ROUTER_DATABASE_URL": dsn},
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
            out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
            assert proc.returncode == 0, err.decode()
            assert out.decode().splitlines()[:2] == [
                "failed: 0 members targeted, 0 intents, 0 not reachable",
                f"  {body['error']}",
            ]
    finally:
        await conn.execute(
            "DROP TRIGGER refuse_campaign_intents ON intents;"
            " DROP FUNCTION refuse_campaign_intents()"
        )
        await conn.close()
