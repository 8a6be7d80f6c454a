"""The bounce domain's mailbox: the SMTP listener is the MX of `[email] bounce_domain`, so
delivery status notifications, abuse reports and mailto: unsubscribes sent to it arrive here.

Two kinds of recipient exist there: `bounce+<token>` (a composed email's envelope sender; the
token names its delivery) and `unsubscribe` (the List-Unsubscribe mailto:, the unsubscribe
token in the Subject). Any other is answered 550 at RCPT. Nothing sent to the domain becomes
an intent.

Tokens are verified at DATA, not at RCPT: a token with the right shape is accepted whether
it verifies or not, so the answer tells a prober nothing about which tokens are real, and a
message to a forged one is taken and dropped without a trace in the store. The delivery a
report is about is the one its address's token names; the Message-ID of the original in a
report is not consulted: it is unsigned, and the verified token already names the delivery.
"""

from __future__ import annotations

import email
import email.policy
import logging
import re
from collections.abc import Sequence
from typing import Literal
from uuid import UUID

from router.config import EmailConfig
from router.database import Connection, Pool
from router.deliverability import opt_outs
from router.deliverability.feedback import (
    COMPLAINT_TYPES,
    Complaint,
    DeliveryReport,
    read_report,
)
from router.deliverability.secret import token_secret
from router.deliverability.tokens import bounce_token, read_bounce_token, read_unsubscribe_token
from router.store import delivery_feedback, suppressions
from router.store.delivery_events import Recorded

log = logging.getLogger(__name__)

BOUNCE_PREFIX = "bounce+"
UNSUBSCRIBE_LOCAL_PART = "unsubscribe"
_TOKEN_LENGTH = len(bounce_token(b"shape", UUID(int=0)))
# Letters and digits of the token's length: its encoding (lower-case, since mail systems may
# change the case of a local part) is tokens.py's to choose.
_TOKEN_SHAPE = re.compile(rf"[0-9a-z]{{{_TOKEN_LENGTH}}}")
NO_SUCH_MAILBOX = "550 5.1.1 no such mailbox at the bounce domain"
Mailbox = Literal["bounce", "unsubscribe"]


class BounceMailbox:
    """Which recipients at the bounce domain exist, and what is done with mail to them."""

    def __init__(self, email_config: EmailConfig, *, events: bool) -> None:
        self.domain = email_config.bounce_domain.strip().lower()
        self._email = email_config
        self._events = events  # delivery events are recorded (a receiver is configured)

    def is_ours(self, address: str) -> bool:
        """Whether `address` is at the bounce domain (its mail is never an intent)."""
        return address.rpartition("@")[2].strip().lower() == self.domain

    def mailbox(self, address: str) -> Mailbox | None:
        """The mailbox an address at the bounce domain names; None: there is no such one."""
        local = address.rpartition("@")[0].lower()
        if local == UNSUBSCRIBE_LOCAL_PART:
            return "unsubscribe"
        if local.startswith(BOUNCE_PREFIX) and _TOKEN_SHAPE.fullmatch(local[len(BOUNCE_PREFIX) :]):
            return "bounce"
        return None

    async def receive(self, pool: Pool, recipients: Sequence[str], data: bytes) -> None:
        """Act on a message to these bounce-domain recipients: verify, read, record. A
        message that is none of ours, or not a report, is dropped."""
        secret = token_secret(self._email)
        for address in recipients:
            local = address.rpartition("@")[0].lower()
            if self.mailbox(address) == "unsubscribe":
                await self._unsubscribe(pool, secret, data)
                continue
            delivery_id = read_bounce_token(secret, local[len(BOUNCE_PREFIX) :])
            if delivery_id is None:
                log.info("bounce domain: a message to a token that does not verify dropped")
                continue
            await self._report(pool, delivery_id, data)

    async def _report(self, pool: Pool, delivery_id: UUID, data: bytes) -> None:
        report = read_report(data)
        if report is None:
            log.info("bounce domain: a message that is not a report dropped (%s)", delivery_id)
            return
        async with pool.acquire(timeout=5) as conn, conn.transaction():
            found = await _apply(conn, delivery_id, report, events=self._events)
        if not found:
            log.info("bounce domain: a report on no sent email dropped (%s)", delivery_id)

    async def _unsubscribe(self, pool: Pool, secret: bytes, data: bytes) -> None:
        message = email.message_from_bytes(data, policy=email.policy.compat32)
        subject = " ".join(str(message.get("Subject", "")).split())
        # Some mail programs prefix "Re:" or the like: the token is the last word.
        what = read_unsubscribe_token(secret, subject.rpartition(" ")[2]) if subject else None
        if what is None:
            log.info("bounce domain: an unsubscribe without a valid token dropped")
            return
        async with pool.acquire(timeout=5) as conn, conn.transaction():
            await opt_outs.record_unsubscribe(conn, what, events=self._events)


async def _apply(
    conn: Connection, delivery_id: UUID, report: DeliveryReport | Complaint, *, events: bool
) -> bool:
    """Record one report on a delivery (its event too, with `events`); False when no email
    delivery has the id."""
    if isinstance(report, Complaint):
        if report.feedback_type not in COMPLAINT_TYPES:
            return True
        event = Recorded(delivery_id, "spamreport", reason=f"feedback-type {report.feedback_type}")
        sent = await delivery_feedback.mark(
            conn, delivery_id, "complained", event if events else None
        )
        if sent is not None:
            await suppressions.add(
                conn,
                [
                    suppressions.Suppression(
                        address=sent.address,
                        reason="spamreport",
                        detail=f"feedback-type {report.feedback_type}",
                        delivery_id=delivery_id,
                    )
                ],
            )
        return sent is not None
    outcome = report.outcome()
    if outcome is None:
        return True
    kind, recipient = outcome
    reason = " ".join(filter(None, (recipient.status, recipient.diagnostic))) or None
    if kind == "deferred":
        if not events:
            return True
        return await delivery_feedback.deferred(conn, Recorded(delivery_id, "deferred", reason))
    event = Recorded(delivery_id, "bounce", reason=reason, bounce_type="bounce")
    sent = await delivery_feedback.mark(conn, delivery_id, "bounced", event if events else None)
    if sent is not None:
        await suppressions.add(
            conn,
            [
                suppressions.Suppression(
                    address=sent.address,
                    reason="invalid" if recipient.status == "5.1.3" else "bounce",
                    detail=reason,
                    delivery_id=delivery_id,
                )
            ],
        )
    return sent is not None
