"""Narrowcast campaigns end to end: real HTTP to the router, real PostgreSQL, the real
line-bot-sdk against the simulator; a router stopped between the narrowcast and its end; the
422s. Only the waits are shortened (audience upload pacing, the progress poll interval)."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from channels.line.narrowcast import narrowcast_retry_key
from linesim import NARROWCAST_PATH, NARROWCAST_PROGRESS_PATH, LineSimulator
from router.line import audience_sync
from tests.harness import API_KEY, RouterUnderTest, SmtpSink, _free_port, running_router
from tests.router_processes import exit_report, start_router, wait_healthy
from tests.test_audiences import upload
from tests.test_delivery_events import receiver, router_with_events

FAST = {"ROUTER_LINE_NARROWCAST_POLL_SECONDS": "0.1"}
LINE = {"messages": [{"type": "text", "text": "Members' sale starts today"}]}
MAIL = {"subject": "Members' sale", "text": "Starts today"}


def user(n: int) -> str:
    return f"U{n:032x}"


@pytest.fixture(autouse=True)
def fast_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audience_sync, "REQUEST_SPACING_SECONDS", 0.01)


async def friends(router: RouterUnderTest, count: int) -> None:
    """Members m000.. with an email address, each a linked LINE friend."""
    people = [
        {"member_id": f"m{i:03}", "email": f"m{i}@example.jp", "line_user_id": user(i)}
        for i in range(count)
    ]
    r = await router.client.post("/v1/members/batch", json={"members": people})
    assert r.status_code == 200, r.text


async def synced_audience(router: RouterUnderTest, name: str, numbers: range) -> tuple[str, int]:
    """A LINE user ID audience of these members, synced to LINE: (its id, LINE's group id)."""
    r = await upload(router, "\n".join(user(i) for i in numbers).encode(), "line_user_id", name)
    assert r.status_code == 201, r.text
    audience_id: str = r.json()["id"]
    synced = await router.client.post(f"/v1/audiences/{audience_id}/line-sync")
    assert synced.status_code == 200, synced.text
    return audience_id, synced.json()["line_audience_group_id"]


async def campaign(router: RouterUnderTest, **fields: Any) -> Any:
    body = {"line": LINE, "email": MAIL, "line_delivery": "narrowcast"} | fields
    return await router.client.post("/v1/campaigns", json=body)


async def narrowcast_status(
    router: RouterUnderTest, campaign_id: str, wanted: str, timeout: float = 20
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = (await router.client.get(f"/v1/campaigns/{campaign_id}")).json()
        if body["narrowcast"] and body["narrowcast"]["status"] == wanted:
            return body
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.05)


async def first_intent(dsn: str, campaign_id: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        found = await conn.fetchval(
            "SELECT id FROM intents WHERE campaign_id = $1 ORDER BY member_id LIMIT 1",
            uuid.UUID(campaign_id),
        )
    finally:
        await conn.close()
    return str(found)


def narrowcasts(sim: LineSimulator) -> list[Any]:
    return [r for r in sim.received if r.path == NARROWCAST_PATH]


async def test_a_synced_campaign_goes_out_as_one_narrowcast_to_the_friends_once(
    dsn: str, line_sim: LineSimulator, smtp: SmtpSink
) -> None:
    # 80 members in the audience, 60 in the exclusion (50 of them also in the audience):
    # the campaign names members 0..49. Two of them blocked the account at LINE.
    blocked = {user(3), user(7)}
    line_sim.set_followers(user(i) for i in range(110) if user(i) not in blocked)
    async with running_router(dsn, line_sim.base_url, smtp, **FAST) as router:
        await friends(router, 110)
        included, include_group = await synced_audience(router, "buyers", range(80))
        excluded, exclude_group = await synced_audience(router, "recent", range(50, 110))

        r = await campaign(router, audience_ids=[included], exclude_audience_ids=[excluded])
        assert r.status_code == 202, r.text
        campaign_id = r.json()["id"]
        body = await narrowcast_status(router, campaign_id, "succeeded")

        # One narrowcast, to the audience minus the exclusion, under the campaign's key.
        [sent] = narrowcasts(line_sim)
        assert sent.status == 202
        assert sent.body["recipient"] == {
            "type": "operator",
            "and": [
                {"type": "audience", "audienceGroupId": include_group},
                {"type": "operator", "not": {"type": "audience", "audienceGroupId": exclude_group}},
            ],
        }
        assert sent.body["messages"] == LINE["messages"]
        assert sent.retry_key == str(narrowcast_retry_key(uuid.UUID(campaign_id)))
        assert line_sim.accepted_pushes() == []  # no push, no multicast
        [state] = line_sim.narrowcasts
        assert state.phase == "succeeded"
        assert sorted(state.delivered) == sorted({user(i) for i in range(50)} - blocked)
        polls = [r for r in line_sim.received if r.path == NARROWCAST_PROGRESS_PATH]
        assert polls and all(p.status == 200 for p in polls)
        assert {p.headers.get("x-line-retry-key") for p in polls} == {None}

        # The campaign: 50 LINE deliveries, each recorded; LINE's totals beside them.
        assert (body["targeted"], body["accepted"]) == (50, 50)
        assert body["deliveries"] == [
            {"channel": "line", "status": "sent", "deliveries": 50, "multicasts": 1}
        ]
        view = body["narrowcast"]
        assert view["request_id"] == sent.request_id
        assert (view["recipients"], view["target_count"], view["success_count"]) == (50, 48, 48)
        assert view["failure_count"] == 0 and view["phase"] == "succeeded"
        assert view["polls"] == len(polls)
        assert view["audience_group_ids"] == [include_group]
        assert view["exclude_audience_group_ids"] == [exclude_group]
        assert "only totals" in view["per_member"]

        # Each member's record: sent in that narrowcast; whether received is not known, so
        # the intent says `sent`, never `delivered` (a blocked member's looks the same).
        conn = await asyncpg.connect(dsn)
        try:
            ids = await conn.fetch(
                "SELECT id, member_id FROM intents WHERE campaign_id = $1 ORDER BY member_id",
                uuid.UUID(campaign_id),
            )
        finally:
            await conn.close()
        assert [r["member_id"] for r in ids] == [f"m{i:03}" for i in range(50)]
        for row in (ids[0], ids[3]):
            intent = await router.intent(str(row["id"]))
            assert intent["status"] == "sent"
            [delivery] = intent["deliveries"]
            assert (delivery["channel"], delivery["status"]) == ("line", "sent")
            assert delivery["provider_ref"] == sent.request_id
            assert delivery["narrowcast"] == {
                "request_id": sent.request_id,
                "status": "succeeded",
                "received_by_this_member": "not reported by LINE",
            }
        assert smtp.mails == []  # no fallback: LINE took it
        assert line_sim.total_usage == 48


async def test_a_router_stopped_mid_narrowcast_resumes_polling_and_never_sends_twice(
    dsn: str, line_sim: LineSimulator, smtp: SmtpSink
) -> None:
    line_sim.set_followers(user(i) for i in range(60))
    line_sim.set_narrowcast_timing(waiting=600)  # LINE takes its time
    # LINE takes the first request but answers after the router's 2 s timeout: the router
    # must send again under the same key and learn the first request's id from the 409.
    line_sim.delay_next(1, 2.5)
    async with running_router(dsn, line_sim.base_url, smtp, **FAST) as first:
        await friends(first, 60)
        audience_id, _ = await synced_audience(first, "all", range(60))
        r = await campaign(first, audience_ids=[audience_id])
        campaign_id = r.json()["id"]
        body = await narrowcast_status(first, campaign_id, "accepted")
        assert body["narrowcast"]["phase"] in (None, "waiting")
        assert body["deliveries"] == [
            {"channel": "line", "status": "sending", "deliveries": 60, "multicasts": 1}
        ]
    [state] = line_sim.narrowcasts
    answers = [(r.status, r.request_id) for r in narrowcasts(line_sim)]
    assert answers[0] == (202, state.request_id)
    assert [status for status, _ in answers[1:]] == [409]
    assert body["narrowcast"]["request_id"] == state.request_id

    line_sim.set_narrowcast_timing(waiting=0, sending=0)  # LINE finishes while no router runs
    async with running_router(dsn, line_sim.base_url, smtp, **FAST) as second:
        body = await narrowcast_status(second, campaign_id, "succeeded")
        assert body["deliveries"] == [
            {"channel": "line", "status": "sent", "deliveries": 60, "multicasts": 1}
        ]
        assert body["narrowcast"]["success_count"] == 60
    assert len(line_sim.narrowcasts) == 1
    assert [r.status for r in narrowcasts(line_sim)] == [202, 409]
    assert sorted(line_sim.narrowcasts[0].delivered) == [user(i) for i in range(60)]
    assert line_sim.total_usage == 60


async def test_a_narrowcast_line_fails_falls_back_to_email(
    dsn: str, line_sim: LineSimulator, smtp: SmtpSink
) -> None:
    line_sim.set_followers([])  # nobody is a friend at LINE any more: errorCode 2
    async with running_router(dsn, line_sim.base_url, smtp, **FAST) as router:
        await friends(router, 50)
        audience_id, _ = await synced_audience(router, "all", range(50))
        campaign_id = (await campaign(router, audience_ids=[audience_id])).json()["id"]
        body = await narrowcast_status(router, campaign_id, "failed")
        assert body["narrowcast"]["error_code"] == 2
        deadline = time.monotonic() + 15
        expected = {("line", "failed"): 50, ("email", "sent"): 50}
        while True:
            body = (await router.client.get(f"/v1/campaigns/{campaign_id}")).json()
            counts = {(c["channel"], c["status"]): c["deliveries"] for c in body["deliveries"]}
            if counts == expected:
                break
            assert time.monotonic() < deadline, counts
            await asyncio.sleep(0.05)
        assert len(smtp.mails) == 50
        intent_id = await first_intent(dsn, campaign_id)
        [line, email] = (await router.intent(intent_id))["deliveries"]
        assert (line["status"], line["provider_ref"]) == (
            "failed",
            body["narrowcast"]["request_id"],
        )
        assert "There weren't enough recipients (errorCode 2)" in line["last_error"]
        assert (email["channel"], email["status"], email["fallback"]) == ("email", "sent", True)


async def test_what_cannot_be_narrowcast_is_refused_with_422(
    router: RouterUnderTest, line_sim: LineSimulator
) -> None:
    line_sim.set_followers(user(i) for i in range(60))
    await friends(router, 60)
    synced, _ = await synced_audience(router, "synced", range(55))
    small, _ = await synced_audience(router, "small", range(55, 60))
    r = await upload(router, user(1).encode(), "line_user_id", "never synced")
    unsynced = r.json()["id"]

    async def refused(**fields: Any) -> dict[str, Any]:
        r = await campaign(router, **fields)
        assert r.status_code == 422, r.text
        body: dict[str, Any] = r.json()
        return body

    body = await refused(audience_ids=[unsynced])
    assert body["errors"] == [
        {
            "field": "audience_ids",
            "message": f"audience {unsynced}: a narrowcast goes to the audience's synced LINE"
            " audience, so it must be synced first (POST /v1/audiences/{id}/line-sync)",
        }
    ]
    body = await refused(audience_ids=[synced], exclude_audience_ids=[unsynced])
    assert [e["field"] for e in body["errors"]] == ["exclude_audience_ids"]
    assert "an exclusion is left out at LINE" in body["errors"][0]["message"]
    body = await refused(audience_ids=[small])
    assert "fewer than 50" in body["errors"][0]["message"]
    body = await refused(audience_ids=[synced], route="email_only")
    assert body["errors"][0]["field"] == "line_delivery"
    assert "route email_only sends none" in body["errors"][0]["message"]

    # An upload after the sync: LINE's audience no longer says who is in it.
    added = await upload(
        router, user(59).encode(), "line_user_id", path=f"/v1/audiences/{synced}/uploads"
    )
    assert added.status_code in (200, 201), added.text
    body = await refused(audience_ids=[synced])
    assert "changed after its last LINE sync" in body["errors"][0]["message"]

    conn = await asyncpg.connect(router.runtime.target.dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM campaigns") == 0
    finally:
        await conn.close()
    assert narrowcasts(line_sim) == []


async def test_the_narrowcast_waits_for_send_at_and_gives_up_polling_visibly(
    dsn: str, line_sim: LineSimulator, smtp: SmtpSink
) -> None:
    line_sim.set_followers(user(i) for i in range(50))
    line_sim.set_narrowcast_timing(waiting=600)  # LINE never ends while we look
    env = FAST | {"ROUTER_LINE_NARROWCAST_GIVE_UP_SECONDS": "1"}
    async with running_router(dsn, line_sim.base_url, smtp, **env) as router:
        await friends(router, 50)
        audience_id, _ = await synced_audience(router, "all", range(50))
        send_at = datetime.now(UTC) + timedelta(seconds=2)
        r = await campaign(router, audience_ids=[audience_id], send_at=send_at.isoformat())
        campaign_id = r.json()["id"]
        body = await narrowcast_status(router, campaign_id, "unknown")
        [state] = line_sim.narrowcasts
        assert state.accepted_at >= send_at.timestamp()
        assert state.phase == "waiting"
        assert body["deliveries"] == [
            {"channel": "line", "status": "uncertain", "deliveries": 50, "multicasts": 1}
        ]
        assert "did not report an end within 1 s" in body["narrowcast"]["last_error"]
        assert body["narrowcast"]["phase"] == "waiting"
    assert smtp.mails == []  # it may have been sent: no fallback


async def test_kill_9_while_line_holds_the_narrowcast_then_restart_sends_it_once(
    dsn: str, line_sim: LineSimulator, smtp: SmtpSink
) -> None:
    """The router dies after LINE took the narrowcast but before it heard back: the restarted
    router sends again under the same key, LINE answers 409 with the first request's id, and
    the router follows that one to its end."""
    fast = {"ROUTER_LINE_NARROWCAST_POLL_SECONDS": "0.1", "ROUTER_LINE_TIMEOUT_SECONDS": "10"}
    line_sim.set_followers(user(i) for i in range(60))
    port = _free_port()
    first = start_router(dsn, line_sim.base_url, smtp, port, **fast)
    base = f"http://127.0.0.1:{port}"
    conn = await asyncpg.connect(dsn)
    second = None
    try:
        await wait_healthy(base)
        async with httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60
        ) as client:
            router = RouterUnderTest(None, base, client)  # type: ignore[arg-type]
            await friends(router, 60)
            audience_id, _ = await synced_audience(router, "all", range(60))
            line_sim.delay_next(1, 5.0)  # taken at once, answered after the kill
            r = await campaign(router, audience_ids=[audience_id])
            assert r.status_code == 202, r.text
        deadline = time.monotonic() + 20
        while not line_sim.narrowcasts:
            assert time.monotonic() < deadline, exit_report(first)
            await asyncio.sleep(0.005)
        first.send_signal(signal.SIGKILL)
        first.wait()
        row = await conn.fetchrow("SELECT status, request_id FROM line_narrowcasts")
        assert (row["status"], row["request_id"]) == ("waiting", None)
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM deliveries WHERE channel = 'line' AND status = 'pending'"
            )
            == 60
        )

        second = start_router(dsn, line_sim.base_url, smtp, _free_port(), **fast)
        deadline = time.monotonic() + 30
        while await conn.fetchval("SELECT status FROM line_narrowcasts") != "succeeded":
            assert time.monotonic() < deadline, exit_report(second)
            await asyncio.sleep(0.1)
        [state] = line_sim.narrowcasts
        assert [r.status for r in narrowcasts(line_sim)] == [202, 409]
        assert sorted(state.delivered) == [user(i) for i in range(60)]
        refs = await conn.fetch(
            "SELECT status, provider_ref, count(*) FROM deliveries WHERE channel = 'line'"
            " GROUP BY 1, 2"
        )
        assert [tuple(r) for r in refs] == [("sent", state.request_id, 60)]
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=30)
        await conn.close()


