"""listmonk's HTTP postback messenger, over real HTTP with listmonk's payload and basic auth."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any, cast
from uuid import UUID

import asyncpg
import httpx
import msgspec

from router.content import Relayed
from router.database import Connection
from router.ingress import listmonk
from router.intake_port import AcceptIntents
from router.intents import IntentRequest, IntentResult
from tests.harness import API_KEY, RouterUnderTest, SmtpSink
from tests.test_api_members import problem

FRIEND = "U" + "b" * 32
PATH = "/v1/compat/listmonk"
CAMPAIGN_UUID = "2e7e4b51-f31b-418a-a120-e41800cb689f"
HTML = (
    "<!doctype html><html><head><style>p{color:red}</style></head><body>"
    "<h1>Autumn sale</h1><p>Hello Taro,<br>everything is <b>20% off</b> until Sunday.</p>"
    '<p><a href="https://shop.example.jp/sale">Shop now</a></p></body></html>'
)


def recipient(uuid: str, email: str, name: str = "Anon") -> dict[str, Any]:
    return {
        "uuid": uuid,
        "email": email,
        "name": name,
        "attribs": {"city": "Tokyo"},
        "status": "enabled",
    }


def postback(body: str, content_type: str, *recipients: dict[str, Any]) -> dict[str, Any]:
    """The JSON listmonk posts (internal/messenger/postback), one recipient as listmonk sends."""
    return {
        "subject": "Autumn sale",
        "content_type": content_type,
        "body": body,
        "recipients": list(recipients),
        "campaign": {
            "from_email": "Shop <news@shop.example.jp>",
            "uuid": CAMPAIGN_UUID,
            "name": "Autumn sale 2026",
            "headers": [{"X-Campaign": "autumn"}],
            "tags": ["sale", "autumn"],
        },
        "attachments": None,
    }


def listmonk_client(r: RouterUnderTest, password: str = API_KEY) -> httpx.AsyncClient:
    """Basic auth, as listmonk's messenger settings send it."""
    return httpx.AsyncClient(base_url=r.base_url, auth=("listmonk", password), timeout=30)


async def stored_intents(dsn: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT id, member_id, email_address, route, campaign, tags, metadata,"
            " idempotency_key FROM intents ORDER BY created_at, id"
        )
    finally:
        await conn.close()
    return [
        {
            **dict(r),
            "id": str(r["id"]),
            "tags": json.loads(r["tags"]),
            "metadata": json.loads(r["metadata"]),
        }
        for r in rows
    ]


async def friend(r: RouterUnderTest) -> None:
    resp = await r.client.put(
        "/v1/members/taro", json={"email": "taro@example.jp", "line_user_id": FRIEND}
    )
    assert resp.status_code in (200, 201), resp.text


async def test_basic_auth_password_is_the_api_key(router: RouterUnderTest, dsn: str) -> None:
    payload = postback("Hello", "plain", recipient("s-1", "a@example.org"))
    async with listmonk_client(router) as lm:
        assert (await lm.post(PATH, json=payload)).status_code == 200
    async with listmonk_client(router, password="wrong") as lm:
        body = problem(await lm.post(PATH, json=payload), 401)
        assert body["detail"] == "the API key is not valid"
    async with httpx.AsyncClient(base_url=router.base_url) as bare:
        resp = await bare.post(PATH, json=payload)
        problem(resp, 401)
        assert 'Basic realm="delivery-router"' in resp.headers.get_list("www-authenticate")
        # an empty password is no key
        empty = base64.b64encode(b"listmonk:").decode()
        problem(
            await bare.post(PATH, json=payload, headers={"Authorization": f"Basic {empty}"}), 401
        )
        # basic auth is for listmonk's path only
        other = base64.b64encode(f"x:{API_KEY}".encode()).decode()
        resp = await bare.get("/v1/members/nobody", headers={"Authorization": f"Basic {other}"})
        problem(resp, 401)
    # the bearer key works here like on every /v1 route
    assert (await router.client.post(PATH, json=payload)).status_code == 200
    assert len(await stored_intents(dsn)) == 1  # the second post was the same message


async def test_html_campaign_reaches_a_linked_member_as_readable_line_text(
    router: RouterUnderTest, line_sim: Any, smtp: SmtpSink, dsn: str
) -> None:
    await friend(router)
    async with listmonk_client(router) as lm:
        for uuid, email in (("s-taro", "taro@example.jp"), ("s-hana", "hanako@example.org")):
            resp = await lm.post(PATH, json=postback(HTML, "richtext", recipient(uuid, email)))
            assert resp.status_code == 200, resp.text
            assert resp.json()["results"][0]["status"] == "accepted"

    stored = {i["metadata"]["listmonk_subscriber_uuid"]: i for i in await stored_intents(dsn)}
    taro, hana = stored["s-taro"], stored["s-hana"]
    assert taro["member_id"] == "taro" and taro["route"] == "prefer_line"
    assert taro["campaign"] == "Autumn sale 2026" and taro["tags"] == ["sale", "autumn"]
    assert taro["metadata"]["listmonk_campaign_uuid"] == CAMPAIGN_UUID
    assert taro["idempotency_key"].startswith("listmonk:")
    assert taro["idempotency_key"] != hana["idempotency_key"]
    for intent in stored.values():
        await router.wait_for(intent["id"])

    (push,) = line_sim.accepted_pushes()
    assert push.body["to"] == FRIEND
    text = push.body["messages"][0]["text"]
    assert "Hello Taro" in text and "20% off until Sunday." in text
    assert "https://shop.example.jp/sale" in text
    assert "<" not in text and "color:red" not in text

    (mail,) = smtp.mails
    assert mail.rcpt_to == ["hanako@example.org"]
    assert mail.message["Subject"] == "Autumn sale"
    assert mail.message["From"] == "Shop <news@shop.example.jp>"
    assert mail.message["X-Campaign"] == "autumn"
    assert mail.message.get_content_type() == "text/html"


