"""Journey runs and what their steps did: the only module that writes `journey_runs`,
`journey_steps`, the journey columns of `intents`, and `events.handled_at`.

Both journey queues claim inside the transaction that does their work: the events queue in
arrival order, one transaction at a time (an exit and an entry of one member must not pass
each other), and the runs queue by due time as the journey clock reads it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from router.database import Connection
from router.queue import claims
from router.queue.wakeups import notify

EVENTS = claims.Locked(
    table="events",
    columns="id, member_id, name, properties::text AS properties",
    pending="handled_at IS NULL",
    order="seq",
)
QUEUE_EVENTS = "journey_events"  # the queue name event writers notify (not the table's)

RUNS = claims.Timed(
    table="journey_runs",
    columns="id, journey_id, version, member_id, trigger_event_id, position, due_at,"
    " deferred_since, entered_at",
    # A paused journey's timers keep their times; its steps wait for the resume.
    pending="status = 'active' AND NOT EXISTS (SELECT 1 FROM journeys j"
    " WHERE j.id = journey_runs.journey_id AND j.paused)",
    due="due_at",
)


class NewRun(msgspec.Struct, frozen=True):
    id: UUID
    journey_id: str
    version: int
    member_id: str
    trigger_event_id: UUID
    at: datetime


class RunChange(msgspec.Struct, frozen=True):
    """A run's state after a claim: where it is, when its next step is due, how it ended."""

    id: UUID
    status: str
    position: list[int]
    due_at: datetime | None
    deferred_since: datetime | None
    ended_at: datetime | None = None
    exit_reason: str | None = None


class StepRecord(msgspec.Struct, frozen=True):
    run_id: UUID
    journey_id: str
    step: str
    outcome: str  # sent | skipped | deferred | failed
    at: datetime
    reason: str | None = None
    channels: list[str] = msgspec.field(default_factory=list)
    intent_id: UUID | None = None


async def claim_events(conn: Connection, limit: int) -> list[asyncpg.Record]:
    return await claims.claim_locked_in_turn(conn, EVENTS, limit)


async def claim_runs(conn: Connection, limit: int, now: datetime) -> list[asyncpg.Record]:
    return await claims.claim_due(conn, RUNS, limit, now)


async def next_due(conn: Connection, now: datetime) -> float | None:
    return await claims.next_due_timed(conn, RUNS, now)


async def live_journeys(conn: Connection) -> list[asyncpg.Record]:
    """Journeys new runs may enter: not paused, not deleted, at their current version."""
    return await conn.fetch(
        "SELECT j.id, j.version, v.definition::text AS definition FROM journeys j"
        " JOIN journey_versions v ON v.journey_id = j.id AND v.version = j.version"
        " WHERE NOT j.paused AND j.deleted_at IS NULL"
    )


async def definitions(
    conn: Connection, wanted: Sequence[tuple[str, int]]
) -> dict[tuple[str, int], str]:
    rows = await conn.fetch(
        "SELECT v.journey_id, v.version, v.definition::text AS definition"
        " FROM journey_versions v JOIN unnest($1::text[], $2::int[]) AS w(journey_id, version)"
        " USING (journey_id, version)",
        [j for j, _ in wanted],
        [v for _, v in wanted],
    )
    return {(r["journey_id"], r["version"]): r["definition"] for r in rows}


async def deleted_journeys(conn: Connection, ids: Sequence[str]) -> set[str]:
    rows = await conn.fetch(
        "SELECT id FROM journeys WHERE id = ANY($1::text[]) AND deleted_at IS NOT NULL", list(ids)
    )
    return {r["id"] for r in rows}


