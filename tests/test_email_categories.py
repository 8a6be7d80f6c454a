"""Categories of promotional email: a member who unsubscribed from one is not mailed it — at
intake, in a campaign's routing and at the send — while other categories, transactional mail
and LINE still reach them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.harness import RouterUnderTest, SmtpSink
from tests.test_multicast import add_members
from tests.test_send_time_checks import deliveries

MAIL = {"subject": "News", "text": "This week"}


async def opt_out(r: RouterUnderTest, member_id: str, category: str) -> None:
    async with r.runtime.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO email_category_opt_outs (member_id, category) VALUES ($1, $2)",
            member_id,
            category,
        )


async def test_a_category_unsubscribed_from_is_refused_at_intake(
    router: RouterUnderTest, line_sim: Any, smtp: SmtpSink
) -> None:
    await add_members(router, 1, mail_only=1)
    await opt_out(router, "e00000", "newsletter")
    await opt_out(router, "f00000", "newsletter")

    def intent(member: str, **fields: Any) -> dict[str, Any]:
        return {"member_id": member, "email": MAIL, **fields}

    refused = await router.client.post(
        "/v1/intents", json=intent("e00000", route="email_only", category="newsletter")
    )
    assert refused.status_code == 422, refused.text
    assert "unsubscribed from 'newsletter'" in refused.json()["detail"]
    for allowed in (
        intent("e00000", route="email_only", category="offers"),
        intent("e00000", route="email_only", category="newsletter", kind="transactional"),
        intent("e00000", route="email_only"),
    ):
        resp = await router.client.post("/v1/intents", json=allowed)
        assert resp.status_code == 202, resp.text
        assert resp.json()["channels"] == ["email"]
    # A LINE friend still gets LINE; email is no longer their fallback.
    friend = await router.client.post("/v1/intents", json=intent("f00000", category="newsletter"))
    assert friend.status_code == 202, friend.text
    assert friend.json()["channels"] == ["line"] and friend.json().get("fallback") is None

    bad = await router.client.post("/v1/intents", json=intent("e00000", category="no spaces"))
    assert bad.status_code == 400
    assert "category" in bad.text


async def test_a_category_unsubscribed_from_after_acceptance_is_not_sent(
    router: RouterUnderTest, smtp: SmtpSink
) -> None:
    await add_members(router, 0, mail_only=2)
    later = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    ids = []
    for member in ("e00000", "e00001"):
        resp = await router.client.post(
            "/v1/intents",
            json={"member_id": member, "route": "email_only", "category": "newsletter",
                  "email": MAIL, "send_at": later},
        )  # fmt: skip
        assert resp.status_code == 202, resp.text
        ids.append(resp.json()["id"])
    await opt_out(router, "e00000", "newsletter")
    refused = await deliveries(router, ids[0])
    assert refused["email"][0] == "failed"
    assert "unsubscribed from 'newsletter'" in (refused["email"][1] or "")
    assert (await deliveries(router, ids[1]))["email"][0] == "sent"
    assert [r for m in smtp.mails for r in m.rcpt_to] == ["e1@example.jp"]


async def test_a_campaigns_category_leaves_out_those_who_unsubscribed_from_it(
    router: RouterUnderTest, smtp: SmtpSink
) -> None:
    await add_members(router, 0, mail_only=3)
    await opt_out(router, "e00001", "newsletter")
    lines = "\n".join(f"e{i}@example.jp" for i in range(3)).encode()
    audience = await router.client.post(
        "/v1/audiences",
        data={"name": "all", "type": "email"},
        files={"file": ("list.csv", lines, "text/csv")},
    )
    assert audience.status_code == 201, audience.text
    resp = await router.client.post(
        "/v1/campaigns",
        json={"audience_ids": [audience.json()["id"]], "email": MAIL, "category": "newsletter"},
    )
    assert resp.status_code == 202, resp.text
    campaign_id = resp.json()["id"]
    for _ in range(400):
        if len(smtp.mails) >= 2:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # nothing more arrives
    assert sorted(r for m in smtp.mails for r in m.rcpt_to) == ["e0@example.jp", "e2@example.jp"]
    view = (await router.client.get(f"/v1/campaigns/{campaign_id}")).json()
    assert (view["targeted"], view["accepted"]) == (3, 2), view
    async with router.runtime.pool.acquire() as conn:
        stored = await conn.fetch(
            "SELECT kind, category FROM intents WHERE campaign_id = $1", campaign_id
        )
    assert {(r["kind"], r["category"]) for r in stored} == {("promotional", "newsletter")}
