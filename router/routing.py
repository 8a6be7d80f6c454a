"""Routing: which channels an intent uses, decided once, when the intent is accepted.

The decision is a pure function of the route the caller asked for, how the member can be
reached, what content the intent carries and which channels this router has configured.
Its result is stored as deliveries, so what `POST /v1/intents` answers is what happens.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from router.members import Reach

Route = Literal["prefer_line", "both", "line_only", "email_only"]
ChannelName = Literal["line", "email"]
LINE: ChannelName = "line"
EMAIL: ChannelName = "email"


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
) -> Plan | Unroutable:
    line_ok, line_why = _line(reach, has_line_content, configured)
    email_ok, email_why = _email(reach, has_email_content, configured)
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
