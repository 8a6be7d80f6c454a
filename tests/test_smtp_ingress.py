"""SMTP relay ingress with real SMTP clients: auth, limits, MIME, durability, relay bytes."""

from __future__ import annotations

import asyncio
import smtplib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiosmtplib
import asyncpg
import pytest

from router.ingress.smtp_relay import start_smtp_ingress
from router.passwords import hash_password, verify_password
from router.service import Runtime
from tests.harness import RouterUnderTest, SmtpSink, _free_port, running_router

FRIEND = "U" + "e5" * 16
USER, PASSWORD = "newsletter", "s3cret-relay"
HASHED = hash_password(PASSWORD)


def campaign(recipients: list[str], message_id: str = "<autumn-1@shop.example.jp>") -> bytes:
    lines = [
        "From: Shop <news@shop.example.jp>",
        f"To: {', '.join(recipients)}",
        "Subject: =?utf-8?b?56eL44Gu44K744O844Or?=",
        f"Message-ID: {message_id}",
        "DKIM-Signature: v=1; a=rsa-sha256; d=shop.example.jp; s=sel; b=AAAA",
        "List-Unsubscribe: <https://shop.example.jp/u/abc>",
        "MIME-Version: 1.0",
        'Content-Type: multipart/alternative; boundary="b1"',
        "",
        "--b1",
        "Content-Type: text/plain; charset=utf-8",
        "",
        "Autumn sale starts today: https://shop.example.jp/sale?utm_source=mail",
        "",
        "To unsubscribe, visit https://shop.example.jp/u/abc",
        "--b1",
        "Content-Type: text/html; charset=utf-8",
        "",
        '<p>Autumn sale <a href="https://shop.example.jp/sale">starts today</a></p>',
        '<img src="https://t.example.jp/o.gif" width="1" height="1">',
        "--b1--",
        "",
    ]
    return "\r\n".join(lines).encode()


@asynccontextmanager
async def ingress(
    dsn: str, line_sim: Any, smtp: SmtpSink, **env: str
) -> AsyncIterator[tuple[RouterUnderTest, int]]:
    port = _free_port()
    settings = {
        "ROUTER_SMTP_INGRESS_LISTEN": f"127.0.0.1:{port}",
        "ROUTER_SMTP_INGRESS_USERS": f"{USER}:{HASHED}",
        **env,
    }
    async with running_router(dsn, line_sim.base_url, smtp, **settings) as r:
        await r.client.put(
            "/v1/members/friend", json={"email": "friend@example.jp", "line_user_id": FRIEND}
        )
        await r.client.put("/v1/members/mail", json={"email": "mail@example.jp"})
        yield r, port


async def wait_until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


