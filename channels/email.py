"""Email over SMTP with aiosmtplib, on a small pool of connections reused across messages.

SMTP has no way to de-duplicate a resend, so this channel declares no replay window and the
worker marks each delivery 'sending' before it is handed over. A connection lost (or timed
out) once the whole message is written, while the server's reply is awaited, leaves the
delivery 'uncertain' (the server may have queued it); lost any earlier, it is retried. The
Message-ID is derived from the delivery id, so a receiving system sees the same id for the
same delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from email.message import EmailMessage, MIMEPart
from email.policy import SMTP
from email.utils import formatdate
from typing import Literal

import aiosmtplib
from aiosmtplib import SMTPResponse
from aiosmtplib.protocol import normalize_message_line_endings
from aiosmtplib.typing import Default

from channels.base import (
    ChannelDescriptor,
    Failed,
    Link,
    Outbound,
    Outcome,
    Retry,
    SendOutcome,
    Sent,
    Suppress,
    Uncertain,
)
from channels.dkim import DkimSigner, load_signer
from channels.email_compose import (
    MAX_CACHED_BYTES,
    Composer,
    RecipientHead,
    header_part,
    message_id_domain,
    without_tags,
)
from channels.email_mime import add_other_parts, wrapping
from channels.metrics import SMTP_SEND_SECONDS
from channels.smtp_bounces import Stage, enhanced_status, hard_bounce, reply_detail
from channels.smtp_exchange import content_bytes, transact
from router.config import Config, EmailConfig
from router.content import EmailContent, Relayed, RelayRecipient
from router.deliverability.rules import SEND_TIME_REFUSAL_SQL, campaign_refusal_sql
from router.reach import EMAIL_REACHABLE_SQL, Reach
from router.smtp_xtext import xtext_encode

log = logging.getLogger(__name__)


def _unreachable(reach: Reach) -> str | None:
    if reach.email is None:
        return "no email address for this recipient"
    if reach.email_opt_out:
        return "the member opted out of email"
    return reach.email_refusal


EMAIL = ChannelDescriptor(
    name="email",
    routes={"prefer_line": 1, "both": 1, "email_only": 0, "notification_first": 1},
    not_configured="email is not configured on this router",
    unreachable=_unreachable,
    reachable_sql=EMAIL_REACHABLE_SQL,
    refusal_sql=SEND_TIME_REFUSAL_SQL,
    campaign_refusal_sql=campaign_refusal_sql,
    address=lambda reach: reach.email,
    address_sql="m.email",
    address_noun="email address",
    carries=lambda content: content.email is not None,
    no_content="the intent has no email content",
    address_is_email=True,
    sends_relayed=True,
    describe=lambda config: _describe(config.email),
    describe_unconfigured=(
        "not configured ([email] host, from_address) - email_only intents are refused and "
        "LINE failures have no fallback"
    ),
)


def _describe(email: EmailConfig) -> str:
    """What `router serve` says of email: the upstream and what composed mail carries."""
    parts = [f"SMTP {email.host}:{email.port}"]
    if email.dkim_domain:
        selectors = ", ".join(filter(None, (email.dkim_selector, email.dkim_second_selector)))
        parts.append(f"DKIM d={email.dkim_domain} s={selectors}")
    if email.public_base_url:
        parts.append(f"unsubscribe links at {email.public_base_url.rstrip('/')}/u/")
    else:
        parts.append("no unsubscribe links ([email] public_base_url)")
    parts.append(
        "promotional email needs consent" if email.require_consent else "consent not required"
    )
    return "; ".join(parts)


def build(config: Config, built: object) -> SmtpChannel | None:
    return SmtpChannel(config.email) if config.email_configured else None


def message_id(delivery_id: object, from_address: str) -> str:
    return f"<{delivery_id}@{message_id_domain(from_address)}>"


def build_message(message: Outbound, email: EmailContent, default_from: str) -> EmailMessage:
    """The whole message as one EmailMessage (the reference the cached rendering matches)."""
    msg = _content_part(email, default_from)
    if not email.to:
        msg["To"] = message.address
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = message_id(message.delivery_id, default_from)
    return msg


def _content_part(email: EmailContent, default_from: str) -> EmailMessage:
    """The headers and the text (without files: `content_bytes_of` wraps those around it)."""
    msg = header_part(email, default_from)
    _set_text(msg, email)
    return msg


def _set_text(msg: EmailMessage | MIMEPart, email: EmailContent) -> None:
    if email.text is not None:
        msg.set_content(email.text)
        if email.html is not None:
            msg.add_alternative(email.html, subtype="html")
    else:
        assert email.html is not None
        msg.set_content(email.html, subtype="html")
    add_other_parts(msg, email.other_parts)


def content_bytes_of(email: EmailContent, default_from: str) -> bytes:
    """The content rendered once: headers (but To, Date, Message-ID unless the content
    names its To), MIME structure and body, files included."""
    wrapped = wrapping(email.attachments)
    if wrapped is None:
        return _content_part(email, default_from).as_bytes(policy=SMTP)
    head = header_part(email, default_from).as_bytes(policy=SMTP)[:-2]  # less the blank line
    body = MIMEPart()
    _set_text(body, email)
    return b"".join(
        (
            head,
            b"MIME-Version: 1.0\r\n",
            wrapped.content_type,
            b"\r\n",
            wrapped.opening,
            body.as_bytes(policy=SMTP),
            wrapped.closing,
        )
    )


class RenderedContents:
    """Each content's headers and body rendered to SMTP bytes once; per recipient only To,
    Date and Message-ID are written. Building and folding an EmailMessage per recipient was
    most of the CPU an email delivery took (the standard library parses every header it
    sets). Unsubscribe tags in the body are removed: this path gives no link."""

    def __init__(self, default_from: str, size: int = 256) -> None:
        self._default_from = default_from
        self._heads = RecipientHead(default_from)
        self._items: OrderedDict[bytes, bytes] = OrderedDict()
        self._size = size

    def render(self, message: Outbound, email: EmailContent) -> tuple[str, bytes]:
        """The Message-ID and the message's bytes for this delivery."""
        body = self._items.get(message.content_id)
        if body is None:
            body = content_bytes_of(without_tags(email), self._default_from)
            if len(body) <= MAX_CACHED_BYTES:
                self._items[message.content_id] = body
                if len(self._items) > self._size:
                    self._items.popitem(last=False)
        mid, head = self._heads.render(message, not email.to)
        return mid, head + body


