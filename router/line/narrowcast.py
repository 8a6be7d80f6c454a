"""Narrowcast campaigns: `"line_delivery": "narrowcast"` sends a campaign's LINE part as one
LINE narrowcast to its audiences' synced LINE audiences, instead of multicasts of 500.

What makes one possible is checked when the campaign is created (422 otherwise): a route that
sends on LINE, and every audience and exclusion synced to LINE (`POST
/v1/audiences/{id}/line-sync`) since its last upload, with at least the 50 users LINE requires
of an audience it narrowcasts to. The LINE recipient is then fixed: (union of the audiences'
LINE audiences) minus (union of the exclusions'). The fan-out puts the campaign's LINE
deliveries into one send group of its own (`group_for`); `router.delivery.narrowcast` sends it.

What is known per member: that their delivery went out in LINE narrowcast <request id> and
how that narrowcast ended. LINE reports only totals (successCount, failureCount, targetCount),
so whether this member received it is not known: a member counted in the LINE audience may
have blocked the account since, and the LINE audience holds the users uploaded by every sync
(LINE cannot remove one), not exactly the members the campaign names now.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import asyncpg
import msgspec

from router.database import Connection
from router.problems import FieldError, ProblemError
from router.reach import DEFAULT_LINE_ACCOUNT
from router.store import line_narrowcasts
from router.store.row_ids import uuid7

# The routes that send on LINE (push or multicast).
LINE_ROUTES = frozenset({"prefer_line", "both", "line_only"})
# LINE fails a narrowcast whose recipient names an audience of fewer users (errorCode 4).
MIN_LINE_AUDIENCE = 50
PER_MEMBER = (
    "LINE reports only totals for a narrowcast (success_count, failure_count, target_count):"
    " each member's LINE delivery says which narrowcast it went out in (provider_ref is its"
    " request id) and how that ended, not whether this member received it. A member counted in"
    " the LINE audience may have blocked the account, and the LINE audience is every user any"
    " sync uploaded, not exactly the members this campaign names."
)

# The hook for the campaign fan-out, in the transaction that creates a chunk's deliveries:
# `group_for(conn, campaign_id, content_id)`, the group every LINE delivery of the campaign
# joins (None: not a narrowcast campaign).
group_for = line_narrowcasts.group_for
LINE_CHANNEL = line_narrowcasts.LINE_CHANNEL


def unworkable(route: str) -> list[FieldError]:
    """What the request alone says against a narrowcast."""
    if route not in LINE_ROUTES:
        return [
            FieldError(
                "line_delivery",
                f"narrowcast sends LINE messages, and route {route} sends none"
                f" (use one of {', '.join(sorted(LINE_ROUTES))})",
            )
        ]
    return []


async def create(
    conn: Connection,
    campaign_id: UUID,
    audience_ids: Sequence[UUID],
    exclude_audience_ids: Sequence[UUID],
    send_at: datetime | None,
    line_account: str = DEFAULT_LINE_ACCOUNT,
) -> None:
    """Fix the narrowcast's LINE recipient (in the campaign's creating transaction), or raise
    a 422 problem naming every audience that cannot be narrowcast to."""
    rows = {
        r["id"]: r
        for r in await conn.fetch(
            "SELECT id, line_audience_group_id, line_synced_at, line_synced_ids, updated_at"
            " FROM audiences WHERE id = ANY($1::uuid[])",
            [*audience_ids, *exclude_audience_ids],
        )
    }
    errors: list[FieldError] = []
    for field, ids in (
        ("audience_ids", audience_ids),
        ("exclude_audience_ids", exclude_audience_ids),
    ):
        for audience_id in ids:
            problem = _not_narrowcastable(rows.get(audience_id), field)
            if problem is not None:
                errors.append(FieldError(field, f"audience {audience_id}: {problem}"))
    if errors:
        raise ProblemError(
            422,
            "Narrowcast not possible",
            f"{errors[0].field}: {errors[0].message}",
            errors,
        )
    await line_narrowcasts.create(
        conn,
        campaign_id,
        uuid7(),
        [rows[i]["line_audience_group_id"] for i in audience_ids],
        [rows[i]["line_audience_group_id"] for i in exclude_audience_ids],
        send_at,
        line_account,
    )


def _not_narrowcastable(row: asyncpg.Record | None, field: str) -> str | None:
    if row is None:
        return "no such audience"
    group_id = row["line_audience_group_id"]
    synced_at: datetime | None = row["line_synced_at"]
    what = (
        "an exclusion is left out at LINE as its synced LINE audience, so"
        if (field == "exclude_audience_ids")
        else "a narrowcast goes to the audience's synced LINE audience, so"
    )
    if group_id is None or synced_at is None:
        return f"{what} it must be synced first (POST /v1/audiences/{{id}}/line-sync)"
    if synced_at < row["updated_at"]:
        return (
            f"{what} it must be synced again: it changed after its last LINE sync"
            f" ({synced_at.isoformat()})"
        )
    synced = row["line_synced_ids"] or 0
    if synced < MIN_LINE_AUDIENCE:
        return (
            f"its last LINE sync uploaded {synced} user IDs; LINE refuses to narrowcast to an"
            f" audience of fewer than {MIN_LINE_AUDIENCE}"
        )
    return None


class NarrowcastView(msgspec.Struct, kw_only=True):
    """A campaign's narrowcast as `GET /v1/campaigns/{id}` shows it."""

    status: str  # waiting | accepted | succeeded | failed | unknown | cancelled
    request_id: str | None
    recipients: int | None  # the campaign's LINE deliveries it was sent for
    audience_group_ids: list[int]
    exclude_audience_group_ids: list[int]
    phase: str | None  # LINE's, as last polled
    success_count: int | None
    failure_count: int | None
    target_count: int | None
    error_code: int | None
    failed_description: str | None
    accepted_time: datetime | None
    completed_time: datetime | None
    attempts: int
    polls: int
    last_error: str | None
    per_member: str = PER_MEMBER


async def view(conn: Connection, campaign_id: UUID) -> NarrowcastView | None:
    row = await line_narrowcasts.find(conn, campaign_id)
    if row is None:
        return None
    return NarrowcastView(**msgspec.structs.asdict(row))
