"""SendGrid's bounce classification of a refusal, posted on `bounce` events so receivers that
sort bounces by it (suppression rules, listmonk's hard/soft split) read the router's the same.

The class comes from the refusal's enhanced status code (RFC 3463, as the channel reported
it) and, where the code is too coarse (5.7.x policy, 5.0.0 when the server gave none), from
words in the reply:

| class | when |
| --- | --- |
| Invalid Address | X.1.x (bad mailbox, domain or syntax), or "user unknown", "no such user" |
| Mailbox Unavailable | X.2.x (full, disabled, not accepting), except X.2.3 |
| Content | X.6.x, X.2.3 and X.3.4 (too big), or spam/virus/content words under X.7.x |
| Frequency or Volume | rate, "too many", volume or throttling words (any code but X.1.x) |
| Reputation | X.7.x naming a block list, reputation or a block of the sender |
| Technical | X.3.x, X.4.x, X.5.x, X.7.x authentication (SPF, DKIM, DMARC, TLS) |
| Unclassified | anything else, and refusals without any code (LINE) |
"""

from __future__ import annotations

import re
from typing import Final

INVALID_ADDRESS: Final = "Invalid Address"
MAILBOX_UNAVAILABLE: Final = "Mailbox Unavailable"
REPUTATION: Final = "Reputation"
TECHNICAL: Final = "Technical"
CONTENT: Final = "Content"
FREQUENCY_OR_VOLUME: Final = "Frequency or Volume"
UNCLASSIFIED: Final = "Unclassified"

_STATUS = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})")
_FREQUENCY = re.compile(r"\brate\b|rate.limit|too many|volume|frequency|throttl", re.I)
_UNKNOWN_USER = re.compile(
    r"user unknown|unknown user|no such (user|mailbox|recipient)|does not exist", re.I
)
_REPUTATION = re.compile(r"block ?list|black ?list|spamhaus|\brbl\b|reputation|listed", re.I)
_CONTENT = re.compile(r"spam|virus|malware|content|attachment|phish", re.I)
_AUTHENTICATION = re.compile(r"\bspf\b|dkim|dmarc|authenticat|\btls\b|encrypt", re.I)


def bounce_classification(status: str | None, reply: str | None) -> str:
    """The class of a refusal with this enhanced status code and reply text."""
    text = reply or ""
    found = _STATUS.fullmatch(status or "")
    if found is None:
        return FREQUENCY_OR_VOLUME if _FREQUENCY.search(text) else UNCLASSIFIED
    subject, detail = int(found.group(2)), int(found.group(3))
    if subject == 1:
        return INVALID_ADDRESS
    if _FREQUENCY.search(text):
        return FREQUENCY_OR_VOLUME
    if (subject, detail) in ((2, 3), (3, 4)) or subject == 6:
        return CONTENT
    if subject == 2:
        return MAILBOX_UNAVAILABLE
    if subject in (3, 4, 5):
        return TECHNICAL
    if subject == 7:
        if _AUTHENTICATION.search(text):
            return TECHNICAL
        if _REPUTATION.search(text):
            return REPUTATION
        if _CONTENT.search(text):
            return CONTENT
        return REPUTATION if "block" in text.lower() else UNCLASSIFIED
    if _UNKNOWN_USER.search(text):
        return INVALID_ADDRESS
    return UNCLASSIFIED