async def test_a_member_who_opted_out_before_the_send_is_not_counted_and_falls_back(
    dsn: str, line_sim: LineSimulator, smtp: SmtpSink
) -> None:
    line_sim.set_followers(user(i) for i in range(50))
    async with running_router(dsn, line_sim.base_url, smtp, **FAST) as router:
        await friends(router, 50)
        audience_id, _ = await synced_audience(router, "all", range(50))
        send_at = datetime.now(UTC) + timedelta(seconds=1.5)
        r = await campaign(router, audience_ids=[audience_id], send_at=send_at.isoformat())
        campaign_id = r.json()["id"]
        # The member leaves after the fan-out planned their LINE delivery, before the send.
        deadline = time.monotonic() + 15
        while (await router.client.get(f"/v1/campaigns/{campaign_id}")).json()[
            "status"
        ] == "fanning_out":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        opted = await router.client.put("/v1/members/m007", json={"line_opt_out": True})
        assert opted.status_code == 200
        body = await narrowcast_status(router, campaign_id, "succeeded")
        assert body["narrowcast"]["recipients"] == 49
        deadline = time.monotonic() + 15
        while not smtp.mails:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert [m.rcpt_to for m in smtp.mails] == [["m7@example.jp"]]
        conn = await asyncpg.connect(dsn)
        try:
            row = await conn.fetchrow(
                "SELECT d.status, d.last_error FROM deliveries d JOIN intents i"
                " ON i.id = d.intent_id WHERE i.member_id = 'm007' AND d.channel = 'line'"
            )
        finally:
            await conn.close()
        assert row["status"] == "failed"
        assert "if they are still a friend at LINE they receive it anyway" in row["last_error"]
    # LINE's audience still holds them: the narrowcast reached all 50.
    assert len(line_sim.narrowcasts[0].delivered) == 50


