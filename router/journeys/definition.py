"""A journey as a company writes it: one shape for `config/journeys/*.toml` and the API.

These Structs check the shape only (field names and types). What a shape cannot say (exactly
one kind per step, durations, template syntax, pools that exist, events that can match) is
checked by validation, which names the step index and field of each error.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from router.content import EmailContent, LineContent
from router.intents import Category, Kind, Route, Tags

EventName = Annotated[
    str,
    msgspec.Meta(pattern=r"^[a-z0-9_.:-]{1,64}$", description="An event's name"),
]
JourneyId = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
# A scalar a property or attribute is compared with.
Scalar = str | int | float | bool | None
# ISO 8601 duration, down to seconds: "PT1H", "P1D", "P2DT30M".
Duration = Annotated[str, msgspec.Meta(description="ISO 8601 duration, e.g. PT1H or P3D")]
LocalTime = Annotated[str, msgspec.Meta(pattern=r"^\d{2}:\d{2}$", description="HH:MM, local")]


class Trigger(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """What starts a run: give exactly one of `event`, `audience`, `line_follow`, `attribute`."""

    event: EventName | None = None
    # Property equality filters on the triggering event: every one must match.
    where: dict[str, Scalar] = msgspec.field(default_factory=dict)
    audience: str | None = None  # an audience id: a member joining it (on upload)
    line_follow: bool = False  # a LINE follow (friend added or unblocked)
    attribute: str | None = None  # a member attribute becoming set, e.g. "registered_at"


class QuietHours(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A promotional send due from `start` to `end` (local, may cross midnight) waits for
    `end`. Transactional sends are exempt."""

    start: LocalTime
    end: LocalTime
    time_zone: str = "Asia/Tokyo"


class WaitSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """A wait other than a plain duration: give exactly one of `duration`, `until`, or
    `before`/`after` with `of`."""

    duration: Duration | None = None
    until: LocalTime | None = None  # the next time this local time of day comes
    time_zone: str | None = None  # for `until`; default the journey's quiet hours' zone
    before: Duration | None = None  # this long before the date in `of`
    after: Duration | None = None  # this long after the date in `of`
    of: str | None = None  # "member.<attribute>" or "event.<property>": an RFC 3339 date


class Condition(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """What an `if` step tests: give exactly one of `event_since_entry`, `attribute`,
    `reachable_on_line`."""

    event_since_entry: EventName | None = None  # the member did this since the run began
    attribute: str | None = None  # the member attribute is set (or, with `equals`, equal)
    equals: Scalar | msgspec.UnsetType = msgspec.UNSET
    reachable_on_line: bool | None = None  # a LINE friend the router can push to


class SendStep(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """The content of an intent, as `POST /v1/intents` takes it, less its recipient (the run's
    member) and idempotency key (the run and step). Strings may be templates reading
    `member.*`, `event.*` and `coupon("pool")`."""

    route: Route = "prefer_line"
    kind: Kind = "promotional"
    email: EmailContent | None = None
    line: LineContent | None = None
    campaign: str | None = None
    category: Category | None = None  # what a recipient can unsubscribe from on its own
    tags: Tags = msgspec.field(default_factory=list)
    metadata: dict[str, Any] | None = None


class Step(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """One step: exactly one of `wait`, `send`, `if` (with `then`/`else`) and `exit`."""

    wait: Duration | WaitSpec | None = None
    send: SendStep | None = None
    if_: Condition | None = msgspec.field(default=None, name="if")
    then: list[Step] = msgspec.field(default_factory=list)
    else_: list[Step] = msgspec.field(default_factory=list, name="else")
    exit: bool | str | None = None  # true, or the reason recorded


class Journey(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    enabled: bool = True
    trigger: Trigger
    exit_on: list[EventName] = msgspec.field(default_factory=list)
    reentry: Literal["never", "after_exit", "always"] = "after_exit"
    # Absent: 21:00-08:00 Asia/Tokyo for promotional sends; null: none.
    quiet_hours: QuietHours | msgspec.UnsetType | None = msgspec.UNSET
    # A step that fell due while no router ran fires on restart if at most this late.
    max_lateness: Duration = "PT1H"
    steps: Annotated[list[Step], msgspec.Meta(min_length=1)]
