"""An upstream SMTP server that answers as Postfix does (`250 2.0.0 Ok: queued as ...`) and
records each envelope with its MAIL parameters; optionally with STARTTLS under a test CA."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.harness import _free_port


@dataclass
class Relayed:
    mail_from: str
    mail_options: list[str]
    rcpt_to: list[str]
    data: bytes
    queue_id: str
    # With `dsn`: the DSN parameters of MAIL and of each RCPT, as the client wrote them.
    dsn_mail: list[str] = field(default_factory=list)
    dsn_rcpt: list[list[str]] = field(default_factory=list)


DSN_PARAMETERS = ("RET=", "ENVID=", "NOTIFY=", "ORCPT=")


class DsnSMTP(SMTP):
    """aiosmtpd, which knows no DSN parameters, taking them (RFC 3461) off MAIL and RCPT
    before it reads the command, and keeping them as written on the envelope."""

    def _create_envelope(self) -> Envelope:
        envelope = Envelope()
        envelope.dsn_mail = []  # type: ignore[attr-defined]
        envelope.dsn_rcpt = []  # type: ignore[attr-defined]
        return envelope

    @staticmethod
    def _split(arg: str | None) -> tuple[str | None, list[str]]:
        if arg is None:
            return None, []
        words = arg.split(" ")
        dsn = [w for w in words if w.upper().startswith(DSN_PARAMETERS)]
        return " ".join(w for w in words if w not in dsn), dsn

    async def smtp_MAIL(self, arg: str | None) -> None:  # type: ignore[override]
        rest, dsn = self._split(arg)
        await super().smtp_MAIL(rest)  # type: ignore[arg-type]
        if self.envelope is not None and self.envelope.mail_from:
            self.envelope.dsn_mail = dsn  # type: ignore[attr-defined]

    async def smtp_RCPT(self, arg: str | None) -> None:  # type: ignore[override]
        rest, dsn = self._split(arg)
        assert self.envelope is not None
        before = len(self.envelope.rcpt_tos)
        await super().smtp_RCPT(rest)  # type: ignore[arg-type]
        if len(self.envelope.rcpt_tos) > before:
            self.envelope.dsn_rcpt.append(dsn)  # type: ignore[attr-defined]


class DsnController(Controller):
    def factory(self) -> SMTP:
        return DsnSMTP(self.handler, **self.SMTP_kwargs)


@dataclass
class PostfixLike:
    mails: list[Relayed] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Faults: the connection is cut (no reply) at the next so many RCPTs, or after taking the
    # next so many messages whole (the message is kept: its sender cannot know).
    cut_at_rcpt: int = 0
    cut_after_data: int = 0
    reply_after_data: float = 0.0  # seconds a message waits for its reply (a stuck server)
    # PIPELINING offered (RFC 2920), and how many envelopes came with RCPT and DATA already
    # written behind their MAIL (sent in one go).
    pipelining: bool = False
    pipelined: int = 0
    # Replies for the next MAILs and RCPTs, instead of 250 (each used once).
    mail_replies: list[str] = field(default_factory=list)
    rcpt_replies: list[str] = field(default_factory=list)
    dsn: bool = False  # DSN offered (RFC 3461), its parameters recorded

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            responses.insert(1, "250-PIPELINING")
        if self.dsn:
            responses.insert(1, "250-DSN")
        return responses

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        waiting = bytes(getattr(server._reader, "_buffer", b""))  # read, not yet handled
        with self.lock:
            self.pipelined += b"\r\nDATA\r\n" in waiting and waiting.startswith(b"RCPT TO:")
            reply = self.mail_replies.pop(0) if self.mail_replies else "250 2.1.0 Ok"
        if reply.startswith("250"):
            envelope.mail_from = address
            envelope.mail_options.extend(options)
        return reply

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        with self.lock:
            cut = self.cut_at_rcpt > 0
            self.cut_at_rcpt -= cut
            refusal = self.rcpt_replies.pop(0) if self.rcpt_replies else None
        if cut and server.transport is not None:
            server.transport.abort()  # what is written after this is dropped
        if refusal is not None and not refusal.startswith("250"):
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        reply = self._keep(envelope)
        with self.lock:
            cut = self.cut_after_data > 0
            self.cut_after_data -= cut
        if cut and server.transport is not None:
            server.transport.abort()
        await asyncio.sleep(self.reply_after_data)
        return reply

    def _keep(self, envelope: Envelope) -> str:
        with self.lock:
            queue_id = f"C75E8162{len(self.mails):03X}"
            self.mails.append(
                Relayed(
                    str(envelope.mail_from),
                    list(envelope.mail_options),
                    list(envelope.rcpt_tos),
                    bytes(envelope.original_content or b""),
                    queue_id,
                    list(getattr(envelope, "dsn_mail", [])),
                    list(getattr(envelope, "dsn_rcpt", [])),
                )
            )
        return f"250 2.0.0 Ok: queued as {queue_id}"

    def received(self) -> list[Relayed]:
        with self.lock:
            return list(self.mails)


@contextlib.contextmanager
def upstream(
    tls: ssl.SSLContext | None = None, *, pipelining: bool = False, dsn: bool = False
) -> Iterator[tuple[PostfixLike, int]]:
    """The server on a free loopback port; with `tls`, STARTTLS is required before MAIL;
    with `dsn`, DSN is offered and its parameters kept."""
    handler = PostfixLike(pipelining=pipelining, dsn=dsn)
    port = _free_port()
    extra = {"tls_context": tls, "require_starttls": True} if tls is not None else {}
    kind = DsnController if dsn else Controller
    controller = kind(handler, hostname="127.0.0.1", port=port, decode_data=False, **extra)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


@dataclass
class PrivateCa:
    ca_file: Path
    server: ssl.SSLContext  # the server's certificate for 127.0.0.1, signed by the CA


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_private_ca(directory: Path) -> PrivateCa:
    """A private CA made now, and a certificate for 127.0.0.1 that it signed."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("delivery-router test CA"))
        .issuer_name(_name("delivery-router test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file, key_file = directory / "server.pem", directory / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    return PrivateCa(ca_file=ca_file, server=server)
