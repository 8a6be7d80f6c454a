"""What a SendGrid message carries besides its text: files, several recipients in one message,
reply-to lists and extra content types, through the official Python and Node clients."""

from __future__ import annotations

import base64
from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from typing import Any

from sendgrid.helpers.mail import (
    Attachment,
    Content,
    ContentId,
    Disposition,
    FileContent,
    FileName,
    FileType,
    From,
    Mail,
    ReplyTo,
    To,
)

from tests import node_clients
from tests.harness import API_KEY, RouterUnderTest, SmtpSink, running_router
from tests.test_compat_sendgrid import (
    FRIEND,
    error_fields,
    friend,
    refused,
    send,
    stored_intents,
)

SENDER = "billing@shop.example.jp"
# Every byte value, and bytes that are no UTF-8: a file must arrive exactly as given.
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40 + b"\r\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(reversed(range(256))) * 7


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def invoice(*recipients: str) -> Mail:
    mail = Mail(
        from_email=From(SENDER, "Shop billing"),
        to_emails=[To(r) for r in recipients],
        subject="Your invoice",
        plain_text_content="The invoice is attached.",
        html_content='<p>The invoice is attached.</p><img src="cid:logo-1">',
    )
    mail.add_attachment(
        Attachment(
            FileContent(b64(PDF)),
            FileName("請求書 2026-11.pdf"),
            FileType("application/pdf"),
            Disposition("attachment"),
        )
    )
    mail.add_attachment(
        Attachment(
            FileContent(b64(PNG)),
            FileName("logo.png"),
            FileType("image/png"),
            Disposition("inline"),
            ContentId("logo-1"),
        )
    )
    return mail


def files_of(message: Message) -> dict[str, Message]:
    return {p.get_filename() or "": p for p in message.walk() if p.get_filename()}


def structure(message: Message) -> list[str]:
    return [p.get_content_type() for p in message.walk()]


def check_files(message: Message) -> None:
    files = files_of(message)
    assert set(files) == {"請求書 2026-11.pdf", "logo.png"}
    pdf, png = files["請求書 2026-11.pdf"], files["logo.png"]
    assert pdf.get_payload(decode=True) == PDF
    assert pdf.get_content_type() == "application/pdf"
    assert pdf.get_content_disposition() == "attachment"
    assert png.get_payload(decode=True) == PNG
    assert png.get_content_disposition() == "inline"
    assert png["Content-ID"] == "<logo-1>"
    assert structure(message) == [
        "multipart/mixed",
        "multipart/related",
        "multipart/alternative",
        "text/plain",
        "text/html",
        "image/png",
        "application/pdf",
    ]


