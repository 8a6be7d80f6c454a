"""Bounces and complaints that arrive by mail: DSNs (RFC 3464) and ARF reports (RFC 5965)
sent to a composed email's bounce address reach the router's SMTP listener, which is the
bounce domain's MX, and mark the delivery and suppress the address."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

import aiosmtplib
import asyncpg
import pytest

from router.deliverability.feedback import Complaint, DeliveryReport, Original, read_report
from router.deliverability.secret import token_secret
from router.deliverability.tokens import Unsubscribe, bounce_address, unsubscribe_token
from router.passwords import hash_password
from tests.harness import RouterUnderTest, SmtpSink, _free_port, running_router

BOUNCE_DOMAIN = "bounces.shop.example.jp"
USER, PASSWORD = "newsletter", "s3cret-relay"
HASHED = hash_password(PASSWORD)
MAIL = {"subject": "Autumn sale", "text": "10% off this week"}


@asynccontextmanager
async def router_with_mx(
    dsn: str, smtp: SmtpSink, **env: str
) -> AsyncIterator[tuple[RouterUnderTest, int]]:
    port = _free_port()
    settings = {
        "ROUTER_SMTP_INGRESS_LISTEN": f"127.0.0.1:{port}",
        "ROUTER_SMTP_INGRESS_USERS": f"{USER}:{HASHED}",
        "ROUTER_EMAIL_BOUNCE_DOMAIN": BOUNCE_DOMAIN,
        # Delivery events are recorded only for a receiver; this one never answers, so the
        # events stay in the table for the tests to read.
        "ROUTER_EVENTS_WEBHOOK_URL": f"http://127.0.0.1:{_free_port()}/events",
        "ROUTER_EVENTS_SIGNING_SECRET": "bounce-tests",
        **env,
    }
    async with running_router(dsn, None, smtp, **settings) as r:
        yield r, port


async def sent_email(r: RouterUnderTest, address: str, **to: str) -> tuple[str, UUID]:
    """An email_only intent to `address` (or the member `to` names), sent to the sink: the
    intent and delivery ids."""
    resp = await r.client.post(
        "/v1/intents",
        json={**(to or {"email_address": address}), "route": "email_only", "email": MAIL},
    )
    assert resp.status_code == 202, resp.text
    body = await r.wait_for(resp.json()["id"])
    (delivery,) = body["deliveries"]
    return body["id"], UUID(delivery["id"])


def secret_of(r: RouterUnderTest) -> bytes:
    return token_secret(r.runtime.config.email)


def headers_of(smtp: SmtpSink, address: str) -> str:
    """The header section of the email the sink received for `address`."""
    (mail,) = [m for m in smtp.mails if address in m.rcpt_to]
    return mail.data.split(b"\r\n\r\n", 1)[0].decode("ascii")


def postfix_dsn(to: str, recipient: str, original_headers: str, *, action: str = "failed",
                status: str = "5.1.1") -> bytes:  # fmt: skip
    """A non-delivery report as Postfix writes it."""
    reply = (
        f"550 5.1.1 <{recipient}>: Recipient address rejected: User unknown in"
        "\r\n    local recipient table"
        if status.startswith("5.")
        else f"450 4.2.0 <{recipient}>: Recipient address rejected: Greylisted"
    )
    lines = [
        "Return-Path: <>",
        "From: MAILER-DAEMON@mx.example.jp (Mail Delivery System)",
        "Subject: Undelivered Mail Returned to Sender",
        f"To: {to}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        '\tboundary="4F1C216241F.1764600000/mx.example.jp"',
        "Content-Transfer-Encoding: 8bit",
        "Message-Id: <20261201060000.4F1C216241F@mx.example.jp>",
        "",
        "This is a MIME-encapsulated message.",
        "",
        "--4F1C216241F.1764600000/mx.example.jp",
        "Content-Description: Notification",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        "This is the mail system at host mx.example.jp.",
        "",
        "I'm sorry to have to inform you that your message could not",
        "be delivered to one or more recipients.",
        "",
        f"<{recipient}>: host mx.example.jp[192.0.2.25] said: {reply}",
        "",
        "--4F1C216241F.1764600000/mx.example.jp",
        "Content-Description: Delivery report",
        "Content-Type: message/delivery-status",
        "",
        "Reporting-MTA: dns; mx.example.jp",
        "X-Postfix-Queue-ID: 4F1C216241F",
        f"X-Postfix-Sender: rfc822; {to}",
        "Arrival-Date: Tue,  1 Dec 2026 15:00:00 +0900 (JST)",
        "",
        f"Final-Recipient: rfc822; {recipient}",
        f"Original-Recipient: rfc822;{recipient}",
        f"Action: {action}",
        f"Status: {status}",
        "Remote-MTA: dns; mx.example.jp",
        f"Diagnostic-Code: smtp; {reply}",
        "",
        "--4F1C216241F.1764600000/mx.example.jp",
        "Content-Description: Undelivered Message Headers",
        "Content-Type: text/rfc822-headers",
        "",
        original_headers,
        "",
        "--4F1C216241F.1764600000/mx.example.jp--",
        "",
    ]
    return "\r\n".join(lines).encode()


def arf_complaint(to: str, original_headers: str) -> bytes:
    """An abuse report as a mailbox provider's feedback loop sends it (RFC 5965)."""
    lines = [
        "From: <staff@fbl.example.net>",
        "Date: Tue, 1 Dec 2026 16:00:00 +0900",
        "Subject: complaint about message from 192.0.2.1",
        f"To: {to}",
        "MIME-Version: 1.0",
        'Content-Type: multipart/report; report-type=feedback-report; boundary="arf_b"',
        "",
        "--arf_b",
        'Content-Type: text/plain; charset="US-ASCII"',
        "",
        "This is an email abuse report for an email message received from IP",
        "192.0.2.1 on Tue, 1 Dec 2026 15:00:00 +0900.",
        "",
        "--arf_b",
        "Content-Type: message/feedback-report",
        "",
        "Feedback-Type: abuse",
        "User-Agent: SomeFeedbackLoop/1.0",
        "Version: 1",
        "Source-IP: 192.0.2.1",
        "",
        "--arf_b",
        "Content-Type: message/rfc822",
        "Content-Disposition: inline",
        "",
        original_headers,
        "",
        "10% off this week",
        "",
        "--arf_b--",
        "",
    ]
    return "\r\n".join(lines).encode()


