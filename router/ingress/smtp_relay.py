"""SMTP relay ingress: email systems send here, and each recipient becomes an intent.

An authenticated sender's message is read (router.ingress.mime), stored once byte for byte, and
turned into one intent per RCPT in the same transaction; only then does the sender get 250.
If PostgreSQL cannot take it, the answer is 451 so the sender keeps the message and retries.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
import warnings

import asyncpg
from aiosmtpd.smtp import SMTP, Envelope, Session

from router import intents, members
from router.config import EmailConfig, SmtpIngressConfig, is_loopback, split_listen
from router.content import Content, EmailContent, Relayed
from router.database import Pool
from router.deliverability import rules
from router.identifiers import InvalidIdentifier, email_sha256, normalize_email
from router.ingress.bounces import NO_SUCH_MAILBOX, BounceMailbox
from router.ingress.mime import MalformedMessage, read
from router.ingress.smtp_auth import AuthGuard, Credentials
from router.ingress.smtp_dsn import MailParameters
from router.ingress.smtp_session import RelayEnvelope, RelaySMTP
from router.intake import IntakeChannels
from router.intake.routing import Unroutable, plan
from router.intake_port import AcceptIntents
from router.intents import IntentRequest
from router.metrics import count_accepted
from router.reach import DEFAULT_LINE_ACCOUNT, Reach
from router.store import relayed_messages, relayed_recipients, suppressions

log = logging.getLogger(__name__)
# AUTH without TLS is allowed on loopback (and only there), a choice made below on purpose.
warnings.filterwarnings(
    "ignore", message="Requiring AUTH while not requiring TLS", category=UserWarning
)

ROUTES = frozenset({"prefer_line", "both", "line_only", "email_only"})
# What any relayed message carries, as routing sees it at RCPT time: an email (from which
# LINE text can be derived).
ANY_MESSAGE = Content(email=EmailContent(subject="relayed", text=""))
TEMPORARY_FAILURE = "451 4.3.0 the router cannot store messages right now; try again later"
STORE_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


class IngressHandler:
    """aiosmtpd's handler: RCPT is checked against who can be reached, DATA is accepted."""

    def __init__(
        self,
        pool: Pool,
        accept_intents: AcceptIntents,
        channels: IntakeChannels,
        bounces: BounceMailbox | None = None,
    ) -> None:
        self._pool = pool
        self._accept_intents = accept_intents
        self._channels = channels
        self._bounces = bounces

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self._bounces is not None and self._bounces.is_ours(address):
            if self._bounces.mailbox(address) is None:
                return NO_SUCH_MAILBOX
            envelope.rcpt_tos.append(address)
            return "250 2.1.5 OK"
        try:
            normalized = normalize_email(address)
        except InvalidIdentifier as exc:
            return f"553 5.1.3 {exc}"
        try:
            reach = await self._reach(normalized)
        except STORE_ERRORS:
            return TEMPORARY_FAILURE
        channels = self._channels
        configured = channels.configured_for(DEFAULT_LINE_ACCOUNT)  # relayed mail: the default's
        decision = plan("prefer_line", reach, ANY_MESSAGE, channels.routes, configured)
        if isinstance(decision, Unroutable):
            return f"550 5.7.1 {decision.reason}"
        envelope.rcpt_tos.append(normalized)
        return "250 2.1.5 OK"

    async def _reach(self, address: str) -> Reach:
        """How the recipient can be reached by a relayed message: a suppressed address is
        refused here, at RCPT, so the sender learns of it before sending."""
        async with self._pool.acquire(timeout=5) as conn:
            _, by_email = await members.resolve(conn, [], [email_sha256(address)])
            reach = by_email.get(email_sha256(address))
            if reach is None:
                why = (await suppressions.reasons(conn, [address])).get(address)
                reach = Reach.address_only(address, why)
        return rules.for_intent(reach, "promotional", None, composed=False, require_consent=False)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        if self._bounces is not None:
            bounces = self._bounces
            ours = [rcpt for rcpt in envelope.rcpt_tos if bounces.is_ours(rcpt)]
            if ours:
                try:
                    await bounces.receive(self._pool, ours, data)
                except STORE_ERRORS as exc:
                    log.warning("SMTP ingress could not record a report: %s", type(exc).__name__)
                    return TEMPORARY_FAILURE
                envelope.rcpt_tos = [r for r in envelope.rcpt_tos if not bounces.is_ours(r)]
                if not envelope.rcpt_tos:
                    return "250 2.0.0 OK"
        try:
            message = read(data)
        except MalformedMessage as exc:
            return f"554 5.6.0 {exc}"
        route = message.route or "prefer_line"
        if route not in ROUTES:
            return f"554 5.6.0 X-Router-Route must be one of {', '.join(sorted(ROUTES))}"
        digest = hashlib.sha256(data).digest()
        # The sender's own key de-duplicates as it says; a Message-ID only with the same bytes
        # (the same message retried by the sending MTA): another message that reuses the
        # Message-ID is a message of its own.
        key_base = message.idempotency_key or (
            f"{message.message_id}:{digest.hex()}" if message.message_id else None
        )
        requests: list[IntentRequest | intents.IntentResult] = [
            IntentRequest(
                email_address=rcpt,
                route=route,  # type: ignore[arg-type]
                email=EmailContent(subject=message.subject[:998], text=message.line_text),
                campaign=message.campaign[:255] if message.campaign else None,
                idempotency_key=_idempotency_key(key_base, rcpt),
            )
            for rcpt in envelope.rcpt_tos
        ]
        dsn = envelope.dsn if isinstance(envelope, RelayEnvelope) else MailParameters()
        rcpt_dsn = envelope.rcpt_dsn if isinstance(envelope, RelayEnvelope) else {}
        relayed = Relayed(
            message_sha256=digest.hex(),
            envelope_from=str(envelope.mail_from or ""),
            message_id=message.message_id,
            ret=dsn.ret,
            envid=dsn.envid,
            relay_host=server.hostname,
            recipient_dsn=bool(rcpt_dsn),
        )
        try:
            async with self._pool.acquire(timeout=5) as conn, conn.transaction():
                await relayed_messages.store(conn, digest, data)
                results = await self._accept_intents(conn, requests, relayed=relayed)
                count_accepted("smtp", results)
                await relayed_recipients.store(
                    conn,
                    [
                        (r.id, rcpt_dsn[rcpt])
                        for r, rcpt in zip(results, envelope.rcpt_tos, strict=True)
                        if r.status == "accepted" and r.id is not None and rcpt in rcpt_dsn
                    ],
                )
        except STORE_ERRORS as exc:
            log.warning("SMTP ingress could not store a message: %s", type(exc).__name__)
            return TEMPORARY_FAILURE
        taken = [r for r in results if r.status != "rejected"]
        if not taken:
            return f"554 5.7.1 no recipient can be reached: {results[0].reason}"
        if len(taken) < len(results):
            log.warning(
                "SMTP ingress: %d of %d recipients refused", len(results) - len(taken), len(results)
            )
        # One line for any number of recipients: the message's reference, which
        # GET /v1/relayed-messages/{reference} resolves to every intent made from it.
        return f"250 2.0.0 OK: {len(taken)} recipient(s) queued as {digest.hex()}"


