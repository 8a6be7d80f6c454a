"""Opt-outs and unfollows between acceptance and sending: the member as they are when a
delivery is first sent decides, for single deliveries and for multicast batches alike."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.harness import RouterUnderTest, SmtpSink, running_router
from tests.test_multicast import add_members, campaign, friend_id, multicasts, settled

MAIL = {"subject": "Coupon", "text": "10% off"}


def soon(seconds: float = 1.5) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


async def deliveries(r: RouterUnderTest, intent_id: str) -> dict[str, tuple[str, str | None]]:
    deadline = time.monotonic() + 20
    while True:
        body = (await r.client.get(f"/v1/intents/{intent_id}")).json()
        found = {d["channel"]: (d["status"], d.get("last_error")) for d in body["deliveries"]}
        if found and all(s not in ("pending", "claimed", "sending") for s, _ in found.values()):
            return found
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.05)


async def test_scheduled_intents_honour_opt_outs_made_before_they_are_sent(
    router: RouterUnderTest, line_sim: Any, smtp: SmtpSink
) -> None:
    await add_members(router, 2, mail_only=2)
    send = {"email": MAIL, "send_at": soon(3.0)}
    ids = {}
    for member, route in (("e00000", "email_only"), ("e00001", "email_only"),
                          ("f00000", "prefer_line"), ("f00001", "prefer_line")):  # fmt: skip
        resp = await router.client.post(
            "/v1/intents", json={"member_id": member, "route": route, **send}
        )
        assert resp.status_code == 202, resp.text
        ids[member] = resp.json()["id"]
    # Before the send time: one opts out of email, one friend blocks the account.
    for member, change in (("e00000", {"email_opt_out": True}), ("f00000", {"line_friend": False})):
        resp = await router.client.put(f"/v1/members/{member}", json=change)
        assert resp.status_code == 200, resp.text

    opted_out = await deliveries(router, ids["e00000"])
    assert opted_out["email"][0] == "failed" and "opted out" in (opted_out["email"][1] or "")
    assert (await deliveries(router, ids["e00001"]))["email"][0] == "sent"
    unfollowed = await deliveries(router, ids["f00000"])
    assert unfollowed["line"][0] == "failed" and "unfollowed" in (unfollowed["line"][1] or "")
    assert unfollowed["email"][0] == "sent"  # a friend who left still reads email
    assert (await deliveries(router, ids["f00001"])) == {"line": ("sent", None)}
    assert [p.body["to"] for p in line_sim.accepted_pushes()] == [friend_id(1)]
    assert sorted(r for m in smtp.mails for r in m.rcpt_to) == ["e1@example.jp", "f0@example.jp"]


async def test_campaign_batches_leave_out_friends_who_left_before_the_send_time(
    router: RouterUnderTest, line_sim: Any, smtp: SmtpSink
) -> None:
    await add_members(router, 6)
    lines = "\n".join(f"f{i}@example.jp" for i in range(6)).encode()
    resp = await router.client.post(
        "/v1/audiences",
        data={"name": "a", "type": "email"},
        files={"file": ("list.csv", lines, "text/csv")},
    )
    resp = await router.client.post(
        "/v1/campaigns",
        json={"audience_ids": [resp.json()["id"]], "email": MAIL, "send_at": soon(3.0)},
    )
    campaign_id = resp.json()["id"]
    # They leave after the fan-out planned their LINE deliveries, before those are sent.
    while (await router.client.get(f"/v1/campaigns/{campaign_id}")).json()["status"] != "sending":
        await asyncio.sleep(0.02)
    for member in ("f00002", "f00004"):
        resp = await router.client.put(f"/v1/members/{member}", json={"line_opt_out": True})
        assert resp.status_code == 200, resp.text
    await settled(
        router, campaign_id, {("line", "sent"): 4, ("line", "failed"): 2, ("email", "sent"): 2}
    )
    sent = multicasts(line_sim)
    assert len(sent) == 1
    assert sorted(sent[0].body["to"]) == [friend_id(i) for i in (0, 1, 3, 5)]
    assert sorted(r for m in smtp.mails for r in m.rcpt_to) == ["f2@example.jp", "f4@example.jp"]


async def test_a_retried_group_is_resent_whole_to_members_who_left_since(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    """Only a group's first attempt re-checks its members: a retry goes under the same key,
    so it must name the same recipients (LINE may have taken the first one)."""
    async with running_router(
        dsn, line_sim.base_url, smtp, ROUTER_WORKERS_BACKOFF_BASE_SECONDS="2"
    ) as r:
        await add_members(r, 4)
        line_sim.fail_next(1, status=500)
        campaign_id = await campaign(r, 4)
        deadline = time.monotonic() + 20
        while not multicasts(line_sim, None):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        resp = await r.client.put("/v1/members/f00002", json={"line_opt_out": True})
        assert resp.status_code == 200, resp.text
        await settled(r, campaign_id, {("line", "sent"): 4})
    first, again = multicasts(line_sim, None)
    assert (first.status, again.status) == (500, 200)
    assert first.body["to"] == again.body["to"] and first.retry_key == again.retry_key
    assert friend_id(2) in again.body["to"] and not smtp.mails
