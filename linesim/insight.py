"""Aggregation units: what pushes and multicasts counted under a `customAggregationUnits`
name, and LINE's statistics per unit.

A send request names at most one unit, 1 to 30 of ``[a-zA-Z0-9_]`` (messaging-api.yml
``MulticastRequest``); a bad one is answered 400 in LINE's error shape like any other
property. An accepted request records its recipients under the unit, with the day it was
sent (UTC+9, as LINE's insight dates are). What users then do with the messages (display a
bubble, open a URL, play a video) is not visible to a simulator, so a control call marks
recipients as having done it (``mark``), and the insight endpoint counts exactly those:

- ``GET /v2/bot/insight/message/event/aggregation`` (``GetStatisticsPerUnitResponse``),
- ``GET /v2/bot/message/aggregation/info`` (units used this month),
- ``GET /v2/bot/message/aggregation/list`` (their names, paged with ``limit``/``start``).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Final, Literal

import msgspec
from aiohttp import web

from linesim.exchange import Entry, Exchange
from linesim.schemas import ErrorDetail, encode
from linesim.state import SimState
from linesim.validation import Refusal, bad_request

STATISTICS_PATH: Final = "/v2/bot/insight/message/event/aggregation"
UNIT_USAGE_PATH: Final = "/v2/bot/message/aggregation/info"
UNIT_LIST_PATH: Final = "/v2/bot/message/aggregation/list"
UNIT_NAME: Final = re.compile(r"[a-zA-Z0-9_]{1,30}")
MAX_UNITS_PER_REQUEST: Final = 1
MAX_PERIOD_DAYS: Final = 30
DEFAULT_LIST_LIMIT: Final = 100
MAX_LIST_LIMIT: Final = 100
_JST: Final = timezone(timedelta(hours=9))
_DATE: Final = re.compile(r"\d{8}")

Action = Literal["impression", "click", "media_played", "media_played_100"]


def check_units(units: list[str] | None, details: list[ErrorDetail]) -> None:
    """LINE's details for a request's ``customAggregationUnits``."""
    if units is None:
        return
    if len(units) > MAX_UNITS_PER_REQUEST:
        details.append(
            ErrorDetail(
                message=f"Size must be between 0 and {MAX_UNITS_PER_REQUEST}",
                property="customAggregationUnits",
            )
        )
    for index, unit in enumerate(units):
        if UNIT_NAME.fullmatch(unit) is None:
            details.append(
                ErrorDetail(
                    message="Must be 1 to 30 characters of half-width alphanumerics or underscores",
                    property=f"customAggregationUnits[{index}]",
                )
            )


class _Unit:
    """One unit's sends and what its recipients did, as sets of user IDs."""

    __slots__ = ("bubbles", "clicks", "month", "played", "played_whole", "seen", "sent")

    def __init__(self, month: str) -> None:
        self.month = month  # yyyyMM (UTC+9) it was first used in
        self.sent: dict[str, str] = {}  # user ID -> yyyyMMdd (UTC+9) of its first send
        self.bubbles = 0  # most message objects one of its requests carried
        self.seen: set[str] = set()
        self.played: set[str] = set()
        self.played_whole: set[str] = set()
        self.clicks: dict[str, list[str]] = {}  # URL -> user IDs in order, with repeats


class Overview(msgspec.Struct):
    """``GetStatisticsPerUnitResponseOverview``."""

    uniqueImpression: int | None
    uniqueClick: int | None
    uniqueMediaPlayed: int | None
    uniqueMediaPlayed100Percent: int | None


class MessageStatistics(msgspec.Struct):
    """``GetStatisticsPerUnitResponseMessage``: one bubble."""

    seq: int
    impression: int | None
    mediaPlayed: int | None
    mediaPlayed25Percent: int | None
    mediaPlayed50Percent: int | None
    mediaPlayed75Percent: int | None
    mediaPlayed100Percent: int | None
    uniqueMediaPlayed: int | None
    uniqueMediaPlayed25Percent: int | None
    uniqueMediaPlayed50Percent: int | None
    uniqueMediaPlayed75Percent: int | None
    uniqueMediaPlayed100Percent: int | None
    uniqueImpression: int | None


