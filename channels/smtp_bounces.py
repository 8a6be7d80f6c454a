"""Which permanent SMTP refusals say the address itself is bad, so it is suppressed.

Only a refusal of the recipient is about the recipient. The rule, by the reply's enhanced
status code (RFC 3463) when it has one, else by its basic code:

- 5.1.3 (bad destination address syntax), or 501/553 to RCPT without one: `invalid`.
- any other 5.1.x to RCPT or to the message (no such mailbox 5.1.1, no such domain 5.1.2,
  moved 5.1.6, null MX 5.1.10, ...), or 550/551 to RCPT without one: `bounce`.
- everything else is not suppressed: 5.7.x (policy: spam blocks, DMARC, rate or reputation,
  which are the sender's problem), 5.2.x (mailbox full or disabled for now), 5.3.x-5.6.x
  (system, network, protocol, content), any refusal of MAIL FROM (the sender's address), and
  a reply to the message without an enhanced code (a content refusal cannot be told apart).
"""

from __future__ import annotations

import re
from typing import Literal

Stage = Literal["recipient", "message", "sender"]
SuppressReason = Literal["bounce", "invalid"]

_ENHANCED = re.compile(r"\s*5\.(\d{1,3})\.(\d{1,3})\b")

# The SMTP reply kept as a suppression's detail: one line, never a hostile server's megabyte.
MAX_DETAIL_CHARS = 300


def hard_bounce(code: int, text: str, stage: Stage) -> SuppressReason | None:
    """The suppression a permanent refusal means (see the module's rule), or None."""
    if not 500 <= code < 600 or stage == "sender":
        return None
    enhanced = _ENHANCED.match(text)
    if enhanced is not None:
        subject, detail = int(enhanced.group(1)), int(enhanced.group(2))
        if subject != 1:
            return None
        return "invalid" if detail == 3 else "bounce"
    if stage != "recipient":
        return None
    if code in (501, 553):
        return "invalid"
    if code in (550, 551):
        return "bounce"
    return None


_ANY_ENHANCED = re.compile(r"\s*([245])\.(\d{1,3})\.(\d{1,3})\b")


def enhanced_status(code: int, text: str) -> str:
    """The reply's enhanced status code (RFC 3463: `5.1.1`), or one made from its basic code
    (`5.0.0`) when the server gave none, as delivery events report it."""
    found = _ANY_ENHANCED.match(text)
    if found is not None and found.group(1) == str(code)[:1]:
        return ".".join(found.groups())
    return f"{code // 100}.0.0"


def reply_detail(code: int, text: str) -> str:
    """`550 5.1.1 <...>: Recipient address rejected`, on one line."""
    return " ".join(f"{code} {text}".split())[:MAX_DETAIL_CHARS]