async def campaign_delivery(dsn: str, campaign_id: str) -> tuple[UUID, UUID]:
    """The intent and delivery of a one-member campaign, once its fan-out made them."""
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + 15
        while (row := await conn.fetchrow(
            "SELECT d.intent_id, d.id FROM deliveries d JOIN intents i ON i.id = d.intent_id"
            " WHERE i.campaign_id = $1", UUID(campaign_id),
        )) is None:  # fmt: skip
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    return row["intent_id"], row["id"]


async def send_unauthenticated(port: int, recipients: list[str], data: bytes) -> Any:
    """Deliver as another domain's MTA does to an MX: no AUTH, null sender."""
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
    await client.connect()
    try:
        return await client.sendmail("", recipients, data)
    finally:
        await client.quit()


async def facts(dsn: str, delivery_id: UUID) -> tuple[str, list[tuple[str, str | None]], Any]:
    """The delivery's status, its events after `processed`, and its address's suppression."""
    conn = await asyncpg.connect(dsn)
    try:
        status, address = await conn.fetchrow(
            "SELECT status, address FROM deliveries WHERE id = $1", delivery_id
        )
        events = await conn.fetch(
            "SELECT event, reason FROM delivery_events WHERE delivery_id = $1"
            " AND event NOT IN ('processed', 'delivered') ORDER BY id",
            delivery_id,
        )
        suppression = await conn.fetchrow(
            "SELECT reason, detail, delivery_id FROM email_suppressions WHERE address = $1",
            address,
        )
    finally:
        await conn.close()
    return status, [(e["event"], e["reason"]) for e in events], suppression


