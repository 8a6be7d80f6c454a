"""Routing: which channels an intent uses, decided once, when the intent is accepted.

The decision is a pure function of the route the caller asked for, how the member can be
reached, what content the intent carries and which channels this router has configured. Each
channel's descriptor says which routes it takes part in and at what rank; a route either sends
on the first channel that reaches the recipient (the next one that does is the fallback) or on
every one. The result is stored as deliveries, so what `POST /v1/intents` answers is what happens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import msgspec

from channels.base import ChannelDescriptor
from router.content import Content
from router.intents import Kind, Route
from router.reach import Reach

# A route sends on the first channel (in rank order) that reaches the recipient, or on all.
EVERY_CHANNEL: frozenset[Route] = frozenset({"both"})


class Plan(msgspec.Struct, frozen=True, gc=False):
    """Channels to send on now, and the channel to activate if the primary fails for good."""

    primary: tuple[str, ...]
    fallback: str | None = None


class Unroutable(msgspec.Struct, frozen=True, gc=False):
    reason: str


class Routes:
    """The registered channels ranked once per route, as `plan` takes them."""

    def __init__(self, channels: Sequence[ChannelDescriptor]) -> None:
        names = {route for c in channels for route in c.routes}
        self._ranked = {
            route: tuple(
                sorted((c for c in channels if route in c.routes), key=lambda c: c.routes[route])
            )
            for route in names
        }

    def ranked(self, route: str) -> tuple[ChannelDescriptor, ...]:
        """The channels of `route`, in the order it tries them."""
        return self._ranked.get(route, ())


def plan(
    route: Route,
    reach: Reach,
    content: Content,
    routes: Routes,
    configured: frozenset[str],
    kind: Kind = "promotional",
) -> Plan | Unroutable:
    """Plan one intent over the registered channels, of which `configured` have adapters."""
    return plan_by_reach(route, lambda c: c.unreachable(reach), content, routes, configured, kind)


def effective_route(route: Route, content: Content) -> Route:
    """The route an intent is planned on. Files (an invoice, a ticket) cannot go in a LINE
    text, so an email with attachments under `prefer_line` goes by email as well as to a
    LINE friend: `both`."""
    if route == "prefer_line" and content.email is not None and content.email.attachments:
        return "both"
    return route


def plan_by_reach(
    route: Route,
    unreachable: Callable[[ChannelDescriptor], str | None],
    content: Content,
    routes: Routes,
    configured: frozenset[str],
    kind: Kind = "promotional",
) -> Plan | Unroutable:
    """`plan`, with who the channels reach given as `unreachable` (why a channel does not
    reach the recipient, or None): the same rules decide a campaign's routing table in SQL."""
    route = effective_route(route, content)
    ranked = routes.ranked(route)
    if route in EVERY_CHANNEL:
        why = {c.name: _why_not(c, unreachable, content, configured, kind) for c in ranked}
        on = [
            c.name
            for c in ranked
            if why[c.name] is None
            and (c.stands_in_for is None or why.get(c.stands_in_for, "absent") is not None)
        ]
        if on:
            return Plan(tuple(on))
        return _unroutable([c for c in ranked if c.stands_in_for is None], why)
    if ranked and kind not in ranked[0].kinds:
        return Unroutable(ranked[0].kind_refusal)
    chosen: ChannelDescriptor | None = None
    for channel in ranked:
        if _why_not(channel, unreachable, content, configured, kind) is None:
            if chosen is not None:
                return Plan((chosen.name,), channel.name)  # the next one is the fallback
            chosen = channel
    if chosen is not None:
        return Plan((chosen.name,))
    return _unroutable(
        ranked, {c.name: _why_not(c, unreachable, content, configured, kind) for c in ranked}
    )


def _why_not(
    channel: ChannelDescriptor,
    unreachable: Callable[[ChannelDescriptor], str | None],
    content: Content,
    configured: frozenset[str],
    kind: str,
) -> str | None:
    """Why the channel cannot carry this intent to this recipient, or None if it can."""
    if channel.name not in configured:
        return channel.not_configured
    if kind not in channel.kinds:
        return channel.kind_refusal
    if reason := unreachable(channel):
        return reason
    if not channel.carries(content):
        return channel.no_content
    return None


def _unroutable(ranked: Sequence[ChannelDescriptor], why: dict[str, str | None]) -> Unroutable:
    reasons = [why[c.name] or "" for c in ranked]
    if len(reasons) == 1:
        return Unroutable(reasons[0])
    return Unroutable("no channel reaches this recipient: " + "; ".join(reasons))
