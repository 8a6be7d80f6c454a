"""The dashboard's journeys: each journey's current definition as its steps in order, with
what its runs are doing at each step, and its latest runs.

The counts are those of `GET /v1/journeys/{id}/progress` (`router.journeys.progress`), so the
page and the API never disagree; this module only lays the steps out and names what each does.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final
from uuid import UUID

import msgspec
from litestar import Request, Response, get
from litestar.params import QueryParameter

from router.database import Connection
from router.journeys import timing
from router.journeys.definition import Journey, Step, Trigger, WaitSpec
from router.journeys.progress import JourneyProgress, StepProgress, journey_progress, step_type
from router.journeys.templates import TemplateError, pools_used
from router.ui.pages import Dashboard

PAGE_SIZE: Final = 20
RECENT_RUNS: Final = 10


class StepView(msgspec.Struct, kw_only=True):
    """One step as the page shows it: what it does in words, its counts, its branches."""

    label: str  # steps[2].then[1], as validation and the API name it
    type: str  # wait | send | if | exit
    summary: str
    coupon_pools: list[str]
    progress: StepProgress
    then: list[StepView]
    else_: list[StepView]


class RunRow(msgspec.Struct, kw_only=True):
    id: UUID
    member_id: str
    status: str
    at_step: str | None  # where an active run is
    entered_at: datetime
    exit_reason: str | None


class JourneyView(msgspec.Struct, kw_only=True):
    id: str
    name: str
    version: int
    source: str
    enabled: bool
    paused: bool
    trigger: str
    progress: JourneyProgress
    steps: list[StepView]
    runs: list[RunRow]


def _dashboard(request: Request[Any, Any, Any]) -> Dashboard:
    dashboard: Dashboard = request.app.state["dashboard"]
    return dashboard


def trigger_summary(trigger: Trigger) -> str:
    if trigger.event is not None:
        where = ", ".join(f"{k} = {v!r}" for k, v in sorted(trigger.where.items()))
        return f"event {trigger.event}" + (f" where {where}" if where else "")
    if trigger.audience is not None:
        return f"joining audience {trigger.audience}"
    if trigger.line_follow:
        return "a LINE follow (friend added or unblocked)"
    if trigger.attribute is not None:
        return f"member attribute {trigger.attribute} becoming set"
    return "none"


def _wait_summary(wait: str | WaitSpec) -> str:
    if isinstance(wait, str):
        return f"wait {wait}"
    if wait.duration is not None:
        return f"wait {wait.duration}"
    if wait.until is not None:
        return f"wait until {wait.until}" + (f" ({wait.time_zone})" if wait.time_zone else "")
    if wait.before is not None:
        return f"wait until {wait.before} before {wait.of}"
    return f"wait until {wait.after} after {wait.of}"


def step_summary(step: Step) -> str:
    if step.wait is not None:
        return _wait_summary(step.wait)
    if step.send is not None:
        send = step.send
        parts = [f"send {send.kind}, {send.route}"]
        if send.line is not None:
            parts.append(f"LINE: {len(send.line.messages)} message(s)")
        if send.email is not None:
            parts.append(f"email: {send.email.subject or 'template'}")
        if send.campaign:
            parts.append(f"campaign {send.campaign}")
        return "; ".join(parts)
    if step.if_ is not None:
        condition = step.if_
        if condition.event_since_entry is not None:
            return f"if event {condition.event_since_entry} since entry"
        if condition.attribute is not None:
            if isinstance(condition.equals, msgspec.UnsetType):
                return f"if attribute {condition.attribute} is set"
            return f"if attribute {condition.attribute} = {condition.equals!r}"
        return f"if reachable on LINE is {condition.reachable_on_line}"
    reason = step.exit if isinstance(step.exit, str) else ""
    return "exit" + (f" ({reason})" if reason else "")


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


def coupon_pools(step: Step) -> list[str]:
    """The coupon pools a send step's templates take codes from."""
    if step.send is None:
        return []
    pools: set[str] = set()
    for text in _strings(msgspec.to_builtins(step.send)):
        if "coupon" in text:
            try:
                pools |= pools_used(text)
            except TemplateError:  # stored definitions were validated; never expected
                continue
    return sorted(pools)


def _empty(label: str, step: Step) -> StepProgress:
    return StepProgress(
        step=label,
        type=step_type(step) or "",
        waiting=0,
        sent={},
        skipped={},
        failed={},
        deferred=0,
    )


def step_views(
    steps: list[Step], progress: dict[str, StepProgress], prefix: tuple[int, ...] = ()
) -> list[StepView]:
    views: list[StepView] = []
    for i, step in enumerate(steps):
        position = (*prefix, i)
        label = timing.label(position)
        views.append(
            StepView(
                label=label,
                type=step_type(step) or "",
                summary=step_summary(step),
                coupon_pools=coupon_pools(step),
                progress=progress.get(label) or _empty(label, step),
                then=step_views(step.then, progress, (*position, 0)),
                else_=step_views(step.else_, progress, (*position, 1)),
            )
        )
    return views


async def _recent_runs(conn: Connection, journey_id: str) -> list[RunRow]:
    """Newest first (journey_runs_journey_recent: journey_id, id DESC)."""
    rows = await conn.fetch(
        "SELECT id, member_id, status, position, entered_at, exit_reason FROM journey_runs"
        " WHERE journey_id = $1 ORDER BY id DESC LIMIT $2",
        journey_id,
        RECENT_RUNS,
    )
    return [
        RunRow(
            id=r["id"],
            member_id=r["member_id"],
            status=r["status"],
            at_step=timing.label(r["position"]) if r["status"] == "active" else None,
            entered_at=r["entered_at"],
            exit_reason=r["exit_reason"],
        )
        for r in rows
    ]


async def journey_views(conn: Connection, after: str | None) -> tuple[list[JourneyView], bool]:
    """A page of journeys by id (journeys_pkey, then journey_versions_pkey for each current
    definition), and whether more follow."""
    rows = await conn.fetch(
        "SELECT j.id, j.version, j.source, j.paused, v.definition::text AS definition"
        " FROM journeys j JOIN journey_versions v ON v.journey_id = j.id AND v.version = j.version"
        " WHERE j.deleted_at IS NULL AND ($1::text IS NULL OR j.id > $1)"
        " ORDER BY j.id LIMIT $2",
        after,
        PAGE_SIZE + 1,
    )
    views: list[JourneyView] = []
    for row in rows[:PAGE_SIZE]:
        journey = msgspec.json.decode(row["definition"], type=Journey)
        progress = await journey_progress(conn, row["id"])
        if progress is None:  # deleted since the page was read
            continue
        by_label = {step.step: step for step in progress.steps}
        views.append(
            JourneyView(
                id=row["id"],
                name=journey.name,
                version=row["version"],
                source=row["source"],
                enabled=journey.enabled,
                paused=row["paused"],
                trigger=trigger_summary(journey.trigger),
                progress=progress,
                steps=step_views(journey.steps, by_label),
                runs=await _recent_runs(conn, row["id"]),
            )
        )
    return views, len(rows) > PAGE_SIZE


@get("/journeys", name="ui-journeys")
async def journeys_page(
    request: Request[Any, Any, Any],
    after: Annotated[str | None, QueryParameter(max_length=64)] = None,
) -> Response[str]:
    dashboard = _dashboard(request)
    async with dashboard.runtime.pool.acquire() as conn:
        views, more = await journey_views(conn, after)
    return dashboard.page(
        request,
        "ui/journeys.html",
        active="journeys",
        journeys=views,
        next_after=views[-1].id if more and views else None,
    )
