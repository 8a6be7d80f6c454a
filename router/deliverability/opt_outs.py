"""Recording an unsubscribe: what a verified unsubscribe token names stops the email it covers.

A minimal version, to be replaced by the full one (events, and the members' own opt-out
flag): a member without a category opts out of every category ('*'), a member with one of
that category, an address-only recipient is suppressed."""

from __future__ import annotations

from router.database import Connection
from router.deliverability.tokens import Unsubscribe
from router.store import suppressions

ALL_CATEGORIES = "*"


async def record_unsubscribe(conn: Connection, what: Unsubscribe, *, events: bool) -> object:
    """Record the opt-out in the caller's transaction (`events` is not used yet). Returns
    whether anything new was recorded."""
    if what.subject == "a":
        entry = suppressions.Suppression(
            address=what.recipient, reason="unsubscribe", delivery_id=what.delivery_id
        )
        return await suppressions.add(conn, [entry]) > 0
    status: str = await conn.execute(
        "INSERT INTO email_category_opt_outs (member_id, category)"
        " SELECT member_id, $2 FROM members WHERE member_id = $1"
        " ON CONFLICT DO NOTHING",
        what.recipient,
        what.category or ALL_CATEGORIES,
    )
    return status.endswith(" 1")
