"""The email channel against a real upstream SMTP server: a private CA trusted through
`[email] ca_file`, BODY=8BITMIME for 8-bit messages, the upstream's queue id kept, and a
connection lost after the whole message left in doubt rather than sent twice."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest

from channels.base import Failed, Link, Outbound, Retry, Sent, Uncertain
from channels.email import SmtpChannel
from router.config import ConfigError, EmailConfig, load_config
from router.content import Content, EmailContent, Relayed
from tests.harness import SmtpSink, running_router
from tests.upstream_smtp import PostfixLike, make_private_ca, upstream

SENDER = "news@shop.example.jp"


def outbound(content: Content, relayed: bytes | None = None) -> Outbound:
    return Outbound(
        delivery_id=uuid.uuid4(),
        intent_id=uuid.uuid4(),
        address="taro@example.jp",
        attempt=1,
        content_id=uuid.uuid4().bytes,
        content=content,
        relayed_message=relayed,
    )


def email_config(port: int, **keys: object) -> EmailConfig:
    keys = {"timeout_seconds": 5} | keys
    return EmailConfig(host="127.0.0.1", port=port, from_address=SENDER, **keys)  # type: ignore[arg-type]


async def send_one(config: EmailConfig, message: Outbound) -> object:
    channel = SmtpChannel(config)
    try:
        (outcome,) = await channel.send([message])
    finally:
        await channel.aclose()
    return outcome


async def test_a_private_ca_is_trusted_through_ca_file(tmp_path: Path) -> None:
    ca = make_private_ca(tmp_path)
    message = outbound(Content(email=EmailContent(subject="Order", text="Shipped.")))
    with upstream(tls=ca.server) as (server, port):
        # Without the CA the upstream's certificate cannot be verified: nothing is sent.
        refused = await send_one(email_config(port, starttls=True), message)
        assert isinstance(refused, Retry) and "CERTIFICATE_VERIFY_FAILED" in refused.error
        assert server.received() == []
        trusted = await send_one(
            email_config(port, starttls=True, ca_file=str(ca.ca_file)), message
        )
    assert isinstance(trusted, Sent), trusted
    (mail,) = server.received()
    assert mail.rcpt_to == ["taro@example.jp"]
    assert trusted.queue_id == f"250 2.0.0 Ok: queued as {mail.queue_id}"


async def test_outcomes_carry_the_connection_and_the_enhanced_status(tmp_path: Path) -> None:
    """What delivery events report as `ip`, `tls` and `status`: the local address of the
    connection, whether STARTTLS encrypted it, and the refusal's enhanced code (made from the
    basic code when the server gave none)."""
    ca = make_private_ca(tmp_path)
    with upstream(tls=ca.server) as (server, port):
        server.rcpt_replies = ["250 2.1.5 Ok", "550 5.1.1 no such user", "451 try later"]
        config = email_config(port, starttls=True, ca_file=str(ca.ca_file), connections=1)
        channel = SmtpChannel(config)
        try:
            sent, refused, later = [(await channel.send([a_message()]))[0] for _ in range(3)]
        finally:
            await channel.aclose()
    encrypted = Link(local_ip="127.0.0.1", encrypted=True)
    assert isinstance(sent, Sent) and sent.link == encrypted
    assert isinstance(refused, Failed) and refused.link == encrypted
    assert refused.status == "5.1.1"
    assert isinstance(later, Retry) and later.status == "4.0.0" and later.link == encrypted
    with upstream() as (server, port):
        plain = await send_one(email_config(port), a_message())
    assert isinstance(plain, Sent) and plain.link == Link(local_ip="127.0.0.1", encrypted=False)


def test_ca_file_is_read_from_the_environment_and_must_exist(tmp_path: Path) -> None:
    ca = make_private_ca(tmp_path)
    config = load_config(None, {"ROUTER_EMAIL_CA_FILE": str(ca.ca_file)})
    assert config.email.ca_file == str(ca.ca_file)
    with pytest.raises(ConfigError, match=r"\[email\] ca_file .* is not a readable file"):
        load_config(None, {"ROUTER_EMAIL_CA_FILE": str(tmp_path / "missing.pem")})


EIGHT_BIT = (
    "From: Shop <news@shop.example.jp>\r\n"
    "Subject: =?utf-8?b?56eL44Gu44K744O844Or?=\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "秋のセールは本日から。\r\n"
).encode()
SEVEN_BIT = EIGHT_BIT.split(b"\r\n\r\n")[0].replace(b": 8bit", b": quoted-printable") + (
    b"\r\n\r\n=E7=A7=8B=E3=81=AE=E3=82=BB=E3=83=BC=E3=83=AB\r\n"
)


@pytest.mark.parametrize(
    ("data", "options"),
    [(EIGHT_BIT, ["BODY=8BITMIME"]), (SEVEN_BIT, [])],
    ids=["8bit", "7bit"],
)
async def test_relayed_bytes_go_out_unchanged_with_body_8bitmime_when_8bit(
    data: bytes, options: list[str]
) -> None:
    relayed = Relayed(message_sha256="00" * 32, envelope_from="bounce@shop.example.jp")
    content = Content(email=EmailContent(subject="秋のセール", text="x"), relayed=relayed)
    with upstream() as (server, port):
        outcome = await send_one(email_config(port), outbound(content, data))
    assert isinstance(outcome, Sent)
    (mail,) = server.received()
    assert mail.data == data
    assert [o for o in mail.mail_options if o.startswith("BODY=")] == options


async def test_rendered_japanese_email_is_declared_8bit() -> None:
    content = Content(email=EmailContent(subject="ご注文", text="ご注文の品を発送しました。"))
    with upstream() as (server, port):
        outcome = await send_one(email_config(port), outbound(content))
    assert isinstance(outcome, Sent)
    (mail,) = server.received()
    assert not mail.data.isascii()  # the standard library writes short UTF-8 text as 8bit
    assert "BODY=8BITMIME" in mail.mail_options


def upstream_env(port: int) -> dict[str, str]:
    return {
        "ROUTER_EMAIL_HOST": "127.0.0.1",
        "ROUTER_EMAIL_PORT": str(port),
        "ROUTER_EMAIL_FROM_ADDRESS": SENDER,
        "ROUTER_EMAIL_TIMEOUT_SECONDS": "5",
    }


async def settled_delivery(dsn: str, port: int, server: PostfixLike) -> dict[str, Any]:
    """One email intent through a router, until its delivery stops changing."""
    async with running_router(dsn, None, None, **upstream_env(port)) as router:
        resp = await router.client.post(
            "/v1/intents",
            json={"email_address": "taro@example.jp", "email": {"subject": "S", "text": "T"}},
        )
        assert resp.status_code == 202, resp.text
        body = await router.wait_for(resp.json()["id"], ("delivered", "failed", "uncertain"))
        # Settled: a resend, had one been scheduled, would come within the harness's backoff.
        await asyncio.sleep(0.5)
        body = await router.intent(resp.json()["id"])
    (delivery,) = body["deliveries"]
    delivery["intent_status"] = body["status"]
    return delivery


async def test_a_connection_lost_after_the_whole_message_leaves_it_uncertain(dsn: str) -> None:
    with upstream() as (server, port):
        server.cut_after_data = 10  # every attempt: a resend would be taken and cut again
        delivery = await settled_delivery(dsn, port, server)
        assert len(server.received()) == 1
    assert (delivery["intent_status"], delivery["status"]) == ("uncertain", "uncertain")
    assert delivery["attempts"] == 1 and "not resent" in delivery["last_error"]


async def test_a_connection_lost_before_the_message_is_retried_and_sent_once(dsn: str) -> None:
    with upstream() as (server, port):
        server.cut_at_rcpt = 1
        delivery = await settled_delivery(dsn, port, server)
        (mail,) = server.received()
    assert (delivery["status"], delivery["attempts"]) == ("sent", 2)
    assert delivery["smtp_queue_id"] == f"250 2.0.0 Ok: queued as {mail.queue_id}"


async def test_a_reply_that_never_comes_leaves_the_message_uncertain() -> None:
    """The upstream takes the message and says nothing until the client gives up."""
    message = outbound(Content(email=EmailContent(subject="Order", text="Shipped.")))
    with upstream() as (server, port):
        server.reply_after_data = 3.0
        outcome = await send_one(email_config(port, timeout_seconds=0.3), message)
        assert (
            isinstance(outcome, Uncertain)
            and "Timed out waiting for server response" in outcome.error
        )
        assert len(server.received()) == 1


async def test_size_is_declared_as_the_bytes_sent() -> None:
    content = Content(email=EmailContent(subject="Sale", text="20% off\n" * 50))
    with upstream() as (server, port):
        outcome = await send_one(email_config(port), outbound(content))
    assert isinstance(outcome, Sent)
    (mail,) = server.received()
    assert f"SIZE={len(mail.data)}" in mail.mail_options


async def test_one_connection_carries_on_after_a_refused_recipient_and_a_quoted_address(
    smtp: SmtpSink,
) -> None:
    """Messages go one after another over one connection: a refused recipient resets the
    envelope for the next message, and an address that needs quoting takes the library's
    own path."""
    smtp.fail_next_rcpt("550 5.1.1 no such user")
    channel = SmtpChannel(email_config(smtp.port, connections=1))
    quoted = outbound(Content(email=EmailContent(subject="S", text="T")))
    quoted = msgspec.structs.replace(quoted, address='"taro yamada"@example.jp')
    messages = [outbound(Content(email=EmailContent(subject="S", text="T"))) for _ in range(2)]
    try:
        outcomes = [(await channel.send([m]))[0] for m in [*messages, quoted]]
    finally:
        await channel.aclose()
    assert isinstance(outcomes[0], Failed) and "SMTP 550" in outcomes[0].error
    assert isinstance(outcomes[1], Sent) and isinstance(outcomes[2], Sent)
    assert [m.rcpt_to for m in smtp.mails] == [["taro@example.jp"], ['"taro yamada"@example.jp']]
    assert smtp.sessions == 1


def a_message() -> Outbound:
    return outbound(Content(email=EmailContent(subject="S", text="T")))


async def test_pipelined_replies_are_matched_to_their_own_commands() -> None:
    """With PIPELINING offered, each envelope goes in one write and its replies are read in
    order: a refused recipient between sent messages is that message's outcome, with its
    code, and each sent message keeps its own queue id."""
    messages = [a_message() for _ in range(6)]
    with upstream(pipelining=True) as (server, port):
        server.rcpt_replies = ["250 2.1.5 Ok", "550 5.1.1 no such user", "450 4.2.1 mailbox busy"]
        server.mail_replies = ["250 2.1.0 Ok"] * 4 + ["553 5.7.1 sender not allowed"]
        channel = SmtpChannel(email_config(port, connections=1))
        try:
            outcomes = [(await channel.send([m]))[0] for m in messages]
        finally:
            await channel.aclose()
        mails = server.received()
        assert server.pipelined == len(messages)
    sent, refused, busy, sent_too, sender_refused, after = outcomes
    assert isinstance(refused, Failed) and refused.error == "SMTP 550: 5.1.1 no such user"
    assert isinstance(busy, Retry) and busy.error == "SMTP 450: 4.2.1 mailbox busy"
    assert isinstance(sender_refused, Failed)
    assert sender_refused.error == "SMTP 553: 5.7.1 sender not allowed"
    assert [type(o) for o in (sent, sent_too, after)] == [Sent] * 3
    assert [m.rcpt_to for m in mails] == [["taro@example.jp"]] * 3
    for outcome, mail in zip((sent, sent_too, after), mails, strict=True):
        assert isinstance(outcome, Sent)
        assert outcome.queue_id == f"250 2.0.0 Ok: queued as {mail.queue_id}"
        assert f"Message-ID: {outcome.provider_ref}".encode() in mail.data


async def test_pipelined_relayed_bytes_go_out_unchanged() -> None:
    """Dot-stuffing and the size are the sender's business, not the message's."""
    data = EIGHT_BIT + b".hidden line\r\n..two dots\r\n.\r\nlast"
    relayed = Relayed(message_sha256="00" * 32, envelope_from="bounce@shop.example.jp")
    content = Content(email=EmailContent(subject="x", text="x"), relayed=relayed)
    with upstream(pipelining=True) as (server, port):
        outcome = await send_one(email_config(port), outbound(content, data))
        assert server.pipelined == 1
    assert isinstance(outcome, Sent)
    (mail,) = server.received()
    assert mail.data == data + b"\r\n"  # a message is sent ending with its line end
    assert mail.mail_options == [f"SIZE={len(mail.data)}", "BODY=8BITMIME"]
