"""Consent to promotional email, as a member gave it, and the record kept of it.

特定電子メール法 asks the sender to be able to show, for every recipient of promotional
email, when and how they agreed, until one month after the last such email. The consent is
part of the member (`members.email_consent`); erasing the member moves it to
`email_consent_records` for as long as that month runs (router.store.consent_records).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

import msgspec

MAX_SOURCE = 200
MAX_EVIDENCE = 2_000
# Clocks differ: a consent stamped by the caller's clock a little ahead of ours is not refused.
CLOCK_SKEW = timedelta(minutes=5)


class EmailConsent(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """When the member agreed to promotional email, where (a form, a shop counter, an
    import), and what shows it (the form revision, an IP log id, a URL)."""

    granted_at: Annotated[
        datetime,
        msgspec.Meta(
            tz=True, description="When consent was given, with its offset; not in the future"
        ),
    ]
    source: Annotated[
        str,
        msgspec.Meta(min_length=1, max_length=MAX_SOURCE, description="Where, e.g. 'signup-form'"),
    ]
    evidence: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=MAX_EVIDENCE,
            description="What shows it: a form revision, an IP log id, a URL",
        ),
    ]


def check(consent: EmailConsent, now: datetime) -> str | None:
    """Why this consent cannot be recorded, or None."""
    if consent.granted_at > now + CLOCK_SKEW:
        return "granted_at is in the future"
    return None


class ConsentRecord(msgspec.Struct, kw_only=True):
    """The consent of an erased member, kept until `keep_until`: one month after the last
    promotional email the router sent them."""

    member_id: str
    email: str | None
    consent: EmailConsent
    last_promotional_at: datetime | None
    keep_until: datetime
    erased_at: datetime