class ClickStatistics(msgspec.Struct):
    """``GetStatisticsPerUnitResponseClick``: one URL."""

    seq: int
    url: str
    click: int | None
    uniqueClick: int | None
    uniqueClickOfRequest: int | None


class StatisticsPerUnit(msgspec.Struct):
    """``GetStatisticsPerUnitResponse``."""

    overview: Overview
    messages: list[MessageStatistics]
    clicks: list[ClickStatistics]


class UnitUsage(msgspec.Struct):
    """``GetAggregationUnitUsageResponse``."""

    numOfCustomAggregationUnits: int


class UnitNames(msgspec.Struct, omit_defaults=True):
    """``GetAggregationUnitNameListResponse``."""

    customAggregationUnits: list[str]
    next: str | None = None


class UnitMarks(msgspec.Struct, forbid_unknown_fields=True):
    """Body of ``POST /__simulator/aggregation-units/{unit}/events``: these recipients of the
    unit's messages displayed them, opened ``url``, or played their media."""

    action: Action
    user_ids: list[str]
    url: str | None = None


def _jst(now: float) -> datetime:
    return datetime.fromtimestamp(now, UTC).astimezone(_JST)


def _refuse(message: str, prop: str) -> Refusal:
    return Refusal(400, bad_request([ErrorDetail(message=message, property=prop)]))


class AggregationUnits:
    """Units used by accepted sends, and the insight endpoints over them."""

    def __init__(self, state: SimState, exchange: Exchange) -> None:
        self._state = state
        self._exchange = exchange
        self._units: dict[str, _Unit] = {}

    def routes(self) -> list[web.RouteDef]:
        handler = self._exchange.handler
        return [
            web.get(STATISTICS_PATH, handler(STATISTICS_PATH, self._statistics)),
            web.get(UNIT_USAGE_PATH, handler(UNIT_USAGE_PATH, self._usage)),
            web.get(UNIT_LIST_PATH, handler(UNIT_LIST_PATH, self._names)),
        ]

    def reset(self) -> None:
        self._units.clear()

    def record(self, units: list[str] | None, user_ids: list[str], bubbles: int) -> None:
        """An accepted push or multicast: its recipients count under its unit."""
        if not units:
            return
        when = _jst(self._state.clock.now())
        unit = self._units.get(units[0])
        if unit is None:
            unit = self._units[units[0]] = _Unit(when.strftime("%Y%m"))
        day = when.strftime("%Y%m%d")
        for user_id in user_ids:
            unit.sent.setdefault(user_id, day)
        unit.bubbles = max(unit.bubbles, bubbles)

    def sent_to(self, name: str) -> list[str]:
        """User IDs sent to under the unit, in the order first sent."""
        unit = self._units.get(name)
        return list(unit.sent) if unit is not None else []

    def mark(self, name: str, marks: UnitMarks) -> int:
        """Record what these recipients did; how many were marked. KeyError: no such unit;
        ValueError: a user was not sent to under it, or a click without a URL."""
        unit = self._units.get(name)
        if unit is None:
            raise KeyError(name)
        strangers = [u for u in marks.user_ids if u not in unit.sent]
        if strangers:
            raise ValueError(f"{len(strangers)} of the users were not sent to under {name}")
        if marks.action == "click":
            if not marks.url:
                raise ValueError("a click needs the url that was opened")
            unit.clicks.setdefault(marks.url, []).extend(marks.user_ids)
            unit.seen.update(marks.user_ids)  # a URL opened is a message displayed
        elif marks.action == "impression":
            unit.seen.update(marks.user_ids)
        else:
            unit.played.update(marks.user_ids)
            unit.seen.update(marks.user_ids)
            if marks.action == "media_played_100":
                unit.played_whole.update(marks.user_ids)
        return len(marks.user_ids)

    def _this_month(self) -> list[str]:
        month = _jst(self._state.clock.now()).strftime("%Y%m")
        return [name for name, unit in self._units.items() if unit.month == month]

    async def _usage(self, request: web.Request, entry: Entry) -> web.Response:
        self._exchange.authorize_read(request, entry)
        usage = UnitUsage(numOfCustomAggregationUnits=len(self._this_month()))
        return self._exchange.answer(entry, 200, encode(usage))

    async def _names(self, request: web.Request, entry: Entry) -> web.Response:
        self._exchange.authorize_read(request, entry)
        query = request.query
        try:
            limit = int(query.get("limit", DEFAULT_LIST_LIMIT))
            start = int(query.get("start", "0"))
        except ValueError:
            limit = start = -1
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise _refuse(f"Must be between 1 and {MAX_LIST_LIMIT}", "limit")
        if start < 0:
            raise _refuse("Invalid continuation token", "start")
        names = self._this_month()
        page = names[start : start + limit]
        more = start + limit < len(names)
        answer = UnitNames(page, str(start + limit) if more else None)
        return self._exchange.answer(entry, 200, encode(answer))

    async def _statistics(self, request: web.Request, entry: Entry) -> web.Response:
        self._exchange.authorize_read(request, entry)
        query = request.query
        name = query.get("customAggregationUnit")
        if name is None:
            raise _refuse("Must be specified", "customAggregationUnit")
        if UNIT_NAME.fullmatch(name) is None:
            raise _refuse("Length must be between 1 and 30", "customAggregationUnit")
        start, end = _period(query.get("from"), query.get("to"))
        unit = self._units.get(name)
        if unit is None:
            statistics = _statistics_of(set(), 0, set(), set(), set(), {})
        else:
            sent = {u for u, day in unit.sent.items() if start <= day <= end}
            statistics = _statistics_of(
                sent, unit.bubbles, unit.seen, unit.played, unit.played_whole, unit.clicks
            )
        return self._exchange.answer(entry, 200, encode(statistics))