async def test_markdown_and_plain_bodies(
    router: RouterUnderTest, smtp: SmtpSink, line_sim: Any, dsn: str
) -> None:
    await friend(router)
    rendered = "<h1>Sale</h1>\n<p>Everything <strong>20% off</strong>.</p>"
    source = "# Sale\n\nEverything **20% off**."
    cases = [
        ("markdown", rendered, "s-1", "md-html@example.org"),  # listmonk renders campaigns
        ("markdown", source, "s-2", "md-text@example.org"),
        ("plain", "Everything 20% off.\nhttps://shop.example.jp", "s-3", "plain@example.org"),
        ("plain", "Everything 20% off, Taro.", "s-taro", "taro@example.jp"),
    ]
    async with listmonk_client(router) as lm:
        for content_type, body, uuid, email in cases:
            resp = await lm.post(PATH, json=postback(body, content_type, recipient(uuid, email)))
            assert resp.status_code == 200, resp.text
    for intent in await stored_intents(dsn):
        await router.wait_for(intent["id"])

    mails = {m.rcpt_to[0]: m.message for m in smtp.mails}
    assert set(mails) == {"md-html@example.org", "md-text@example.org", "plain@example.org"}
    assert mails["md-html@example.org"].get_content_type() == "text/html"
    assert mails["md-text@example.org"].get_content_type() == "text/plain"
    assert b"**20% off**" in mails["md-text@example.org"].get_payload(decode=True)
    assert mails["plain@example.org"].get_content_type() == "text/plain"
    (push,) = line_sim.accepted_pushes()
    assert push.body["to"] == FRIEND
    assert "Everything 20% off, Taro." in push.body["messages"][0]["text"]


async def test_a_repeated_postback_does_not_send_twice(router: RouterUnderTest, dsn: str) -> None:
    payload = postback("Hello", "plain", recipient("s-1", "a@example.org"))
    async with listmonk_client(router) as lm:
        first = await lm.post(PATH, json=payload)
        again = await lm.post(PATH, json=payload)
        assert first.status_code == again.status_code == 200
        assert again.json()["results"][0]["status"] == "duplicate"
        assert again.json()["results"][0]["id"] == first.json()["results"][0]["id"]
        changed = await lm.post(PATH, json={**payload, "body": "Hello again"})
        assert changed.json()["results"][0]["status"] == "accepted"
        # a transactional message (no campaign) has nothing to tell a retry from a resend
        tx = {**payload, "campaign": None}
        for _ in range(2):
            resp = await lm.post(PATH, json=tx)
            assert resp.json()["results"][0]["status"] == "accepted"
    stored = await stored_intents(dsn)
    assert len(stored) == 4
    assert [i["idempotency_key"] is None for i in stored].count(True) == 2


async def test_partial_and_total_rejection(router: RouterUnderTest, dsn: str) -> None:
    await router.client.put(
        "/v1/members/out", json={"email": "out@example.org", "email_opt_out": True}
    )
    async with listmonk_client(router) as lm:
        # one of two recipients can be reached: 200, so listmonk marks the message sent
        both = postback(
            "Hi",
            "plain",
            recipient("s-ok", "ok@example.org"),
            recipient("s-out", "out@example.org"),
        )
        resp = await lm.post(PATH, json=both)
        assert resp.status_code == 200, resp.text
        assert [r["status"] for r in resp.json()["results"]] == ["accepted", "rejected"]
        # nobody can be reached: not 200, so listmonk counts a send error
        alone = postback("Hi", "plain", recipient("s-out", "out@example.org"))
        body = problem(await lm.post(PATH, json=alone), 422)
        assert "opted out of email" in body["detail"]
        # what the router cannot carry out refuses the whole message
        files = {**alone, "attachments": [{"name": "a.pdf", "header": {}, "content": "JVBERg=="}]}
        body = problem(await lm.post(PATH, json=files), 400)
        assert body["errors"][0]["field"] == "attachments"
        long_tag = postback("Hi", "plain", recipient("s-ok", "ok@example.org"))
        long_tag["campaign"]["tags"] = ["x" * 101]
        body = problem(await lm.post(PATH, json=long_tag), 400)
        assert body["errors"][0]["field"] == "campaign.tags[0]"
        problem(await lm.post(PATH, json={"subject": "no body"}), 400)
    assert len(await stored_intents(dsn)) == 1


async def test_the_front_door_alone_hands_one_intent_per_recipient_to_the_accept_seam() -> None:
    """No router behind it: only a callable with the accept seam's signature."""
    handed: list[tuple[list[IntentRequest | IntentResult], str]] = []

    async def accept(
        conn: Connection,
        requests: Sequence[IntentRequest | IntentResult],
        *,
        prefix: str = "",
        relayed: Relayed | None = None,
        campaign_id: UUID | None = None,
        multicast: bool = True,
    ) -> list[IntentResult]:
        handed.append((list(requests), prefix))
        return [IntentResult(status="accepted", code=202) for _ in requests]

    seam: AcceptIntents = accept
    message = msgspec.convert(
        postback(HTML, "richtext", recipient("s-1", "a@example.jp"), recipient("s-2", "b@x.jp")),
        listmonk.Postback,
    )
    outcome = await listmonk.submit(cast(Connection, None), message, seam)
    assert outcome.taken == 2
    ((requests, prefix),) = handed
    assert prefix == "recipients[{i}]."
    assert [r.email_address for r in requests if isinstance(r, IntentRequest)] == [
        "a@example.jp",
        "b@x.jp",
    ]
