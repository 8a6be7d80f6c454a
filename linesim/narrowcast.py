"""Narrowcast (``messaging-api.yml``): one message to the users an expression of audiences names.

``POST /v2/bot/message/narrowcast`` is checked as LINE checks it: recipient objects
(``audience``, ``redelivery``, and ``operator`` with exactly one of ``and``/``or``/``not``),
``filter.demographic`` (the same operators over age, app type, area, gender and subscription
period), ``limit`` (``max`` >= 1; ``forbidPartialDelivery`` only with ``upToRemainingQuota``)
and the messages. It is accepted with 202 and an ``X-Line-Request-Id``; an
``X-Line-Retry-Key`` accepted before is answered 409 with the original request id; LINE allows
60 narrowcast requests an hour.

The sending then happens in the background, as at LINE, and
``GET /v2/bot/message/progress/narrowcast?requestId=`` reports it: ``waiting``, then
``sending``, then ``succeeded`` or ``failed`` with ``successCount``, ``failureCount``,
``targetCount``, ``acceptedTime`` and ``completedTime``. The targets are fixed when the request
is accepted: the users the recipient names who are friends of the account then (one who blocked
it is not a target). A recipient naming an audience of fewer than 50 users fails (errorCode 4)
and one that names nobody fails (errorCode 2), as LINE documents. The month's quota is used when
the sending ends: targets past what is left fail the request, or with ``upToRemainingQuota``
are cut to what is left (``forbidPartialDelivery``: fail instead, errorCode 5). The simulator
keeps no demographics: a filter is checked but narrows nothing. A phase changes when the
simulator's clock passes it, so progress is computed whenever someone asks.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import partial
from typing import Final, Literal

import msgspec
from aiohttp import web
from msgspec import UNSET, UnsetType

from linesim.audiences import Audiences
from linesim.exchange import Entry, Exchange
from linesim.faults import Faults
from linesim.limits import PerSecondLimit, SlidingWindowLimit
from linesim.messages import Messages, RetryKey, check_messages
from linesim.paths import NARROWCAST_PATH, NARROWCAST_PROGRESS_PATH, RETRY_KEY_HEADER
from linesim.schemas import ErrorDetail, ErrorResponse, Message, encode
from linesim.state import SimState
from linesim.validation import Refusal

# LINE: "Send narrowcast message: 60 requests per hour"; the progress endpoint is one of the
# "other API endpoints" (2,000 requests per second).
DEFAULT_NARROWCAST_RATE: Final = 60
DEFAULT_NARROWCAST_WINDOW: Final = 3600.0
DEFAULT_PROGRESS_RATE: Final = 2000
# LINE refuses audiences this small as a condition of sending (errorCode 4).
MIN_AUDIENCE_SIZE: Final = 50
# How long a narrowcast waits, then sends, on the simulator's clock.
DEFAULT_WAITING_SECONDS: Final = 0.2
DEFAULT_SENDING_SECONDS: Final = 0.3

AgeDemographic = Literal[
    "age_15", "age_20", "age_25", "age_30", "age_35", "age_40",
    "age_45", "age_50", "age_55", "age_60", "age_65", "age_70",
]  # fmt: skip
SubscriptionPeriodDemographic = Literal["day_7", "day_30", "day_90", "day_180", "day_365"]
AREAS: Final = tuple(
    f"{country}_{n:02}"
    for country, count in (("jp", 47), ("tw", 22), ("th", 8), ("id", 12))
    for n in range(1, count + 1)
)
AGES: Final = AgeDemographic.__args__  # type: ignore[attr-defined]
PERIODS: Final = SubscriptionPeriodDemographic.__args__  # type: ignore[attr-defined]


class AudienceRecipient(msgspec.Struct, tag_field="type", tag="audience"):
    audienceGroupId: int | UnsetType = UNSET


class RedeliveryRecipient(msgspec.Struct, tag_field="type", tag="redelivery"):
    requestId: str | UnsetType = UNSET


class OperatorRecipient(msgspec.Struct, tag_field="type", tag="operator"):
    and_: list[Recipient] | UnsetType = msgspec.field(default=UNSET, name="and")
    or_: list[Recipient] | UnsetType = msgspec.field(default=UNSET, name="or")
    not_: Recipient | UnsetType = msgspec.field(default=UNSET, name="not")


Recipient = AudienceRecipient | RedeliveryRecipient | OperatorRecipient


class AgeDemographicFilter(msgspec.Struct, tag_field="type", tag="age"):
    gte: AgeDemographic | UnsetType = UNSET
    lt: AgeDemographic | UnsetType = UNSET


class AppTypeDemographicFilter(msgspec.Struct, tag_field="type", tag="appType"):
    oneOf: list[Literal["ios", "android"]] | UnsetType = UNSET


class AreaDemographicFilter(msgspec.Struct, tag_field="type", tag="area"):
    oneOf: list[str] | UnsetType = UNSET  # checked against AREAS after decoding


class GenderDemographicFilter(msgspec.Struct, tag_field="type", tag="gender"):
    oneOf: list[Literal["male", "female"]] | UnsetType = UNSET


class SubscriptionPeriodDemographicFilter(
    msgspec.Struct, tag_field="type", tag="subscriptionPeriod"
):
    gte: SubscriptionPeriodDemographic | UnsetType = UNSET
    lt: SubscriptionPeriodDemographic | UnsetType = UNSET


class OperatorDemographicFilter(msgspec.Struct, tag_field="type", tag="operator"):
    and_: list[DemographicFilter] | UnsetType = msgspec.field(default=UNSET, name="and")
    or_: list[DemographicFilter] | UnsetType = msgspec.field(default=UNSET, name="or")
    not_: DemographicFilter | UnsetType = msgspec.field(default=UNSET, name="not")


DemographicFilter = (
    AgeDemographicFilter
    | AppTypeDemographicFilter
    | AreaDemographicFilter
    | GenderDemographicFilter
    | SubscriptionPeriodDemographicFilter
    | OperatorDemographicFilter
)


class Filter(msgspec.Struct):
    demographic: DemographicFilter | UnsetType = UNSET


class Limit(msgspec.Struct):
    max: int | UnsetType = UNSET
    upToRemainingQuota: bool = False
    forbidPartialDelivery: bool = False


class NarrowcastRequest(msgspec.Struct):
    """``NarrowcastRequest``; what LINE checks beyond the shapes is checked after decoding."""

    messages: list[Message]
    recipient: Recipient | UnsetType = UNSET
    filter: Filter | UnsetType = UNSET
    limit: Limit | UnsetType = UNSET
    notificationDisabled: bool = False


class NarrowcastProgressResponse(msgspec.Struct, omit_defaults=True):
    """``NarrowcastProgressResponse``."""

    phase: Literal["waiting", "sending", "succeeded", "failed"]
    acceptedTime: str
    successCount: int | UnsetType = UNSET
    failureCount: int | UnsetType = UNSET
    targetCount: int | UnsetType = UNSET
    failedDescription: str | UnsetType = UNSET
    errorCode: int | UnsetType = UNSET
    completedTime: str | UnsetType = UNSET


class NarrowcastState(msgspec.Struct, frozen=True):
    """A narrowcast as the simulator holds it: ``delivered`` are the users who got it (empty
    until it succeeded)."""

    request_id: str
    retry_key: str | None
    accepted_at: float
    phase: str
    targets: list[str]
    delivered: list[str]
    error_code: int | None
    failed_description: str | None


_DECODER: Final = msgspec.json.Decoder(NarrowcastRequest)
_UUID: Final = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_RATE_LIMITED: Final = encode(
    ErrorResponse(message="The API rate limit has been exceeded. Try again later.")
)
_NOT_FOUND: Final = encode(ErrorResponse(message="Not found"))
_BAD_REQUEST_ID: Final = encode(
    ErrorResponse(message="The value for the 'requestId' parameter is invalid")
)
_RETRY_KEY_ACCEPTED: Final = encode(ErrorResponse(message="The retry key is already accepted"))
_BAD_RETRY_KEY: Final = encode(
    ErrorResponse(
        message="The retry key is invalid",
        details=[
            ErrorDetail(message="Must be a UUID in hexadecimal format", property=RETRY_KEY_HEADER)
        ],
    )
)
_FAILURES: Final = {
    2: "There weren't enough recipients",
    4: f"An audience of less than {MIN_AUDIENCE_SIZE} recipients is included",
    5: "Delivery was canceled so as not to deliver to only part of the target audience",
    1: "You have reached your monthly limit.",
}


def _one_operator(
    details: list[ErrorDetail], node: OperatorRecipient | OperatorDemographicFilter, path: str
) -> None:
    given = [v for v in (node.and_, node.or_, node.not_) if not isinstance(v, UnsetType)]
    if len(given) != 1:
        details.append(ErrorDetail(message="Specify exactly one of and, or, not", property=path))
    for name, items in (("and", node.and_), ("or", node.or_)):
        if isinstance(items, list) and not items:
            details.append(ErrorDetail(message="Must not be empty", property=f"{path}.{name}"))


def _check_recipient(details: list[ErrorDetail], node: Recipient, path: str) -> None:
    if isinstance(node, AudienceRecipient):
        if isinstance(node.audienceGroupId, UnsetType):
            details.append(
                ErrorDetail(message="Must be specified", property=f"{path}.audienceGroupId")
            )
    elif isinstance(node, RedeliveryRecipient):
        if isinstance(node.requestId, UnsetType) or not node.requestId:
            details.append(ErrorDetail(message="Must be specified", property=f"{path}.requestId"))
    else:
        _one_operator(details, node, path)
        for name, items in (("and", node.and_), ("or", node.or_)):
            for index, item in enumerate(items if isinstance(items, list) else []):
                _check_recipient(details, item, f"{path}.{name}[{index}]")
        if not isinstance(node.not_, UnsetType):
            _check_recipient(details, node.not_, f"{path}.not")


def _check_range(
    details: list[ErrorDetail], order: tuple[str, ...], gte: object, lt: object, path: str
) -> None:
    if isinstance(gte, UnsetType) and isinstance(lt, UnsetType):
        details.append(ErrorDetail(message="Specify gte, lt or both", property=path))
    elif isinstance(gte, str) and isinstance(lt, str) and order.index(gte) >= order.index(lt):
        details.append(ErrorDetail(message="gte must be less than lt", property=path))


def _check_demographic(details: list[ErrorDetail], node: DemographicFilter, path: str) -> None:
    if isinstance(node, AgeDemographicFilter):
        _check_range(details, AGES, node.gte, node.lt, path)
    elif isinstance(node, SubscriptionPeriodDemographicFilter):
        _check_range(details, PERIODS, node.gte, node.lt, path)
    elif isinstance(node, OperatorDemographicFilter):
        _one_operator(details, node, path)
        for name, items in (("and", node.and_), ("or", node.or_)):
            for index, item in enumerate(items if isinstance(items, list) else []):
                _check_demographic(details, item, f"{path}.{name}[{index}]")
        if not isinstance(node.not_, UnsetType):
            _check_demographic(details, node.not_, f"{path}.not")
    else:
        if isinstance(node.oneOf, UnsetType) or not node.oneOf:
            details.append(ErrorDetail(message="Must not be empty", property=f"{path}.oneOf"))
        elif isinstance(node, AreaDemographicFilter):
            for index, area in enumerate(node.oneOf):
                if area not in AREAS:
                    details.append(
                        ErrorDetail(message="Invalid area", property=f"{path}.oneOf[{index}]")
                    )


def _check_request(request: NarrowcastRequest, raw: bytes) -> list[ErrorDetail]:
    details: list[ErrorDetail] = []
    if not isinstance(request.recipient, UnsetType):
        _check_recipient(details, request.recipient, "recipient")
    if not isinstance(request.filter, UnsetType) and not isinstance(
        request.filter.demographic, UnsetType
    ):
        _check_demographic(details, request.filter.demographic, "filter.demographic")
    limit = request.limit
    if not isinstance(limit, UnsetType):
        if isinstance(limit.max, int) and limit.max < 1:
            details.append(ErrorDetail(message="Must be 1 or more", property="limit.max"))
        if limit.forbidPartialDelivery and not limit.upToRemainingQuota:
            details.append(
                ErrorDetail(
                    message="Can be true only if upToRemainingQuota is true",
                    property="limit.forbidPartialDelivery",
                )
            )
    return check_messages(request.messages, details, raw)


def _iso(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Narrowcast:
    """One accepted narrowcast: its targets, fixed at acceptance, and its outcome once due."""

    __slots__ = (
        "accepted_at",
        "delivered",
        "error_code",
        "finished_at",
        "limit",
        "messages",
        "request_id",
        "retry_key",
        "targets",
    )

    def __init__(
        self,
        request_id: str,
        retry_key: str | None,
        accepted_at: float,
        targets: list[str],
        limit: Limit,
        messages: int,
        error_code: int | None,
    ) -> None:
        self.request_id = request_id
        self.retry_key = retry_key
        self.accepted_at = accepted_at
        self.targets = targets
        self.limit = limit
        self.messages = messages
        self.error_code = error_code
        self.finished_at: float | None = None
        self.delivered: list[str] = []


class Narrowcasts:
    """The two narrowcast endpoints, their limits, and every narrowcast accepted."""

    def __init__(
        self,
        state: SimState,
        exchange: Exchange,
        faults: Faults,
        messages: Messages,
        audiences: Audiences,
    ) -> None:
        self._state = state
        self._faults = faults
        self._exchange = exchange
        self._messages = messages
        self._audiences = audiences
        self.limit = SlidingWindowLimit(DEFAULT_NARROWCAST_RATE, DEFAULT_NARROWCAST_WINDOW)
        self.progress_limit = PerSecondLimit(DEFAULT_PROGRESS_RATE)
        self.waiting_seconds = DEFAULT_WAITING_SECONDS
        self.sending_seconds = DEFAULT_SENDING_SECONDS
        self._sent: dict[str, _Narrowcast] = {}

    def routes(self) -> list[web.RouteDef]:
        handler = self._exchange.handler
        return [
            web.post(NARROWCAST_PATH, handler(NARROWCAST_PATH, self._messages.held(self._accept))),
            web.get(NARROWCAST_PROGRESS_PATH, handler(NARROWCAST_PROGRESS_PATH, self._progress)),
        ]

    def reset(self) -> None:
        self._sent.clear()
        self.limit.reset()
        self.progress_limit.reset()
        self.waiting_seconds = DEFAULT_WAITING_SECONDS
        self.sending_seconds = DEFAULT_SENDING_SECONDS

    def set_timing(self, waiting: float | None = None, sending: float | None = None) -> None:
        """Seconds a narrowcast spends waiting, then sending (None leaves one unchanged)."""
        if (waiting is not None and waiting < 0) or (sending is not None and sending < 0):
            raise ValueError("phase durations must be >= 0")
        if waiting is not None:
            self.waiting_seconds = waiting
        if sending is not None:
            self.sending_seconds = sending

    def set_limit(self, requests: int | None = None, window_seconds: float | None = None) -> None:
        """Narrowcast requests accepted in any ``window_seconds`` (LINE: 60 an hour)."""
        if requests is not None:
            self.limit.limit = requests
        if window_seconds is not None:
            self.limit.window = window_seconds

    def states(self) -> list[NarrowcastState]:
        """Every narrowcast accepted, oldest first, as of the simulator's clock now."""
        now = self._state.clock.now()
        return [self._state_of(n, now) for n in self._sent.values()]

    def _phase(self, narrowcast: _Narrowcast, now: float) -> str:
        elapsed = now - narrowcast.accepted_at
        if elapsed < self.waiting_seconds:
            return "waiting"
        if elapsed < self.waiting_seconds + self.sending_seconds:
            return "sending"
        self._finish(narrowcast)
        return "failed" if narrowcast.error_code is not None else "succeeded"

    def _finish(self, narrowcast: _Narrowcast) -> None:
        """The sending ends: use the quota and deliver, once."""
        if narrowcast.finished_at is not None:
            return
        narrowcast.finished_at = (
            narrowcast.accepted_at + self.waiting_seconds + self.sending_seconds
        )
        if narrowcast.error_code is not None:
            return
        quota = self._state.quota
        targets = narrowcast.targets
        if not quota.allows(len(targets)):
            left = max(0, (quota.limit or 0) - quota.usage)
            if not narrowcast.limit.upToRemainingQuota:
                narrowcast.error_code = 1
                return
            if narrowcast.limit.forbidPartialDelivery or not left:
                narrowcast.error_code = 5 if left else 1
                return
            targets = targets[:left]
        quota.usage += len(targets)
        counters = self._state.counters
        counters.accepted_messages += narrowcast.messages * len(targets)
        counters.narrowcast_recipients += len(targets)
        narrowcast.delivered = list(targets)

    def _state_of(self, narrowcast: _Narrowcast, now: float) -> NarrowcastState:
        phase = self._phase(narrowcast, now)
        code = narrowcast.error_code
        return NarrowcastState(
            request_id=narrowcast.request_id,
            retry_key=narrowcast.retry_key,
            accepted_at=narrowcast.accepted_at,
            phase=phase,
            targets=list(narrowcast.targets),
            delivered=list(narrowcast.delivered),
            error_code=code if phase == "failed" else None,
            failed_description=_FAILURES.get(code) if phase == "failed" and code else None,
        )

    def _admit(self, request: web.Request, entry: Entry, now: float) -> RetryKey | None:
        """Token, the hourly limit, then the retry key: 409 if it was accepted before."""
        token = self._exchange.admit(request, self.limit, now, _RATE_LIMITED)
        if entry.retry_key is None:
            return None
        key = (entry.path, token, entry.retry_key.lower())
        if _UUID.fullmatch(entry.retry_key) is None:
            raise Refusal(400, _BAD_RETRY_KEY)
        accepted = self._messages.retry_keys.find(key, now)
        if accepted is not None:
            self._state.counters.conflicts += 1
            raise Refusal(409, _RETRY_KEY_ACCEPTED, accepted.request_id)
        return key

    def _accept(self, request: web.Request, entry: Entry, raw: bytes) -> web.Response:
        now = self._state.clock.now()
        self._faults.raise_injected_failure()
        key = self._admit(request, entry, now)
        parsed = self._exchange.decode(request, raw, _DECODER, partial(_check_request, raw=raw))
        code, named = self._resolve(parsed.recipient)
        friends = self._state.followers
        targets = [user for user in named if user in friends]
        limit = parsed.limit if isinstance(parsed.limit, Limit) else Limit()
        if isinstance(limit.max, int):
            targets = targets[: limit.max]
        if code is not None:
            targets = []  # refused before anyone was targeted
        elif not targets:
            code = 2
        self._sent[entry.request_id] = _Narrowcast(
            entry.request_id, entry.retry_key, now, targets, limit, len(parsed.messages), code
        )
        self._state.counters.accepted_narrowcasts += 1
        if key is not None:
            self._messages.retry_keys.remember(key, now, entry.request_id, None)
        return self._exchange.answer(entry, 202, b"{}")

    def _resolve(self, recipient: Recipient | UnsetType) -> tuple[int | None, list[str]]:
        """The users a recipient names, in a stable order, and errorCode 4 if it names an
        audience too small to send to. No recipient: every friend."""
        if isinstance(recipient, UnsetType):
            return None, list(self._state.followers)
        small = False

        def users(node: Recipient) -> dict[str, None]:
            nonlocal small
            if isinstance(node, AudienceRecipient):
                assert isinstance(node.audienceGroupId, int)
                group = self._audiences.find(node.audienceGroupId)
                if group is None:
                    raise Refusal(400, _audience_not_found(node.audienceGroupId))
                small = small or len(group.user_ids) < MIN_AUDIENCE_SIZE
                return dict.fromkeys(group.user_ids)
            if isinstance(node, RedeliveryRecipient):
                earlier = self._sent.get(str(node.requestId))
                if earlier is None:
                    raise Refusal(400, _request_not_found(str(node.requestId)))
                return dict.fromkeys(earlier.targets)
            if isinstance(node.and_, list):
                parts = [users(item) for item in node.and_]
                return {u: None for u in parts[0] if all(u in p for p in parts[1:])}
            if isinstance(node.or_, list):
                merged: dict[str, None] = {}
                for item in node.or_:
                    merged.update(users(item))
                return merged
            assert not isinstance(node.not_, UnsetType)
            excluded = users(node.not_)
            return {u: None for u in self._state.followers if u not in excluded}

        named = list(users(recipient))
        return (4 if small else None), named

    async def _progress(self, request: web.Request, entry: Entry) -> web.Response:
        exchange = self._exchange
        now = self._state.clock.now()
        exchange.authorize_read(request, entry)
        exchange.admit(request, self.progress_limit, now)
        request_id = request.query.get("requestId")
        if not request_id:
            raise Refusal(400, _BAD_REQUEST_ID)
        narrowcast = self._sent.get(request_id)
        if narrowcast is None:
            raise Refusal(404, _NOT_FOUND)
        state = self._state_of(narrowcast, now)
        body = NarrowcastProgressResponse(phase=state.phase, acceptedTime=_iso(state.accepted_at))  # type: ignore[arg-type]
        if state.phase in ("succeeded", "failed"):
            assert narrowcast.finished_at is not None
            body.completedTime = _iso(narrowcast.finished_at)
            body.targetCount = len(narrowcast.targets)
            body.successCount = len(narrowcast.delivered)
            body.failureCount = len(narrowcast.targets) - len(narrowcast.delivered)
            if state.phase == "failed":
                assert state.error_code is not None and state.failed_description is not None
                body.errorCode = state.error_code
                body.failedDescription = state.failed_description
        return exchange.answer(entry, 200, encode(body))


def _audience_not_found(group_id: int) -> bytes:
    return encode(
        ErrorResponse(
            message="audience group not found",
            details=[ErrorDetail(message=f"AUDIENCE_GROUP_NOT_FOUND: {group_id}")],
        )
    )


def _request_not_found(request_id: str) -> bytes:
    return encode(
        ErrorResponse(
            message="The request for redelivery is not found",
            details=[ErrorDetail(message=f"no narrowcast {request_id}", property="requestId")],
        )
    )
