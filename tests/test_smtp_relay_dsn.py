"""The relay's DSN extension (RFC 3461) and its reports (RFC 3464), through real SMTP.

The client is aiosmtplib (as an MTA's SMTP client would speak: EHLO, AUTH, MAIL and RCPT with
their parameters); the upstream is aiosmtpd, refusing recipients where a test says. A report
reaches the envelope sender through the same upstream, from the null reverse path."""

from __future__ import annotations

import asyncio
from email import message_from_bytes
from email.message import Message
from typing import Any

import aiosmtplib
import asyncpg

from tests.harness import SmtpSink
from tests.test_smtp_ingress import PASSWORD, USER, campaign, ingress, wait_until
from tests.upstream_smtp import upstream

SENDER = "bounce@shop.example.jp"


async def logged_in(port: int) -> aiosmtplib.SMTP:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
    await client.connect()
    await client.ehlo()
    await client.login(USER, PASSWORD)
    return client


async def relay(
    port: int,
    data: bytes,
    rcpt: str,
    mail_options: list[str],
    rcpt_options: list[str],
    sender: str = SENDER,
) -> str:
    client = await logged_in(port)
    try:
        errors, reply = await client.sendmail(
            sender, [rcpt], data, mail_options=mail_options, rcpt_options=rcpt_options
        )
    finally:
        await client.quit()
    assert errors == {}
    return reply


async def reports_queued(dsn: str) -> int:
    return await count(
        dsn, "SELECT count(*) FROM intents WHERE idempotency_key LIKE 'relay-report:%'"
    )


