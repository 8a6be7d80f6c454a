"""Due steps fired: the `journey_runs` queue.

A claim locks due runs (as the journey clock reads it) inside one transaction, works each
forward through its steps until it has to wait, accepts the claim's sends with one intake
call (pushed, never multicast: the content is personal), and saves every run's advance with
them. A crash rolls back all of it, sends included, so a step is neither skipped nor
repeated; the idempotency key `journey:{run}:{step}` guards the send besides.

A run does at most one send per claim; the step after it is due at once and fires in the next
claim. A send due longer ago than the journey's `max_lateness` (every router was down) is
skipped and recorded. A promotional send in quiet hours is moved to the window's end; one
over the frequency cap to the next local day, and skipped once that would put it more than
`[journeys] max_deferral` after it first fell due.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
import msgspec

from router.config import JourneysConfig
from router.database import Connection, Pool
from router.intake_port import AcceptIntents
from router.intents import IntentOrigin, IntentRequest
from router.journeys import timing
from router.journeys.clock import Clock
from router.journeys.definition import Condition, Journey, SendStep
from router.journeys.entering import Definitions
from router.journeys.sending import SendFailed, idempotency_key, intent_for, pools_of
from router.metrics import count_accepted
from router.queue.loops import QueueWorker
from router.queue.wakeups import notify
from router.reach import Reach
from router.store import coupon_pools, journey_runs
from router.store.journey_runs import RunChange, StepRecord

CLAIM = 500
# Steps one run may take in a claim without waiting: a guard against a definition that loops.
MAX_STEPS_PER_CLAIM = 100

ReachableOnLine = Callable[[Reach], bool]


@dataclass
class _Run:
    """One claimed run as the claim works it."""

    row: asyncpg.Record
    journey: Journey
    member: Mapping[str, Any]  # as templates read it
    attributes: Mapping[str, Any]
    reach: Reach
    event: Mapping[str, Any]
    position: list[int]
    since: datetime  # when the run began: its triggering event's time
    status: str = "active"
    due_at: datetime | None = None
    deferred_since: datetime | None = None
    exit_reason: str | None = None
    send: IntentRequest | None = None
    send_step: str = ""
    records: list[StepRecord] = field(default_factory=list)

    @property
    def id(self) -> UUID:
        result: UUID = self.row["id"]
        return result


class JourneyTimers(QueueWorker):
    def __init__(
        self,
        pool: Pool,
        clock: Clock,
        definitions: Definitions,
        accept: AcceptIntents,
        config: JourneysConfig,
        reachable_on_line: ReachableOnLine,
        *,
        concurrency: int = 2,
    ) -> None:
        super().__init__(journey_runs.RUNS.queue_name, concurrency=concurrency, full=CLAIM)
        self._pool = pool
        self._clock = clock
        self._definitions = definitions
        self._accept = accept
        self._cap = config.max_promotional_per_member_per_day
        self._max_deferral = timing.duration(config.max_deferral)
        self._reachable_on_line = reachable_on_line

    async def next_due(self) -> float | None:
        async with self._pool.acquire() as conn:
            return await journey_runs.next_due(conn, self._clock.now())

    async def step(self) -> int:
        async with self._pool.acquire() as conn, conn.transaction():
            now = self._clock.now()
            rows = await journey_runs.claim_runs(conn, CLAIM, now)
            if not rows:
                return 0
            runs = await self._load(conn, rows, now)
            counts = await self._counts(conn, runs, now)
            for run in runs:
                await self._advance(conn, run, now, counts)
            await self._send(conn, [r for r in runs if r.send is not None], now)
            await journey_runs.save_runs(conn, [_change(r, now) for r in runs])
            await journey_runs.record_steps(conn, [s for r in runs for s in r.records])
            later = [r.due_at for r in runs if r.status == "active" and r.due_at is not None]
            if any(d <= now for d in later):
                await notify(conn, journey_runs.RUNS.queue_name)
            elif later:
                await notify(conn, journey_runs.RUNS.queue_name, self._clock.real(min(later)))
        return len(rows)

    async def _load(
        self, conn: Connection, rows: list[asyncpg.Record], now: datetime
    ) -> list[_Run]:
        wanted = {(r["journey_id"], r["version"]) for r in rows}
        for (journey_id, version), text in (
            await journey_runs.definitions(conn, self._definitions.missing(wanted))
        ).items():
            self._definitions.add(journey_id, version, text)
        deleted = await journey_runs.deleted_journeys(conn, sorted({r["journey_id"] for r in rows}))
        members = {
            m["member_id"]: m
            for m in await journey_runs.members_of(conn, sorted({r["member_id"] for r in rows}))
        }
        events = await journey_runs.trigger_events(
            conn, [r["trigger_event_id"] for r in rows if r["trigger_event_id"] is not None]
        )
        runs: list[_Run] = []
        for row in rows:
            trigger = events.get(row["trigger_event_id"])
            journey = self._definitions.get(row["journey_id"], row["version"])
            if journey is None:  # versions go only with their journey, and its runs with it
                raise RuntimeError(f"journey {row['journey_id']} has no version {row['version']}")
            m = members[row["member_id"]]
            attributes = journey_runs.decode_object(m["attributes"])
            run = _Run(
                row=row,
                journey=journey,
                member={
                    "member_id": m["member_id"],
                    "email": m["email"],
                    "phone": m["phone"],
                    "line_user_id": m["line_user_id"],
                    "attributes": attributes,
                },
                attributes=attributes,
                reach=Reach(
                    member_id=m["member_id"],
                    line_user_id=m["line_user_id"],
                    line_friend=m["line_friend"],
                    line_opt_out=m["line_opt_out"],
                    email=m["email"],
                    email_opt_out=m["email_opt_out"],
                    phone=m["phone"],
                ),
                event=journey_runs.decode_object(trigger.properties if trigger else None),
                since=trigger.occurred_at if trigger else row["entered_at"],
                position=list(row["position"]),
                due_at=row["due_at"],
                deferred_since=row["deferred_since"],
            )
            if row["journey_id"] in deleted:
                run.status, run.exit_reason = "ended", "journey deleted"
            runs.append(run)
        return runs

    async def _counts(self, conn: Connection, runs: list[_Run], now: datetime) -> dict[str, int]:
        """Today's promotional deliveries per member, by each journey's local day."""
        counts: dict[str, int] = {}
        by_zone: dict[str, set[str]] = {}
        for run in runs:
            if run.status == "active":
                by_zone.setdefault(str(timing.time_zone(run.journey)), set()).add(
                    run.row["member_id"]
                )
        for zone_name, members in by_zone.items():
            start, end = timing.local_day(now, ZoneInfo(zone_name))
            for member, n in (
                await journey_runs.promotional_counts(conn, sorted(members), start, end)
            ).items():
                counts[member] = max(counts.get(member, 0), n)
        return counts

    async def _advance(
        self, conn: Connection, run: _Run, now: datetime, counts: dict[str, int]
    ) -> None:
        """Work the run forward from its due step until it waits, sends or ends."""
        if run.status != "active":
            return
        journey, steps = run.journey, run.journey.steps
        base = run.due_at or now  # when this stretch of steps fell due
        late_after = timing.duration(journey.max_lateness)
        for _ in range(MAX_STEPS_PER_CLAIM):
            step = timing.step_at(steps, run.position)
            if step is None:
                run.status, run.exit_reason = "completed", None
                return
            name = timing.label(run.position)
            if step.wait is not None:
                try:
                    target = timing.wait_target(step.wait, base, journey, run.attributes, run.event)
                except ValueError as error:
                    run.records.append(self._record(run, name, "skipped", now, str(error)))
                    target = base
                if target > now:
                    # A last wait keeps the run active until it ends: past the last step,
                    # the run completes when next due.
                    run.position = timing.following(steps, run.position) or [len(steps)]
                    run.due_at = target
                    return
                if not self._next(run, steps):
                    return
                base = max(base, target)
                continue
            if step.if_ is not None:
                taken = await self._holds(conn, run, step.if_)
                following = timing.branch(steps, run.position, taken)
                if following is None:
                    run.status = "completed"
                    return
                run.position = following
                continue
            if step.exit is not None and step.exit is not False:
                run.status = "exited"
                run.exit_reason = step.exit if isinstance(step.exit, str) else "exit step"
                return
            if step.send is None:
                if not self._next(run, steps):
                    return
                continue
            if run.send is not None:  # one send per claim: the next one fires at once after
                run.due_at = now
                return
            if now - base > late_after:
                reason = f"fell due more than max_lateness ({journey.max_lateness}) ago"
                run.records.append(self._record(run, name, "skipped", now, reason))
                if not self._next(run, steps):
                    return
                continue
            if step.send.kind == "promotional" and self._held_back(run, name, now, base, counts):
                if run.due_at is not None:
                    return
                if not self._next(run, steps):
                    return
                continue
            try:
                coupons = await self._coupons(conn, run, step.send)
                run.send = intent_for(
                    step.send,
                    member_id=run.row["member_id"],
                    member=run.member,
                    event=run.event,
                    coupons=coupons,
                    idempotency_key=idempotency_key(run.id, name),
                )
                run.send_step = name
                run.deferred_since = None
                if step.send.kind == "promotional":
                    member = run.row["member_id"]
                    counts[member] = counts.get(member, 0) + 1
            except SendFailed as error:
                run.records.append(self._record(run, name, "failed", now, str(error)))
            if not self._next(run, steps):
                return
        run.due_at = now

    @staticmethod
    async def _coupons(conn: Connection, run: _Run, send: SendStep) -> dict[str, str]:
        """One code per pool the step's templates use, held by this run: the same code
        however often the step is retried, and free again if the claim rolls back."""
        coupons: dict[str, str] = {}
        for pool in sorted(pools_of(send)):
            code = await coupon_pools.hand_out(conn, pool, f"{run.id}:{pool}")
            if code is None:
                raise SendFailed(f'coupon("{pool}"): the pool has no free code, or no such pool')
            coupons[pool] = code
        return coupons

    def _next(self, run: _Run, steps: list[Any]) -> bool:
        """Move past the current step; False (run completed) at the end of the journey."""
        following = timing.following(steps, run.position)
        if following is None:
            run.status = "completed"
            return False
        run.position = following
        run.due_at = None
        return True

    def _held_back(
        self, run: _Run, name: str, now: datetime, base: datetime, counts: dict[str, int]
    ) -> bool:
        """Quiet hours and the frequency cap. True: not sent now, and either `run.due_at`
        is set (deferred) or it is None (skipped for good)."""
        quiet = timing.quiet_hours(run.journey)
        until = timing.quiet_until(now, quiet)
        if until is not None:
            run.deferred_since = run.deferred_since or base
            run.due_at = until
            run.records.append(
                self._record(run, name, "deferred", now, f"quiet hours until {until.isoformat()}")
            )
            return True
        if counts.get(run.row["member_id"], 0) < self._cap:
            return False
        since = run.deferred_since or base
        _, tomorrow = timing.local_day(now, timing.time_zone(run.journey))
        target = timing.quiet_until(tomorrow, quiet) or tomorrow
        if target - since > self._max_deferral:
            run.records.append(
                self._record(
                    run,
                    name,
                    "skipped",
                    now,
                    f"frequency cap: {self._cap} promotional sends a day reached, and deferring"
                    " again would pass max_deferral",
                )
            )
            run.deferred_since, run.due_at = None, None
            return True
        run.deferred_since, run.due_at = since, target
        run.records.append(
            self._record(
                run,
                name,
                "deferred",
                now,
                f"frequency cap: {self._cap} promotional sends today; until {target.isoformat()}",
            )
        )
        return True

    async def _holds(self, conn: Connection, run: _Run, condition: Condition) -> bool:
        if condition.event_since_entry is not None:
            return await journey_runs.event_since(
                conn,
                run.row["member_id"],
                condition.event_since_entry,
                run.since,
                run.row["trigger_event_id"],
            )
        if condition.attribute is not None:
            value = run.attributes.get(condition.attribute)
            if value is None:
                return False
            if condition.equals is msgspec.UNSET:
                return True
            return bool(value == condition.equals and type(value) is type(condition.equals))
        if condition.reachable_on_line is not None:
            return self._reachable_on_line(run.reach) == condition.reachable_on_line
        return False

    async def _send(self, conn: Connection, sending: list[_Run], now: datetime) -> None:
        if not sending:
            return
        requests: list[IntentRequest] = [r.send for r in sending if r.send is not None]
        # Each intent is stored with its journey, step, run and kind by intake's own insert.
        origins = [
            IntentOrigin(run.row["journey_id"], run.send_step, run.id, run.send.kind)
            for run in sending
            if run.send is not None
        ]
        results = await self._accept(conn, requests, prefix="", multicast=False, origins=origins)
        count_accepted("journey", results)
        for run, result in zip(sending, results, strict=True):
            assert run.send is not None
            if result.status in ("accepted", "duplicate") and result.id is not None:
                run.records.append(
                    self._record(run, run.send_step, "sent", now, None, result.channels, result.id)
                )
            else:
                reason = result.reason or "refused"
                if result.errors:
                    reason += ": " + "; ".join(f"{e.field}: {e.message}" for e in result.errors)
                run.records.append(self._record(run, run.send_step, "failed", now, reason))

    @staticmethod
    def _record(
        run: _Run,
        step: str,
        outcome: str,
        at: datetime,
        reason: str | None,
        channels: list[str] | None = None,
        intent_id: UUID | None = None,
    ) -> StepRecord:
        return StepRecord(
            run_id=run.id,
            journey_id=run.row["journey_id"],
            step=step,
            outcome=outcome,
            at=at,
            reason=reason,
            channels=channels or [],
            intent_id=intent_id,
        )


def _change(run: _Run, now: datetime) -> RunChange:
    ended = run.status != "active"
    return RunChange(
        id=run.id,
        status=run.status,
        position=run.position,
        due_at=None if ended else (run.due_at or now),
        deferred_since=None if ended else run.deferred_since,
        ended_at=now if ended else None,
        exit_reason=run.exit_reason,
    )