async def test_a_dsn_bounces_the_delivery_and_suppresses_the_address(
    dsn: str, smtp: SmtpSink
) -> None:
    async with router_with_mx(dsn, smtp) as (r, port):
        resp = await r.client.put("/v1/members/gone", json={"email": "gone@example.jp"})
        assert resp.status_code in (200, 201), resp.text
        intent_id, delivery_id = await sent_email(r, "gone@example.jp", member_id="gone")
        _, delayed_id = await sent_email(r, "slow@example.jp")
        secret = secret_of(r)
        to = bounce_address(secret, delivery_id, BOUNCE_DOMAIN)

        # A delay first: an event, no change.
        delay = postfix_dsn(
            bounce_address(secret, delayed_id, BOUNCE_DOMAIN),
            "slow@example.jp",
            headers_of(smtp, "slow@example.jp"),
            action="delayed",
            status="4.2.0",
        )
        errors, reply = await send_unauthenticated(
            port, [bounce_address(secret, delayed_id, BOUNCE_DOMAIN)], delay
        )
        assert errors == {} and reply.startswith("2.0.0")
        status, events, suppression = await facts(dsn, delayed_id)
        assert status == "sent" and suppression is None
        assert [e for e, _ in events] == ["deferred"] and "4.2.0" in (events[0][1] or "")

        # The hard bounce, twice (MTAs retry): one change, one event.
        report = postfix_dsn(to, "gone@example.jp", headers_of(smtp, "gone@example.jp"))
        for _ in range(2):
            errors, reply = await send_unauthenticated(port, [to], report)
            assert errors == {} and reply.startswith("2.0.0")
        status, events, suppression = await facts(dsn, delivery_id)
        assert status == "bounced"
        assert len(events) == 1 and events[0][0] == "bounce"
        assert (events[0][1] or "").startswith("5.1.1 smtp; 550 5.1.1")
        assert suppression["reason"] == "bounce" and suppression["delivery_id"] == delivery_id

        body = await r.intent(intent_id)
        assert body["status"] == "failed"
        assert body["deliveries"][0]["status"] == "bounced"
        assert body["deliveries"][0]["feedback_at"] is not None

        # The next email to the member is refused.
        resp = await r.client.post(
            "/v1/intents", json={"member_id": "gone", "route": "email_only", "email": MAIL}
        )
        assert resp.status_code == 422 and "suppressed: bounce" in resp.text, resp.text


async def test_a_complaint_marks_the_delivery_and_suppresses_the_address(
    dsn: str, smtp: SmtpSink
) -> None:
    async with router_with_mx(dsn, smtp) as (r, port):
        # A campaign's email: its counts follow the delivery's new status.
        resp = await r.client.put("/v1/members/angry", json={"email": "angry@example.org"})
        assert resp.status_code in (200, 201), resp.text
        resp = await r.client.post(
            "/v1/audiences",
            data={"name": "a", "type": "email"},
            files={"file": ("list.csv", b"angry@example.org\n", "text/csv")},
        )
        resp = await r.client.post(
            "/v1/campaigns", json={"audience_ids": [resp.json()["id"]], "email": MAIL}
        )
        assert resp.status_code == 202, resp.text
        campaign_id = resp.json()["id"]
        intent_id, delivery_id = await campaign_delivery(dsn, campaign_id)
        await r.wait_for(str(intent_id))
        to = bounce_address(secret_of(r), delivery_id, BOUNCE_DOMAIN)
        errors, reply = await send_unauthenticated(
            port, [to], arf_complaint(to, headers_of(smtp, "angry@example.org"))
        )
        assert errors == {} and reply.startswith("2.0.0")
        status, events, suppression = await facts(dsn, delivery_id)
        assert status == "complained"
        assert events == [("spamreport", "feedback-type abuse")]
        assert suppression["reason"] == "spamreport"
        body = await r.intent(str(intent_id))
        # The message arrived: the complaint came after delivery.
        assert body["status"] == "delivered" and body["deliveries"][0]["status"] == "complained"
        counts = (await r.client.get(f"/v1/campaigns/{campaign_id}")).json()["deliveries"]
        assert [(c["channel"], c["status"], c["deliveries"]) for c in counts] == [
            ("email", "complained", 1)
        ]

        # The address is refused at intake from now on, by member or by address.
        resp = await r.client.post(
            "/v1/intents",
            json={"email_address": "angry@example.org", "route": "email_only", "email": MAIL},
        )
        assert resp.status_code == 422 and "suppressed: spamreport" in resp.text, resp.text


