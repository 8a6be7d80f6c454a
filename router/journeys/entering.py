"""Events in, runs started and ended: the `journey_events` queue.

Events are handled in arrival order, one transaction at a time across every process, a claim
of them at once: for each, active runs whose version's `exit_on` names it end ('goal'), then
journeys whose trigger matches start runs, following their re-entry rule. A run keeps the
version it entered with. A send already accepted stays; the ended run sends nothing more,
since the timers only fire active runs.

Re-entry: `never` enters a member once ever; `after_exit` (default) only when they have no
active run; `always` restarts: an active run ends ('restarted') and a new one begins, so
there is still at most one active run per member per journey.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg
import msgspec

from router.database import Pool
from router.journeys.clock import Clock
from router.journeys.definition import Journey, Scalar, Trigger
from router.queue.loops import QueueWorker
from router.store import journey_runs
from router.store.journey_runs import NewRun
from router.store.row_ids import uuid7, uuid7s

CLAIM = 1000

# Reserved events the router writes for triggers other than a company's event.
LINE_FOLLOW = "router:line_follow"
AUDIENCE_JOINED = "router:audience_joined"
ATTRIBUTE_SET = "router:attribute_set"


class Definitions:
    """Decoded journey definitions by (journey, version): a version never changes, so it is
    decoded once per process."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, int], Journey] = {}

    def get(self, journey_id: str, version: int) -> Journey | None:
        return self._known.get((journey_id, version))

    def add(self, journey_id: str, version: int, text: str) -> Journey:
        found = self._known.get((journey_id, version))
        if found is None:
            found = self._known[journey_id, version] = msgspec.json.decode(text, type=Journey)
        return found

    def missing(self, wanted: set[tuple[str, int]]) -> list[tuple[str, int]]:
        return sorted(w for w in wanted if w not in self._known)


def _same(value: object, wanted: Scalar) -> bool:
    """Equality that keeps true apart from 1 (JSON values as a company means them)."""
    if isinstance(value, bool) or isinstance(wanted, bool):
        return value is wanted
    return value == wanted


def triggered_by(trigger: Trigger, name: str, properties: dict[str, object]) -> bool:
    if trigger.event is not None:
        return name == trigger.event and all(
            k in properties and _same(properties[k], v) for k, v in trigger.where.items()
        )
    if trigger.line_follow:
        return name == LINE_FOLLOW
    if trigger.audience is not None:
        return name == AUDIENCE_JOINED and properties.get("audience_id") == trigger.audience
    if trigger.attribute is not None:
        return name == ATTRIBUTE_SET and properties.get("attribute") == trigger.attribute
    return False


@dataclass
class _Active:
    run_id: UUID
    journey_id: str
    version: int


class JourneyEvents(QueueWorker):
    """Consumes `events` for the journeys (see the module docstring)."""

    def __init__(self, pool: Pool, clock: Clock, definitions: Definitions) -> None:
        super().__init__(journey_runs.QUEUE_EVENTS, full=CLAIM)
        self._pool = pool
        self._clock = clock
        self._definitions = definitions

    async def step(self) -> int:
        async with self._pool.acquire() as conn, conn.transaction():
            events = await journey_runs.claim_events(conn, CLAIM)
            if not events:
                return 0
            now = self._clock.now()
            live: list[tuple[str, int, Journey]] = []
            for row in await journey_runs.live_journeys(conn):
                journey = self._definitions.add(row["id"], row["version"], row["definition"])
                if journey.enabled:
                    live.append((row["id"], row["version"], journey))
            members = sorted({e["member_id"] for e in events})
            known = await journey_runs.runs_of_members(conn, members)
            entered = {(r["journey_id"], r["member_id"]) for r in known}
            # Per member, their active run of each journey.
            active: dict[str, dict[str, _Active]] = {}
            for r in known:
                if r["active_id"] is not None:
                    active.setdefault(r["member_id"], {})[r["journey_id"]] = _Active(
                        r["active_id"], r["journey_id"], r["active_version"]
                    )
            missing = self._definitions.missing(
                {(a.journey_id, a.version) for runs in active.values() for a in runs.values()}
            )
            for (journey_id, version), text in (
                await journey_runs.definitions(conn, missing)
            ).items():
                self._definitions.add(journey_id, version, text)
            ended: dict[UUID, tuple[str, str]] = {}
            started: list[NewRun] = []
            # One id per event covers the common case; more come one at a time. Sorted, so
            # runs begun by one claim keep its events' order (a restart's new run sorts last).
            ids = itertools.chain(sorted(uuid7s(len(events))), iter(uuid7, None))
            for event in events:
                self._handle(event, live, entered, active, ended, started, ids, now)
            # Runs that were active before end first (an `always` restart frees its slot),
            # then the new runs start; those a later event of the claim ended start ended.
            new_ids = {r.id for r in started}
            ending = [(i, e) for i, e in ended.items() if i not in new_ids]
            await journey_runs.end_runs(
                conn,
                [i for i, _ in ending],
                [s for _, (s, _) in ending],
                [r for _, (_, r) in ending],
                now,
            )
            await journey_runs.start_runs(
                conn, started, {i: e for i, e in ended.items() if i in new_ids}, now
            )
            await journey_runs.mark_handled(conn, [e["id"] for e in events], now)
        return len(events)

    def _handle(
        self,
        event: asyncpg.Record,
        live: list[tuple[str, int, Journey]],
        entered: set[tuple[str, str]],
        active: dict[str, dict[str, _Active]],
        ended: dict[UUID, tuple[str, str]],
        started: list[NewRun],
        ids: Iterator[UUID],
        now: datetime,
    ) -> None:
        member, name = event["member_id"], event["name"]
        runs = active.setdefault(member, {})
        for journey_id, run in list(runs.items()):
            journey = self._definitions.get(run.journey_id, run.version)
            if journey is not None and name in journey.exit_on:
                ended[run.run_id] = ("exited", "goal")
                del runs[journey_id]
        properties = journey_runs.decode_object(event["properties"])
        for journey_id, version, journey in live:
            if not triggered_by(journey.trigger, name, properties):
                continue
            key = (journey_id, member)
            if journey.reentry == "never" and key in entered:
                continue
            current = runs.get(journey_id)
            if current is not None:
                if journey.reentry != "always":
                    continue
                ended[current.run_id] = ("ended", "restarted")
            run_id = next(ids)
            started.append(NewRun(run_id, journey_id, version, member, event["id"], now))
            entered.add(key)
            runs[journey_id] = _Active(run_id, journey_id, version)
