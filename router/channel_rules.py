"""Every rule of the delivery path that depends on which channel a delivery is on, in one place.

The queue core and the delivery code name no channel; what differs per channel is said here
once: who may still be reached at send time, where a fallback goes, which deliveries count
only when LINE confirms them, which address an event reports, and which channel sends a
relayed message's own bytes. The store modules and the delivery code read these; nothing
else in them says a channel's name.
"""

from __future__ import annotations

from router.members import EMAIL_REACHABLE_SQL, LINE_REACHABLE_SQL

# Whether a delivery may still go out, checked as it is first sent (over `deliveries d` and
# `members m`), against the member as they are now: a campaign scheduled for tomorrow must
# not reach someone who opts out tonight. A delivery already attempted is left to finish what
# it started (its retry key makes the resend safe; withholding it could not recall a message
# LINE already took).
REACHABLE_NOW = f"""
    CASE WHEN d.attempts > 1 OR m.member_id IS NULL THEN true
         WHEN d.channel = 'line'
              THEN coalesce({LINE_REACHABLE_SQL} AND m.line_user_id = d.address, false)
         WHEN d.channel = 'email' THEN coalesce({EMAIL_REACHABLE_SQL}, false)
         ELSE true END"""


def not_reachable_now(channel: str) -> tuple[str, bool]:
    """Why a delivery found unreachable at send time is not sent, and whether the intent's
    fallback may carry it instead (a LINE friend who left may still read email; someone who
    opted out of email has said no)."""
    if channel == "line":
        return (
            "not sent: since the intent was accepted the member unfollowed, was unlinked or "
            "opted out of LINE",
            True,
        )
    return "not sent: since the intent was accepted the member opted out of this channel", False


# The one fallback channel, and how its delivery is addressed from the member as they are now
# (over `intents i` and `members m`): an address removed or opted out since acceptance is not
# used, and with events the fallback that could not be made is reported with this reason.
FALLBACK_CHANNEL = "email"
FALLBACK_ADDRESS_SQL = "m.email"
FALLBACK_REACHABLE_SQL = EMAIL_REACHABLE_SQL
FALLBACK_REFUSED_SQL = """
    CASE WHEN m.email IS NULL THEN 'no email fallback: the member has no email address'
         ELSE 'no email fallback: the member opted out of email' END"""

# LINE notification messages have no retry key and count as delivered only when LINE's
# `delivery` webhook confirms them: the response of their `delivered` event, and the error
# of those not confirmed within $1 seconds (SQL).
CONFIRMED_BY_WEBHOOK = "line_notification"
CONFIRMED_RESPONSE = "confirmed by LINE's delivery event"
UNCONFIRMED_ERROR_SQL = (
    "'LINE sent no delivery event within ' || $1::text || ' s: counted as not delivered'"
)

# The address a delivery event reports (over `deliveries d`, `intents i`, `members m`): the
# delivery's own for email, otherwise the intent's recipient address, otherwise the member's.
EVENT_EMAIL_SQL = (
    "CASE WHEN d.channel = 'email' THEN d.address ELSE coalesce(i.email_address, m.email) END"
)
# SendGrid's `smtp-id` of an event (over `delivery_events e`, `deliveries d`): the Message-ID.
EVENT_SMTP_ID_SQL = "CASE WHEN e.channel = 'email' THEN nullif(d.provider_ref, '') END"


def sends_relayed_bytes(channel: str) -> bool:
    """Whether the channel sends a relayed message's original bytes (DKIM intact)."""
    return channel == "email"