def _idempotency_key(base: str | None, rcpt: str) -> str | None:
    """Message-ID and bytes (or the sender's key) plus recipient: a resent message is not
    delivered twice. Long values are hashed to fit the 255-character limit."""
    if not base:
        return None
    key = f"smtp:{base}:{rcpt}"
    return key if len(key) <= 255 else "smtp:" + hashlib.sha256(key.encode()).hexdigest()


async def start_smtp_ingress(
    config: SmtpIngressConfig,
    pool: Pool,
    accept_intents: AcceptIntents,
    channels: IntakeChannels,
    email: EmailConfig | None = None,
    *,
    events: bool = False,
) -> asyncio.Server | None:
    """Listen if `[smtp_ingress] listen` and `users` (or `[email] bounce_domain`, whose MX
    this listener is) are set; None when off.

    `channels` decides at RCPT which recipients can be reached at all, so a
    sender learns of one that cannot before sending the message."""
    bounces = (
        BounceMailbox(email, events=events) if email is not None and email.bounce_domain else None
    )
    if not config.listen or not (config.users or bounces):
        return None
    host, port = split_listen(config.listen)
    tls: ssl.SSLContext | None = None
    if config.tls_cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(config.tls_cert, config.tls_key)
    handler = IngressHandler(pool, accept_intents, channels, bounces)
    credentials = Credentials(dict(config.users))
    guard = AuthGuard(config.auth_attempts, config.auth_delay_seconds)
    # A certificate means STARTTLS is offered; it is required for AUTH off loopback only
    # (config.py refuses a listener off loopback without one).
    require_tls = not is_loopback(host)

    def protocol() -> SMTP:
        return RelaySMTP(
            handler,
            credentials=credentials,
            guard=guard,
            open_domain=bounces.domain if bounces else None,
            hostname=config.hostname or None,
            data_size_limit=config.max_message_bytes,
            auth_required=True,
            auth_require_tls=require_tls,
            tls_context=tls,
            decode_data=False,
            ident="delivery-router",
        )

    loop = asyncio.get_running_loop()
    return await loop.create_server(protocol, host=host, port=port)
