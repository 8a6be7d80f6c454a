"""SendGrid v3 Mail Send compatibility, driven by the official `sendgrid` Python client."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from email.message import Message
from typing import Any

import asyncpg
import httpx
import pytest
from python_http_client.exceptions import BadRequestsError, HTTPError, UnauthorizedError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import (
    Asm,
    Bcc,
    Category,
    Cc,
    Content,
    CustomArg,
    From,
    GroupId,
    Mail,
    MailSettings,
    Personalization,
    SandBoxMode,
    SendAt,
    SubscriptionTracking,
    Substitution,
    To,
    TrackingSettings,
)

from tests.harness import API_KEY, RouterUnderTest, SmtpSink, running_router

FRIEND = "U" + "f" * 32
SENDER = "news@shop.example.jp"


async def send(r: RouterUnderTest, message: Mail | dict[str, Any], key: str = API_KEY) -> Any:
    """The official client, pointed at the router; it is synchronous, so it runs in a thread."""
    client = SendGridAPIClient(api_key=key, host=r.base_url)
    return await asyncio.to_thread(client.send, message)


async def refused(r: RouterUnderTest, message: Mail | dict[str, Any], key: str = API_KEY) -> Any:
    with pytest.raises(HTTPError) as info:
        await send(r, message, key)
    return info.value


async def stored_intents(dsn: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT id, member_id, email_address, route, campaign, tags, metadata,"
            " idempotency_key FROM intents ORDER BY created_at, id"
        )
    finally:
        await conn.close()
    out = []
    for row in rows:
        item = dict(row)
        item["id"] = str(item["id"])
        item["tags"] = json.loads(item["tags"])
        item["metadata"] = json.loads(item["metadata"]) if item["metadata"] else None
        out.append(item)
    return out


async def friend(r: RouterUnderTest) -> None:
    resp = await r.client.put(
        "/v1/members/friend", json={"email": "friend@example.jp", "line_user_id": FRIEND}
    )
    assert resp.status_code in (200, 201), resp.text


def newsletter(*recipients: str) -> Mail:
    return Mail(
        from_email=From(SENDER, "Shop"),
        to_emails=[To(r) for r in recipients],
        subject="Autumn sale",
        plain_text_content="20% off everything until Sunday.",
        html_content="<p>20% off <b>everything</b> until Sunday.</p>",
        is_multiple=True,
    )


def text_of(message: Message) -> str:
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode().strip()


def error_fields(exc: HTTPError) -> list[str | None]:
    body = exc.to_dict
    assert set(body) == {"errors"}
    for entry in body["errors"]:
        assert set(entry) >= {"message", "field", "help"} and entry["message"]
    return [e["field"] for e in body["errors"]]


async def test_friend_gets_line_and_plain_recipient_gets_email(
    router: RouterUnderTest, line_sim: Any, smtp: SmtpSink, dsn: str
) -> None:
    await friend(router)
    resp = await send(router, newsletter("friend@example.jp", "Plain@Example.org"))
    assert resp.status_code == 202
    assert resp.body in (b"", None)
    message_id = resp.headers["X-Message-Id"]
    assert len(message_id) == 22

    stored = await stored_intents(dsn)
    assert {(i["member_id"], i["email_address"]) for i in stored} == {
        ("friend", None),
        (None, "Plain@example.org"),
    }
    assert all(i["route"] == "prefer_line" for i in stored)
    assert all(i["metadata"]["sg_message_id"] == message_id for i in stored)
    for intent in stored:
        await router.wait_for(intent["id"])

    (push,) = line_sim.accepted_pushes()
    assert push.body["to"] == FRIEND
    text = push.body["messages"][0]["text"]
    assert text.startswith("Autumn sale") and "20% off everything until Sunday." in text
    assert "<" not in text

    (mail,) = smtp.mails
    assert mail.rcpt_to == ["Plain@example.org"]
    assert mail.message["Subject"] == "Autumn sale"
    assert mail.message["From"] == f"Shop <{SENDER}>"
    parts = {p.get_content_type(): p.get_payload(decode=True) for p in mail.message.walk()}
    assert b"<b>everything</b>" in parts["text/html"]
    assert b"20% off everything" in parts["text/plain"]


async def test_personalizations_get_their_own_substitutions(
    router: RouterUnderTest, line_sim: Any, smtp: SmtpSink, dsn: str
) -> None:
    await friend(router)
    mail = Mail()
    mail.from_email = From(SENDER)
    mail.subject = "Hello -name-"
    mail.add_content(Content("text/plain", "Dear -name-, your code is -code-."))
    for address, name, code in (
        ("friend@example.jp", "Taro", "A-1"),
        ("hanako@example.org", "Hanako", "B-2"),
        ("jiro@example.org", "Jiro", "-name-"),  # a value is never substituted again
    ):
        p = Personalization()
        p.add_to(To(address))
        p.add_substitution(Substitution("-name-", name))
        p.add_substitution(Substitution("-code-", code))
        mail.add_personalization(p)
    assert (await send(router, mail)).status_code == 202

    for intent in await stored_intents(dsn):
        await router.wait_for(intent["id"])
    (push,) = line_sim.accepted_pushes()
    assert "Hello Taro" in push.body["messages"][0]["text"]
    assert "Dear Taro, your code is A-1." in push.body["messages"][0]["text"]
    mails = {m.rcpt_to[0]: m.message for m in smtp.mails}
    assert set(mails) == {"hanako@example.org", "jiro@example.org"}
    assert mails["hanako@example.org"]["Subject"] == "Hello Hanako"
    assert text_of(mails["hanako@example.org"]) == "Dear Hanako, your code is B-2."
    assert text_of(mails["jiro@example.org"]) == "Dear Jiro, your code is -name-."


async def test_categories_and_custom_args_land_in_intents(
    router: RouterUnderTest, dsn: str
) -> None:
    mail = newsletter("a@example.org")
    mail.add_category(Category("autumn-sale"))
    mail.add_category(Category("newsletter"))
    mail.add_custom_arg(CustomArg("order", "top"))
    mail.add_custom_arg(CustomArg("shared", "top"))
    p = Personalization()
    p.add_to(To("b@example.org"))
    p.add_custom_arg(CustomArg("shared", "personal"))
    mail.add_personalization(p)
    # the client puts the last category added first on the wire; the first one there counts
    wire = mail.get()["categories"]
    assert wire == ["newsletter", "autumn-sale"]
    resp = await send(router, mail)
    assert resp.status_code == 202
    message_id = resp.headers["X-Message-Id"]

    stored = {i["email_address"]: i for i in await stored_intents(dsn)}
    assert set(stored) == {"a@example.org", "b@example.org"}
    for intent in stored.values():
        assert intent["campaign"] == "newsletter"
        assert intent["tags"] == ["newsletter", "autumn-sale"]
        assert intent["idempotency_key"] is None  # no Idempotency-Key: every request sends
    # custom_args are kept apart from the door's own keys, so events echo only them
    assert stored["a@example.org"]["metadata"] == {
        "custom_args": {"order": "top", "shared": "top"},
        "sg_message_id": message_id,
    }
    # a personalization's custom_args win over the message's
    assert stored["b@example.org"]["metadata"] == {
        "custom_args": {"order": "top", "shared": "personal"},
        "sg_message_id": message_id,
    }


async def test_an_unsubscribe_group_makes_mail_promotional_in_that_category(
    router: RouterUnderTest, dsn: str
) -> None:
    made = await router.client.post("/v3/asm/groups", json={"name": "Sales"})
    assert made.status_code == 201, made.text
    group_id = made.json()["id"]
    grouped = newsletter("grouped@example.org")
    grouped.asm = Asm(GroupId(group_id))
    tracked = newsletter("tracked@example.org")
    tracked.tracking_settings = TrackingSettings(
        subscription_tracking=SubscriptionTracking(enable=True)
    )
    for mail in (grouped, tracked, newsletter("plain@example.org")):
        assert (await send(router, mail)).status_code == 202
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT email_address, kind, category FROM intents")
    finally:
        await conn.close()
    assert {r["email_address"]: (r["kind"], r["category"]) for r in rows} == {
        "grouped@example.org": ("promotional", f"asm-{group_id}"),
        "tracked@example.org": ("promotional", None),
        "plain@example.org": ("transactional", None),
    }


async def test_cc_and_bcc_get_the_email_only(router: RouterUnderTest, dsn: str) -> None:
    await friend(router)
    p = Personalization()
    p.add_to(To("to@example.org"))
    p.add_cc(Cc("friend@example.jp"))
    p.add_bcc(Bcc("archive@example.org"))
    mail = newsletter()
    mail.add_personalization(p)
    assert (await send(router, mail)).status_code == 202
    stored = await stored_intents(dsn)
    routes = {(i["member_id"] or i["email_address"]): i for i in stored}
    assert routes["to@example.org"]["route"] == "prefer_line"
    assert routes["friend"]["route"] == "email_only"
    assert routes["friend"]["metadata"]["sg_recipient_type"] == "cc"
    assert routes["archive@example.org"]["metadata"]["sg_recipient_type"] == "bcc"
    view = await router.intent(routes["friend"]["id"])
    assert [d["channel"] for d in view["deliveries"]] == ["email"]


async def test_wrong_or_missing_api_key_gets_sendgrid_401(
    router: RouterUnderTest, dsn: str
) -> None:
    exc = await refused(router, newsletter("a@example.org"), key="SG.not-a-router-key")
    assert isinstance(exc, UnauthorizedError) and exc.status_code == 401
    assert exc.to_dict == {
        "errors": [
            {
                "message": "The provided authorization grant is invalid, expired, or revoked",
                "field": None,
                "help": None,
            }
        ]
    }
    async with httpx.AsyncClient(base_url=router.base_url) as bare:
        resp = await bare.post("/v3/mail/send", json=newsletter("a@example.org").get())
    assert resp.status_code == 401
    assert resp.json()["errors"][0]["message"] == "authorization required"
    assert await stored_intents(dsn) == []


async def test_missing_subject_or_content_is_refused_naming_the_field(
    router: RouterUnderTest, dsn: str
) -> None:
    body = newsletter("a@example.org").get()
    no_subject = {k: v for k, v in body.items() if k != "subject"}
    exc = await refused(router, no_subject)
    assert isinstance(exc, BadRequestsError) and exc.status_code == 400
    assert error_fields(exc) == ["subject"]

    # a subject on every personalization is enough
    each = {**no_subject, "personalizations": [{**body["personalizations"][0], "subject": "Hi"}]}
    assert (await send(router, each)).status_code == 202

    no_content = {k: v for k, v in body.items() if k != "content"}
    assert error_fields(await refused(router, no_content)) == ["content"]
    template = {**no_content, "template_id": "d-0123456789abcdef"}
    exc = await refused(router, template)
    assert error_fields(exc) == ["template_id"]
    assert "does not name a template" in exc.to_dict["errors"][0]["message"]
    bad_address = {**body, "personalizations": [{"to": [{"email": "not an address"}]}]}
    assert error_fields(await refused(router, bad_address)) == ["personalizations.0.to.0.email"]
    bad_header = {**body, "headers": {"Bcc": "spy@example.org"}}
    assert error_fields(await refused(router, bad_header)) == ["headers"]
    wrong_type = {**body, "personalizations": [{"to": "a@example.org"}]}
    assert error_fields(await refused(router, wrong_type)) == ["personalizations.0.to"]
    assert len(await stored_intents(dsn)) == 1  # only the valid request


async def test_limits_on_personalizations_and_recipients(router: RouterUnderTest, dsn: str) -> None:
    body = newsletter("a@example.org").get()
    many = [{"to": [{"email": f"r{i}@example.org"}]} for i in range(1001)]
    exc = await refused(router, {**body, "personalizations": many})
    assert exc.status_code == 400
    assert "personalizations" in error_fields(exc)
    assert "1001" in exc.to_dict["errors"][0]["message"]

    crowded = [{"to": [{"email": f"r{i}@example.org"} for i in range(1001)]}]
    exc = await refused(router, {**body, "personalizations": crowded})
    assert "total recipients" in exc.to_dict["errors"][0]["message"]

    duplicate = [{"to": [{"email": "a@example.org"}], "cc": [{"email": "A@example.org"}]}]
    assert error_fields(await refused(router, {**body, "personalizations": duplicate})) == [
        "personalizations.0"
    ]
    assert await stored_intents(dsn) == []

    exactly = [{"to": [{"email": f"r{i}@example.org"}]} for i in range(1000)]
    assert (await send(router, {**body, "personalizations": exactly})).status_code == 202
    assert len(await stored_intents(dsn)) == 1000


async def test_the_same_body_twice_is_two_sends_as_with_sendgrid(
    router: RouterUnderTest, dsn: str, smtp: SmtpSink
) -> None:
    # A "send the code again" button posts the same body again: SendGrid sends it again.
    first = await send(router, newsletter("a@example.org"))
    again = await send(router, newsletter("a@example.org"))
    assert first.status_code == again.status_code == 202
    assert first.headers["X-Message-Id"] != again.headers["X-Message-Id"]
    intents = await stored_intents(dsn)
    assert len(intents) == 2
    for intent in intents:
        await router.wait_for(intent["id"])
    assert [m.rcpt_to for m in smtp.mails] == [["a@example.org"], ["a@example.org"]]


async def test_an_idempotency_key_makes_a_retry_send_nothing_more(
    router: RouterUnderTest, dsn: str
) -> None:
    body = newsletter("a@example.org", "b@example.org").get()

    async def post(payload: dict[str, Any], key: str) -> httpx.Response:
        return await router.client.post(
            "/v3/mail/send",
            json=payload,
            headers={"Idempotency-Key": key, "Authorization": f"Bearer {API_KEY}"},
        )

    first = await post(body, "order-1042-receipt")
    assert first.status_code == 202, first.text
    before = await stored_intents(dsn)
    assert len(before) == 2
    retry = await post(body, "order-1042-receipt")
    assert retry.status_code == 202
    assert retry.headers["X-Message-Id"] == first.headers["X-Message-Id"]
    assert await stored_intents(dsn) == before
    # The same key on another body is the client's mistake, not a retry.
    changed = {**body, "subject": "Autumn sale, last day"}
    conflict = await post(changed, "order-1042-receipt")
    assert conflict.status_code == 409, conflict.text
    assert conflict.json()["errors"][0]["message"]
    assert await stored_intents(dsn) == before
    # Another key is another send.
    other = await post(body, "order-1043-receipt")
    assert other.status_code == 202
    assert len(await stored_intents(dsn)) == 4
    too_long = await post(body, "k" * 256)
    assert too_long.status_code == 400 and "Idempotency-Key" in too_long.text


async def test_send_at_schedules_delivery(
    router: RouterUnderTest, smtp: SmtpSink, dsn: str
) -> None:
    when = int(time.time()) + 2
    mail = newsletter("later@example.org")
    mail.send_at = SendAt(when)
    assert (await send(router, mail)).status_code == 202
    (intent,) = await stored_intents(dsn)
    (delivery,) = (await router.intent(intent["id"]))["deliveries"]
    assert datetime.fromisoformat(delivery["next_attempt_at"]) >= datetime.fromtimestamp(when, UTC)
    # The moment `when` on the sink's clock: under load the request alone can take a second.
    due = time.monotonic() + (when - time.time())
    await router.wait_for(intent["id"])
    assert len(smtp.mails) == 1
    assert smtp.mails[0].accepted_at >= due

    too_far = newsletter("later@example.org")
    too_far.send_at = SendAt(int(time.time()) + 73 * 3600)
    assert error_fields(await refused(router, too_far)) == ["send_at"]
    # Past any clock (the platform's time_t): the same 400, not a server error.
    beyond = newsletter("later@example.org").get() | {"send_at": 188733802605385318400}
    assert error_fields(await refused(router, beyond)) == ["send_at"]


async def test_sandbox_mode_validates_without_sending(router: RouterUnderTest, dsn: str) -> None:
    mail = newsletter("a@example.org")
    settings = MailSettings()
    settings.sandbox_mode = SandBoxMode(True)
    mail.mail_settings = settings
    resp = await send(router, mail)
    assert resp.status_code == 200
    assert await stored_intents(dsn) == []


async def test_a_request_nobody_can_receive_is_refused(dsn: str) -> None:
    # email is not configured, and this recipient is no LINE friend: nothing would go out
    async with running_router(dsn, None, None) as r:
        exc = await refused(r, newsletter("a@example.org"))
        assert exc.status_code == 400
        assert error_fields(exc) == ["personalizations.0.to.0.email"]
        assert "email is not configured" in exc.to_dict["errors"][0]["message"]


async def test_too_large_a_body_gets_sendgrid_413(dsn: str) -> None:
    async with running_router(dsn, None, None, ROUTER_HTTP_MAX_BODY_BYTES="4096") as r:
        mail = newsletter("a@example.org")
        mail.add_content(Content("text/html", "<p>" + "x" * 5000 + "</p>"))
        exc = await refused(r, mail)
        assert exc.status_code == 413
        assert "too large" in exc.to_dict["errors"][0]["message"]
