"""LINE narrowcasts: a campaign's LINE part sent as one request to its synced LINE audiences.

The only writer of `line_narrowcasts`, of the narrowcast's send group (status 'narrowcast',
which the multicast queue never claims) and of the state of that group's deliveries. A row is
claimed inside the transaction that works on it (`DUE`), so a process that stops mid-step
leaves it as it was for the next one.
"""

# ruff: noqa: S608 - the statements interpolate the channel's constant SQL fragments only

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

import asyncpg
import msgspec

from router import channel_rules
from router.database import Connection
from router.queue import claims
from router.reach import DEFAULT_LINE_ACCOUNT, line_identity_join

LINE_CHANNEL = "line"

# Waiting rows go once their campaign has finished fanning out (or was cancelled); accepted
# rows are polled. The oldest due goes first.
DUE = claims.Locked(
    table="line_narrowcasts",
    columns="""campaign_id, send_group_id, status, audience_group_ids,
        exclude_audience_group_ids, attempts, first_attempt_at, claim_token, recipients,
        request_id, accepted_at, line_account""",
    pending="""status IN ('waiting', 'accepted') AND next_attempt_at <= now()
        AND NOT EXISTS (SELECT 1 FROM campaigns c
                        WHERE c.id = line_narrowcasts.campaign_id AND c.status = 'fanning_out')""",
    order="next_attempt_at",
)


class DueNarrowcast(msgspec.Struct, frozen=True):
    campaign_id: UUID
    send_group_id: UUID
    status: str
    audience_group_ids: list[int]
    exclude_audience_group_ids: list[int]
    attempts: int
    first_attempt_at: datetime | None
    claim_token: UUID | None
    recipients: int | None
    request_id: str | None
    accepted_at: datetime | None
    line_account: str = DEFAULT_LINE_ACCOUNT  # the campaign's LINE Official Account


class Progress(msgspec.Struct, frozen=True, kw_only=True):
    """LINE's figures as last polled."""

    phase: str
    success_count: int | None = None
    failure_count: int | None = None
    target_count: int | None = None
    error_code: int | None = None
    failed_description: str | None = None
    accepted_time: datetime | None = None
    completed_time: datetime | None = None


async def create(
    conn: Connection,
    campaign_id: UUID,
    group_id: UUID,
    include: list[int],
    exclude: list[int],
    send_at: datetime | None,
    line_account: str = DEFAULT_LINE_ACCOUNT,
) -> None:
    """The narrowcast goes no earlier than the campaign's `send_at`, under its LINE account."""
    await conn.execute(
        "INSERT INTO line_narrowcasts (campaign_id, send_group_id, audience_group_ids,"
        " exclude_audience_group_ids, status, next_attempt_at, line_account)"
        " VALUES ($1, $2, $3, $4, 'waiting', greatest(coalesce($5, now()), now()), $6)",
        campaign_id,
        group_id,
        include,
        exclude,
        send_at,
        line_account,
    )


async def claim(conn: Connection) -> DueNarrowcast | None:
    rows = await claims.claim_locked(conn, DUE, 1)
    return DueNarrowcast(**dict(rows[0])) if rows else None


# The campaign's LINE deliveries of this chunk leave the send groups intake dealt them into
# for the campaign's one narrowcast group, created by the first chunk; the groups left empty
# go. All in the fan-out's transaction, so no worker ever sees them in a multicast group.
async def group_for(conn: Connection, campaign_id: UUID, content_id: bytes) -> UUID | None:
    """The send group a LINE delivery of this campaign belongs in when the campaign is a
    narrowcast (created on first use), or None: for a fan-out that chooses each LINE
    delivery's group itself, rather than groups dealt per chunk."""
    row = await conn.fetchrow(
        "SELECT send_group_id, line_account FROM line_narrowcasts WHERE campaign_id = $1",
        campaign_id,
    )
    if row is None:
        return None
    group_id: UUID = row["send_group_id"]
    await conn.execute(
        "INSERT INTO send_groups (id, channel, content_id, status, line_account)"
        " VALUES ($1, $2, $3, 'narrowcast', $4) ON CONFLICT (id) DO NOTHING",
        group_id,
        LINE_CHANNEL,
        content_id,
        row["line_account"],
    )
    return group_id


def _hold_sql() -> str:
    return f"""
WITH held AS (
    UPDATE deliveries d SET status = 'sending', claim_token = $2, attempts = d.attempts + 1,
           first_attempt_at = coalesce(d.first_attempt_at, now()), updated_at = now()
    FROM intents i LEFT JOIN members m ON m.member_id = i.member_id
         {line_identity_join("i.line_account")}
    WHERE d.send_group_id = $1 AND d.status = 'pending' AND i.id = d.intent_id
    RETURNING d.id, {channel_rules.still_reachable(LINE_CHANNEL)} AS reachable
)
SELECT count(*) FILTER (WHERE reachable) AS reachable,
       coalesce(array_agg(id) FILTER (WHERE NOT reachable), '{{}}') AS left_since
FROM held
"""


async def hold_deliveries(conn: Connection, group_id: UUID, token: UUID) -> tuple[int, list[UUID]]:
    """Mark the group's pending deliveries as being sent under `token`: how many the member
    can still be reached at, and the ids of those they can no longer be (a list as long as
    the opt-outs since acceptance, not as the campaign)."""
    row = await conn.fetchrow(_hold_sql(), group_id, token)
    assert row is not None
    return row["reachable"], list(row["left_since"])


async def held_count(conn: Connection, group_id: UUID, token: UUID) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM deliveries WHERE send_group_id = $1 AND claim_token = $2"
        " AND status = 'sending'",
        group_id,
        token,
    )
    return count