async def runs_of_members(conn: Connection, member_ids: Sequence[str]) -> list[asyncpg.Record]:
    """Per (journey, member): whether the member ever entered, and the active run if any."""
    return await conn.fetch(
        "SELECT journey_id, member_id,"
        " (array_agg(id) FILTER (WHERE status = 'active'))[1] AS active_id,"
        " (array_agg(version) FILTER (WHERE status = 'active'))[1] AS active_version"
        " FROM journey_runs WHERE member_id = ANY($1::text[]) GROUP BY journey_id, member_id",
        list(member_ids),
    )


async def start_runs(
    conn: Connection,
    runs: Sequence[NewRun],
    ended: Mapping[UUID, tuple[str, str]] | None = None,
    ended_at: datetime | None = None,
) -> None:
    """New active runs, due at once (their first step decides when anything happens).

    A run that a later event of the same claim already ended (an `always` restart, an exit
    event) is stored ended, with its status and reason from `ended`: stored active, it would
    hold the member's one active slot and the run replacing it could not be stored."""
    if not runs:
        return
    ended = ended or {}
    await conn.execute(
        "INSERT INTO journey_runs (id, journey_id, version, member_id, trigger_event_id,"
        " due_at, entered_at, status, exit_reason, ended_at)"
        " SELECT id, journey_id, version, member_id, trigger_event_id,"
        "  CASE WHEN status = 'active' THEN at END, at, status, reason,"
        "  CASE WHEN status = 'active' THEN NULL ELSE $9::timestamptz END"
        " FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], $5::uuid[],"
        "  $6::timestamptz[], $7::text[], $8::text[])"
        "  AS r(id, journey_id, version, member_id, trigger_event_id, at, status, reason)"
        " ON CONFLICT (journey_id, member_id) WHERE status = 'active' DO NOTHING",
        [r.id for r in runs],
        [r.journey_id for r in runs],
        [r.version for r in runs],
        [r.member_id for r in runs],
        [r.trigger_event_id for r in runs],
        [r.at for r in runs],
        [ended[r.id][0] if r.id in ended else "active" for r in runs],
        [ended[r.id][1] if r.id in ended else None for r in runs],
        ended_at,
    )
    await notify(conn, RUNS.queue_name)


async def end_runs(
    conn: Connection,
    ids: Sequence[UUID],
    statuses: Sequence[str],
    reason: Sequence[str],
    at: datetime,
) -> None:
    """End these runs if still active (a run that finished meanwhile keeps its ending)."""
    if not ids:
        return
    await conn.execute(
        "UPDATE journey_runs r SET status = e.status, exit_reason = e.reason, ended_at = $4,"
        " due_at = NULL"
        " FROM unnest($1::uuid[], $2::text[], $3::text[]) AS e(id, status, reason)"
        " WHERE r.id = e.id AND r.status = 'active'",
        list(ids),
        list(statuses),
        list(reason),
        at,
    )


async def end_runs_of_deleted(conn: Connection, journey_id: str, at: datetime) -> int:
    status: str = await conn.execute(
        "UPDATE journey_runs SET status = 'ended', exit_reason = 'journey deleted',"
        " ended_at = $2, due_at = NULL WHERE journey_id = $1 AND status = 'active'",
        journey_id,
        at,
    )
    return int(status.rpartition(" ")[2])


async def mark_handled(conn: Connection, event_ids: Sequence[UUID], at: datetime) -> None:
    await conn.execute(
        "UPDATE events SET handled_at = $2 WHERE id = ANY($1::uuid[])", list(event_ids), at
    )


async def members_of(conn: Connection, member_ids: Sequence[str]) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT m.member_id, m.email, m.phone, m.attributes::text AS attributes,"
        " l.user_id AS line_user_id, coalesce(l.friend, false) AS line_friend,"
        " coalesce(l.opt_out, false) AS line_opt_out, m.email_opt_out"
        " FROM members m LEFT JOIN member_line_accounts l"
        "   ON l.member_id = m.member_id AND l.account = 'default'"
        " WHERE m.member_id = ANY($1::text[])",
        list(member_ids),
    )


class TriggerEvent(msgspec.Struct, frozen=True):
    properties: str
    occurred_at: datetime