class Upstream(aiosmtplib.SMTP):
    """A connection to the upstream that notes when a message has been written whole.

    Only the message's bytes can end with CRLF "." CRLF (a command is one line), and
    aiosmtplib writes them, end marker included, in one write right after the 354; from
    then on only the server's reply is awaited, and a lost reply may hide a queued message."""

    message_written = False

    async def data(
        self,
        message: str | bytes,
        /,
        *,
        timeout: float | Literal[Default.token] | None = Default.token,  # noqa: ASYNC109
    ) -> SMTPResponse:
        protocol = self.protocol
        if protocol is None:
            return await super().data(message, timeout=timeout)
        write = protocol.write

        def noting_the_end(chunk: bytes) -> None:
            write(chunk)
            if chunk.endswith(b"\r\n.\r\n"):
                self.message_written = True

        protocol.write = noting_the_end  # type: ignore[method-assign,assignment]
        try:
            return await super().data(message, timeout=timeout)
        finally:
            del protocol.write  # the class's own again

    async def send_to(
        self,
        sender: str,
        recipient: str,
        message: bytes,
        options: list[str],
        rcpt_options: Sequence[str] = (),
    ) -> str:
        """One message to one recipient: the server's reply to it. `sendmail` parses both
        addresses four times with the standard library's RFC 822 parser, about a third of
        the CPU a message took; addresses that are plain ASCII without spaces or angle
        brackets (every validated address) need no quoting and go as they are, in one
        transaction whose envelope is pipelined when the server allows (`smtp_exchange`)."""
        if not (_PLAIN_ADDRESS.fullmatch(sender) and _PLAIN_ADDRESS.fullmatch(recipient)):
            _, reply = await self.sendmail(
                sender,
                [recipient],
                message,
                mail_options=options,
                rcpt_options=list(rcpt_options),
            )
            return reply
        await self._ehlo_or_helo_if_needed()
        normalized = normalize_message_line_endings(message)
        if self.supports_extension("size"):  # RFC 1870: the message's octets, CRLF line ends
            options = [f"SIZE={len(normalized)}", *options]
        mail = " ".join([f"MAIL FROM:<{sender}>", *options]).encode("ascii")
        rcpt = " ".join([f"RCPT TO:<{recipient}>", *rcpt_options]).encode("ascii")
        try:
            final = await transact(
                self,
                (mail, rcpt),
                content_bytes(normalized),
                pipelining=self.supports_extension("pipelining"),
                timeout=self.timeout,
                written=self._note_written,
            )
        except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused):
            if self.is_connected:
                with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                    await self.rset()  # a clean envelope for the next message
            raise
        return final.message

    def _note_written(self) -> None:
        self.message_written = True


