"""Audiences (``manage-audience.yml``): user IDs uploaded into a group that LINE can target.

``POST /v2/bot/audienceGroup/upload`` creates an audience (an empty one is allowed), ``PUT``
adds user IDs to one, each answered 202, each under its own limit of 60 requests a minute;
``GET /v2/bot/audienceGroup/{audienceGroupId}`` shows the group and its upload jobs.  Jobs
finish at once here: the router only needs to know that the IDs were taken.
"""

from __future__ import annotations

import secrets
from typing import Final, Literal

import msgspec
from aiohttp import web
from msgspec import UNSET, UnsetType

from linesim.exchange import Entry, Exchange
from linesim.limits import (
    AUDIENCE_LIFETIME_SECONDS,
    MAX_AUDIENCE_DESCRIPTION,
    MAX_AUDIENCE_IDS,
    MAX_AUDIENCE_JOBS,
    SlidingWindowLimit,
)
from linesim.paths import AUDIENCE_GROUP_PATH, AUDIENCE_UPLOAD_PATH
from linesim.schemas import ErrorDetail, ErrorResponse, encode
from linesim.state import SimState
from linesim.validation import EMPTY_OBJECT, USER_ID, Refusal, check_length, check_size


class Audience(msgspec.Struct):
    """``Audience``: one user ID of an upload."""

    id: str | UnsetType = UNSET


class CreateAudienceGroupRequest(msgspec.Struct):
    """``CreateAudienceGroupRequest``; sizes and id formats are checked after decoding."""

    description: str | UnsetType = UNSET
    isIfaAudience: bool = False
    uploadDescription: str | UnsetType = UNSET
    audiences: list[Audience] | UnsetType = UNSET


class AddAudienceToAudienceGroupRequest(msgspec.Struct):
    """``AddAudienceToAudienceGroupRequest``; checked after decoding."""

    audienceGroupId: int | UnsetType = UNSET
    uploadDescription: str | UnsetType = UNSET
    audiences: list[Audience] | UnsetType = UNSET


class CreateAudienceGroupResponse(msgspec.Struct):
    """``CreateAudienceGroupResponse``."""

    audienceGroupId: int
    createRoute: Literal["MESSAGING_API"]
    type: Literal["UPLOAD"]
    description: str
    created: int
    permission: Literal["READ", "READ_WRITE"]
    expireTimestamp: int
    isIfaAudience: bool


class AudienceGroup(msgspec.Struct):
    """``AudienceGroup`` of an upload audience, plus the ``expireTimestamp`` LINE's example has."""

    audienceGroupId: int
    type: Literal["UPLOAD"]
    description: str
    status: Literal["IN_PROGRESS", "READY", "FAILED", "EXPIRED", "INACTIVE", "ACTIVATING"]
    audienceCount: int
    created: int
    isIfaAudience: bool
    permission: Literal["READ", "READ_WRITE"]
    createRoute: Literal["MESSAGING_API"]
    expireTimestamp: int


class AudienceGroupJob(msgspec.Struct, omit_defaults=True):
    """``AudienceGroupJob``: one upload of user IDs into the audience."""

    audienceGroupJobId: int
    audienceGroupId: int
    type: Literal["DIFF_ADD"]
    jobStatus: Literal["QUEUED", "WORKING", "FINISHED", "FAILED"]
    audienceCount: int
    created: int
    description: str | UnsetType = UNSET


class GetAudienceDataResponse(msgspec.Struct):
    """``GetAudienceDataResponse`` (no ``adaccount``: uploads have none)."""

    audienceGroup: AudienceGroup
    jobs: list[AudienceGroupJob]


class AudienceGroupState(msgspec.Struct, frozen=True):
    """An uploaded audience as the simulator holds it (``GET /__simulator/audience-groups``).

    ``user_ids`` are distinct, in the order they were first uploaded; ``uploads`` counts
    the requests that brought user IDs in.
    """

    audience_group_id: int
    description: str
    created: int
    user_ids: list[str]
    uploads: int


_CREATE_DECODER: Final = msgspec.json.Decoder(CreateAudienceGroupRequest)
_ADD_DECODER: Final = msgspec.json.Decoder(AddAudienceToAudienceGroupRequest)
_RATE_LIMITED: Final = encode(
    ErrorResponse(message="The API rate limit has been exceeded. Try again later.")
)
# LINE's answer for an audienceGroupId it does not know (manage-audience.yml's example).
_NOT_FOUND: Final = encode(
    ErrorResponse(
        message="audience group not found",
        details=[ErrorDetail(message="AUDIENCE_GROUP_NOT_FOUND")],
    )
)
_BAD_GROUP_ID: Final = encode(
    ErrorResponse(message="The value for the 'audienceGroupId' parameter is invalid")
)