async def count(dsn: str, query: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        found: int = await conn.fetchval(query)
        return found
    finally:
        await conn.close()


async def wait_for_count(dsn: str, query: str, wanted: int, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while await count(dsn, query) != wanted:
        assert asyncio.get_running_loop().time() < deadline, query
        await asyncio.sleep(0.05)


def parts(report: Message) -> tuple[Message, list[Message], Message]:
    """The human part, the delivery-status blocks and the returned message of a report."""
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    human, status, returned = report.get_payload()  # type: ignore[misc]
    assert human.get_content_type() == "text/plain"
    assert status.get_content_type() == "message/delivery-status"
    return human, status.get_payload(), returned


async def test_ehlo_offers_dsn_and_its_parameters_are_checked(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    async with ingress(dsn, line_sim, smtp) as (_, port):
        client = await logged_in(port)
        assert "dsn" in client.esmtp_extensions
        bad_mail = {
            b"RET=ALL": "501 5.5.4 RET must be FULL or HDRS",
            b"ENVID=a+2g": "501 5.5.4 ENVID: '+' must be followed by two upper-case hex digits",
            b"ENVID=a+2b": "501 5.5.4 ENVID: '+' must be followed by two upper-case hex digits",
            b"ENVID=" + b"x" * 101: "501 5.5.4 ENVID is longer than 100 characters",
            b"RET=FULL RET=HDRS": "501 5.5.4 RET given twice",
        }
        for params, expected in bad_mail.items():
            reply = await client.execute_command(
                b"MAIL", b"FROM:<" + SENDER.encode() + b">", params
            )
            assert f"{reply.code} {reply.message}" == expected
        ok = await client.execute_command(
            b"MAIL", b"FROM:<bounce@shop.example.jp>", b"RET=HDRS", b"ENVID=Env+2B1"
        )
        assert ok.code == 250, ok.message
        bad_rcpt = {
            b"NOTIFY=NEVER,SUCCESS": "501 5.5.4 NOTIFY must be NEVER, or SUCCESS, FAILURE and"
            " DELAY joined by commas",
            b"NOTIFY=SOMETIMES": "501 5.5.4 NOTIFY must be NEVER, or SUCCESS, FAILURE and"
            " DELAY joined by commas",
            b"ORCPT=mail@example.jp": "501 5.5.4 ORCPT must be <addr-type>;<xtext address>",
            b"ORCPT=rfc822;mail=x@example.jp": "501 5.5.4 ORCPT: '=' is not allowed in xtext"
            " (RFC 3461)",
        }
        for params, expected in bad_rcpt.items():
            reply = await client.execute_command(b"RCPT", b"TO:<mail@example.jp>", params)
            assert f"{reply.code} {reply.message}" == expected
        good = await client.execute_command(
            b"RCPT", b"TO:<mail@example.jp>", b"NOTIFY=success,failure", b"ORCPT=rfc822;m+40x.jp"
        )
        assert good.code == 250, good.message
        await client.quit()


async def test_parameters_go_on_to_an_upstream_that_offers_dsn(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    data = campaign(["mail@example.jp"], "<passed-on@shop.example.jp>")
    with upstream(dsn=True) as (server, upstream_port):
        async with ingress(dsn, line_sim, smtp, ROUTER_EMAIL_PORT=str(upstream_port)) as (_, port):
            await relay(
                port,
                data,
                "mail@example.jp",
                ["RET=HDRS", "ENVID=Env+2B1"],
                ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;Mail+40example.jp"],
            )
            await wait_until(lambda: len(server.received()) == 1)
            # The upstream reports success itself: the relay sends no report of its own.
            assert await reports_queued(dsn) == 0
    (mail,) = server.received()
    assert mail.data == data and mail.mail_from == SENDER
    assert mail.dsn_mail == ["RET=HDRS", "ENVID=Env+2B1"]
    # decoded and encoded again: "@" needs no "+40"
    assert mail.dsn_rcpt == [["NOTIFY=FAILURE,SUCCESS", "ORCPT=rfc822;Mail@example.jp"]]


async def test_a_refused_recipient_is_reported_to_the_envelope_sender(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    data = campaign(["mail@example.jp"], "<refused@shop.example.jp>")
    busy = campaign(["stranger@example.org"], "<busy@shop.example.jp>")
    async with ingress(dsn, line_sim, smtp, ROUTER_WORKERS_MAX_ATTEMPTS="2") as (_, port):
        smtp.fail_next_rcpt("550 5.1.1 <mail@example.jp>: Recipient address rejected")
        await relay(
            port,
            data,
            "mail@example.jp",
            ["RET=HDRS", "ENVID=Env+2B1"],
            ["NOTIFY=FAILURE", "ORCPT=rfc822;Mail+40example.jp"],
        )
        await wait_until(lambda: len(smtp.mails) == 1)
        # Temporary refusals until the attempts run out: reported too, with the whole
        # message under RET=FULL.
        smtp.fail_next_rcpt("451 4.2.0 mailbox busy", "451 4.2.0 mailbox busy")
        await relay(port, busy, "stranger@example.org", ["RET=FULL"], [])
        await wait_until(lambda: len(smtp.mails) == 2)
    report, gave_up = smtp.mails
    _, (_, expired), whole = parts(gave_up.message)
    assert gave_up.rcpt_to == [SENDER]
    assert (expired["Action"], expired["Status"]) == ("failed", "5.4.7")
    assert expired["Diagnostic-Code"] == "smtp; 451 4.2.0 mailbox busy"
    assert whole.get_content_type() == "message/rfc822"
    assert whole.get_payload(0).as_bytes() == message_from_bytes(busy).as_bytes()
    assert report.mail_from == "<>"  # MAIL FROM:<>, as aiosmtpd records it
    assert report.rcpt_to == [SENDER]
    human, (per_message, per_recipient), returned = parts(report.message)
    assert "mail@example.jp" in human.get_payload()
    assert per_message["Original-Envelope-Id"] == "Env+1"
    assert per_message["Reporting-MTA"].startswith("dns; ")
    assert per_recipient["Final-Recipient"] == "rfc822; mail@example.jp"
    assert per_recipient["Original-Recipient"] == "rfc822;Mail@example.jp"
    assert per_recipient["Action"] == "failed"
    assert per_recipient["Status"] == "5.1.1"
    assert per_recipient["Diagnostic-Code"] == (
        "smtp; 550 5.1.1 <mail@example.jp>: Recipient address rejected"
    )
    # RET=HDRS: the original's headers only
    assert returned.get_content_type() == "text/rfc822-headers"
    headers = returned.get_payload()
    assert "Message-ID: <refused@shop.example.jp>" in headers and "Autumn sale" not in headers


async def test_no_report_for_notify_never_nor_for_a_null_sender(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    async with ingress(dsn, line_sim, smtp) as (_, port):
        smtp.fail_next_rcpt("550 5.1.1 no such user", "550 5.1.1 no such user")
        never = campaign(["mail@example.jp"], "<never@shop.example.jp>")
        await relay(port, never, "mail@example.jp", [], ["NOTIFY=NEVER"])
        # (another recipient: the first refusal suppresses its address)
        from_null = campaign(["stranger@example.org"], "<null@shop.example.jp>")
        await relay(port, from_null, "stranger@example.org", [], [], sender="")
        # A report would be queued in the transaction that records the failure.
        await wait_for_count(dsn, "SELECT count(*) FROM deliveries WHERE status = 'failed'", 2)
        assert await reports_queued(dsn) == 0
        # A message from the null sender (a report itself) goes on with MAIL FROM:<>.
        delivered = campaign(["other@example.org"], "<null-2@shop.example.jp>")
        await relay(port, delivered, "other@example.org", [], [], sender="")
        await wait_until(lambda: len(smtp.mails) == 1)
    (mail,) = smtp.mails
    assert (mail.mail_from, mail.rcpt_to, mail.data) == ("<>", ["other@example.org"], delivered)


async def test_notify_success_reports_a_relayed_message_with_it_whole(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    data = campaign(["mail@example.jp"], "<success@shop.example.jp>")
    async with ingress(dsn, line_sim, smtp) as (_, port):
        await relay(port, data, "mail@example.jp", ["RET=FULL"], ["NOTIFY=SUCCESS"])
        await wait_until(lambda: len(smtp.mails) == 2)
    (original,) = [m for m in smtp.mails if m.rcpt_to == ["mail@example.jp"]]
    (report,) = [m for m in smtp.mails if m.rcpt_to == [SENDER]]
    assert original.data == data
    _, (per_message, per_recipient), _ = parts(report.message)
    assert "Original-Envelope-Id" not in per_message
    assert (per_recipient["Action"], per_recipient["Status"]) == ("relayed", "2.0.0")


async def test_a_reused_message_id_is_a_new_message_unless_the_bytes_are_the_same(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    first = campaign(["mail@example.jp"], "<reused@shop.example.jp>")
    second = first.replace(b"Autumn sale starts today", b"Winter sale starts today")
    async with ingress(dsn, line_sim, smtp) as (_, port):
        for data in (first, first, second):
            reply = await relay(port, data, "mail@example.jp", [], [])
            assert reply.startswith("2.0.0 OK: 1 recipient(s) queued")
        assert await count(dsn, "SELECT count(*) FROM intents") == 2
        await wait_until(lambda: len(smtp.mails) == 2)
    assert sorted(m.data for m in smtp.mails) == sorted([first, second])
