"""The simulator's own control API under ``/__simulator/``: inspect, steer, trigger.

LINE has no such thing; it exists so that a test or benchmark in another process (the
router's quick start, ``bench/``) can do over HTTP what an in-process test does with the
methods of ``LineSimulator``: list recorded requests, read counters, reset, inject faults,
wire up the webhook, make users follow, write or link, register phone numbers, mint ID
tokens, look at audiences and mark what users did with messages sent under an aggregation
unit.  Each handler decodes its body and calls the same method.

Each request acts on one channel: the one ``?channel=<name>`` names, or the first one
without it, so a one-channel caller never names one (``GET /__simulator/channels`` lists
them, ``POST`` adds one).  ``POST /__simulator/reset`` without ``?channel`` resets them
all and the clock; ``advance_clock`` moves the one clock every channel shares.
Answers are indented JSON, one field a line, so ``curl .../__simulator/requests`` reads as
is; ``?pretty=0`` gives one compact line for programs that fetch large logs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Final, TypeVar

import msgspec
from aiohttp import web
from msgspec import Meta, UnsetType

from linesim.exchange import Entry, Handler
from linesim.faults import FaultsRequest
from linesim.insight import UnitMarks
from linesim.limits import ID_TOKEN_TTL_SECONDS
from linesim.paths import CONTROL_PREFIX, PUSH_PATHS
from linesim.schemas import ErrorResponse, encode
from linesim.webhooks import SentWebhook

if TYPE_CHECKING:
    from collections.abc import Iterable

    from linesim.app import LineSimulator
    from linesim.channel import LineChannel

UserId = Annotated[str, Meta(pattern=r"^U[0-9a-f]{32}$")]
_JSON_HEADERS: Final = {"Content-Type": "application/json"}
_T = TypeVar("_T")


class WebhookConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Body of ``POST /__simulator/webhook``; ``null`` turns sending off / forgets the secret."""

    url: str | None
    channel_secret: str | None = None


class WebhookState(msgspec.Struct):
    """Answer of ``POST /__simulator/webhook``: where events go and as which bot."""

    url: str | None
    destination: str
    signed: bool


class ChannelConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Body of ``POST /__simulator/channels``: another channel, as ``add_channel`` takes it."""

    name: Annotated[str, Meta(min_length=1)]
    access_tokens: Annotated[list[Annotated[str, Meta(min_length=1)]], Meta(min_length=1)]
    channel_secret: str | None = None
    webhook_url: str | None = None
    monthly_quota: Annotated[int, Meta(ge=0)] | None = None
    bot_user_id: UserId | None = None
    provider: str | None = None


class ChannelState(msgspec.Struct):
    """One channel in ``GET /__simulator/channels``: its name, provider, webhook wiring
    (``destination`` is its bot user ID) and month so far."""

    name: str
    provider: str
    destination: str
    webhook_url: str | None
    signed: bool
    monthly_quota: int | None
    total_usage: int


def channel_state(channel: LineChannel) -> ChannelState:
    return ChannelState(
        name=channel.name,
        provider=channel.provider,
        destination=channel.bot_user_id,
        webhook_url=channel.webhook_url,
        signed=channel.channel_secret is not None,
        monthly_quota=channel.monthly_quota,
        total_usage=channel.total_usage,
    )


class _UserEventRequest(msgspec.Struct, forbid_unknown_fields=True):
    user_id: UserId
    forge_signature: bool = False


class _FollowRequest(msgspec.Struct, forbid_unknown_fields=True):
    user_id: UserId
    is_unblocked: bool = False
    forge_signature: bool = False


class _MessageRequest(msgspec.Struct, forbid_unknown_fields=True):
    user_id: UserId
    text: Annotated[str, Meta(min_length=1)]
    forge_signature: bool = False


class _AccountLinkRequest(msgspec.Struct, forbid_unknown_fields=True):
    user_id: UserId
    nonce: Annotated[str, Meta(min_length=1)]
    ok: bool = True
    forge_signature: bool = False


class _DeliveryRequest(msgspec.Struct, forbid_unknown_fields=True):
    data: Annotated[str, Meta(min_length=1)]
    forge_signature: bool = False


class _RedeliverRequest(msgspec.Struct, forbid_unknown_fields=True):
    webhook_event_id: str
    forge_signature: bool = False


class FollowersState(msgspec.Struct):
    """Answer of ``POST /__simulator/followers``."""

    followers: list[str]


class PhonesState(msgspec.Struct):
    """Answer of ``POST /__simulator/phones``: each number's hash, as ``to`` wants it."""

    hashes: dict[str, str]