async def test_campaign_goes_out_over_line_and_as_the_original_email(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    recipients = ["friend@example.jp", "mail@example.jp", "stranger@example.org"]
    data = campaign(recipients)
    async with ingress(dsn, line_sim, smtp) as (_, port):
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await client.connect()
        await client.login(USER, PASSWORD)
        errors, reply = await client.sendmail("bounce@shop.example.jp", recipients, data)
        await client.quit()
        assert errors == {} and reply.startswith("2.0.0 OK: 3 recipient(s) queued")
        await wait_until(lambda: len(smtp.mails) == 2 and len(line_sim.accepted_pushes()) == 1)
    (push,) = line_sim.accepted_pushes()
    assert push.body["to"] == FRIEND
    text = push.body["messages"][0]["text"]
    assert text.startswith("秋のセール\n\nAutumn sale starts today: https://shop.example.jp/sale")
    assert text.endswith("配信停止: https://shop.example.jp/u/abc")
    assert "To unsubscribe" not in text
    for mail in smtp.mails:
        assert mail.data == data  # byte for byte: DKIM signature and links intact
        assert mail.mail_from == "bounce@shop.example.jp"
    assert sorted(m.rcpt_to[0] for m in smtp.mails) == ["mail@example.jp", "stranger@example.org"]


async def test_auth_is_required_and_checked(dsn: str, line_sim: Any, smtp: SmtpSink) -> None:
    async with ingress(dsn, line_sim, smtp) as (_, port):
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            await asyncio.to_thread(_send_without_auth, port)
        assert refused.value.smtp_code == 530
        with pytest.raises(smtplib.SMTPAuthenticationError) as bad:
            await asyncio.to_thread(_send_with, port, USER, "wrong")
        assert bad.value.smtp_code == 535
        # smtplib (the standard library client) works with the right password
        await asyncio.to_thread(_send_with, port, USER, PASSWORD)
        await wait_until(lambda: len(smtp.mails) == 1)


def _send_without_auth(port: int) -> None:
    with smtplib.SMTP("127.0.0.1", port) as s:
        s.sendmail("a@shop.example.jp", ["mail@example.jp"], campaign(["mail@example.jp"]))


def _send_with(port: int, user: str, password: str, data: bytes | None = None) -> None:
    with smtplib.SMTP("127.0.0.1", port) as s:
        s.login(user, password)
        s.sendmail("a@shop.example.jp", ["mail@example.jp"], data or campaign(["mail@example.jp"]))


async def test_size_limit_malformed_mime_and_bad_recipients(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    limit = {"ROUTER_SMTP_INGRESS_MAX_MESSAGE_BYTES": "5000"}
    async with ingress(dsn, line_sim, smtp, **limit) as (_, port):
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await client.connect()
        await client.ehlo()
        assert client.esmtp_extensions.get("size") == "5000"
        await client.login(USER, PASSWORD)
        big = campaign(["mail@example.jp"]) + b"x" * 6000
        with pytest.raises(aiosmtplib.SMTPResponseException) as too_big:
            await client.sendmail("a@shop.example.jp", ["mail@example.jp"], big)
        assert too_big.value.code == 552
        await client.rset()
        broken = b"Subject: x\r\nContent-Type: multipart/mixed\r\n\r\nno boundary here\r\n"
        with pytest.raises(aiosmtplib.SMTPDataError) as malformed:
            await client.sendmail("a@shop.example.jp", ["mail@example.jp"], broken)
        assert malformed.value.code == 554 and "malformed MIME" in malformed.value.message
        await client.rset()
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as bad_rcpt:
            await client.sendmail("a@shop.example.jp", ["not an address"], campaign([]))
        assert bad_rcpt.value.recipients[0].code == 553
        await client.quit()
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval("SELECT count(*) FROM intents") == 0
        finally:
            await conn.close()


async def test_database_down_answers_451_and_a_retry_succeeds(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    async with ingress(dsn, line_sim, smtp) as (r, port):
        runtime = r.runtime
        down = await asyncpg.create_pool(dsn, min_size=0, max_size=1)
        await down.close()  # every acquire now fails, as with PostgreSQL stopped
        await _listen_again(runtime, down)
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            await asyncio.to_thread(_send_with, port, USER, PASSWORD)
        ((code, _),) = refused.value.recipients.values()
        assert code == 451
        await _listen_again(runtime, runtime.pool)
        await asyncio.to_thread(_send_with, port, USER, PASSWORD)
        await wait_until(lambda: len(smtp.mails) == 1)


async def _listen_again(runtime: Runtime, pool: asyncpg.Pool[asyncpg.Record]) -> None:
    """Replace the router's SMTP listener (same port) by one that stores through `pool`."""
    assert runtime.smtp_server is not None
    runtime.smtp_server.close()
    await runtime.smtp_server.wait_closed()
    runtime.smtp_server = await start_smtp_ingress(
        runtime.config.smtp_ingress, pool, runtime.accept_intents, runtime.intake_channels
    )


async def test_resent_message_is_not_delivered_twice(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    data = campaign(["mail@example.jp"], "<once@shop.example.jp>")
    async with ingress(dsn, line_sim, smtp) as (_, port):
        for _ in range(2):
            await asyncio.to_thread(_send_with, port, USER, PASSWORD, data)
        await wait_until(lambda: len(smtp.mails) == 1)
        await asyncio.sleep(0.5)
    assert len(smtp.mails) == 1


async def test_route_header_steers(dsn: str, line_sim: Any, smtp: SmtpSink) -> None:
    data = campaign(["friend@example.jp"]).replace(
        b"MIME-Version", b"X-Router-Route: email_only\r\nX-Router-Campaign: autumn\r\nMIME-Version"
    )
    async with ingress(dsn, line_sim, smtp) as (_, port):
        await asyncio.to_thread(_send_with, port, USER, PASSWORD, data)
        await wait_until(lambda: len(smtp.mails) == 1)
    assert line_sim.accepted_pushes() == []
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT campaign FROM intents") == "autumn"
    finally:
        await conn.close()


def test_password_hashes() -> None:
    assert verify_password(PASSWORD, HASHED) and not verify_password("other", HASHED)
    assert hash_password(PASSWORD) != HASHED  # salted
    assert verify_password("plain", "plain") and not verify_password("plain", "other")


async def test_a_suppressed_recipient_is_refused_at_rcpt(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    async with ingress(dsn, line_sim, smtp) as (r, port):
        resp = await r.client.post(
            "/v1/suppressions",
            json={"suppressions": [{"address": "gone@example.org", "reason": "bounce"},
                                   {"address": "mail@example.jp", "reason": "spamreport"}]},
        )  # fmt: skip
        assert resp.status_code == 200, resp.text
        recipients = ["gone@example.org", "mail@example.jp", "stranger@example.org"]
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await client.connect()
        await client.login(USER, PASSWORD)
        errors, _ = await client.sendmail(
            "bounce@shop.example.jp", recipients, campaign(recipients)
        )
        await client.quit()
        # Refused before the message is sent: a member's address and a stranger's alike.
        assert set(errors) == {"gone@example.org", "mail@example.jp"}
        for code, text in errors.values():
            assert code == 550 and "suppressed" in text
        await wait_until(lambda: len(smtp.mails) == 1)
    assert [m.rcpt_to for m in smtp.mails] == [["stranger@example.org"]]