async def content_id(conn: Connection, group_id: UUID) -> bytes | None:
    found: bytes | None = await conn.fetchval(
        "SELECT content_id FROM send_groups WHERE id = $1", group_id
    )
    return found


async def record_token(conn: Connection, campaign_id: UUID, token: UUID) -> None:
    await conn.execute(
        "UPDATE line_narrowcasts SET claim_token = $2, updated_at = now() WHERE campaign_id = $1",
        campaign_id,
        token,
    )


async def record_accepted(
    conn: Connection,
    row: DueNarrowcast,
    request_id: str,
    recipients: int,
    poll_in_seconds: float,
) -> None:
    """LINE took the narrowcast: keep its request id. Its deliveries get it with their
    outcome (one statement over them, not two); until then the intent view shows it through
    the narrowcast."""
    await conn.execute(
        "UPDATE line_narrowcasts SET status = 'accepted', request_id = $2, recipients = $3,"
        " accepted_at = now(), attempts = attempts + 1,"
        " first_attempt_at = coalesce(first_attempt_at, now()), last_error = NULL,"
        " next_attempt_at = now() + make_interval(secs => $4), updated_at = now()"
        " WHERE campaign_id = $1",
        row.campaign_id,
        request_id,
        recipients,
        poll_in_seconds,
    )


async def record_retry(
    conn: Connection,
    campaign_id: UUID,
    error: str,
    retry_in_seconds: float,
    *,
    counts: Literal["attempt", "poll", "nothing"],
) -> None:
    """Try again later, counting one more send attempt, one more poll, or nothing (LINE's
    rate limit refused the request unprocessed)."""
    await conn.execute(
        "UPDATE line_narrowcasts SET last_error = $2,"
        " next_attempt_at = now() + make_interval(secs => $3),"
        " attempts = attempts + ($4 = 'attempt')::int, polls = polls + ($4 = 'poll')::int,"
        " first_attempt_at = CASE WHEN $4 = 'attempt' THEN coalesce(first_attempt_at, now())"
        "                         ELSE first_attempt_at END, updated_at = now()"
        " WHERE campaign_id = $1",
        campaign_id,
        error,
        retry_in_seconds,
        counts,
    )


async def record_progress(
    conn: Connection, campaign_id: UUID, progress: Progress, status: str, poll_in_seconds: float
) -> None:
    """LINE's figures as polled now; `status` stays 'accepted' until LINE says it ended."""
    await conn.execute(
        "UPDATE line_narrowcasts SET status = $2, phase = $3, success_count = $4,"
        " failure_count = $5, target_count = $6, error_code = $7, failed_description = $8,"
        " accepted_time = $9, completed_time = $10, polls = polls + 1,"
        " next_attempt_at = now() + make_interval(secs => $11), updated_at = now()"
        " WHERE campaign_id = $1",
        campaign_id,
        status,
        progress.phase,
        progress.success_count,
        progress.failure_count,
        progress.target_count,
        progress.error_code,
        progress.failed_description,
        progress.accepted_time,
        progress.completed_time,
        poll_in_seconds,
    )


async def record_end(conn: Connection, campaign_id: UUID, status: str, error: str | None) -> None:
    await conn.execute(
        "UPDATE line_narrowcasts SET status = $2, last_error = coalesce($3, last_error),"
        " claim_token = NULL, updated_at = now() WHERE campaign_id = $1",
        campaign_id,
        status,
        error,
    )


async def close_group(conn: Connection, group_id: UUID, provider_ref: str | None) -> None:
    await conn.execute(
        "UPDATE send_groups SET status = 'done', provider_ref = coalesce($2, provider_ref),"
        " updated_at = now() WHERE id = $1",
        group_id,
        provider_ref,
    )


async def finish_deliveries(
    conn: Connection,
    group_id: UUID,
    token: UUID,
    status: str,
    provider_ref: str | None,
    error: str | None,
    *,
    returning: bool = False,
) -> list[asyncpg.Record]:
    """Every delivery held for the narrowcast takes its outcome, in one statement; the (id,
    intent_id) of each with `returning` (for events), else nothing."""
    sql = (
        "UPDATE deliveries SET status = $3, provider_ref = coalesce($4, provider_ref),"
        " last_error = $5, sent_at = CASE WHEN $3 = 'sent' THEN now() ELSE sent_at END,"
        " claim_token = NULL, lease_expires_at = NULL, updated_at = now()"
        " WHERE send_group_id = $1 AND claim_token = $2 AND status = 'sending'"
    )
    args = (group_id, token, status, provider_ref, error)
    if returning:
        return await conn.fetch(sql + " RETURNING id, intent_id", *args)
    await conn.execute(sql, *args)
    return []


class NarrowcastRow(msgspec.Struct, frozen=True, kw_only=True):
    """What `GET /v1/campaigns/{id}` shows of a campaign's narrowcast."""

    status: str
    request_id: str | None
    recipients: int | None
    attempts: int
    polls: int
    phase: str | None
    success_count: int | None
    failure_count: int | None
    target_count: int | None
    error_code: int | None
    failed_description: str | None
    accepted_time: datetime | None
    completed_time: datetime | None
    last_error: str | None
    audience_group_ids: list[int]
    exclude_audience_group_ids: list[int]


async def find(conn: Connection, campaign_id: UUID) -> NarrowcastRow | None:
    row = await conn.fetchrow(
        "SELECT status, request_id, recipients, attempts, polls, phase, success_count,"
        " failure_count, target_count, error_code, failed_description, accepted_time,"
        " completed_time, last_error, audience_group_ids, exclude_audience_group_ids"
        " FROM line_narrowcasts WHERE campaign_id = $1",
        campaign_id,
    )
    return None if row is None else NarrowcastRow(**dict(row))