class IdTokenState(msgspec.Struct):
    """Answer of ``POST /__simulator/id-tokens``."""

    id_token: str


class EventSent(msgspec.Struct):
    """Answer of ``POST /__simulator/events/...``: the receiver's status and what was sent."""

    status: int
    webhook: SentWebhook


class _FollowersRequest(msgspec.Struct, forbid_unknown_fields=True):
    user_ids: list[UserId]


class _PhoneEntry(msgspec.Struct, forbid_unknown_fields=True):
    phone: Annotated[str, Meta(pattern=r"^\+[1-9][0-9]{1,14}$")]
    user_id: UserId


class _PhonesRequest(msgspec.Struct, forbid_unknown_fields=True):
    phones: list[_PhoneEntry]


class _IdTokenRequest(msgspec.Struct, forbid_unknown_fields=True):
    user_id: UserId
    client_id: Annotated[str, Meta(min_length=1)]
    nonce: str | None = None
    name: str | None = "LINE User"
    picture: str | None = None
    email: str | None = None
    expires_in: int = ID_TOKEN_TTL_SECONDS
    amr: list[str] = msgspec.field(default_factory=lambda: ["linesso"])


_EVENT_REQUESTS: Final[dict[str, type[msgspec.Struct]]] = {
    "follow": _FollowRequest,
    "unfollow": _UserEventRequest,
    "message": _MessageRequest,
    "accountLink": _AccountLinkRequest,
    "delivery": _DeliveryRequest,
    "redeliver": _RedeliverRequest,
}


class _Refused(Exception):
    """A control request answered with ``ErrorResponse(message)`` and ``status``."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _json(payload: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=encode(payload), headers=_JSON_HEADERS)


def _answering(handler: Handler) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        try:
            response = await handler(request)
        except _Refused as refused:
            response = _json(ErrorResponse(message=refused.message), refused.status)
        return _indented(response) if _wants_indented(request) else response

    return handle


def _wants_indented(request: web.Request) -> bool:
    """Answers are indented for people (curl, a browser) unless ``?pretty=0`` asks for one
    compact line."""
    return request.query.get("pretty", "1").lower() not in ("0", "false", "no")


def _indented(response: web.Response) -> web.Response:
    if isinstance(response.body, bytes) and response.content_type == "application/json":
        response.body = msgspec.json.format(response.body, indent=2) + b"\n"
    return response


async def _body(request: web.Request, kind: type[_T]) -> _T:
    """The body as ``kind``; a body that does not fit is answered 400 with msgspec's reason."""
    try:
        return msgspec.json.decode(await request.read(), type=kind)
    except msgspec.DecodeError as error:
        raise _Refused(str(error), 400) from None


def apply_faults(sim: LineChannel, faults: FaultsRequest) -> None:
    """Everything ``POST /__simulator/faults`` asked for, through the channel's setters."""
    if faults.advance_clock is not None:
        sim.advance_clock(faults.advance_clock)
    if faults.rate_limits is not None:
        limits = faults.rate_limits
        sim.set_rate_limits(
            push=limits.push, multicast=limits.multicast, reply=limits.reply, pnp=limits.pnp
        )
    if faults.audience_limit is not None:
        sim.set_audience_limit(faults.audience_limit.requests, faults.audience_limit.window_seconds)
    if faults.pnp_delivery is not None:
        sim.set_pnp_delivery(
            delay_seconds=faults.pnp_delivery.delay_seconds,
            suppress_next=faults.pnp_delivery.suppress_next,
        )
    if not isinstance(faults.monthly_quota, UnsetType):
        sim.set_monthly_quota(faults.monthly_quota)
    if faults.rates is not None:
        rates = faults.rates
        sim.set_fault_rates(rates.rates, seed=rates.seed, late_seconds=rates.late_seconds)
    if faults.fail_next is not None:
        spec = faults.fail_next
        sim.fail_next(spec.count, spec.status, spec.message)
    if faults.delay_next is not None:
        delay = faults.delay_next
        sim.delay_next(delay.count, delay.seconds, before_processing=delay.before_processing)


