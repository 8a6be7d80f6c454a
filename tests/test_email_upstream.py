"""The email channel against a real upstream SMTP server: a private CA trusted through
`[email] ca_file`, BODY=8BITMIME for 8-bit messages, and the upstream's queue id kept."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from channels.base import Outbound, Retry, Sent
from channels.email import SmtpChannel
from router.config import ConfigError, EmailConfig, load_config
from router.content import Content, EmailContent, Relayed
from tests.upstream_smtp import make_private_ca, upstream

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
    return EmailConfig(host="127.0.0.1", port=port, from_address=SENDER, timeout_seconds=5, **keys)  # type: ignore[arg-type]


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