def _period(start: str | None, end: str | None) -> tuple[str, str]:
    """LINE's from/to: yyyyMMdd, to not before from and at most 30 days after it."""
    parsed: list[date] = []
    for prop, value in (("from", start), ("to", end)):
        if value is None:
            raise _refuse("Must be specified", prop)
        try:
            if _DATE.fullmatch(value) is None:
                raise ValueError(value)
            parsed.append(datetime.strptime(value, "%Y%m%d").replace(tzinfo=_JST).date())
        except ValueError:
            raise _refuse("Must be a date in yyyyMMdd format", prop) from None
    if not timedelta(0) <= parsed[1] - parsed[0] <= timedelta(days=MAX_PERIOD_DAYS):
        raise _refuse(f"Must be from the start date to {MAX_PERIOD_DAYS} days after it", "to")
    return parsed[0].strftime("%Y%m%d"), parsed[1].strftime("%Y%m%d")


def _statistics_of(
    sent: set[str],
    bubbles: int,
    seen: set[str],
    played: set[str],
    played_whole: set[str],
    clicks: dict[str, list[str]],
) -> StatisticsPerUnit:
    """The unit's figures over the recipients sent to in the period. Every bubble of a
    message a user displayed counts as displayed once; the simulator knows no finer."""
    seen_now = seen & sent
    played_now = played & sent
    whole_now = played_whole & sent
    clicked: set[str] = set()
    per_url: list[ClickStatistics] = []
    for seq, (url, users) in enumerate(clicks.items(), start=1):
        in_period = [u for u in users if u in sent]
        clicked.update(in_period)
        unique = len(set(in_period))
        per_url.append(ClickStatistics(seq, url, len(in_period), unique, unique))
    messages = [
        MessageStatistics(
            seq=seq,
            impression=len(seen_now),
            mediaPlayed=len(played_now),
            mediaPlayed25Percent=len(played_now),
            mediaPlayed50Percent=len(played_now),
            mediaPlayed75Percent=len(played_now),
            mediaPlayed100Percent=len(whole_now),
            uniqueMediaPlayed=len(played_now),
            uniqueMediaPlayed25Percent=len(played_now),
            uniqueMediaPlayed50Percent=len(played_now),
            uniqueMediaPlayed75Percent=len(played_now),
            uniqueMediaPlayed100Percent=len(whole_now),
            uniqueImpression=len(seen_now),
        )
        for seq in range(1, bubbles + 1)
    ]
    overview = Overview(
        uniqueImpression=len(seen_now),
        uniqueClick=len(clicked),
        uniqueMediaPlayed=len(played_now),
        uniqueMediaPlayed100Percent=len(whole_now),
    )
    return StatisticsPerUnit(overview=overview, messages=messages, clicks=per_url)
