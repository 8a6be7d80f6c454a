"""End to end: HTTP in, LINE simulator or SMTP sink out, through PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.harness import RouterUnderTest, SmtpSink

FRIEND = "U" + "a" * 32
NEWSLETTER = {
    "subject": "Autumn sale",
    "text": "20% off everything until Sunday.\nhttps://shop.example.jp/sale",
}


async def put_member(r: RouterUnderTest, member_id: str, **fields: Any) -> dict[str, Any]:
    resp = await r.client.put(f"/v1/members/{member_id}", json=fields)
    assert resp.status_code in (200, 201), resp.text
    body: dict[str, Any] = resp.json()
    return body


async def test_linked_friend_gets_line_push_derived_from_email(
    router: RouterUnderTest, line_sim: Any, smtp: SmtpSink
) -> None:
    await put_member(router, "m1", email="taro@example.jp", line_user_id=FRIEND)
    resp = await router.client.post("/v1/intents", json={"member_id": "m1", "email": NEWSLETTER})
    assert resp.status_code == 202, resp.text
    accepted = resp.json()
    assert accepted["channels"] == ["line"] and accepted["fallback"] == "email"

    body = await router.wait_for(accepted["id"])
    line = next(d for d in body["deliveries"] if d["channel"] == "line")
    assert line["status"] == "sent" and line["provider_ref"]
    assert len(body["deliveries"]) == 1 and body["fallback"] == "email"  # not needed

    pushes = line_sim.accepted_pushes()
    assert len(pushes) == 1
    assert pushes[0].body["to"] == FRIEND
    text = pushes[0].body["messages"][0]["text"]
    assert text.startswith("Autumn sale") and "https://shop.example.jp/sale" in text
    assert pushes[0].retry_key
    assert smtp.mails == []


async def test_member_without_line_gets_email(
    router: RouterUnderTest, line_sim: Any, smtp: SmtpSink
) -> None:
    await put_member(router, "m2", email="hanako@example.jp")
    resp = await router.client.post("/v1/intents", json={"member_id": "m2", "email": NEWSLETTER})
    assert resp.status_code == 202, resp.text
    assert resp.json()["channels"] == ["email"]
    body = await router.wait_for(resp.json()["id"])
    (email,) = body["deliveries"]
    assert email["status"] == "sent"
    (mail,) = smtp.mails
    assert mail.rcpt_to == ["hanako@example.jp"]
    assert mail.message["Subject"] == "Autumn sale"
    assert mail.message["Message-ID"] == email["provider_ref"]
    assert line_sim.accepted_pushes() == []


async def test_send_at_holds_delivery_until_then(router: RouterUnderTest, smtp: SmtpSink) -> None:
    await put_member(router, "later", email="later@example.jp")
    when = datetime.now(UTC) + timedelta(seconds=1.5)
    resp = await router.client.post(
        "/v1/intents",
        json={"member_id": "later", "email": NEWSLETTER, "send_at": when.isoformat()},
    )
    assert resp.status_code == 202, resp.text
    (delivery,) = (await router.intent(resp.json()["id"]))["deliveries"]
    assert delivery["next_attempt_at"] is not None
    await asyncio.sleep(0.5)
    assert smtp.mails == []
    await router.wait_for(resp.json()["id"])
    assert datetime.now(UTC) >= when and len(smtp.mails) == 1
    naive = await router.client.post(
        "/v1/intents",
        json={"member_id": "later", "email": NEWSLETTER, "send_at": "2030-01-01T09:00:00"},
    )
    assert naive.status_code == 400 and naive.json()["errors"][0]["field"] == "send_at"
