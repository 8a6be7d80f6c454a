"""What a receiving mail system reports about a message after it took it: a delivery status
notification (RFC 3464) or an abuse report (ARF, RFC 5965), read from the raw message.

Only the machine-readable `multipart/report` forms are read. Plain-text bounces (an auto-reply,
a vacation notice, an old MTA's prose "could not deliver") are not: guessing a hard failure
from prose would suppress addresses on a misreading, and every current MTA (Postfix, Exim 4.9x
with DSN, Gmail, Microsoft) sends the report form.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import re
from email.parser import BytesHeaderParser
from typing import Literal

import msgspec

_STATUS = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})")
# Feedback types that are a recipient's complaint (RFC 5965 section 7.3); `not-spam` and
# `auth-failure` are not.
COMPLAINT_TYPES = frozenset({"abuse", "fraud", "virus"})
MAX_DIAGNOSTIC = 300  # characters of Diagnostic-Code kept: the reply, never the message


class RecipientStatus(msgspec.Struct, frozen=True):
    """One per-recipient block of a DSN."""

    action: str  # failed | delayed | delivered | relayed | expanded (lower case)
    status: str  # "5.1.1"; "" when absent or malformed
    diagnostic: str | None


class Original(msgspec.Struct, frozen=True):
    """What a report carries of the message it is about (its headers, at least)."""

    message_id: str | None
    return_path: str | None


class DeliveryReport(msgspec.Struct, frozen=True):
    recipients: tuple[RecipientStatus, ...]
    original: Original | None

    def outcome(self) -> tuple[Literal["bounce", "deferred"], RecipientStatus] | None:
        """A hard failure if any recipient failed permanently, else a delay if any was
        delayed (or failed with a temporary status), else nothing to record."""
        for r in self.recipients:
            if r.action == "failed" and r.status.startswith("5."):
                return "bounce", r
        for r in self.recipients:
            if r.action == "delayed" or (r.action == "failed" and r.status.startswith("4.")):
                return "deferred", r
        return None


class Complaint(msgspec.Struct, frozen=True):
    feedback_type: str
    original: Original | None


Report = DeliveryReport | Complaint


def read_report(data: bytes) -> Report | None:
    """The DSN or complaint `data` is, or None for any other message."""
    try:
        message = email.message_from_bytes(data, policy=email.policy.compat32)
    except (ValueError, TypeError, IndexError):
        return None
    if message.get_content_type() != "multipart/report" or not message.is_multipart():
        return None
    kind = (message.get_param("report-type") or "").__str__().lower()
    payload = message.get_payload()
    if not isinstance(payload, list):
        return None
    parts = [p for p in payload if isinstance(p, email.message.Message)]
    if len(parts) < 2:
        return None
    original = _original(parts[2]) if len(parts) > 2 else None
    if kind == "delivery-status":
        return _delivery_report(parts[1], original)
    if kind == "feedback-report":
        return _complaint(parts[1], original)
    return None


def _delivery_report(part: email.message.Message, original: Original | None) -> Report | None:
    if part.get_content_type() != "message/delivery-status":
        return None
    payload = part.get_payload()
    if not isinstance(payload, list):
        return None
    blocks = [b for b in payload if isinstance(b, email.message.Message)]
    if len(blocks) < 2:
        return None
    recipients = tuple(_recipient(block) for block in blocks[1:] if block.get("Action"))
    return DeliveryReport(recipients, original) if recipients else None


def _recipient(block: email.message.Message) -> RecipientStatus:
    action = str(block.get("Action", "")).strip().lower()
    match = _STATUS.search(str(block.get("Status", "")))
    diagnostic = block.get("Diagnostic-Code")
    if diagnostic is not None:
        diagnostic = " ".join(str(diagnostic).split())[:MAX_DIAGNOSTIC]
    return RecipientStatus(action, match.group(0) if match else "", diagnostic)


def _complaint(part: email.message.Message, original: Original | None) -> Report | None:
    if part.get_content_type() != "message/feedback-report":
        return None
    fields = part.get_payload()
    if isinstance(fields, list) and fields and isinstance(fields[0], email.message.Message):
        feedback_type = str(fields[0].get("Feedback-Type", ""))
    else:  # read as text by a parser that did not know the type
        found = re.search(r"(?im)^Feedback-Type:\s*(\S+)", str(fields))
        feedback_type = found.group(1) if found else ""
    feedback_type = feedback_type.strip().lower()
    return Complaint(feedback_type, original) if feedback_type else None


def _original(part: email.message.Message) -> Original | None:
    """The headers of the reported message: a message/rfc822 part, or text/rfc822-headers."""
    content_type = part.get_content_type()
    headers: email.message.Message | None = None
    if content_type in ("message/rfc822", "message/rfc822-headers"):
        inner = part.get_payload()
        if isinstance(inner, list) and inner and isinstance(inner[0], email.message.Message):
            headers = inner[0]
    elif content_type == "text/rfc822-headers":
        raw = part.get_payload(decode=True)
        if isinstance(raw, bytes):
            headers = BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)
    if headers is None:
        return None
    message_id = headers.get("Message-ID")
    return_path = headers.get("Return-Path")
    return Original(
        message_id=str(message_id).strip() if message_id else None,
        return_path=str(return_path).strip().strip("<>") if return_path else None,
    )
