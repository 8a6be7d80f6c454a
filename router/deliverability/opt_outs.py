"""What a one-click unsubscribe records (docs/deliverability.md#one-click-unsubscribe).

An opt-out takes effect in the transaction that records it: the next intent is refused at
intake and a delivery already queued is refused at its send (router.deliverability.rules).
Only promotional email stops for a member; transactional email still reaches them, which
is why a member's opt-out of all promotional email is the category `ALL_PROMOTIONAL` and
not `members.email_opt_out` (that flag stops every email). A recipient known only by an
address has no member to hold a category, so their address is suppressed instead.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from router.database import Connection
from router.deliverability.rules import ALL_PROMOTIONAL
from router.deliverability.tokens import Unsubscribe
from router.store import category_opt_outs, delivery_events, suppressions

Scope = Literal["category", "promotional", "address"]


class UnsubscribeOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What an unsubscribe did: its `scope` (one category, all promotional email of a
    member, every email to an address) and whether it was `new` (False: already recorded,
    or a member since erased) and the `event` recorded, if any."""

    scope: Scope
    new: bool
    event: delivery_events.EventName | None = None


def scope_of(what: Unsubscribe) -> Scope:
    if what.subject == "a":
        return "address"
    return "promotional" if what.category is None else "category"


async def record_unsubscribe(
    conn: Connection, what: Unsubscribe, *, events: bool
) -> UnsubscribeOutcome:
    """Record the opt-out a verified token names; repeating it changes nothing. With
    `events` (a receiver is configured), a new opt-out also records SendGrid's
    `unsubscribe` (all mail of that kind) or `group_unsubscribe` (one category) event
    about the delivery the link came in, if that delivery is still stored."""
    scope = scope_of(what)
    async with conn.transaction():
        if scope == "address":
            new = (
                await suppressions.add(
                    conn,
                    [
                        suppressions.Suppression(
                            address=what.recipient,
                            reason="unsubscribe",
                            detail=_detail(what.category),
                            delivery_id=what.delivery_id,
                        )
                    ],
                )
                > 0
            )
        else:
            new = await category_opt_outs.add(
                conn, what.recipient, what.category or ALL_PROMOTIONAL
            )
        event: delivery_events.EventName | None = None
        if new and events and what.delivery_id is not None:
            name: delivery_events.EventName = (
                "unsubscribe" if what.category is None else "group_unsubscribe"
            )
            report = delivery_events.Recorded(what.delivery_id, name, category=what.category)
            if await delivery_events.record(conn, [report]):
                event = name
    return UnsubscribeOutcome(scope=scope, new=new, event=event)


def _detail(category: str | None) -> str:
    """The suppression's detail: how it was made, and from which category's email (an
    address-only recipient's unsubscribe stops all their email, whatever the category)."""
    if category is None:
        return "one-click unsubscribe"
    return f"one-click unsubscribe from {category!r} email"
