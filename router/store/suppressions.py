"""Suppressed email addresses: written by bounces, complaints, unsubscribes and operators;
read by intake and at each send (router.deliverability.rules)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal
from uuid import UUID

import msgspec

from router.database import Connection

Reason = Literal["bounce", "invalid", "unsubscribe", "spamreport", "manual"]


class Suppression(msgspec.Struct, frozen=True, kw_only=True):
    """One address email is not sent to. `address` is normalised as members' emails are."""

    address: str
    reason: Reason
    detail: str | None = None
    delivery_id: UUID | None = None
    created_at: datetime | None = None


async def add(conn: Connection, entries: Sequence[Suppression]) -> int:
    """Suppress addresses; one already suppressed keeps its first reason and time. Returns
    how many were new."""
    if not entries:
        return 0
    added: int = await conn.fetchval(
        "WITH new AS ("
        " INSERT INTO email_suppressions (address, reason, detail, delivery_id)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::uuid[])"
        " ON CONFLICT (address) DO NOTHING RETURNING 1)"
        " SELECT count(*) FROM new",
        [e.address for e in entries],
        [e.reason for e in entries],
        [e.detail for e in entries],
        [e.delivery_id for e in entries],
    )
    return added
