"""A campaign's LINE part as multicast, against the LINE simulator: batching, retry keys,
400s that name recipients, unexplained 400s, timeouts after acceptance, and cancel mid-way."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from typing import Any

import asyncpg
import msgspec

from channels.base import Failed, OutboundGroup, Sent, Split
from channels.line.push import LinePushChannel
from router.config import LineConfig
from router.content import Content, LineContent
from router.line.messages import text_message
from router.queue import claims
from router.store import send_groups
from tests.harness import DERIVED, LINE_TOKEN, RouterUnderTest, SmtpSink, running_router

MAIL = {"subject": "Coupon", "text": "10% off for registered members"}
MULTICAST = "/v2/bot/message/multicast"


def friend_id(i: int) -> str:
    return f"U{i:032x}"


async def add_members(r: RouterUnderTest, friends: int, mail_only: int = 0) -> None:
    people = [
        {"member_id": f"f{i:05}", "email": f"f{i}@example.jp", "line_user_id": friend_id(i)}
        for i in range(friends)
    ] + [{"member_id": f"e{i:05}", "email": f"e{i}@example.jp"} for i in range(mail_only)]
    for start in range(0, len(people), 500):
        resp = await r.client.post(
            "/v1/members/batch", json={"members": people[start : start + 500]}
        )
        assert resp.status_code == 200, resp.text


async def campaign(r: RouterUnderTest, friends: int, mail_only: int = 0) -> str:
    lines = [f"f{i}@example.jp" for i in range(friends)] + [
        f"e{i}@example.jp" for i in range(mail_only)
    ]
    resp = await r.client.post(
        "/v1/audiences",
        data={"name": "everyone", "type": "email"},
        files={"file": ("list.csv", "\n".join(lines).encode(), "text/csv")},
    )
    assert resp.status_code == 201, resp.text
    resp = await r.client.post(
        "/v1/campaigns", json={"audience_ids": [resp.json()["id"]], "email": MAIL}
    )
    assert resp.status_code == 202, resp.text
    campaign_id: str = resp.json()["id"]
    return campaign_id


async def settled(
    r: RouterUnderTest, campaign_id: str, expected: dict[tuple[str, str], int]
) -> None:
    deadline = time.monotonic() + 30
    while True:
        view = (await r.client.get(f"/v1/campaigns/{campaign_id}")).json()
        counts = {(d["channel"], d["status"]): d["deliveries"] for d in view["deliveries"]}
        if view["status"] != "fanning_out" and counts == expected:
            return
        assert time.monotonic() < deadline, (view["status"], counts)
        await asyncio.sleep(0.05)


def multicasts(sim: Any, status: int | None = 200) -> list[Any]:
    return [
        q for q in sim.received if q.path == MULTICAST and (status is None or q.status == status)
    ]


class Seen(msgspec.Struct, frozen=True):
    """One intent as `GET /v1/intents/{id}` shows it: its status, its LINE delivery and its
    other deliveries."""

    status: str
    line: dict[str, Any]
    others: list[dict[str, Any]]


async def intent_views(r: RouterUnderTest, dsn: str) -> list[Seen]:
    conn = await asyncpg.connect(dsn)
    try:
        ids = [r["id"] for r in await conn.fetch("SELECT id FROM intents ORDER BY id")]
    finally:
        await conn.close()
    seen = []
    for intent_id in ids:
        resp = await r.client.get(f"/v1/intents/{intent_id}")
        assert resp.status_code == 200, resp.text
        view = resp.json()
        [line] = [d for d in view["deliveries"] if d["channel"] == "line"]
        others = [d for d in view["deliveries"] if d["channel"] != "line"]
        seen.append(Seen(view["status"], line, others))
    return seen


async def test_a_sent_group_is_recorded_once_and_each_intent_shows_lines_request_id(
    router: RouterUnderTest, line_sim: Any, dsn: str
) -> None:
    await add_members(router, 30)
    campaign_id = await campaign(router, 30)
    await settled(router, campaign_id, {("line", "sent"): 30})
    [sent] = multicasts(line_sim)
    conn = await asyncpg.connect(dsn)
    try:
        # The outcome is on the group row; not one delivery row was written after the fan-out.
        group = await conn.fetchrow("SELECT status, provider_ref, sent_at FROM send_groups")
        assert (group["status"], group["provider_ref"]) == ("sent", sent.request_id)
        rows = await conn.fetch("SELECT status, attempts, provider_ref, sent_at FROM deliveries")
        assert {tuple(r) for r in rows} == {("grouped", 0, None, None)} and len(rows) == 30
    finally:
        await conn.close()
    views = await intent_views(router, dsn)
    assert len(views) == 30
    for v in views:
        line = v.line
        assert v.status == "delivered" and not v.others, v
        assert (line["status"], line["provider_ref"], line["attempts"]) == (
            "sent",
            sent.request_id,
            1,
        )
        assert line["sent_at"] == line["updated_at"] and line["next_attempt_at"] is None


async def test_campaign_friends_get_one_multicast_per_500_and_exact_records(
    router: RouterUnderTest, line_sim: Any, smtp: SmtpSink, dsn: str
) -> None:
    await add_members(router, 1001, mail_only=40)
    campaign_id = await campaign(router, 1001, mail_only=40)
    await settled(router, campaign_id, {("email", "sent"): 40, ("line", "sent"): 1001})

    sent = multicasts(line_sim)
    # 1,001 recipients dealt into three near-equal batches, not 500 + 500 + 1.
    assert sorted(len(q.body["to"]) for q in sent) == [333, 334, 334]
    assert not [q for q in line_sim.received if q.path == "/v2/bot/message/push"]
    received = Counter(to for q in sent for to in q.body["to"])
    assert set(received) == {friend_id(i) for i in range(1001)} and max(received.values()) == 1
    assert len({q.retry_key for q in sent}) == 3 and None not in {q.retry_key for q in sent}
    assert len(smtp.mails) == 40
    view = (await router.client.get(f"/v1/campaigns/{campaign_id}")).json()
    assert {(d["channel"], d["multicasts"]) for d in view["deliveries"]} == {
        ("email", 0),
        ("line", 3),
    }
    conn = await asyncpg.connect(dsn)
    try:
        # Each delivery records the request that carried it, through its group.
        refs = await conn.fetch(
            f"SELECT provider_ref, array_agg(address) AS addresses {DERIVED}"
            " WHERE channel = 'line' GROUP BY provider_ref"
        )
        by_request = {q.request_id: set(q.body["to"]) for q in sent}
        assert {r["provider_ref"]: set(r["addresses"]) for r in refs} == by_request
        assert await conn.fetchval("SELECT count(*) FROM send_groups WHERE status = 'sent'") == 3
    finally:
        await conn.close()


async def test_recipients_named_by_a_400_fail_alone_and_the_rest_go_in_a_new_batch(
    router: RouterUnderTest, line_sim: Any, smtp: SmtpSink, dsn: str
) -> None:
    await add_members(router, 20)
    conn = await asyncpg.connect(dsn)
    try:
        # IDs LINE refuses (the router checks the format on the way in, so write them direct).
        await conn.execute(
            "UPDATE member_line_accounts SET user_id = 'U-not-valid-' || member_id, friend = true"
            " WHERE member_id IN ('f00003', 'f00011') AND account = 'default'"
        )
        campaign_id = await campaign(router, 20)
        await settled(
            router,
            campaign_id,
            {("email", "sent"): 2, ("line", "failed"): 2, ("line", "sent"): 18},
        )
        refused, accepted = multicasts(line_sim, 400), multicasts(line_sim)
        assert len(refused) == 1 and len(refused[0].body["to"]) == 20
        assert len(accepted) == 1 and len(accepted[0].body["to"]) == 18
        assert "U-not-valid-f00003" not in accepted[0].body["to"]
        assert refused[0].retry_key != accepted[0].retry_key  # nothing sent: a new key is safe
        assert sorted(rcpt for m in smtp.mails for rcpt in m.rcpt_to) == [
            "f11@example.jp",
            "f3@example.jp",
        ]
        errors = await conn.fetch(
            "SELECT last_error FROM deliveries WHERE channel = 'line' AND status = 'failed'"
        )
        assert all("to[" in e["last_error"] for e in errors), errors
        batches = dict(await conn.fetch("SELECT status, count(*) FROM send_groups GROUP BY 1"))
        assert batches == {"split": 1, "sent": 1}
    finally:
        await conn.close()
    # The two LINE refused have their own failure and a sent email; the rest carry the
    # request id of the group they moved to.
    views = await intent_views(router, dsn)
    refused_views = [v for v in views if v.line["status"] == "failed"]
    assert len(refused_views) == 2
    assert all(
        "to[" in v.line["last_error"] and v.line["provider_ref"] is None for v in refused_views
    )
    assert all([o["status"] for o in v.others] == ["sent"] for v in refused_views)
    moved = [v for v in views if v.line["status"] != "failed"]
    assert len(moved) == 18 and all(v.status == "delivered" and not v.others for v in moved)
    assert {v.line["provider_ref"] for v in moved} == {accepted[0].request_id}


async def test_a_400_naming_no_recipient_halves_the_batch(
    router: RouterUnderTest, line_sim: Any, dsn: str
) -> None:
    await add_members(router, 20)
    line_sim.fail_next(1, status=400, message="The request body has 1 error(s)")
    campaign_id = await campaign(router, 20)
    await settled(router, campaign_id, {("line", "sent"): 20})
    assert [len(q.body["to"]) for q in multicasts(line_sim, 400)] == [20]
    assert sorted(len(q.body["to"]) for q in multicasts(line_sim)) == [10, 10]
    conn = await asyncpg.connect(dsn)
    try:
        halves = await conn.fetch("SELECT split_from FROM send_groups WHERE status = 'sent'")
        parent = await conn.fetchval("SELECT id FROM send_groups WHERE status = 'split'")
        assert [h["split_from"] for h in halves] == [parent, parent]
    finally:
        await conn.close()


async def test_channel_splits_on_named_recipients_and_fails_on_refused_messages(
    line_sim: Any,
) -> None:
    """The LINE adapter alone: what a multicast's 400 means depends on what LINE named."""
    config = LineConfig(channel_access_token=LINE_TOKEN, api_base=line_sim.base_url)
    channel = LinePushChannel(config)
    ids = [friend_id(i) for i in range(4)]

    def group(content: Content, addresses: list[str]) -> OutboundGroup:
        return OutboundGroup(
            group_id=uuid.uuid4(),
            addresses=addresses,
            attempt=1,
            content_id=uuid.uuid4().bytes,
            content=content,
        )

    try:
        hello = Content(line=LineContent(messages=[text_message("hello")]))
        named = await channel.send_group(group(hello, [ids[0], "Ubad", ids[1], "U00"]))
        assert isinstance(named, Split) and named.bad == [1, 3]
        # Longer than LINE's 5,000: refused for every recipient, so splitting could not help.
        too_long = Content(line=LineContent(messages=[text_message("x" * 5001)]))
        refused = await channel.send_group(group(too_long, ids))
        assert (
            isinstance(refused, Failed) and refused.fallback and "messages[0].text" in refused.error
        )
        ok = await channel.send_group(group(hello, ids))
        assert isinstance(ok, Sent) and ok.provider_ref == multicasts(line_sim)[-1].request_id
    finally:
        await channel.aclose()


