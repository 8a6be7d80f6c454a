"""When a journey's steps happen: durations, waits, quiet hours, local days, and where a run
goes next in the nested step lists. Pure functions of a definition and a time.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

from router.journeys.definition import Journey, QuietHours, Step, WaitSpec
from router.journeys.durations import parse_duration

DEFAULT_QUIET_HOURS = QuietHours(start="21:00", end="08:00", time_zone="Asia/Tokyo")
DEFAULT_TIME_ZONE = "Asia/Tokyo"


@functools.lru_cache(maxsize=256)
def duration(text: str) -> timedelta:
    """An ISO 8601 duration ("PT1H", "P1DT30M"); ValueError saying what is wrong. A
    journey's few durations are read for every run, so each is parsed once."""
    return parse_duration(text)


# Where a run is: indexes into nested step lists, an `if` step's branch as 0 (then) or 1
# (else) between them: (2, 0, 1) is steps[2].then[1].
Position = Sequence[int]


def step_at(steps: Sequence[Step], position: Position) -> Step | None:
    current: Sequence[Step] = steps
    for depth in range(0, len(position), 2):
        index = position[depth]
        if index >= len(current):
            return None
        step = current[index]
        if depth == len(position) - 1:
            return step
        current = step.then if position[depth + 1] == 0 else step.else_
    return None


def following(steps: Sequence[Step], position: Position) -> list[int] | None:
    """The step after the one at `position` (leaving finished branches); None at the end."""
    path = list(position)
    while path:
        path[-1] += 1
        if step_at(steps, path) is not None:
            return path
        path = path[:-2]
    return None


def branch(steps: Sequence[Step], position: Position, taken: bool) -> list[int] | None:
    """The first step of the `if` step's `then` (taken) or `else` list, or the step after
    the `if` when that list is empty."""
    path = [*position, 0 if taken else 1, 0]
    return path if step_at(steps, path) is not None else following(steps, position)


def label(position: Position) -> str:
    """`steps[2].then[1]`: a position as validation names a step."""
    text = f"steps[{position[0]}]"
    for depth in range(1, len(position), 2):
        text += f".{'then' if position[depth] == 0 else 'else'}[{position[depth + 1]}]"
    return text


def quiet_hours(journey: Journey) -> QuietHours | None:
    if journey.quiet_hours is msgspec.UNSET:
        return DEFAULT_QUIET_HOURS
    return journey.quiet_hours


def time_zone(journey: Journey) -> ZoneInfo:
    """The journey's local time: its quiet hours' zone, else Asia/Tokyo."""
    quiet = quiet_hours(journey)
    return ZoneInfo(quiet.time_zone if quiet is not None else DEFAULT_TIME_ZONE)


def _clock_time(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def _at(day: date, when: time, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, when, tzinfo=zone)


def quiet_until(at: datetime, quiet: QuietHours | None) -> datetime | None:
    """The end of the quiet window `at` falls in, or None when it falls outside one."""
    if quiet is None:
        return None
    zone = ZoneInfo(quiet.time_zone)
    local = at.astimezone(zone)
    start, end, now = _clock_time(quiet.start), _clock_time(quiet.end), local.time()
    if start == end:
        return None
    if start < end:
        return _at(local.date(), end, zone) if start <= now < end else None
    if now >= start:
        return _at(local.date() + timedelta(days=1), end, zone)
    if now < end:
        return _at(local.date(), end, zone)
    return None


def local_day(at: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The local day `at` falls in, as [start, end)."""
    day = at.astimezone(zone).date()
    return _at(day, time(0), zone), _at(day + timedelta(days=1), time(0), zone)


def wait_target(
    wait: str | WaitSpec,
    base: datetime,
    journey: Journey,
    attributes: Mapping[str, Any],
    event: Mapping[str, Any],
) -> datetime:
    """When a wait that began at `base` ends. `of` names `member.<attribute>` (or
    `member.attributes.<name>`) or `event.<property>`. Raises ValueError naming what is
    missing."""
    if isinstance(wait, str):
        return base + duration(wait)
    if wait.duration is not None:
        return base + duration(wait.duration)
    if wait.until is not None:
        zone = ZoneInfo(wait.time_zone) if wait.time_zone else time_zone(journey)
        local = base.astimezone(zone)
        target = _at(local.date(), _clock_time(wait.until), zone)
        return target if target > local else _at(local.date() + timedelta(1), target.time(), zone)
    if wait.of is None or (wait.before is None and wait.after is None):
        raise ValueError("the wait gives neither a duration, `until`, nor `before`/`after` `of`")
    source, _, name = wait.of.partition(".")
    if source == "member":
        name = name.removeprefix("attributes.")
    values = attributes if source == "member" else event if source == "event" else None
    if values is None:
        raise ValueError(f"`of` must be member.<attribute> or event.<property>, not {wait.of!r}")
    raw = values.get(name)
    if not isinstance(raw, str):
        raise ValueError(f"no date in {wait.of}")
    try:
        anchor = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"{wait.of} is not an RFC 3339 date") from None
    if anchor.tzinfo is None:
        anchor = anchor.replace(tzinfo=time_zone(journey))
    if wait.before is not None:
        return anchor - duration(wait.before)
    assert wait.after is not None
    return anchor + duration(wait.after)