async def test_files_and_inline_images_arrive_as_given(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    # With unsubscribe links configured, a promotional mail is composed per recipient
    # (its own link) and a transactional one rendered once: both carry the files.
    env = {"ROUTER_EMAIL_PUBLIC_BASE_URL": "https://shop.example.jp/mail"}
    async with running_router(dsn, line_sim.base_url, smtp, **env) as r:
        receipt = invoice("receipt@example.org")
        promo = invoice("promo@example.org")
        made = await r.client.post("/v3/asm/groups", json={"name": "Offers"})
        assert made.status_code == 201, made.text
        promo_body = promo.get() | {"asm": {"group_id": made.json()["id"]}}
        assert (await send(r, receipt)).status_code == 202
        assert (await send(r, promo_body)).status_code == 202
        for intent in await stored_intents(dsn):
            await r.wait_for(intent["id"])
    mails = {m.rcpt_to[0]: m.message for m in smtp.mails}
    assert set(mails) == {"receipt@example.org", "promo@example.org"}
    for message in mails.values():
        check_files(message)
    assert "List-Unsubscribe" in mails["promo@example.org"]
    html = next(p for p in mails["promo@example.org"].walk() if p.get_content_type() == "text/html")
    assert b"/mail/u/" in (html.get_payload(decode=True) or b"")  # the footer's own link


async def test_a_line_friend_gets_the_files_by_email_as_well(
    router: RouterUnderTest, line_sim: Any, smtp: SmtpSink, dsn: str
) -> None:
    await friend(router)
    assert (await send(router, invoice("friend@example.jp"))).status_code == 202
    (intent,) = await stored_intents(dsn)
    assert intent["route"] == "prefer_line"
    view = await router.wait_for(intent["id"])
    assert sorted(d["channel"] for d in view["deliveries"]) == ["email", "line"]
    (push,) = line_sim.accepted_pushes()
    assert push.body["to"] == FRIEND
    (mail,) = smtp.mails
    assert mail.rcpt_to == ["friend@example.jp"]
    check_files(mail.message)


async def test_the_router_api_takes_files_too(router: RouterUnderTest, smtp: SmtpSink) -> None:
    email = {
        "subject": "Ticket",
        "text": "Your ticket is attached.",
        "attachments": [{"content": b64(PDF), "filename": "ticket.pdf", "type": "application/pdf"}],
    }
    resp = await router.client.post(
        "/v1/intents", json={"email_address": "fan@example.org", "email": email}
    )
    assert resp.status_code == 202, resp.text
    await router.wait_for(resp.json()["id"])
    (mail,) = smtp.mails
    assert files_of(mail.message)["ticket.pdf"].get_payload(decode=True) == PDF
    bad = {**email, "attachments": [{"content": "not base64!", "filename": "a.pdf"}]}
    resp = await router.client.post(
        "/v1/intents", json={"email_address": "fan@example.org", "email": bad}
    )
    assert resp.status_code == 400, resp.text
    assert "email.attachments[0].content" in resp.text


async def test_bad_files_are_refused_as_sendgrid_refuses_them(
    router: RouterUnderTest, dsn: str
) -> None:
    body = invoice("a@example.org").get()
    # (the client puts the last attachment added first on the wire)
    png, pdf = body["attachments"]
    assert pdf["filename"].endswith(".pdf")
    cases: list[tuple[list[dict[str, Any]], str]] = [
        ([{**pdf, "content": "%%%"}], "attachments.0.content"),
        ([pdf, {k: v for k, v in png.items() if k != "filename"}], "attachments.1.filename"),
        ([{k: v for k, v in png.items() if k != "content_id"}], "attachments.0.content_id"),
        ([{**pdf, "disposition": "sideways"}], "attachments.0.disposition"),
    ]
    for attachments, field in cases:
        exc = await refused(router, {**body, "attachments": attachments})
        assert exc.status_code == 400
        assert error_fields(exc) == [field]
    assert await stored_intents(dsn) == []


async def test_more_than_30_mb_of_files_is_413(dsn: str) -> None:
    body = invoice("a@example.org").get()
    half = b64(bytes(15 * 1024 * 1024 + 1))
    body["attachments"] = [
        {"content": half, "filename": "a.bin"},
        {"content": half, "filename": "b.bin"},
    ]
    async with running_router(dsn, None, None, ROUTER_HTTP_MAX_BODY_BYTES="50000000") as r:
        resp = await r.client.post("/v3/mail/send", json=body)
    assert resp.status_code == 413, resp.text
    (error,) = resp.json()["errors"]
    assert error["field"] == "attachments.1"
    assert "30 MB" in error["message"]


async def test_one_message_to_to_and_cc_with_bcc_hidden(
    router: RouterUnderTest, smtp: SmtpSink, dsn: str
) -> None:
    answer = await node_clients.send(
        router.base_url,
        API_KEY,
        {
            "to": [
                {"email": "taro@example.org", "name": "Yamada, Taro"},
                {"email": "jiro@example.org"},
            ],
            "cc": [{"email": "hanako@example.org", "name": "鈴木花子"}],
            "bcc": [{"email": "archive@example.org", "name": "Archive"}],
            "from": {"email": SENDER, "name": "Shop"},
            "replyToList": [
                {"email": "support@shop.example.jp", "name": "Support"},
                {"email": "sales@shop.example.jp"},
            ],
            "subject": "Meeting",
            "text": "See you there.",
        },
    )
    assert answer["ok"] and answer["status"] == 202, answer
    intents = await stored_intents(dsn)
    assert len(intents) == 4  # one per recipient, for routing, status and events
    for intent in intents:
        await router.wait_for(intent["id"])
    mails = {m.rcpt_to[0]: m for m in smtp.mails}
    assert set(mails) == {
        "taro@example.org",
        "jiro@example.org",
        "hanako@example.org",
        "archive@example.org",
    }
    for mail in mails.values():
        assert len(mail.rcpt_to) == 1
        message = message_from_bytes(mail.data, policy=policy.default)
        assert isinstance(message, EmailMessage)
        to = [(a.display_name, a.addr_spec) for a in message["To"].addresses]
        assert to == [("Yamada, Taro", "taro@example.org"), ("", "jiro@example.org")]
        cc = [(a.display_name, a.addr_spec) for a in message["Cc"].addresses]
        assert cc == [("鈴木花子", "hanako@example.org")]
        assert message["Bcc"] is None
        assert b"archive@example.org" not in mail.data.split(b"\r\n\r\n", 1)[0]
        reply_to = [(a.display_name, a.addr_spec) for a in message["Reply-To"].addresses]
        assert reply_to == [("Support", "support@shop.example.jp"), ("", "sales@shop.example.jp")]


async def test_reply_to_and_reply_to_list_together_are_refused(router: RouterUnderTest) -> None:
    mail = invoice("a@example.org")
    mail.reply_to = ReplyTo("support@shop.example.jp")
    body = mail.get() | {"reply_to_list": [{"email": "sales@shop.example.jp"}]}
    assert error_fields(await refused(router, body)) == ["reply_to_list"]


async def test_content_order_and_extra_types(
    router: RouterUnderTest, smtp: SmtpSink, dsn: str
) -> None:
    html_first = Mail(from_email=From(SENDER), to_emails=To("a@example.org"), subject="Order")
    html_first.add_content(Content("text/html", "<p>Hi</p>"))
    html_first.add_content(Content("text/plain", "Hi"))
    body = html_first.get()
    # The Python client puts text/plain first itself; the body as a client may post it.
    body["content"] = [
        {"type": "text/html", "value": "<p>Hi</p>"},
        {"type": "text/plain", "value": "Hi"},
    ]
    exc = await refused(router, body)
    assert exc.to_dict["errors"] == [
        {
            "message": "If present, text/plain must be first, followed by text/html, "
            "followed by any other content.",
            "field": "content",
            "help": exc.to_dict["errors"][0]["help"],
        }
    ]
    calendar = "BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nEND:VCALENDAR\r\n"
    body["content"] = [
        {"type": "text/plain", "value": "Hi"},
        {"type": "text/html", "value": "<p>Hi</p>"},
        {"type": "text/calendar; method=REQUEST", "value": calendar},
    ]
    assert (await send(router, body)).status_code == 202
    (intent,) = await stored_intents(dsn)
    await router.wait_for(intent["id"])
    (mail,) = smtp.mails
    assert structure(mail.message) == [
        "multipart/alternative",
        "text/plain",
        "text/html",
        "text/calendar",
    ]
    part = list(mail.message.walk())[-1]
    assert part.get_param("method") == "REQUEST"
    assert part.get_payload(decode=True) == calendar.encode()