async def test_delivery_events_of_a_narrowcast(
    dsn: str, line_sim: LineSimulator, smtp: SmtpSink
) -> None:
    line_sim.set_followers(user(i) for i in range(50))
    async with receiver() as hook, router_with_events(dsn, line_sim, smtp, hook, **FAST) as router:
        await friends(router, 50)
        audience_id, _ = await synced_audience(router, "all", range(50))
        campaign_id = (await campaign(router, audience_ids=[audience_id])).json()["id"]
        body = await narrowcast_status(router, campaign_id, "succeeded")
        events = await hook.wait_until(lambda events: len(events) >= 100)
    request_id = body["narrowcast"]["request_id"]
    delivered = [e for e in events if e["event"] == "delivered"]
    assert len(delivered) == 50 and len({e["delivery_id"] for e in delivered}) == 50
    assert all(e["channel"] == "line" and e["response"] == request_id for e in delivered)
    assert sorted(e["event"] for e in events) == ["delivered"] * 50 + ["processed"] * 50


async def test_narrowcasts_refused_for_lines_hourly_limit_wait_without_using_up_attempts(
    dsn: str, line_sim: LineSimulator, smtp: SmtpSink
) -> None:
    # LINE takes 60 narrowcasts an hour; here one per two seconds. With one attempt allowed,
    # a refusal for the limit that counted as an attempt would end a campaign at once.
    line_sim.set_followers(user(i) for i in range(50))
    line_sim.set_narrowcast_limit(requests=1, window_seconds=2.0)
    env = FAST | {"ROUTER_WORKERS_MAX_ATTEMPTS": "1", "ROUTER_WORKERS_BACKOFF_MAX_SECONDS": "0.3"}
    async with running_router(dsn, line_sim.base_url, smtp, **env) as router:
        await friends(router, 50)
        audience_id, _ = await synced_audience(router, "all", range(50))
        ids = []
        for _ in range(3):
            r = await campaign(router, audience_ids=[audience_id])
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
        bodies = [await narrowcast_status(router, i, "succeeded", timeout=30) for i in ids]
    statuses = [r.status for r in narrowcasts(line_sim)]
    assert statuses.count(202) == 3 and statuses.count(429) >= 1, statuses
    assert all(b["narrowcast"]["attempts"] == 1 for b in bodies), bodies
    assert smtp.mails == []
