"""Sandbox mode (`router serve --sandbox`): LINE and email stay inside this process.

The bundled LINE simulator (linesim) and an SMTP server of aiosmtpd listen on ephemeral
127.0.0.1 ports, and the configuration of this process is pointed at them, so the real
line-bot-sdk and aiosmtplib paths run unchanged and nothing leaves the machine. Each send
the simulator accepts (through its `on_accepted_send` hook, before it answers) and each email
the capture receives (before its 250) is stored in `sandbox_messages` with the member it
went to: the list survives restarts and is shared by every process on the database.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import uuid
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import msgspec
from aiosmtpd.smtp import SMTP, Envelope, Session

from linesim import LineSimulator, ReceivedRequest
from linesim.paths import (
    DELIVERY_TAG_HEADER,
    MULTICAST_PATH,
    NARROWCAST_PATH,
    PNP_PATH,
    PUSH_PATH,
    REPLY_PATH,
)
from router.config import Config
from router.database import Connection, Pool
from router.identifiers import email_sha256
from router.log_safety import describe as describe_exception
from router.store import sandbox_messages
from router.store.sandbox_messages import (
    CapturedEmail,
    CapturedLine,
    EmailHeader,
    NewSandboxMessage,
    SandboxKind,
)

log = logging.getLogger("router.sandbox")

SANDBOX_FROM_ADDRESS = "sandbox@delivery-router.invalid"
_LINE_KINDS: dict[str, SandboxKind] = {
    PUSH_PATH: "push",
    MULTICAST_PATH: "multicast",
    NARROWCAST_PATH: "narrowcast",
    REPLY_PATH: "reply",
    PNP_PATH: "notification",
}
_MESSAGE_ID = re.compile(r"<([0-9a-fA-F-]{36})@")


class _LineBody(msgspec.Struct):
    """What the capture reads of a send request: its messages and whom it names."""

    messages: list[dict[str, Any]] = msgspec.field(default_factory=list)
    to: str | list[str] | None = None


@dataclass
class Sandbox:
    """The simulator and SMTP capture of a sandboxed process; `config` is pointed at them."""

    config: Config
    simulator: LineSimulator
    smtp: asyncio.Server
    smtp_port: int
    overridden: list[str]

    def describe(self) -> list[str]:
        """The start-up lines that say this process is a sandbox."""
        lines = [
            "SANDBOX MODE: nothing leaves this machine",
            f"sandbox: LINE goes to the bundled simulator at {self.simulator.base_url},"
            f" email to the built-in SMTP capture at 127.0.0.1:{self.smtp_port}",
            "sandbox: what was sent is at GET /v1/sandbox/messages and on the dashboard at"
            " /ui/sandbox (sign in with an API key)",
        ]
        if self.overridden:
            lines.append(f"sandbox: not used, as configured: {', '.join(self.overridden)}")
        return lines

    async def aclose(self) -> None:
        self.smtp.close()
        await self.smtp.wait_closed()
        await self.simulator.stop()


async def start_sandbox(config: Config, pool: Pool) -> Sandbox:
    """Start the simulator and the capture; the returned `config` sends to them."""
    capture = _Capture(pool)
    token = secrets.token_urlsafe(24)
    # Every further LINE account goes to the simulator too, each under a token of its own.
    account_tokens = {name: secrets.token_urlsafe(24) for name in config.line.accounts}
    simulator = LineSimulator(
        access_tokens=[token, *account_tokens.values()],
        on_accepted_send=capture.line_send,
        every_phone_reachable=True,
    )
    await simulator.start("127.0.0.1", 0)
    try:
        loop = asyncio.get_running_loop()
        smtp = await loop.create_server(
            lambda: SMTP(capture, hostname="sandbox.delivery-router.invalid"),
            host="127.0.0.1",
            port=0,
        )
    except BaseException:
        await simulator.stop()
        raise
    smtp_port: int = smtp.sockets[0].getsockname()[1]
    overridden = _configured_upstreams(config)
    line = msgspec.structs.replace(
        config.line,
        channel_access_token=token,
        api_base=simulator.base_url,
        account_link_base=simulator.base_url,
        forward_webhooks_to=[],
        accounts={
            name: msgspec.structs.replace(
                account,
                channel_access_token=account_tokens[name],
                api_base=simulator.base_url,
                account_link_base=simulator.base_url,
                forward_webhooks_to=[],
            )
            for name, account in config.line.accounts.items()
        },
    )
    email = msgspec.structs.replace(
        config.email,
        host="127.0.0.1",
        port=smtp_port,
        username="",
        password="",
        starttls=False,
        use_tls=False,
        ca_file="",
        from_address=config.email.from_address or SANDBOX_FROM_ADDRESS,
    )
    accounts = {}
    for name, account in config.line.accounts.items():
        # Each further LINE account is a channel of its own in the simulator (its own token,
        # user IDs and quota), as it is a channel of its own at LINE.
        account_token = secrets.token_urlsafe(24)
        simulator.add_channel(
            name,
            access_tokens=[account_token],
            provider=name,
            on_accepted_send=capture.line_send,
            every_phone_reachable=True,
        )
        accounts[name] = msgspec.structs.replace(
            account,
            channel_access_token=account_token,
            api_base=simulator.base_url,
            account_link_base=simulator.base_url,
            forward_webhooks_to=[],
        )
    line = msgspec.structs.replace(line, accounts=accounts)
    sandboxed = msgspec.structs.replace(config, line=line, email=email)
    return Sandbox(sandboxed, simulator, smtp, smtp_port, overridden)


def _configured_upstreams(config: Config) -> list[str]:
    """What the configuration names that sandbox mode replaces, to say so at start."""
    found = []
    if config.line.channel_access_token:
        found.append(f"the LINE channel at {config.line.api_base}")
    if config.email.host:
        found.append(f"the SMTP server {config.email.host}:{config.email.port}")
    if config.line.forward_webhooks_to:
        found.append("[line] forward_webhooks_to")
    for name, account in config.line.accounts.items():
        found.append(f"the LINE channel of [line.accounts.{name}]")
        if account.forward_webhooks_to:
            found.append(f"[line.accounts.{name}] forward_webhooks_to")
    return found


class _Capture:
    """Stores what the simulator accepted and what the SMTP server received."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._parser = BytesParser(policy=policy.default)
        self._body = msgspec.json.Decoder(_LineBody)

    async def line_send(self, request: ReceivedRequest) -> None:
        kind = _LINE_KINDS.get(request.path)
        if kind is None:
            return
        try:
            body = self._body.decode(msgspec.json.encode(request.body))
            async with self._pool.acquire() as conn:
                rows = await self._line_rows(conn, kind, request, body)
                await sandbox_messages.add(conn, rows)
        except Exception as exc:  # the send stands; only its copy is lost
            log.error("sandbox: a LINE %s was not stored: %s", kind, describe_exception(exc))

    async def _line_rows(
        self, conn: Connection, kind: SandboxKind, request: ReceivedRequest, body: _LineBody
    ) -> list[NewSandboxMessage]:
        line = CapturedLine(messages=body.messages)
        if kind == "notification":
            tag = request.headers.get(DELIVERY_TAG_HEADER.lower())
            member = await _member_of_delivery(conn, tag)
            phone = body.to if isinstance(body.to, str) else None
            return [
                NewSandboxMessage(
                    channel="line_notification",
                    kind=kind,
                    member_id=member,
                    recipient=phone,
                    line=line,
                )
            ]
        if kind == "narrowcast":
            return [
                NewSandboxMessage(
                    channel="line", kind=kind, member_id=None, recipient=None, line=line
                )
            ]
        users = (
            [request.recipient]
            if kind == "reply" and request.recipient
            else body.to
            if isinstance(body.to, list)
            else [body.to]
            if body.to
            else []
        )
        found = await conn.fetch(
            "SELECT user_id AS line_user_id, member_id FROM member_line_accounts"
            " WHERE user_id = ANY($1::text[])",
            users,
        )
        members: dict[str, str] = {row["line_user_id"]: row["member_id"] for row in found}
        return [
            NewSandboxMessage(
                channel="line", kind=kind, member_id=members.get(user), recipient=user, line=line
            )
            for user in users
        ]

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Store the message for each recipient, then answer 250 (451: not stored, try again)."""
        raw = envelope.original_content or envelope.content or b""
        data = raw if isinstance(raw, bytes) else raw.encode()
        message = self._parser.parsebytes(data)
        assert isinstance(message, EmailMessage)
        captured = _captured_email(message, str(envelope.mail_from or ""))
        match = _MESSAGE_ID.search(str(message.get("Message-ID", "")))
        try:
            async with self._pool.acquire() as conn:
                by_delivery = await _member_of_delivery(conn, match.group(1) if match else None)
                rows = []
                for address in envelope.rcpt_tos:
                    member = by_delivery or await conn.fetchval(
                        "SELECT member_id FROM members WHERE email_sha256 = $1"
                        " ORDER BY member_id LIMIT 1",
                        email_sha256(address),
                    )
                    rows.append(
                        NewSandboxMessage(
                            channel="email",
                            kind="smtp",
                            member_id=member,
                            recipient=address,
                            email=captured,
                        )
                    )
                await sandbox_messages.add(conn, rows)
        except Exception as exc:
            log.error("sandbox: an email was not stored: %s", describe_exception(exc))
            return "451 4.3.0 the sandbox could not store this message"
        return "250 OK"


async def _member_of_delivery(conn: Connection, delivery_id: str | None) -> str | None:
    """The member a delivery's intent is for (the id the LINE notification tag and the
    email Message-ID carry)."""
    if not delivery_id:
        return None
    try:
        wanted = uuid.UUID(delivery_id)
    except ValueError:
        return None
    member: str | None = await conn.fetchval(
        "SELECT i.member_id FROM deliveries d JOIN intents i ON i.id = d.intent_id WHERE d.id = $1",
        wanted,
    )
    return member


def _captured_email(message: EmailMessage, envelope_from: str) -> CapturedEmail:
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    return CapturedEmail(
        envelope_from=envelope_from,
        headers=[EmailHeader(name, str(value)) for name, value in message.items()],
        subject=str(message.get("Subject", "")),
        text=_content(text),
        html=_content(html),
    )


def _content(part: Any) -> str | None:
    if part is None:
        return None
    try:
        content = part.get_content()
    except (LookupError, ValueError):
        return None
    return content if isinstance(content, str) else None
