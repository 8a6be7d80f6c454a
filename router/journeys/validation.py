"""What a journey's shape cannot say, checked before it is stored: each error names the
field by its path (`steps[1].send.email.text`, `steps[2].then[0].wait`) and says why.

Pure: no database. Coupon pools are checked against the names the caller passes (None: not
checked), so the same rules serve `PUT /v1/journeys/{id}` and the files read at start.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Collection, Iterator
from datetime import timedelta
from typing import Any

import msgspec

from router.content import Content, check_content
from router.journeys.definition import Condition, Journey, QuietHours, SendStep, Step, WaitSpec
from router.journeys.durations import DurationError, parse_duration
from router.journeys.templates import (
    TOP_LEVEL_NAMES,
    TemplateError,
    compile_template,
    is_template,
    pools_used,
    variables_read,
)
from router.problems import FieldError

MIN_WAIT = timedelta(seconds=1)
MEMBER_FIELDS = ("member_id", "email", "phone", "line_user_id", "attributes")
"""What `member.<name>` may read in a template; attributes are `member.attributes.<name>`."""
RESERVED_EVENT_PREFIX = "router:"
"""Event names the router writes itself (LINE follow, audience joined, attribute set)."""
_DATE_SOURCE = re.compile(r"(?:member|event)\.[A-Za-z0-9_-]+")
_TIME = re.compile(r"(?P<hour>\d{2}):(?P<minute>\d{2})")
_STEP_KINDS = "wait, send, if or exit"


def validate(journey: Journey, *, known_pools: Collection[str] | None) -> list[FieldError]:
    """Every rule `journey` breaks; empty when it can be stored and run."""
    return list(_Checks(journey, known_pools).all())


def valid_time_zone(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def _time_problem(text: str) -> str | None:
    match = _TIME.fullmatch(text)
    if match is None or int(match["hour"]) > 23 or int(match["minute"]) > 59:
        return f"{text!r} is not a time of day: give HH:MM from 00:00 to 23:59"
    return None


def _zone_problem(name: str) -> str | None:
    if valid_time_zone(name):
        return None
    return f"{name!r} is not an IANA time zone, e.g. Asia/Tokyo or UTC"


class _Checks:
    def __init__(self, journey: Journey, known_pools: Collection[str] | None) -> None:
        self.journey = journey
        self.known_pools = None if known_pools is None else frozenset(known_pools)
        self.has_event = journey.trigger.event is not None

    def all(self) -> Iterator[FieldError]:
        yield from self.trigger()
        yield from self.exit_on()
        if isinstance(self.journey.quiet_hours, QuietHours):
            yield from self.quiet_hours(self.journey.quiet_hours)
        yield from self.duration("max_lateness", self.journey.max_lateness, minimum=timedelta(0))
        yield from self.steps("steps", self.journey.steps)

    def trigger(self) -> Iterator[FieldError]:
        trigger = self.journey.trigger
        kinds = [
            name
            for name, given in (
                ("event", trigger.event is not None),
                ("audience", trigger.audience is not None),
                ("line_follow", trigger.line_follow),
                ("attribute", trigger.attribute is not None),
            )
            if given
        ]
        if len(kinds) != 1:
            found = f" (this one has {' and '.join(kinds)})" if kinds else ""
            yield FieldError(
                "trigger",
                f"give exactly one of event, audience, line_follow = true and attribute{found}",
            )
        if trigger.where and trigger.event is None:
            yield FieldError("trigger.where", "filters an event's properties: only with event")
        event = trigger.event
        if event is not None and event.startswith(RESERVED_EVENT_PREFIX):
            yield FieldError(
                "trigger.event",
                f"{event!r}: names starting {RESERVED_EVENT_PREFIX!r} are the router's own;"
                " use line_follow, audience or attribute",
            )
        if event is not None and event in self.journey.exit_on:
            yield FieldError(
                "trigger.event",
                f"{event!r} is also in exit_on: every run would end the moment it began",
            )
        for name, value in (("audience", trigger.audience), ("attribute", trigger.attribute)):
            if value is not None and not value.strip():
                yield FieldError(f"trigger.{name}", "must not be empty")

    def exit_on(self) -> Iterator[FieldError]:
        seen: set[str] = set()
        for i, name in enumerate(self.journey.exit_on):
            if name in seen:
                yield FieldError(f"exit_on[{i}]", f"{name!r} is listed twice")
            seen.add(name)

    def quiet_hours(self, hours: QuietHours) -> Iterator[FieldError]:
        for name in ("start", "end"):
            if problem := _time_problem(getattr(hours, name)):
                yield FieldError(f"quiet_hours.{name}", problem)
        if hours.start == hours.end:
            yield FieldError("quiet_hours", "start and end are the same time: give null for none")
        if problem := _zone_problem(hours.time_zone):
            yield FieldError("quiet_hours.time_zone", problem)

    def duration(self, field: str, text: str, *, minimum: timedelta) -> Iterator[FieldError]:
        try:
            length = parse_duration(text)
        except DurationError as error:
            yield FieldError(field, str(error))
            return
        if length < minimum:
            yield FieldError(field, f"{text!r}: a wait is at least one second (PT1S)")

    def steps(self, path: str, steps: list[Step]) -> Iterator[FieldError]:
        for i, step in enumerate(steps):
            yield from self.step(f"{path}[{i}]", step)

    def step(self, at: str, step: Step) -> Iterator[FieldError]:
        kinds = [
            name
            for name, value in (
                ("wait", step.wait),
                ("send", step.send),
                ("if", step.if_),
                ("exit", step.exit),
            )
            if value is not None
        ]
        if not kinds:
            yield FieldError(at, f"a step is one of {_STEP_KINDS}: give one")
        elif len(kinds) > 1:
            yield FieldError(
                at, f"a step is one of {_STEP_KINDS}; this one has {' and '.join(kinds)}"
            )
        if step.if_ is None:
            for name, branch in (("then", step.then), ("else", step.else_)):
                if branch:
                    yield FieldError(f"{at}.{name}", f"{name} steps go only with if")
                    yield from self.steps(f"{at}.{name}", branch)
        if isinstance(step.wait, str):
            yield from self.duration(f"{at}.wait", step.wait, minimum=MIN_WAIT)
        elif isinstance(step.wait, WaitSpec):
            yield from self.wait(f"{at}.wait", step.wait)
        if step.send is not None:
            yield from self.send(f"{at}.send", step.send)
        if step.if_ is not None:
            yield from self.condition(f"{at}.if", step.if_)
            if not step.then and not step.else_:
                yield FieldError(f"{at}.if", "give then or else steps (or both)")
            yield from self.steps(f"{at}.then", step.then)
            yield from self.steps(f"{at}.else", step.else_)
        if step.exit is False or (isinstance(step.exit, str) and not step.exit.strip()):
            yield FieldError(f"{at}.exit", "give true, or the reason recorded as text")

    def wait(self, at: str, wait: WaitSpec) -> Iterator[FieldError]:
        relative = wait.before is not None or wait.after is not None or wait.of is not None
        forms = sum((wait.duration is not None, wait.until is not None, relative))
        if forms != 1:
            yield FieldError(at, "give exactly one of duration, until, or before/after with of")
        if wait.duration is not None:
            yield from self.duration(f"{at}.duration", wait.duration, minimum=MIN_WAIT)
        if wait.until is not None and (problem := _time_problem(wait.until)):
            yield FieldError(f"{at}.until", problem)
        if wait.time_zone is not None:
            if wait.until is None:
                yield FieldError(f"{at}.time_zone", "goes only with until")
            elif problem := _zone_problem(wait.time_zone):
                yield FieldError(f"{at}.time_zone", problem)
        if not relative:
            return
        if wait.before is not None and wait.after is not None:
            yield FieldError(at, "give before or after, not both")
        elif wait.before is None and wait.after is None:
            yield FieldError(at, 'of goes with before or after (e.g. before = "P3D")')
        for name in ("before", "after"):
            if (text := getattr(wait, name)) is not None:
                yield from self.duration(f"{at}.{name}", text, minimum=timedelta(0))
        if wait.of is None:
            yield FieldError(
                f"{at}.of", "give the date to wait for: member.<attribute> or event.<property>"
            )
        elif not _DATE_SOURCE.fullmatch(wait.of):
            yield FieldError(
                f"{at}.of",
                f"{wait.of!r}: give member.<attribute> (e.g. member.trial_ends_at) or"
                " event.<property>",
            )
        elif wait.of.startswith("event.") and not self.has_event:
            yield FieldError(f"{at}.of", self._no_event(wait.of))

    def condition(self, at: str, condition: Condition) -> Iterator[FieldError]:
        given = [
            name
            for name, value in (
                ("event_since_entry", condition.event_since_entry),
                ("attribute", condition.attribute),
                ("reachable_on_line", condition.reachable_on_line),
            )
            if value is not None
        ]
        if len(given) != 1:
            yield FieldError(
                at, "give exactly one of event_since_entry, attribute and reachable_on_line"
            )
        if condition.equals is not msgspec.UNSET and condition.attribute is None:
            yield FieldError(f"{at}.equals", "goes only with attribute")
        if condition.attribute is not None and not condition.attribute.strip():
            yield FieldError(f"{at}.attribute", "must not be empty")

    def _no_event(self, name: str) -> str:
        return f"{name}: this journey is not started by an event, so its runs have no event to read"

    def send(self, at: str, send: SendStep) -> Iterator[FieldError]:
        if send.email is None and send.line is None:
            yield FieldError(at, "give email content, LINE messages, or both")
            return
        templated: list[str] = []
        for field, text in _strings(send):
            if is_template(text):
                templated.append(f"{at}.{field}")
                yield from self.template(f"{at}.{field}", text)
        # As the intent it becomes once rendered: plain strings as they are; a templated
        # string's rendered text is checked when the send is made.
        content = Content(email=send.email, line=send.line)
        for error in check_content(content, prefix=f"{at}."):
            if not any(_within(error.field, path) for path in templated):
                yield error

    def template(self, field: str, source: str) -> Iterator[FieldError]:
        try:
            compile_template(source)
            pools = pools_used(source)
            uses = variables_read(source)
        except TemplateError as error:
            where = "template " if str(error).startswith("line ") else "template: "
            yield FieldError(field, f"{where}{error}")
            return
        for pool in sorted(pools):
            if self.known_pools is not None and pool not in self.known_pools:
                yield FieldError(field, f'coupon("{pool}"): no coupon pool with that id')
        reported: set[tuple[str, ...]] = set()
        for use in uses:
            problem = self._variable_problem(use.path)
            if problem is not None and use.path[:2] not in reported:
                reported.add(use.path[:2])
                yield FieldError(field, f"template line {use.line}: {problem}")

    def _variable_problem(self, path: tuple[str, ...]) -> str | None:
        top = path[0]
        if top not in TOP_LEVEL_NAMES:
            return f'{top!r} has no value: a template reads member, event and coupon("pool")'
        if top == "event" and not self.has_event:
            return self._no_event(".".join(path))
        if top == "member" and len(path) > 1 and path[1] not in MEMBER_FIELDS:
            return (
                f"member.{path[1]} is not a member field ({', '.join(MEMBER_FIELDS)});"
                f" an attribute is member.attributes.{path[1]}"
            )
        return None


def _within(field: str, path: str) -> bool:
    return field == path or field.startswith((f"{path}.", f"{path}["))


def _strings(send: SendStep) -> Iterator[tuple[str, str]]:
    """Each string a send's content carries, by its path under the send: the email's
    subject, text and HTML, and every string anywhere in the LINE messages (their JSON
    names, as sent)."""
    if send.email is not None:
        for name in ("subject", "text", "html"):
            value = getattr(send.email, name)
            if value is not None:
                yield f"email.{name}", value
    if send.line is not None:
        yield from _walk(msgspec.to_builtins(send.line.messages), "line.messages")


def _walk(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _walk(item, f"{path}[{i}]")