# An address that needs no quoting in MAIL FROM / RCPT TO (or the null sender, "").
_PLAIN_ADDRESS = re.compile(r"[!-;=?-~]*")


class SmtpChannel:
    """The `email` channel: deliver to an upstream SMTP server (relay, ESP or MTA)."""

    name = EMAIL.name
    replay_window: timedelta | None = None
    requests_per_second: int | None = None

    def __init__(self, config: EmailConfig) -> None:
        self._config = config
        self._rendered = RenderedContents(config.from_address)
        self._composer = Composer(config)
        # A private CA: the upstream's certificate is checked against `ca_file` only.
        self._tls_context = ssl.create_default_context(cafile=config.ca_file or None)
        self._dkim = load_signer(config)  # composed mail only: relayed bytes stay as they are
        # RSA signing runs in threads (OpenSSL releases the GIL), so the event loop goes on
        # sending while a message is signed; Ed25519 is cheaper than the hop.
        self._signing = (
            ThreadPoolExecutor(max_workers=2, thread_name_prefix="dkim")
            if self._dkim is not None and self._dkim.uses_rsa
            else None
        )
        self.max_concurrency = max(1, config.connections)
        self._idle: asyncio.Queue[Upstream] = asyncio.Queue()
        for _ in range(self.max_concurrency):
            self._idle.put_nowait(self._new_client())

    def _new_client(self) -> Upstream:
        c = self._config
        return Upstream(
            hostname=c.host,
            port=c.port,
            username=c.username or None,
            password=c.password or None,
            use_tls=c.use_tls,
            start_tls=c.starttls,
            timeout=c.timeout_seconds,
            tls_context=self._tls_context,
        )

    async def send(self, batch: Sequence[Outbound]) -> list[SendOutcome]:
        if len(batch) == 1:  # the usual call (one marked delivery): no task of its own
            return [await self._send(batch[0])]
        return list(await asyncio.gather(*(self._send(m) for m in batch)))

    async def _send(self, message: Outbound) -> SendOutcome:
        email = message.content.email
        relayed = message.content.relayed
        if email is None:
            return Failed("the intent has no email content", fallback=False)
        if relayed is not None and message.relayed_message is None:
            return Failed("the relayed message's bytes are missing", fallback=False)
        client = await self._idle.get()
        client.message_written = False
        link: Link | None = None
        started = time.perf_counter()
        status = "error"
        try:
            if not client.is_connected:
                await client.connect()
            link = _link(client)
            if relayed is not None and message.relayed_message is not None:
                # Byte for byte, so DKIM signatures and tracking links stay intact.
                data = message.relayed_message
                options = await _body_options(client, data)
                mail_dsn, rcpt_dsn = await _dsn_options(client, relayed, message.relay_recipient)
                reply = await client.send_to(
                    null_as_empty(relayed.envelope_from),
                    message.address,
                    data,
                    options + (mail_dsn or []),
                    rcpt_dsn or [],
                )
                status = "250"
                ref = relayed.message_id or relayed.message_sha256
                return Sent(
                    provider_ref=ref,
                    queue_id=_final_reply(reply),
                    dsn_passed_on=mail_dsn is not None,
                    link=link,
                )
            mid, data = self._composer.render(message, email) or self._rendered.render(
                message, email
            )
            if self._dkim is not None:  # the composed message's bytes are final here
                data = await self._signed(self._dkim, data)
            options = await _body_options(client, data)
            sender = self._composer.envelope_sender(message)
            reply = await client.send_to(sender, message.address, data, options)
            status = "250"
            return Sent(provider_ref=mid, queue_id=_final_reply(reply), link=link)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = exc.recipients[0]
            status = str(refused.code)
            return _by_code(refused.code, refused.message, "recipient", link)
        except aiosmtplib.SMTPResponseException as exc:
            _drop(client)
            status = str(exc.code)
            stage: Stage = "sender" if isinstance(exc, aiosmtplib.SMTPSenderRefused) else "message"
            return _by_code(exc.code, exc.message, stage, link)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            _drop(client)
            if client.message_written:
                return Uncertain(
                    f"SMTP connection failed after the whole message was sent, before the"
                    f" server answered: {type(exc).__name__}: {exc}; not resent, since the"
                    f" server may have queued it"
                )
            return Retry(f"SMTP connection failed: {type(exc).__name__}: {exc}")
        finally:
            SMTP_SEND_SECONDS.labels(status).observe(time.perf_counter() - started)
            self._idle.put_nowait(client)

    async def _signed(self, signer: DkimSigner, data: bytes) -> bytes:
        if self._signing is None:
            return signer.sign(data) + data
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._signing, signer.sign, data) + data

    async def aclose(self) -> None:
        if self._signing is not None:
            self._signing.shutdown(wait=False)
        while not self._idle.empty():
            client = self._idle.get_nowait()
            if client.is_connected:
                try:
                    await client.quit()
                except (aiosmtplib.SMTPException, OSError):
                    client.close()