async def test_timeout_after_line_accepted_is_resent_whole_under_the_same_key(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    env = {"ROUTER_LINE_TIMEOUT_SECONDS": "0.3", "ROUTER_WORKERS_BACKOFF_BASE_SECONDS": "0.05"}
    async with running_router(dsn, line_sim.base_url, smtp, **env) as r:
        await add_members(r, 30)
        line_sim.delay_next(1, 1.0)  # accepted at once, answered after the router gave up
        campaign_id = await campaign(r, 30)
        await settled(r, campaign_id, {("line", "sent"): 30})
    first, *again = multicasts(line_sim, None)
    assert first.status == 200 and again and {q.status for q in again} == {409}
    assert {q.retry_key for q in again} == {first.retry_key}
    assert all(q.body["to"] == first.body["to"] for q in again)
    conn = await asyncpg.connect(dsn)
    try:
        refs = {r["provider_ref"] for r in await conn.fetch(f"SELECT provider_ref {DERIVED}")}
        assert refs == {first.request_id}  # LINE's id for the request it accepted
    finally:
        await conn.close()


async def test_server_errors_retry_the_same_recipients_then_fall_back(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    env = {"ROUTER_WORKERS_BACKOFF_BASE_SECONDS": "0.02", "ROUTER_WORKERS_MAX_ATTEMPTS": "3"}
    async with running_router(dsn, line_sim.base_url, smtp, **env) as r:
        await add_members(r, 8)
        line_sim.fail_next(3, status=500)
        campaign_id = await campaign(r, 8)
        await settled(r, campaign_id, {("line", "failed"): 8, ("email", "sent"): 8})
        # The group failed for good: each member has its own failed LINE delivery and a sent
        # fallback email.
        views = await intent_views(r, dsn)
    tries = multicasts(line_sim, None)
    assert [q.status for q in tries] == [500, 500, 500]
    assert len({q.retry_key for q in tries}) == 1 and all(q.body == tries[0].body for q in tries)
    assert len(views) == 8
    for v in views:
        assert (v.line["status"], v.line["attempts"]) == ("failed", 3), v
        assert "gave up after 3 attempts" in v.line["last_error"]
        assert [(o["channel"], o["status"], o["fallback"]) for o in v.others] == [
            ("email", "sent", True)
        ]


async def test_cancel_mid_campaign_stops_batches_not_yet_sent(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    env = {"ROUTER_LINE_MULTICAST_PER_SECOND": "1", "ROUTER_WORKERS_CONCURRENCY": "1"}
    async with running_router(dsn, line_sim.base_url, smtp, **env) as r:
        r.runtime.channels["line"].max_group_size = 5  # type: ignore[misc]
        await add_members(r, 15)
        line_sim.delay_next(1, 1.5, before_processing=True)
        campaign_id = await campaign(r, 15)
        deadline = time.monotonic() + 20
        while not multicasts(line_sim, None):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        # The first batch is with LINE now; the other two are waiting.
        resp = await r.client.post(f"/v1/campaigns/{campaign_id}/cancel")
        assert resp.status_code == 200, resp.text
        await settled(r, campaign_id, {("line", "sent"): 5, ("line", "cancelled"): 10})
        await asyncio.sleep(2.5)  # a batch that escaped cancellation would be sent by now
        assert len(multicasts(line_sim)) == 1
        view = (await r.client.get(f"/v1/campaigns/{campaign_id}")).json()
        assert view["status"] == "cancelled"
    conn = await asyncpg.connect(dsn)
    try:
        batches = dict(await conn.fetch("SELECT status, count(*) FROM send_groups GROUP BY 1"))
        assert batches == {"sent": 1, "cancelled": 2}
    finally:
        await conn.close()


async def test_multicast_off_sends_one_push_per_friend(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    async with running_router(dsn, line_sim.base_url, smtp, ROUTER_LINE_MULTICAST="false") as r:
        await add_members(r, 7)
        campaign_id = await campaign(r, 7)
        await settled(r, campaign_id, {("line", "sent"): 7})
    assert not multicasts(line_sim, None)
    assert len(line_sim.accepted_pushes()) == 7


async def test_a_dead_workers_batch_is_requeued_with_its_deliveries(dsn: str) -> None:
    """Recovery puts a dead worker's group back to pending; its deliveries, which the claim
    only read, are still in it and are claimed with it again."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO contents (id, body) VALUES ('\\x01', '{}');"
            "INSERT INTO members (member_id)"
            " SELECT 'm' || n FROM generate_series(1, 3) n;"
            "INSERT INTO member_line_accounts (member_id, account, user_id, friend)"
            " SELECT 'm' || n, 'default', 'U' || lpad(to_hex(n), 32, '0'), true"
            " FROM generate_series(1, 3) n;"
            "INSERT INTO intents (id, member_id, content_id, route)"
            " SELECT gen_random_uuid(), 'm' || n, '\\x01', 'line_only' FROM generate_series(1, 3) n;"
            "INSERT INTO deliveries (intent_id, channel, address, status)"
            " SELECT i.id, 'line', l.user_id, 'grouped' FROM intents i"
            " JOIN member_line_accounts l USING (member_id)"
        )
        await conn.execute(
            "INSERT INTO send_groups (id, channel, content_id, status)"
            " VALUES ('00000000-0000-4000-8000-000000000001', 'line', '\\x01', 'pending');"
            "UPDATE deliveries SET send_group_id = '00000000-0000-4000-8000-000000000001'"
        )
        dead = uuid.uuid4()
        [claimed] = await send_groups.claim(conn, "line", 5, dead, lease_seconds=0.01)
        assert len(claimed.delivery_ids) == 3
        await asyncio.sleep(0.05)  # the dead worker's lease runs out

        assert (await claims.sweep(conn, send_groups.QUEUE)).lanes == {"line"}
        # The group is pending again; its deliveries, never written, are still in it.
        assert await conn.fetchval("SELECT status FROM send_groups") == "pending"
        statuses = await conn.fetch("SELECT DISTINCT status, claim_token FROM deliveries")
        assert [tuple(r) for r in statuses] == [("grouped", None)]
        # The dead worker may have sent it before it stopped: in doubt if cancelled now.
        assert await conn.fetchval("SELECT maybe_sent FROM send_groups") is True
        [again] = await send_groups.claim(conn, "line", 5, uuid.uuid4(), lease_seconds=60)
        assert again.group_id == claimed.group_id and again.attempts == 2
        assert again.delivery_ids == claimed.delivery_ids and again.addresses == claimed.addresses
    finally:
        await conn.close()


async def cancelled_after_a_timeout(r: RouterUnderTest, line_sim: Any, dsn: str, table: str) -> str:
    """A campaign whose first LINE requests LINE took but answered too late, cancelled while
    they wait for their retry; its id."""
    line_sim.delay_next(5, 1.0)  # accepted at once, answered after the router gave up
    campaign_id = await campaign(r, 4)
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + 20
        while await conn.fetchval(f"SELECT count(*) FROM {table} WHERE maybe_sent") == 0:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
    finally:
        await conn.close()
    resp = await r.client.post(f"/v1/campaigns/{campaign_id}/cancel")
    assert resp.status_code == 200, resp.text
    return campaign_id


async def test_cancel_after_a_multicast_timed_out_leaves_it_uncertain(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    env = {"ROUTER_LINE_TIMEOUT_SECONDS": "0.3", "ROUTER_WORKERS_BACKOFF_BASE_SECONDS": "60"}
    async with running_router(dsn, line_sim.base_url, smtp, **env) as r:
        await add_members(r, 4)
        campaign_id = await cancelled_after_a_timeout(r, line_sim, dsn, "send_groups")
        await settled(r, campaign_id, {("line", "uncertain"): 4})
        views = await intent_views(r, dsn)
    assert len(multicasts(line_sim, None)) == 1
    assert {(v.status, v.line["status"]) for v in views} == {("uncertain", "uncertain")}
    assert all("LINE may have sent it" in v.line["last_error"] for v in views)


async def test_cancel_after_a_push_timed_out_leaves_it_uncertain(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    env = {
        "ROUTER_LINE_MULTICAST": "false",
        "ROUTER_LINE_TIMEOUT_SECONDS": "0.3",
        "ROUTER_WORKERS_BACKOFF_BASE_SECONDS": "60",
    }
    async with running_router(dsn, line_sim.base_url, smtp, **env) as r:
        await add_members(r, 4)
        campaign_id = await cancelled_after_a_timeout(r, line_sim, dsn, "deliveries")
        conn = await asyncpg.connect(dsn)
        try:
            timed_out = await conn.fetchval("SELECT count(*) FROM deliveries WHERE maybe_sent")
        finally:
            await conn.close()
        view = (await r.client.get(f"/v1/campaigns/{campaign_id}")).json()
        counts = {(d["channel"], d["status"]): d["deliveries"] for d in view["deliveries"]}
    # Those LINE may have taken are in doubt; the rest (if any) were never sent: cancelled.
    assert timed_out >= 1
    assert counts == {("line", "uncertain"): timed_out} | (
        {("line", "cancelled"): 4 - timed_out} if timed_out < 4 else {}
    )
