"""What journeys have done, as `GET /v1/journeys/{id}/progress`, `GET /v1/members/{id}/journeys`
and `router journeys status ID` report it: read from runs and their step records."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import msgspec

from router.database import Connection
from router.journeys import timing
from router.journeys.definition import Journey, Step


class StepProgress(msgspec.Struct, kw_only=True):
    step: str  # steps[2].then[1]
    type: str  # wait | send | if | exit
    waiting: int  # active runs due to do this step next
    sent: dict[str, int]  # by channel (an intent's planned channels)
    skipped: dict[str, int]  # by reason
    failed: dict[str, int]  # by reason
    deferred: int  # times a send was moved (quiet hours, frequency cap)


class JourneyProgress(msgspec.Struct, kw_only=True):
    journey_id: str
    entered: int
    active: int
    completed: int
    exited_by_goal: int
    exited: int  # by an exit step
    ended: int  # restarted, or the journey was deleted
    conversion_rate: float  # exited_by_goal / entered
    steps: list[StepProgress]


class RunView(msgspec.Struct, kw_only=True):
    run_id: UUID
    journey_id: str
    version: int
    status: str
    entered_at: datetime
    next_step: str | None  # what the run does next (active runs)
    next_step_type: str | None
    next_at: datetime | None  # when that step falls due
    ended_at: datetime | None
    exit_reason: str | None


def step_type(step: Step | None) -> str | None:
    if step is None:
        return None
    for name, value in (("wait", step.wait), ("send", step.send), ("if", step.if_)):
        if value is not None:
            return name
    return "exit" if step.exit not in (None, False) else None


def _every_step(steps: list[Step], prefix: tuple[int, ...] = ()) -> list[tuple[str, Step]]:
    found: list[tuple[str, Step]] = []
    for i, step in enumerate(steps):
        position = (*prefix, i)
        found.append((timing.label(position), step))
        found += _every_step(step.then, (*position, 0))
        found += _every_step(step.else_, (*position, 1))
    return found


async def _definition(conn: Connection, journey_id: str, version: int | None) -> Journey | None:
    text = await conn.fetchval(
        "SELECT v.definition::text FROM journey_versions v JOIN journeys j ON j.id = v.journey_id"
        " WHERE v.journey_id = $1 AND v.version = coalesce($2, j.version)",
        journey_id,
        version,
    )
    return None if text is None else msgspec.json.decode(text, type=Journey)


async def journey_progress(conn: Connection, journey_id: str) -> JourneyProgress | None:
    """The journey's figures over every run of every version; steps as its current version
    names them (runs of older versions are counted under the same step names)."""
    journey = await _definition(conn, journey_id, None)
    if journey is None:
        return None
    by_status = {
        (r["status"], r["goal"]): r["n"]
        for r in await conn.fetch(
            "SELECT status, coalesce(exit_reason = 'goal', false) AS goal, count(*)::int AS n"
            " FROM journey_runs WHERE journey_id = $1 GROUP BY 1, 2",
            journey_id,
        )
    }
    waiting = {
        timing.label(r["position"]): r["n"]
        for r in await conn.fetch(
            "SELECT position, count(*)::int AS n FROM journey_runs"
            " WHERE journey_id = $1 AND status = 'active' GROUP BY position",
            journey_id,
        )
    }
    steps = {
        label: StepProgress(
            step=label,
            type=step_type(step) or "",
            waiting=waiting.get(label, 0),
            sent={},
            skipped={},
            failed={},
            deferred=0,
        )
        for label, step in _every_step(journey.steps)
    }
    for r in await conn.fetch(
        "SELECT step, outcome, channels, reason, count(*)::int AS n FROM journey_steps"
        " WHERE journey_id = $1 GROUP BY 1, 2, 3, 4",
        journey_id,
    ):
        progress = steps.get(r["step"])
        if progress is None:
            continue
        if r["outcome"] == "sent":
            for channel in r["channels"]:
                progress.sent[channel] = progress.sent.get(channel, 0) + r["n"]
        elif r["outcome"] == "deferred":
            progress.deferred += r["n"]
        elif r["outcome"] in ("skipped", "failed"):
            counts = progress.skipped if r["outcome"] == "skipped" else progress.failed
            counts[r["reason"] or ""] = counts.get(r["reason"] or "", 0) + r["n"]
    entered = sum(by_status.values())
    goal = by_status.get(("exited", True), 0)
    return JourneyProgress(
        journey_id=journey_id,
        entered=entered,
        active=by_status.get(("active", False), 0),
        completed=by_status.get(("completed", False), 0),
        exited_by_goal=goal,
        exited=by_status.get(("exited", False), 0),
        ended=by_status.get(("ended", False), 0),
        conversion_rate=round(goal / entered, 4) if entered else 0.0,
        steps=list(steps.values()),
    )


async def member_runs(conn: Connection, member_id: str) -> list[RunView] | None:
    """Every run of the member, newest first; None when there is no such member."""
    if not await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM members WHERE member_id = $1)", member_id
    ):
        return None
    rows = await conn.fetch(
        "SELECT id, journey_id, version, status, position, due_at, entered_at, ended_at,"
        " exit_reason FROM journey_runs WHERE member_id = $1 ORDER BY entered_at DESC, id DESC",
        member_id,
    )
    definitions: dict[tuple[str, int], Journey | None] = {}
    views: list[RunView] = []
    for r in rows:
        key = (r["journey_id"], r["version"])
        if key not in definitions:
            definitions[key] = await _definition(conn, *key)
        journey = definitions[key]
        active = r["status"] == "active"
        step = timing.step_at(journey.steps, r["position"]) if journey and active else None
        views.append(
            RunView(
                run_id=r["id"],
                journey_id=r["journey_id"],
                version=r["version"],
                status=r["status"],
                entered_at=r["entered_at"],
                # None after a journey's last wait: the run completes when it is over.
                next_step=timing.label(r["position"]) if step is not None else None,
                next_step_type=step_type(step),
                next_at=r["due_at"] if active else None,
                ended_at=r["ended_at"],
                exit_reason=r["exit_reason"],
            )
        )
    return views