async def trigger_events(conn: Connection, event_ids: Sequence[UUID]) -> dict[UUID, TriggerEvent]:
    rows = await conn.fetch(
        "SELECT id, properties::text AS properties, occurred_at FROM events"
        " WHERE id = ANY($1::uuid[])",
        list(event_ids),
    )
    return {r["id"]: TriggerEvent(r["properties"], r["occurred_at"]) for r in rows}


async def event_since(
    conn: Connection, member_id: str, name: str, since: datetime, trigger: UUID | None
) -> bool:
    """Whether the member did `name` at or after `since`, the triggering event aside."""
    found: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM events WHERE member_id = $1 AND name = $2"
        " AND occurred_at >= $3 AND id IS DISTINCT FROM $4)",
        member_id,
        name,
        since,
        trigger,
    )
    return found


async def promotional_counts(
    conn: Connection, member_ids: Sequence[str], start: datetime, end: datetime
) -> dict[str, int]:
    """Per member, the most promotional deliveries any one channel has for them in [start,
    end): every promotional intent's (and, from before kinds were recorded, campaigns')."""
    rows = await conn.fetch(
        "SELECT member_id, max(n)::int AS n FROM ("
        " SELECT i.member_id, d.channel, count(*) AS n FROM intents i"
        " JOIN deliveries d ON d.intent_id = i.id"
        " WHERE i.member_id = ANY($1::text[]) AND i.created_at >= $2 AND i.created_at < $3"
        "   AND (i.kind = 'promotional' OR (i.kind IS NULL AND i.campaign_id IS NOT NULL))"
        " GROUP BY i.member_id, d.channel) per_channel GROUP BY member_id",
        list(member_ids),
        start,
        end,
    )
    return {r["member_id"]: r["n"] for r in rows}


async def save_runs(conn: Connection, changes: Sequence[RunChange]) -> None:
    if not changes:
        return
    await conn.execute(
        "UPDATE journey_runs r SET status = c.status,"
        " position = c.position::int[],"
        " due_at = c.due_at, deferred_since = c.deferred_since,"
        " ended_at = c.ended_at, exit_reason = c.exit_reason"
        " FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[],"
        "  $5::timestamptz[], $6::timestamptz[], $7::text[])"
        "  AS c(id, status, position, due_at, deferred_since, ended_at, exit_reason)"
        " WHERE r.id = c.id",
        [c.id for c in changes],
        [c.status for c in changes],
        [_array(c.position) for c in changes],
        [c.due_at for c in changes],
        [c.deferred_since for c in changes],
        [c.ended_at for c in changes],
        [c.exit_reason for c in changes],
    )


async def record_steps(conn: Connection, records: Sequence[StepRecord]) -> None:
    if not records:
        return
    await conn.execute(
        "INSERT INTO journey_steps (run_id, journey_id, step, outcome, channels, intent_id,"
        " reason, at)"
        " SELECT run_id, journey_id, step, outcome,"
        "  channels::text[], intent_id, reason, at"
        " FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::uuid[],"
        "  $7::text[], $8::timestamptz[])"
        "  AS s(run_id, journey_id, step, outcome, channels, intent_id, reason, at)",
        [r.run_id for r in records],
        [r.journey_id for r in records],
        [r.step for r in records],
        [r.outcome for r in records],
        [_array(r.channels) for r in records],
        [r.intent_id for r in records],
        [r.reason for r in records],
        [r.at for r in records],
    )


def _array(items: Sequence[object]) -> str:
    """A PostgreSQL array literal of plain items (step indexes, channel names)."""
    return "{" + ",".join(str(i) for i in items) + "}"


def decode_object(text: str | None) -> dict[str, Any]:
    """A stored JSON object (properties, attributes) as a dict."""
    if not text:
        return {}
    value = msgspec.json.decode(text)
    return value if isinstance(value, dict) else {}
