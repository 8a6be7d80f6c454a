"""One-click unsubscribe: `POST /u/{token}` stops promotional email (all of it, or one
category) at once and leaves transactional email and LINE alone; `GET` only shows what it
would do; a token the router did not sign changes nothing; events in SendGrid's shape."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from router.deliverability.secret import token_secret
from router.deliverability.tokens import Unsubscribe, unsubscribe_token
from tests.harness import RouterUnderTest, SmtpSink
from tests.test_api_schema import document
from tests.test_delivery_events import at_least, receiver, router_with_events
from tests.test_multicast import settled

FRIEND = "U" + "a" * 32
MAIL = {"subject": "Autumn sale", "text": "20% off until Sunday"}
ONE_CLICK = {"content": b"List-Unsubscribe=One-Click"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def link(r: RouterUnderTest, what: Unsubscribe) -> str:
    return "/u/" + unsubscribe_token(token_secret(r.runtime.config.email), what)


async def put_member(r: RouterUnderTest, member_id: str, **fields: Any) -> None:
    resp = await r.client.put(f"/v1/members/{member_id}", json=fields)
    assert resp.status_code in (200, 201), resp.text


async def intent(r: RouterUnderTest, status: int = 202, **fields: Any) -> dict[str, Any]:
    resp = await r.client.post("/v1/intents", json={"email": MAIL, **fields})
    assert resp.status_code == status, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def recorded(r: RouterUnderTest) -> tuple[set[tuple[str, str]], set[str], int]:
    """Category opt-outs, suppressed addresses and members opted out of all email."""
    async with r.runtime.pool.acquire() as conn:
        opt_outs = await conn.fetch("SELECT member_id, category FROM email_category_opt_outs")
        suppressed = await conn.fetch("SELECT address, reason FROM email_suppressions")
        all_email = await conn.fetchval("SELECT count(*) FROM members WHERE email_opt_out")
    assert all(s["reason"] == "unsubscribe" for s in suppressed)
    return (
        {(o["member_id"], o["category"]) for o in opt_outs},
        {s["address"] for s in suppressed},
        all_email,
    )


async def test_one_click_stops_promotional_email_and_nothing_else(
    router: RouterUnderTest, line_sim: Any, smtp: SmtpSink
) -> None:
    await put_member(router, "m-1", email="taro@example.jp")
    await put_member(router, "m-2", email="hana@example.jp", line_user_id=FRIEND, line_friend=True)
    later = (datetime.now(UTC) + timedelta(seconds=3)).isoformat()
    queued = await intent(router, member_id="m-1", route="email_only", send_at=later)

    # GET shows what the button does and changes nothing (scanners fetch every link)
    page = await router.client.get(link(router, Unsubscribe("m", "m-1")))
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "t***@e***.jp" in page.text and "taro@example.jp" not in page.text
    assert '<form method="post">' in page.text and "<script" not in page.text
    assert "広告宣伝メール" in page.text and "all promotional email" in page.text
    assert page.headers["referrer-policy"] == "no-referrer"
    csp = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "script-src" not in csp
    assert "default-src 'none'" in csp
    assert await recorded(router) == (set(), set(), 0)

    for member in ("m-1", "m-2", "m-1"):  # a repeat is answered the same and adds nothing
        done = await router.client.post(
            link(router, Unsubscribe("m", member)), headers=FORM, **ONE_CLICK
        )
        assert done.status_code == 200, done.text
        assert "配信を停止しました" in done.text and "You are unsubscribed" in done.text
    assert await recorded(router) == ({("m-1", "*"), ("m-2", "*")}, set(), 0)

    # promotional email is refused at once, whatever its category ...
    for category in (None, "newsletter"):
        refused = await intent(router, 422, member_id="m-1", route="email_only", category=category)
        assert "opted out of promotional email" in refused["detail"]
    # ... and one accepted before is not sent either
    body = await router.wait_for(queued["id"], ("failed",))
    assert "opted out of promotional email" in body["deliveries"][0]["last_error"]
    # transactional email still goes out, and LINE still carries promotional messages
    sent = await intent(router, member_id="m-1", route="email_only", kind="transactional")
    await router.wait_for(sent["id"])
    assert [m.rcpt_to for m in smtp.mails] == [["taro@example.jp"]]
    line = {"messages": [{"type": "text", "text": "Autumn sale: 20% off"}]}
    by_line = await intent(router, member_id="m-2", route="prefer_line", line=line)
    assert by_line["channels"] == ["line"]
    await router.wait_for(by_line["id"])
    assert [p.body["to"] for p in line_sim.accepted_pushes()] == [FRIEND]
    both = await intent(router, member_id="m-2", route="both", line=line)
    assert both["channels"] == ["line"]  # email no longer carries it


async def test_a_category_unsubscribe_stops_that_category_only(
    router: RouterUnderTest, smtp: SmtpSink
) -> None:
    await put_member(router, "m-1", email="taro@example.jp")
    resp = await router.client.post(link(router, Unsubscribe("m", "m-1", "newsletter")))
    assert resp.status_code == 200 and "“newsletter” email" in resp.text
    assert await recorded(router) == ({("m-1", "newsletter")}, set(), 0)
    refused = await intent(router, 422, member_id="m-1", route="email_only", category="newsletter")
    assert "unsubscribed from 'newsletter'" in refused["detail"]
    offers = await intent(router, member_id="m-1", route="email_only", category="offers")
    await router.wait_for(offers["id"])
    assert len(smtp.mails) == 1

    # a campaign's fan-out leaves out whoever unsubscribed from its category or from all
    await put_member(router, "m-2", email="hana@example.jp")
    await put_member(router, "m-3", email="jiro@example.jp")
    assert (await router.client.post(link(router, Unsubscribe("m", "m-2")))).status_code == 200
    addresses = b"taro@example.jp\nhana@example.jp\njiro@example.jp\n"
    upload = await router.client.post(
        "/v1/audiences",
        data={"name": "all", "type": "email"},
        files={"file": ("list.csv", addresses, "text/csv")},
    )
    assert upload.status_code == 201, upload.text
    resp = await router.client.post(
        "/v1/campaigns",
        json={"audience_ids": [upload.json()["id"]], "email": MAIL, "category": "newsletter"},
    )
    assert resp.status_code == 202, resp.text
    await settled(router, resp.json()["id"], {("email", "sent"): 1})
    assert smtp.mails[-1].rcpt_to == ["jiro@example.jp"] and len(smtp.mails) == 2


async def test_an_address_only_recipient_is_suppressed(
    router: RouterUnderTest, smtp: SmtpSink
) -> None:
    token = link(router, Unsubscribe("a", "solo@example.jp", "newsletter"))
    page = await router.client.get(token)
    assert "s***@e***.jp" in page.text and "all email to this address" in page.text
    assert (await router.client.post(token)).status_code == 200
    assert await recorded(router) == (set(), {"solo@example.jp"}, 0)
    # a suppressed address is refused at intake, member record or not, transactional or not
    refused = await intent(
        router, status=422, email_address="solo@example.jp", kind="transactional"
    )
    assert "suppressed: unsubscribe" in refused["detail"]
    # and relayed mail to it is refused at RCPT (tests/test_suppressions.py); an intent
    # accepted before the unsubscribe is stopped at the send (the send-time checks)
    assert smtp.mails == []


async def test_a_token_the_router_did_not_sign_changes_nothing(router: RouterUnderTest) -> None:
    await put_member(router, "m-1", email="taro@example.jp")
    good = link(router, Unsubscribe("m", "m-1"))
    forged = "/u/" + unsubscribe_token(b"another secret", Unsubscribe("m", "m-1"))
    flipped = good[:-3] + ("A" if good[-3] != "A" else "B") + good[-2:]
    for path in (forged, flipped, good[:-5], "/u/not-a-token", "/u/" + "x" * 2000):
        page = await router.client.get(path)
        assert page.status_code == 404, path
        assert page.headers["content-type"].startswith("text/html")
        assert "このリンクは無効です" in page.text
        resp = await router.client.post(path, **ONE_CLICK)
        assert resp.status_code == 404 and resp.headers["content-type"].startswith("text/plain")
    assert (await router.client.get("/u/" + "x" * 2001)).status_code == 400  # over-long
    assert await recorded(router) == (set(), set(), 0)

    # as the OpenAPI document says: no API key, pages as HTML, the POST's 404 as plain text
    paths = (await document(router))["paths"]["/u/{token}"]
    for method in ("get", "post"):
        assert paths[method]["security"] == [], method
        assert set(paths[method]["responses"]) == {"200", "400", "404", "503"}, method
        assert "text/html" in paths[method]["responses"]["200"]["content"]
    assert "text/html" in paths["get"]["responses"]["404"]["content"]
    assert "text/plain" in paths["post"]["responses"]["404"]["content"]
    unauthenticated = await router.client.post(good, headers={"Authorization": ""})
    assert unauthenticated.status_code == 200


async def test_unsubscribes_are_posted_as_sendgrid_events(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    async with receiver() as hook, router_with_events(dsn, line_sim, smtp, hook) as r:
        await put_member(r, "m-1", email="taro@example.jp")
        sent = await intent(r, member_id="m-1", route="email_only", tags=["autumn"])
        body = await r.wait_for(sent["id"])
        delivery = UUID(body["deliveries"][0]["id"])
        await hook.wait_until(at_least(2))  # processed, delivered
        for what in (
            Unsubscribe("m", "m-1", "asm-42", delivery),
            Unsubscribe("m", "m-1", None, delivery),
            Unsubscribe("m", "m-1", None, delivery),  # repeated: no second event
            Unsubscribe("m", "m-1", "offers", UUID(int=1)),  # no such delivery: no event
            Unsubscribe("m", "m-1", "42", delivery),  # a category, but no SendGrid group
        ):
            assert (await r.client.post(link(r, what), **ONE_CLICK)).status_code == 200
        events = await hook.wait_until(at_least(5))
        async with r.runtime.pool.acquire() as conn:  # recorded with each opt-out, or never
            stored = await conn.fetchval("SELECT count(*) FROM delivery_events")
    assert stored == 5
    group, everything = events[2], events[3]
    assert group["event"] == "group_unsubscribe" and everything["event"] == "unsubscribe"
    for e in (group, everything):
        assert e["email"] == "taro@example.jp" and e["category"] == ["autumn"]
        assert e["sg_message_id"] == sent["id"] and e["smtp-id"].startswith("<")
        assert isinstance(e["timestamp"], int) and abs(e["timestamp"] - time.time()) < 60
        assert e["delivery_id"] == str(delivery) and e["member_id"] == "m-1"
        assert e["channel"] == "email" and "reason" not in e
    assert group["asm_group_id"] == 42 and group["unsubscribed_category"] == "asm-42"
    assert "asm_group_id" not in everything and "unsubscribed_category" not in everything
    assert "asm_group_id" not in events[4] and events[4]["unsubscribed_category"] == "42"
    assert len({e["sg_event_id"] for e in events}) == 5
