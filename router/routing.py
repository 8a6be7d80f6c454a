"""Routing: which channels an intent uses, decided once, when the intent is accepted.

The decision is a pure function of the route the caller asked for, how the member can be
reached, what content the intent carries and which channels this router has configured.
Its result is stored as deliveries, so what `POST /v1/intents` answers is what happens.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from router.reach import Reach

Route = Literal["prefer_line", "both", "line_only", "email_only", "notification_first"]
Kind = Literal["promotional", "transactional"]
ChannelName = Literal["line", "email", "line_notification"]
LINE: ChannelName = "line"
EMAIL: ChannelName = "email"
NOTIFICATION: ChannelName = "line_notification"


class Plan(msgspec.Struct, frozen=True):
    """Channels to send on now, and the channel to activate if the primary fails for good."""

    primary: tuple[ChannelName, ...]
    fallback: ChannelName | None = None


class Unroutable(msgspec.Struct, frozen=True):
    reason: str


def plan(
    route: Route,
    reach: Reach,
    *,
    has_line_content: bool,
    has_email_content: bool,
    configured: frozenset[str],
    kind: Kind = "promotional",
) -> Plan | Unroutable:
    line_ok, line_why = _line(reach, has_line_content, configured)
    email_ok, email_why = _email(reach, has_email_content, configured)
    if route == "notification_first":
        if kind != "transactional":
            return Unroutable(
                "LINE notification messages carry transactional messages only: "
                'send this intent with "kind": "transactional", or use another route'
            )
        notify_ok, notify_why = _notification(reach, has_line_content, configured)
        if notify_ok:
            return Plan((NOTIFICATION,), EMAIL if email_ok else None)
        if email_ok:
            return Plan((EMAIL,))
        return Unroutable(f"no channel reaches this recipient: {notify_why}; {email_why}")
    if route == "both" and kind == "transactional" and not line_ok:
        # A transactional message may reach a non-friend by phone number instead.
        notify_ok, _ = _notification(reach, has_line_content, configured)
        if notify_ok:
            return Plan((NOTIFICATION, EMAIL) if email_ok else (NOTIFICATION,))
    if route == "prefer_line":
        if line_ok:
            return Plan((LINE,), EMAIL if email_ok else None)
        if email_ok:
            return Plan((EMAIL,))
        return Unroutable(f"no channel reaches this recipient: {line_why}; {email_why}")
    if route == "both":
        both = tuple(c for c, ok in ((LINE, line_ok), (EMAIL, email_ok)) if ok)
        if both:
            return Plan(both)
        return Unroutable(f"no channel reaches this recipient: {line_why}; {email_why}")
    if route == "line_only":
        return Plan((LINE,)) if line_ok else Unroutable(line_why)
    return Plan((EMAIL,)) if email_ok else Unroutable(email_why)


def _line(reach: Reach, has_content: bool, configured: frozenset[str]) -> tuple[bool, str]:
    if LINE not in configured:
        return False, "LINE is not configured on this router"
    if reach.line_user_id is None:
        return False, "no LINE user ID is linked to this recipient"
    if not reach.line_friend:
        return False, "the LINE user is not a friend of the official account"
    if reach.line_opt_out:
        return False, "the member opted out of LINE"
    if not has_content:
        return False, "the intent has neither LINE messages nor email content to derive them from"
    return True, ""


def _notification(reach: Reach, has_content: bool, configured: frozenset[str]) -> tuple[bool, str]:
    if NOTIFICATION not in configured:
        return False, (
            "LINE notification messages are not enabled on this router "
            "([line] notification_messages; LINE must have approved the account)"
        )
    if reach.phone is None:
        return False, "no phone number for this recipient"
    if reach.line_opt_out:
        return False, "the member opted out of LINE"
    if not has_content:
        return False, "the intent has neither LINE messages nor email content to derive them from"
    return True, ""


def _email(reach: Reach, has_content: bool, configured: frozenset[str]) -> tuple[bool, str]:
    if EMAIL not in configured:
        return False, "email is not configured on this router"
    if reach.email is None:
        return False, "no email address for this recipient"
    if reach.email_opt_out:
        return False, "the member opted out of email"
    if not has_content:
        return False, "the intent has no email content"
    return True, ""