def _check_audience_ids(
    audiences: list[Audience] | UnsetType, minimum: int, details: list[ErrorDetail]
) -> list[ErrorDetail]:
    if isinstance(audiences, UnsetType):
        if minimum:
            details.append(ErrorDetail(message="Must be specified", property="audiences"))
        return details
    check_size(details, len(audiences), minimum, MAX_AUDIENCE_IDS, "audiences")
    for index, entry in enumerate(audiences):
        if isinstance(entry.id, UnsetType) or USER_ID.fullmatch(entry.id) is None:
            details.append(
                ErrorDetail(message="Must be a valid user ID", property=f"audiences[{index}].id")
            )
    return details


def _check_create(request: CreateAudienceGroupRequest) -> list[ErrorDetail]:
    """LINE's reference requires ``description``; an empty ``audiences`` is allowed at
    creation ("You can specify an empty array"). This channel is not approved for IFAs."""
    details: list[ErrorDetail] = []
    if isinstance(request.description, UnsetType):
        details.append(ErrorDetail(message="Must be specified", property="description"))
    else:
        check_length(details, request.description, MAX_AUDIENCE_DESCRIPTION, "description")
    if request.isIfaAudience:
        details.append(
            ErrorDetail(message="IFA audiences are not available", property="isIfaAudience")
        )
    return _check_audience_ids(request.audiences, 0, details)


def _check_add(request: AddAudienceToAudienceGroupRequest) -> list[ErrorDetail]:
    details: list[ErrorDetail] = []
    if isinstance(request.audienceGroupId, UnsetType):
        details.append(ErrorDetail(message="Must be specified", property="audienceGroupId"))
    return _check_audience_ids(request.audiences, 1, details)


class _Group:
    """An audience group: its user IDs as an insertion-ordered set, and its upload jobs."""

    __slots__ = ("created", "description", "group_id", "jobs", "user_ids")

    def __init__(self, group_id: int, description: str, created: int) -> None:
        self.group_id = group_id
        self.description = description
        self.created = created
        self.user_ids: dict[str, None] = {}
        self.jobs: list[AudienceGroupJob] = []

    def state(self) -> AudienceGroupState:
        return AudienceGroupState(
            audience_group_id=self.group_id,
            description=self.description,
            created=self.created,
            user_ids=list(self.user_ids),
            uploads=len(self.jobs),
        )