class Control:
    """The ``/__simulator/`` handlers of one simulator."""

    def __init__(self, sim: LineSimulator) -> None:
        self._sim = sim

    def routes(self) -> list[web.RouteDef]:
        routes = [
            (web.get, "channels", self._channels),
            (web.post, "channels", self._add_channel),
            (web.get, "requests", self._requests),
            (web.get, "stats", self._stats),
            (web.post, "reset", self._reset),
            (web.post, "faults", self._faults),
            (web.post, "webhook", self._webhook),
            (web.get, "webhooks", self._webhooks_sent),
            (web.post, "webhooks/drain", self._drain),
            (web.post, "events/{kind}", self._event),
            (web.post, "followers", self._followers),
            (web.post, "phones", self._phones),
            (web.post, "id-tokens", self._id_tokens),
            (web.get, "audience-groups", self._audience_groups),
            (web.post, "aggregation-units/{unit}/events", self._unit_events),
        ]
        return [
            route(f"{CONTROL_PREFIX}/{name}", _answering(handler))
            for route, name, handler in routes
        ]

    def _channel(self, request: web.Request) -> LineChannel:
        """The channel ``?channel=`` names (404 if none has that name), else the first."""
        name = request.query.get("channel")
        try:
            return self._sim.channel(self._sim.name if name is None else name)
        except KeyError:
            raise _Refused(f"no channel named {name!r}", 404) from None

    async def _channels(self, request: web.Request) -> web.Response:
        return _json([channel_state(channel) for channel in self._sim.channels])

    async def _add_channel(self, request: web.Request) -> web.Response:
        config = await _body(request, ChannelConfig)
        try:
            channel = self._sim.add_channel(
                config.name,
                access_tokens=config.access_tokens,
                channel_secret=config.channel_secret,
                webhook_url=config.webhook_url,
                monthly_quota=config.monthly_quota,
                bot_user_id=config.bot_user_id,
                provider=config.provider,
            )
        except ValueError as error:
            raise _Refused(str(error), 409) from None
        return _json(channel_state(channel))

    async def _requests(self, request: web.Request) -> web.Response:
        query = request.query
        try:
            limit = int(query["limit"]) if "limit" in query else None
            status = int(query["status"]) if "status" in query else None
        except ValueError:
            raise _Refused("limit and status are integers", 400) from None
        path = query.get("path")
        accepted_only = query.get("accepted", "").lower() in ("1", "true", "yes")
        exchange = self._channel(request).exchange
        entries: Iterable[Entry] = (
            exchange.accepted(PUSH_PATHS) if accepted_only else exchange.recorded
        )
        selected = [
            entry
            for entry in entries
            if (path is None or entry.path == path) and (status is None or entry.status == status)
        ]
        if limit is not None:
            selected = selected[-limit:] if limit > 0 else []
        return _json([entry.public() for entry in selected])

    async def _stats(self, request: web.Request) -> web.Response:
        return _json(self._channel(request).stats())

    async def _reset(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        if "channel" in request.query:
            channel.reset()
        else:
            self._sim.reset()
        return _json(channel.stats())

    async def _faults(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        try:
            apply_faults(channel, await _body(request, FaultsRequest))
        except ValueError as error:
            raise _Refused(str(error), 400) from None
        return _json(channel.stats())

    async def _webhook(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        config = await _body(request, WebhookConfig)
        channel.set_webhook(config.url, config.channel_secret)
        state = WebhookState(
            url=channel.webhook_url,
            destination=channel.bot_user_id,
            signed=channel.channel_secret is not None,
        )
        return _json(state)

    async def _webhooks_sent(self, request: web.Request) -> web.Response:
        return _json(self._channel(request).sent_webhooks)

    async def _drain(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        await channel.drain_webhooks()
        return _json(channel.sent_webhooks)

    async def _event(self, request: web.Request) -> web.Response:
        """``POST /__simulator/events/{follow,unfollow,message,accountLink,delivery,redeliver}``."""
        kind = request.match_info["kind"]
        body_type = _EVENT_REQUESTS.get(kind)
        if body_type is None:
            raise _Refused(f"unknown event kind {kind!r}", 404)
        channel = self._channel(request)
        parsed = await _body(request, body_type)
        try:
            channel.webhooks.target()
        except RuntimeError as error:
            raise _Refused(str(error), 409) from None
        try:
            status = await _send_event(channel, parsed)
        except KeyError as error:
            raise _Refused(str(error.args[0]), 404) from None
        except ValueError as error:
            raise _Refused(str(error), 400) from None
        return _json(EventSent(status=status, webhook=channel.sent_webhooks[-1]))

    async def _followers(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        parsed = await _body(request, _FollowersRequest)
        try:
            channel.set_followers(parsed.user_ids)
        except ValueError as error:
            raise _Refused(str(error), 400) from None
        return _json(FollowersState(followers=channel.followers))

    async def _phones(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        parsed = await _body(request, _PhonesRequest)
        try:
            hashes = {
                entry.phone: channel.register_phone(entry.phone, entry.user_id)
                for entry in parsed.phones
            }
        except ValueError as error:
            raise _Refused(str(error), 400) from None
        return _json(PhonesState(hashes=hashes))

    async def _audience_groups(self, request: web.Request) -> web.Response:
        return _json(self._channel(request).audience_groups)

    async def _id_tokens(self, request: web.Request) -> web.Response:
        parsed = await _body(request, _IdTokenRequest)
        id_token = self._sim.mint_id_token(
            parsed.user_id,
            client_id=parsed.client_id,
            nonce=parsed.nonce,
            name=parsed.name,
            picture=parsed.picture,
            email=parsed.email,
            expires_in=parsed.expires_in,
            amr=parsed.amr,
        )
        return _json(IdTokenState(id_token=id_token))

    async def _unit_events(self, request: web.Request) -> web.Response:
        """Mark recipients of a unit's messages as having displayed them, opened a URL or
        played their media, so that LINE's statistics per unit show exact figures."""
        channel = self._channel(request)
        marks = await _body(request, UnitMarks)
        try:
            marked = channel.mark_unit(request.match_info["unit"], marks)
        except KeyError:
            raise _Refused("no message was sent under this aggregation unit", 404) from None
        except ValueError as error:
            raise _Refused(str(error), 400) from None
        return _json({"marked": marked})


async def _send_event(channel: LineChannel, parsed: msgspec.Struct) -> int:
    """Play the event a ``POST /__simulator/events/{kind}`` body describes on ``channel``."""
    match parsed:
        case _FollowRequest(user_id=user_id, is_unblocked=unblocked, forge_signature=forge):
            return await channel.follow(user_id, is_unblocked=unblocked, forge_signature=forge)
        case _UserEventRequest(user_id=user_id, forge_signature=forge):
            return await channel.unfollow(user_id, forge_signature=forge)
        case _MessageRequest(user_id=user_id, text=text, forge_signature=forge):
            return await channel.message(user_id, text, forge_signature=forge)
        case _AccountLinkRequest(user_id=user_id, nonce=nonce, ok=ok, forge_signature=forge):
            return await channel.account_link(user_id, nonce, ok=ok, forge_signature=forge)
        case _DeliveryRequest(data=data, forge_signature=forge):
            return await channel.delivery(data, forge_signature=forge)
        case _RedeliverRequest(webhook_event_id=event_id, forge_signature=forge):
            return await channel.redeliver(event_id, forge_signature=forge)
    raise AssertionError(f"no event for {parsed!r}")