async def _body_options(client: aiosmtplib.SMTP, data: bytes) -> list[str]:
    """`BODY=8BITMIME` for a message with 8-bit bytes, when the upstream offers it (RFC 6152):
    the bytes are sent as they are, never re-encoded, so the server must be told."""
    if data.isascii():
        return []
    if client.is_ehlo_or_helo_needed:
        await client.ehlo()
    return ["BODY=8BITMIME"] if client.supports_extension("8bitmime") else []


def null_as_empty(sender: str) -> str:
    """The null reverse path as aiosmtplib writes it: "" (`MAIL FROM:<>`), not "<>"."""
    return "" if sender.strip() == "<>" else sender


async def _dsn_options(
    client: aiosmtplib.SMTP, relayed: Relayed, recipient: RelayRecipient | None
) -> tuple[list[str] | None, list[str] | None]:
    """The relayed sender's DSN parameters for MAIL and RCPT (RFC 3461), when the upstream
    offers DSN; (None, None) when it does not (it would refuse them), or none were given."""
    if relayed.ret is None and relayed.envid is None and recipient is None:
        return None, None
    if client.is_ehlo_or_helo_needed:
        await client.ehlo()
    if not client.supports_extension("dsn"):
        return None, None
    mail = [f"RET={relayed.ret}"] if relayed.ret else []
    if relayed.envid is not None:
        mail.append(f"ENVID={xtext_encode(relayed.envid)}")
    rcpt: list[str] = []
    if recipient is not None and recipient.notify:
        rcpt.append(f"NOTIFY={','.join(recipient.notify)}")
    if recipient is not None and recipient.orcpt:
        addr_type, _, address = recipient.orcpt.partition(";")
        rcpt.append(f"ORCPT={addr_type};{xtext_encode(address)}")
    return mail, rcpt


# The upstream's final reply is kept on the delivery (it names the upstream's queue id);
# a line of it is plenty, and a hostile server's megabyte of text is not.
MAX_REPLY_CHARS = 500


def _final_reply(text: str) -> str:
    """`250 2.0.0 Ok: queued as C75E816241F`: the reply to the message, on one line."""
    return " ".join(f"250 {text}".split())[:MAX_REPLY_CHARS]


def _drop(client: aiosmtplib.SMTP) -> None:
    """Forget a connection in an unknown state; the next send reconnects."""
    if client.is_connected:
        client.close()


def _link(client: aiosmtplib.SMTP) -> Link | None:
    """The connection's local address and whether it is encrypted (TLS from the start, or
    after STARTTLS: `connect` has done both by now)."""
    transport = client.transport
    if transport is None:
        return None
    local = transport.get_extra_info("sockname")
    if not isinstance(local, tuple) or not local:
        return None
    return Link(
        local_ip=str(local[0]), encrypted=transport.get_extra_info("ssl_object") is not None
    )


def _by_code(code: int, text: str, stage: Stage, link: Link | None = None) -> Outcome:
    error = f"SMTP {code}: {text}"
    status = enhanced_status(code, text)
    if 400 <= code < 500:
        return Retry(error, status=status, link=link)
    # The mailbox refused it: another channel may still reach them.
    reason = hard_bounce(code, text, stage)
    if reason is None:
        return Failed(error, status=status, link=link)
    suppress = Suppress(reason, reply_detail(code, text))
    return Failed(error, suppress=suppress, status=status, link=link)