async def test_forged_tokens_other_mailboxes_outside_recipients_and_unsubscribes(
    dsn: str, smtp: SmtpSink
) -> None:
    async with router_with_mx(dsn, smtp) as (r, port):
        _, delivery_id = await sent_email(r, "kept@example.jp")
        real = bounce_address(secret_of(r), delivery_id, BOUNCE_DOMAIN)
        headers = headers_of(smtp, "kept@example.jp")
        # The right shape, the wrong signature: taken (the answer tells nothing) and dropped.
        forged = bounce_address(b"another router's secret", delivery_id, BOUNCE_DOMAIN)
        errors, reply = await send_unauthenticated(
            port, [forged], postfix_dsn(forged, "kept@example.jp", headers)
        )
        assert errors == {} and reply.startswith("2.0.0")
        # A real token with a message that is no report (an auto-reply): dropped.
        vacation = f"To: {real}\r\nSubject: Out of office\r\n\r\nBack on Monday.\r\n".encode()
        errors, _ = await send_unauthenticated(port, [real], vacation)
        assert errors == {}
        assert await facts(dsn, delivery_id) == ("sent", [], None)

        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await client.connect()
        try:
            await client.ehlo()
            await client.mail("")
            for address in (f"postmaster@{BOUNCE_DOMAIN}", f"bounce+short@{BOUNCE_DOMAIN}"):
                with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
                    await client.rcpt(address)
                assert refused.value.code == 550 and "5.1.1" in refused.value.message
            # Without AUTH, a recipient elsewhere is refused as before.
            with pytest.raises(aiosmtplib.SMTPRecipientRefused) as outside:
                await client.rcpt("kept@example.jp")
            assert outside.value.code == 530 and "5.7.0" in outside.value.message
        finally:
            await client.quit()
        # An authenticated sender's mail to the bounce domain is not an intent either.
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await client.connect()
        await client.login(USER, PASSWORD)
        errors, reply = await client.sendmail("news@shop.example.jp", [real], vacation)
        await client.quit()
        assert errors == {} and reply == "2.0.0 OK"
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval("SELECT count(*) FROM intents") == 1
        finally:
            await conn.close()
        # The List-Unsubscribe mailto: the token is the Subject.
        _, delivery_id = await sent_email(r, "done@example.org")
        token = unsubscribe_token(
            secret_of(r), Unsubscribe("a", "done@example.org", delivery_id=delivery_id)
        )
        mailto = (
            f"From: done@example.org\r\nTo: unsubscribe@{BOUNCE_DOMAIN}\r\nSubject: {token}\r\n\r\n"
        ).encode()
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await client.connect()
        errors, _ = await client.sendmail(
            "done@example.org", [f"unsubscribe@{BOUNCE_DOMAIN}"], mailto
        )
        await client.quit()
        assert errors == {}
        status, _, suppression = await facts(dsn, delivery_id)
        assert status == "sent" and suppression["reason"] == "unsubscribe"


async def test_without_a_bounce_domain_nothing_is_taken_without_auth(
    dsn: str, smtp: SmtpSink
) -> None:
    async with router_with_mx(dsn, smtp, ROUTER_EMAIL_BOUNCE_DOMAIN="") as (r, port):
        _, delivery_id = await sent_email(r, "plain@example.jp")
        to = bounce_address(secret_of(r), delivery_id, BOUNCE_DOMAIN)
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
            await send_unauthenticated(
                port,
                [to],
                postfix_dsn(to, "plain@example.jp", headers_of(smtp, "plain@example.jp")),
            )
        assert refused.value.code == 530
        assert await facts(dsn, delivery_id) == ("sent", [], None)


def test_reports_are_read_from_their_machine_readable_parts() -> None:
    headers = "Message-ID: <0190-1@shop.example.jp>\r\nReturn-Path: <bounce+x@b.example>"
    gave_up = read_report(
        postfix_dsn("b@x", "r@example.jp", headers, action="failed", status="4.4.7")
    )
    assert isinstance(gave_up, DeliveryReport)
    outcome = gave_up.outcome()
    assert outcome is not None and outcome[0] == "deferred"
    assert gave_up.original == Original("<0190-1@shop.example.jp>", "bounce+x@b.example")
    invalid = read_report(postfix_dsn("b@x", "r@example.jp", headers, status="5.1.3"))
    assert isinstance(invalid, DeliveryReport)
    assert invalid.outcome() == ("bounce", invalid.recipients[0])
    assert invalid.recipients[0].status == "5.1.3"
    not_spam = arf_complaint("b@x", headers).replace(
        b"Feedback-Type: abuse", b"Feedback-Type: not-spam"
    )
    assert read_report(not_spam) == Complaint(
        "not-spam", Original("<0190-1@shop.example.jp>", "bounce+x@b.example")
    )
    # Not reports: plain text, and a report without its machine-readable part.
    assert read_report(b"Subject: Mail delivery failed\r\n\r\n550 5.1.1 unknown user\r\n") is None
    truncated = (
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nsorry\r\n--b--\r\n"
    )
    assert read_report(truncated) is None
