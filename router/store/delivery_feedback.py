"""What a recipient's mail system reported after an email was sent: the delivery becomes
`bounced` or `complained` (from `sent` only, so a repeated report changes nothing), its
`feedback_at` is set and the event is stored in the same transaction."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

import msgspec

from channels import registry
from router.database import Connection
from router.store import delivery_events


class SentEmail(msgspec.Struct, frozen=True):
    """A delivery a report is about: the address it was sent to, and whether this report
    changed its status (False: it was not `sent`, e.g. the same report came twice)."""

    address: str
    changed: bool


def _is_email(channel: str) -> bool:
    return any(d.name == channel and d.address_is_email for d in registry.descriptors())


async def mark(
    conn: Connection,
    delivery_id: UUID,
    status: Literal["bounced", "complained"],
    event: delivery_events.Recorded | None,
) -> SentEmail | None:
    """Record a bounce or a complaint (in the caller's transaction), with its event unless
    None (no receiver configured); None when no email delivery has this id."""
    row = await conn.fetchrow(
        "SELECT channel, address, status FROM deliveries WHERE id = $1 FOR UPDATE", delivery_id
    )
    if row is None or not _is_email(row["channel"]) or not row["address"]:
        return None
    changed = row["status"] == "sent"
    if changed:
        await conn.execute(
            "UPDATE deliveries SET status = $2, feedback_at = now(), updated_at = now()"
            " WHERE id = $1",
            delivery_id,
            status,
        )
        if event is not None:
            await delivery_events.record(conn, [event])
    return SentEmail(address=row["address"], changed=changed)


async def deferred(conn: Connection, event: delivery_events.Recorded) -> bool:
    """Record that a sent email is delayed on its way (no change of status); False when no
    sent email delivery has this id."""
    status = await conn.fetchval("SELECT status FROM deliveries WHERE id = $1", event.delivery_id)
    if status != "sent":
        return False
    await delivery_events.record(conn, [event])
    return True
