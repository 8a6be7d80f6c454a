"""Delivery status notifications (RFC 3464) for relayed email, to its envelope sender.

An MTA that hands the relay a message expects to hear back, as mail, when a recipient cannot
get it: a relayed email delivery that fails for good (the upstream refused it, retries ran
out, the address may no longer be mailed) makes a `multipart/report` to the envelope sender,
from the null reverse path, with the original message (RET=FULL) or its headers. A recipient
that asked for NOTIFY=SUCCESS hears of a message handed to an upstream without DSN as
`relayed` (one with DSN was given the request and reports itself). None is made for
NOTIFY=NEVER, nor for a message whose envelope sender is null: a report is never reported on.
The report is queued in the transaction that records the outcome (router.store.relay_reports).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from email.utils import format_datetime, formatdate
from uuid import UUID

import msgspec

from router.content import Relayed, RelayRecipient
from router.database import Connection
from router.identifiers import InvalidIdentifier, normalize_email
from router.store import relay_reports
from router.store.deliveries import Result
from router.store.relay_reports import Report, Reported

FAILED = "failed"
RELAYED = "relayed"
# A relayed email's DSN parameters went to an upstream that offers DSN: it reports success.
PASSED_ON = "passed_on"
_SMTP_REPLY = re.compile(r"SMTP (?P<code>[245]\d\d): (?P<text>.*)", re.DOTALL)
_ENHANCED = re.compile(r"5\.\d{1,3}\.\d{1,3}(?= |$)")
_NULL_SENDERS = frozenset({"", "<>"})
MAX_DIAGNOSTIC = 500


async def queue(conn: Connection, actions: Mapping[UUID, str]) -> None:
    """Queue the reports these recorded outcomes (delivery id -> FAILED or RELAYED) call for,
    in the caller's transaction."""
    reported = await relay_reports.about(conn, list(actions))
    await relay_reports.add(
        conn, [r for item in reported if (r := report(item, actions[item.delivery_id]))]
    )


def marked(result: Result, relayed: Relayed, recipient: RelayRecipient | None) -> Result:
    """A relayed email's result, marked with the report its envelope sender is owed: that
    it failed for good, or that it went to an upstream that will not report (no DSN).
    Deciding here, where the parameters are at hand, keeps outcomes without a report from
    reading anything more."""
    action = None
    if result.status == "failed":
        action = FAILED
    elif result.status == "sent" and result.relay_report != PASSED_ON:
        action = RELAYED
    wanted_action = action if action is not None and wanted(relayed, recipient, action) else None
    if wanted_action == result.relay_report:
        return result
    return msgspec.structs.replace(result, relay_report=wanted_action)


def wanted(relayed: Relayed, recipient: RelayRecipient | None, action: str) -> bool:
    """Whether the envelope sender asked (or, by default, expects) to hear of `action`."""
    if relayed.envelope_from.strip() in _NULL_SENDERS:
        return False  # never report on a report
    notify = recipient.notify if recipient is not None else None
    if action == FAILED:
        return notify is None or "FAILURE" in notify
    return notify is not None and "SUCCESS" in notify


def report(item: Reported, action: str) -> Report | None:
    """The report on one delivery, or None when none is wanted or it has nowhere to go."""
    if not wanted(item.relayed, item.recipient, action):
        return None
    try:
        to = normalize_email(item.relayed.envelope_from)
    except InvalidIdentifier:
        return None
    host = item.relayed.relay_host or "localhost"
    status, diagnostic = status_of(item.error, action)
    boundary = f"=_report_{item.delivery_id.hex}"
    failed = action == FAILED
    subject = "Undelivered Mail Returned to Sender" if failed else "Relayed Mail: Delivery Status"
    human = (
        f"Your message could not be delivered to {item.final_recipient}.\r\n"
        + (f"The receiving server said: {diagnostic}\r\n" if diagnostic else "")
        if failed
        else f"Your message was relayed to {item.final_recipient}; the next server does not"
        f" report delivery, so no further notice will follow.\r\n"
    )
    per_message = [f"Reporting-MTA: dns; {host}"]
    if item.relayed.envid is not None:
        per_message.append(f"Original-Envelope-Id: {item.relayed.envid}")
    per_message.append(f"Arrival-Date: {format_datetime(item.arrival)}")
    per_recipient = []
    if item.recipient is not None and item.recipient.orcpt is not None:
        per_recipient.append(f"Original-Recipient: {item.recipient.orcpt}")
    per_recipient += [
        f"Final-Recipient: rfc822; {item.final_recipient}",
        f"Action: {action}",
        f"Status: {status}",
    ]
    if diagnostic:
        per_recipient.append(f"Diagnostic-Code: smtp; {diagnostic}")
    per_recipient.append(f"Last-Attempt-Date: {formatdate(usegmt=True)}")
    full = failed and item.relayed.ret == "FULL"
    returned = item.message if full else _headers(item.message)
    head = "\r\n".join(
        [
            f"From: Mail Delivery System <MAILER-DAEMON@{host}>",
            f"To: <{to}>",
            f"Subject: {subject}",
            f"Date: {formatdate(usegmt=True)}",
            f"Message-ID: <{item.delivery_id}.{action}@{host}>",
            "Auto-Submitted: auto-replied",
            "MIME-Version: 1.0",
            f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
            "",
            "This is a delivery status notification (RFC 3464).",
            f"--{boundary}",
            "Content-Type: text/plain; charset=us-ascii",
            "",
            human,
            f"--{boundary}",
            "Content-Type: message/delivery-status",
            "",
            "\r\n".join(per_message),
            "",
            "\r\n".join(per_recipient),
            "",
            f"--{boundary}",
            "Content-Type: message/rfc822" if full else "Content-Type: text/rfc822-headers",
            "",
            "",
        ]
    ).encode("ascii", "replace")
    data = head + returned.rstrip(b"\r\n") + f"\r\n\r\n--{boundary}--\r\n".encode()
    return Report(
        key=f"relay-report:{item.delivery_id}:{action}",
        to=to,
        data=data,
        subject=subject,
        text=human,
    )


def status_of(error: str | None, action: str) -> tuple[str, str | None]:
    """The RFC 3463 status and the SMTP reply (one line) a delivery's error names."""
    if action != FAILED:
        return "2.0.0", None
    text = error or ""
    m = _SMTP_REPLY.search(text)
    if m is None:
        return ("5.4.7" if text.startswith("gave up") else "5.0.0"), None
    reply = " ".join(f"{m['code']} {m['text']}".split())[:MAX_DIAGNOSTIC]
    if m["code"].startswith("5"):
        enhanced = _ENHANCED.match(m["text"])
        return (enhanced.group(0) if enhanced else "5.0.0"), reply
    return "5.4.7", reply  # temporary failures until retries ran out


def _headers(message: bytes) -> bytes:
    """The message's header section."""
    for end in (b"\r\n\r\n", b"\n\n"):
        at = message.find(end)
        if at >= 0:
            return message[:at]
    return message


def actions_of(results: Sequence[tuple[UUID, str | None]]) -> dict[UUID, str]:
    """The delivery ids with a report to consider, and its action."""
    return {d: a for d, a in results if a in (FAILED, RELAYED)}