class Audiences:
    """Audience groups of uploaded user IDs, and the two upload endpoints' limits."""

    def __init__(self, state: SimState, exchange: Exchange, rate: int, window: float) -> None:
        self._state = state
        self._exchange = exchange
        # Each method has its own window, as LINE limits each endpoint apart.
        self.create_limit = SlidingWindowLimit(rate, window)
        self.add_limit = SlidingWindowLimit(rate, window)
        self._groups: dict[int, _Group] = {}
        # Not reset, so an ID is never handed out twice in one run.
        self._group_seq = 1_000_000_000_000 + secrets.randbelow(10**12)
        self._job_seq = 10_000_000 + secrets.randbelow(10**6)

    def routes(self) -> list[web.RouteDef]:
        upload = self._exchange.handler(AUDIENCE_UPLOAD_PATH, self._upload)
        return [
            web.post(AUDIENCE_UPLOAD_PATH, upload),
            web.put(AUDIENCE_UPLOAD_PATH, upload),
            web.get(AUDIENCE_GROUP_PATH, self._exchange.handler(None, self._get_group)),
        ]

    def reset(self) -> None:
        """Forget every audience; back to the initial limits."""
        self._groups.clear()
        self.create_limit.reset()
        self.add_limit.reset()

    def set_limit(self, requests: int | None = None, window_seconds: float | None = None) -> None:
        """Requests each audience upload endpoint accepts in any ``window_seconds``
        (LINE: 60 a minute); None leaves a part unchanged."""
        if requests is not None and requests < 0:
            raise ValueError("requests must be >= 0")
        if window_seconds is not None and window_seconds <= 0:
            raise ValueError("window_seconds must be > 0")
        for limit in (self.create_limit, self.add_limit):
            if requests is not None:
                limit.limit = requests
            if window_seconds is not None:
                limit.window = window_seconds

    def __len__(self) -> int:
        return len(self._groups)

    def states(self) -> list[AudienceGroupState]:
        """Every audience, oldest first."""
        return [group.state() for group in self._groups.values()]

    def find(self, audience_group_id: int) -> AudienceGroupState | None:
        """The audience with that ID, or None."""
        group = self._groups.get(audience_group_id)
        return None if group is None else group.state()

    async def _upload(self, request: web.Request, entry: Entry) -> web.Response:
        """``POST`` creates an audience of uploaded user IDs, ``PUT`` adds to one; both 202."""
        exchange = self._exchange
        raw = await exchange.read_body(request, entry)
        creating = request.method == "POST"
        limit = self.create_limit if creating else self.add_limit
        exchange.admit(request, limit, self._state.clock.now(), _RATE_LIMITED)
        exchange.refuse_retry_key(entry)
        if creating:
            return self._create(
                entry, exchange.decode(request, raw, _CREATE_DECODER, _check_create)
            )
        parsed = exchange.decode(request, raw, _ADD_DECODER, _check_add)
        assert isinstance(parsed.audienceGroupId, int)
        group = self._groups.get(parsed.audienceGroupId)
        if group is None:
            raise Refusal(400, _NOT_FOUND)
        self._add(group, parsed.audiences, parsed.uploadDescription)
        return exchange.answer(entry, 202, EMPTY_OBJECT)

    def _create(self, entry: Entry, parsed: CreateAudienceGroupRequest) -> web.Response:
        assert isinstance(parsed.description, str)
        created = int(self._state.clock.now())
        self._group_seq += 1
        group = _Group(self._group_seq, parsed.description, created)
        self._groups[group.group_id] = group
        self._add(group, parsed.audiences, parsed.uploadDescription)
        body = CreateAudienceGroupResponse(
            audienceGroupId=group.group_id,
            createRoute="MESSAGING_API",
            type="UPLOAD",
            description=group.description,
            created=created,
            permission="READ_WRITE",
            expireTimestamp=created + AUDIENCE_LIFETIME_SECONDS,
            isIfaAudience=False,
        )
        return self._exchange.answer(entry, 202, encode(body))

    def _add(
        self,
        group: _Group,
        audiences: list[Audience] | UnsetType,
        description: str | UnsetType,
    ) -> None:
        """Store an upload's user IDs (validated) as one finished job."""
        self._state.counters.accepted_audience_uploads += 1
        if isinstance(audiences, UnsetType) or not audiences:
            return
        before = len(group.user_ids)
        group.user_ids.update(dict.fromkeys(str(entry.id) for entry in audiences))
        self._job_seq += 1
        group.jobs.append(
            AudienceGroupJob(
                audienceGroupJobId=self._job_seq,
                audienceGroupId=group.group_id,
                type="DIFF_ADD",
                jobStatus="FINISHED",
                audienceCount=len(group.user_ids) - before,
                created=int(self._state.clock.now()),
                description=description,
            )
        )

    async def _get_group(self, request: web.Request, entry: Entry) -> web.Response:
        """``GET /v2/bot/audienceGroup/{audienceGroupId}``: the group and its latest jobs."""
        self._exchange.authorize_read(request, entry)
        raw_id = request.match_info["audienceGroupId"]
        if not (raw_id.isascii() and raw_id.isdigit()) or len(raw_id) > 19:
            raise Refusal(400, _BAD_GROUP_ID)
        group = self._groups.get(int(raw_id))
        if group is None:
            raise Refusal(400, _NOT_FOUND)
        expires = group.created + AUDIENCE_LIFETIME_SECONDS
        data = GetAudienceDataResponse(
            audienceGroup=AudienceGroup(
                audienceGroupId=group.group_id,
                type="UPLOAD",
                description=group.description,
                status="EXPIRED" if self._state.clock.now() >= expires else "READY",
                audienceCount=len(group.user_ids),
                created=group.created,
                isIfaAudience=False,
                permission="READ_WRITE",
                createRoute="MESSAGING_API",
                expireTimestamp=expires,
            ),
            jobs=group.jobs[-MAX_AUDIENCE_JOBS:],
        )
        return self._exchange.answer(entry, 200, encode(data))
