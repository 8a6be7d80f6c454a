"""LINE Messaging API simulator.

LINE offers no sandbox, so tests and benchmarks run the real ``line-bot-sdk``
against this HTTP server instead.  It implements the parts of the Messaging
API the router uses (push, multicast, reply, quota, follower IDs, link tokens
and LINE notification messages by phone number) with the documented behaviour
that matters for durable delivery: bearer authentication, request validation,
``X-Line-Retry-Key`` de-duplication, rate limits, the monthly message quota,
the 2 MB body limit and an ``X-Line-Request-Id`` on every response.  Shapes
follow LINE's OpenAPI files ``messaging-api.yml`` and ``webhook.yml``.

LINE also calls the bot: the simulator sends signed webhook events (follow,
unfollow, message, accountLink, delivery) to a configured URL, stands in for
the account-link dialog on ``access.line.me`` and for LINE Login's ID token
verification endpoint, so the identity features can be tested end to end.

A control API under ``/__simulator/`` (and the matching methods on
:class:`LineSimulator`) lets a test inspect what was received, trigger
webhook events and inject faults: failures, slow responses, tighter limits
and a movable clock.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import secrets
import signal
import string
import sys
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Annotated, Any, Final, Literal

import aiohttp
import msgspec
from aiohttp import web
from msgspec import UNSET, Meta, UnsetType

__all__ = [
    "ACCOUNT_LINK_DIALOG_PATH",
    "CONSUMPTION_PATH",
    "CONTROL_PREFIX",
    "DELIVERY_TAG_HEADER",
    "FOLLOWERS_PATH",
    "ID_TOKEN_ISSUER",
    "ID_TOKEN_TTL_SECONDS",
    "LINK_TOKEN_TTL_SECONDS",
    "MAX_BODY_BYTES",
    "MULTICAST_PATH",
    "PNP_PATH",
    "PUSH_PATH",
    "QUOTA_COUNTED_PATHS",
    "QUOTA_PATH",
    "REPLY_PATH",
    "REPLY_TOKEN_TTL_SECONDS",
    "RETRY_KEY_TTL_SECONDS",
    "SIGNATURE_HEADER",
    "VERIFY_ID_TOKEN_PATH",
    "AccountLinkEvent",
    "CallbackRequest",
    "DelayNext",
    "DeliveryContext",
    "DeliveryEvent",
    "ErrorDetail",
    "ErrorResponse",
    "FailNext",
    "FaultsRequest",
    "FollowDetail",
    "FollowEvent",
    "GetFollowersResponse",
    "IdTokenClaims",
    "IssueLinkTokenResponse",
    "LineSimulator",
    "LinkContent",
    "LoginErrorResponse",
    "MessageEvent",
    "MessageQuotaResponse",
    "MulticastRequest",
    "PnpDelivery",
    "PnpDeliveryFault",
    "PnpMessagesRequest",
    "PushMessageRequest",
    "PushMessageResponse",
    "QuotaConsumptionResponse",
    "RateLimits",
    "ReceivedRequest",
    "ReplyMessageRequest",
    "ReplyMessageResponse",
    "SentMessage",
    "SentWebhook",
    "SimulatorStats",
    "TextMessageContent",
    "UnfollowEvent",
    "UserSource",
    "WebhookEvent",
    "hash_phone_number",
    "parse_listen",
    "run",
    "utf16_length",
]

PUSH_PATH: Final = "/v2/bot/message/push"
MULTICAST_PATH: Final = "/v2/bot/message/multicast"
QUOTA_PATH: Final = "/v2/bot/message/quota"
CONSUMPTION_PATH: Final = "/v2/bot/message/quota/consumption"
REPLY_PATH: Final = "/v2/bot/message/reply"
FOLLOWERS_PATH: Final = "/v2/bot/followers/ids"
LINK_TOKEN_PATH: Final = "/v2/bot/user/{userId}/linkToken"
PNP_PATH: Final = "/bot/pnp/push"
VERIFY_ID_TOKEN_PATH: Final = "/oauth2/v2.1/verify"
# Stands in for https://access.line.me/dialog/bot/accountLink.
ACCOUNT_LINK_DIALOG_PATH: Final = "/dialog/bot/accountLink"
CONTROL_PREFIX: Final = "/__simulator"
# What totalUsage counts.  LINE does not count reply messages, and LINE
# notification messages are billed apart and counted by their own endpoint
# (/v2/bot/message/delivery/pnp), so neither is in the monthly usage.
QUOTA_COUNTED_PATHS: Final = (PUSH_PATH, MULTICAST_PATH)

MAX_BODY_BYTES: Final = 2 * 1024 * 1024
RETRY_KEY_TTL_SECONDS: Final = 24 * 60 * 60
MAX_MESSAGES: Final = 5
MAX_MULTICAST_RECIPIENTS: Final = 500
MAX_TEXT_UTF16: Final = 5000
MAX_ALT_TEXT_UTF16: Final = 1500  # flex, template and imagemap altText, per LINE's reference
DEFAULT_PUSH_RATE: Final = 2000
DEFAULT_MULTICAST_RATE: Final = 200
DEFAULT_MAX_RECORDED: Final = 100_000
DEFAULT_MAX_RETRY_KEYS: Final = 1_000_000
DEFAULT_REPLY_RATE: Final = 2000
DEFAULT_PNP_RATE: Final = 2000  # LINE notification messages: 2,000 requests per second
DEFAULT_MAX_WEBHOOKS: Final = 10_000
DEFAULT_WEBHOOK_TIMEOUT: Final = 10.0
LINK_TOKEN_TTL_SECONDS: Final = 10 * 60  # "valid for 10 minutes and can only be used once"
REPLY_TOKEN_TTL_SECONDS: Final = 60  # "must be used within one minute" of the webhook
ID_TOKEN_TTL_SECONDS: Final = 60 * 60
ID_TOKEN_ISSUER: Final = "https://access.line.me"
DEFAULT_FOLLOWERS_LIMIT: Final = 300
MAX_FOLLOWERS_LIMIT: Final = 1000
MAX_FOLLOWER_CURSORS: Final = 10_000
MIN_DELIVERY_TAG: Final = 16
MAX_DELIVERY_TAG: Final = 100

REQUEST_ID_HEADER: Final = "X-Line-Request-Id"
ACCEPTED_REQUEST_ID_HEADER: Final = "X-Line-Accepted-Request-Id"
RETRY_KEY_HEADER: Final = "X-Line-Retry-Key"
DELIVERY_TAG_HEADER: Final = "X-Line-Delivery-Tag"
SIGNATURE_HEADER: Final = "X-Line-Signature"

# Compiled once: the request path must stay cheap at thousands of requests/s.
_USER_ID = re.compile(r"U[0-9a-f]{32}")
_PUSH_TARGET_ID = re.compile(r"[UCR][0-9a-f]{32}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_ERROR_AT = re.compile(r"(?P<text>.*?)(?: - at `\$(?P<path>[^`]*)`)?", re.DOTALL)
_MISSING_FIELD = re.compile(r"Object missing required field `(?P<field>[^`]+)`")
_BYTE_OFFSET = re.compile(r"\(byte (?P<offset>\d+)\)")
_PHONE_HASH = re.compile(r"[0-9a-f]{64}")
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
_CROCKFORD: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_TOKEN_ALPHABET: Final = string.ascii_letters + string.digits


# --- Wire shapes (components/schemas in messaging-api.yml) -------------------


class ErrorDetail(msgspec.Struct, omit_defaults=True):
    """``ErrorDetail``: what is wrong and which request property it concerns."""

    message: str | UnsetType = UNSET
    property: str | UnsetType = UNSET


class SentMessage(msgspec.Struct, omit_defaults=True, gc=False):
    """``SentMessage``: id of a delivered message, plus a quote token for quotable types."""

    id: str
    quoteToken: str | UnsetType = UNSET


class ErrorResponse(msgspec.Struct, omit_defaults=True):
    """``ErrorResponse``; a 409 for a repeated push also carries the original sentMessages."""

    message: str
    details: list[ErrorDetail] | UnsetType = UNSET
    sentMessages: list[SentMessage] | UnsetType = UNSET


class PushMessageResponse(msgspec.Struct):
    """``PushMessageResponse``."""

    sentMessages: list[SentMessage]


class MessageQuotaResponse(msgspec.Struct, omit_defaults=True):
    """``MessageQuotaResponse``: ``value`` only when ``type`` is ``limited``."""

    type: Literal["none", "limited"]
    value: int | UnsetType = UNSET


class QuotaConsumptionResponse(msgspec.Struct):
    """``QuotaConsumptionResponse``."""

    totalUsage: int


class _MessageBase(msgspec.Struct, tag_field="type"):
    """Message objects are told apart by ``type``; unknown properties are ignored."""


class TextMessage(_MessageBase, tag="text"):
    text: str


class TextMessageV2(_MessageBase, tag="textV2"):
    text: str


class StickerMessage(_MessageBase, tag="sticker"):
    packageId: str
    stickerId: str


class ImageMessage(_MessageBase, tag="image"):
    originalContentUrl: str
    previewImageUrl: str


class VideoMessage(_MessageBase, tag="video"):
    originalContentUrl: str
    previewImageUrl: str


class AudioMessage(_MessageBase, tag="audio"):
    originalContentUrl: str
    duration: int


class LocationMessage(_MessageBase, tag="location"):
    title: str
    address: str
    latitude: float
    longitude: float


class ImagemapMessage(_MessageBase, tag="imagemap"):
    baseUrl: str
    altText: str
    baseSize: msgspec.Raw
    actions: msgspec.Raw


class TemplateMessage(_MessageBase, tag="template"):
    altText: str
    template: msgspec.Raw


class FlexMessage(_MessageBase, tag="flex"):
    altText: str
    contents: msgspec.Raw


class CouponMessage(_MessageBase, tag="coupon"):
    couponId: str


Message = (
    TextMessage
    | TextMessageV2
    | StickerMessage
    | ImageMessage
    | VideoMessage
    | AudioMessage
    | LocationMessage
    | ImagemapMessage
    | TemplateMessage
    | FlexMessage
    | CouponMessage
)
_MESSAGE_TYPES: Final = (
    "text, textV2, sticker, image, video, audio, location, imagemap, template, flex, coupon"
)
# Types that may be quoted later, so LINE returns a quoteToken for them.
_QUOTABLE: Final = (TextMessage, TextMessageV2, StickerMessage)
_WITH_ALT_TEXT: Final = (FlexMessage, TemplateMessage, ImagemapMessage)


class PushMessageRequest(msgspec.Struct):
    """``PushMessageRequest``; sizes and id formats are checked after decoding."""

    to: str
    messages: list[Message]
    notificationDisabled: bool = False
    customAggregationUnits: list[str] | None = None


class MulticastRequest(msgspec.Struct):
    """``MulticastRequest``; sizes and id formats are checked after decoding."""

    to: list[str]
    messages: list[Message]
    notificationDisabled: bool = False
    customAggregationUnits: list[str] | None = None


# --- Inspection and control shapes --------------------------------------------


class ReceivedRequest(msgspec.Struct, frozen=True):
    """One API request as the simulator saw it; ``status`` is 0 until it is answered."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    retry_key: str | None
    request_id: str
    status: int
    received_at: float


class SimulatorStats(msgspec.Struct):
    """Counters kept for every request, whatever the bound on recorded requests."""

    requests: int
    accepted_pushes: int
    accepted_multicasts: int
    accepted_messages: int
    conflicts: int
    rate_limited: int
    quota_exceeded: int
    server_errors: int
    injected_failures: int
    by_status: dict[int, int]
    total_usage: int
    monthly_quota: int | None
    push_rate_per_second: int
    multicast_rate_per_second: int
    pending_failures: int
    pending_delays: int
    retry_keys: int
    recorded: int
    clock_offset_seconds: float


NonNegativeInt = Annotated[int, Meta(ge=0)]
NonNegativeFloat = Annotated[float, Meta(ge=0)]


class FailNext(msgspec.Struct, forbid_unknown_fields=True):
    """The next ``count`` send requests answer ``status`` with ``message``, unexecuted.

    They fail before authentication and validation, like an outage in front of LINE,
    so their retry keys stay free for the retry.
    """

    count: NonNegativeInt
    status: Annotated[int, Meta(ge=100, le=599)] = 500
    message: str | None = None


class DelayNext(msgspec.Struct, forbid_unknown_fields=True):
    """The next ``count`` send requests are answered ``seconds`` late.

    By default the request is executed first and only the response is late, as
    when LINE accepts a message but the client times out; ``before_processing``
    holds the request back before it is executed instead.
    """

    count: NonNegativeInt
    seconds: NonNegativeFloat
    before_processing: bool = False


class RateLimits(msgspec.Struct, forbid_unknown_fields=True):
    """Requests per second; an omitted endpoint keeps its current limit."""

    push: NonNegativeInt | None = None
    multicast: NonNegativeInt | None = None


class FaultsRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Body of ``POST /__simulator/faults``; every part is optional.

    ``monthly_quota`` distinguishes absent (unchanged) from ``null`` (unlimited).
    """

    fail_next: FailNext | None = None
    delay_next: DelayNext | None = None
    rate_limits: RateLimits | None = None
    monthly_quota: NonNegativeInt | UnsetType | None = UNSET
    advance_clock: NonNegativeFloat | None = None


# --- Pre-encoded bodies -------------------------------------------------------

_encode = msgspec.json.Encoder().encode
_PUSH_DECODER: Final = msgspec.json.Decoder(PushMessageRequest)
_MULTICAST_DECODER: Final = msgspec.json.Decoder(MulticastRequest)
_FAULTS_DECODER: Final = msgspec.json.Decoder(FaultsRequest)

_UNAUTHORIZED: Final = _encode(
    ErrorResponse(
        message=(
            "Authentication failed. "
            "Confirm that the access token in the authorization header is valid."
        )
    )
)
_TOO_MANY_REQUESTS: Final = _encode(ErrorResponse(message="Too many requests"))
_MONTHLY_LIMIT: Final = _encode(ErrorResponse(message="You have reached your monthly limit."))
_TOO_LARGE: Final = _encode(
    ErrorResponse(message="The request body exceeds the maximum size of 2MB")
)
_RETRY_KEY_ACCEPTED: Final = "The retry key is already accepted"
_BAD_RETRY_KEY: Final = _encode(
    ErrorResponse(
        message="The retry key is invalid",
        details=[
            ErrorDetail(message="Must be a UUID in hexadecimal format", property=RETRY_KEY_HEADER)
        ],
    )
)
_RETRY_KEY_NOT_SUPPORTED: Final = _encode(
    ErrorResponse(
        message="The retry key is not supported by this API",
        details=[ErrorDetail(message="Must not be specified", property=RETRY_KEY_HEADER)],
    )
)
_MULTICAST_OK: Final = b"{}"
_JSON_HEADERS: Final = {"Content-Type": "application/json"}


def utf16_length(text: str) -> int:
    """Length as LINE counts it: UTF-16 code units, so an emoji outside the BMP counts 2."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _bearer_token(header: str | None) -> str | None:
    if header is None or len(header) < 8 or header[:7].lower() != "bearer ":
        return None
    return header[7:].strip()


def _bad_request(details: list[ErrorDetail]) -> bytes:
    return _encode(
        ErrorResponse(message=f"The request body has {len(details)} error(s)", details=details)
    )


def _parse_error(body: bytes, error: msgspec.DecodeError) -> bytes:
    """LINE's message for unparsable JSON names the line and column of the fault."""
    found = _BYTE_OFFSET.search(str(error))
    offset = int(found["offset"]) if found else len(body)
    offset = min(offset, len(body))
    line = body.count(b"\n", 0, offset) + 1
    column = offset - (body.rfind(b"\n", 0, offset) + 1) + 1
    return _encode(
        ErrorResponse(
            message=f"The request body could not be parsed as JSON (line: {line}, column: {column})"
        )
    )


def _validation_detail(error: msgspec.ValidationError) -> ErrorDetail:
    """Turn msgspec's "<problem> - at `$.a[0].b`" into a detail naming the property."""
    found = _ERROR_AT.fullmatch(str(error))
    text = found["text"] if found else str(error)
    path = (found["path"] or "") if found else ""
    path = path.removeprefix(".")
    missing = _MISSING_FIELD.fullmatch(text)
    if missing is not None:
        field = missing["field"]
        return ErrorDetail(
            message="Must be specified", property=f"{path}.{field}" if path else field
        )
    if text.startswith("Invalid value") and path.endswith("type"):
        text = f"Must be one of the following values: [{_MESSAGE_TYPES}]"
    if not path:
        return ErrorDetail(message=text)
    return ErrorDetail(message=text, property=path)


def _check_messages(messages: list[Message], details: list[ErrorDetail]) -> None:
    if not 1 <= len(messages) <= MAX_MESSAGES:
        details.append(
            ErrorDetail(message=f"Size must be between 1 and {MAX_MESSAGES}", property="messages")
        )
    for index, message in enumerate(messages):
        if isinstance(message, TextMessage | TextMessageV2):
            if not 1 <= utf16_length(message.text) <= MAX_TEXT_UTF16:
                details.append(
                    ErrorDetail(
                        message=f"Length must be between 1 and {MAX_TEXT_UTF16}",
                        property=f"messages[{index}].text",
                    )
                )
        elif isinstance(message, _WITH_ALT_TEXT) and not (
            1 <= utf16_length(message.altText) <= MAX_ALT_TEXT_UTF16
        ):
            details.append(
                ErrorDetail(
                    message=f"Length must be between 1 and {MAX_ALT_TEXT_UTF16}",
                    property=f"messages[{index}].altText",
                )
            )


def _check_push(request: PushMessageRequest) -> list[ErrorDetail]:
    details: list[ErrorDetail] = []
    if _PUSH_TARGET_ID.fullmatch(request.to) is None:
        details.append(ErrorDetail(message="Must be a valid user, group or room ID", property="to"))
    _check_messages(request.messages, details)
    return details


def _check_multicast(request: MulticastRequest) -> list[ErrorDetail]:
    details: list[ErrorDetail] = []
    if not 1 <= len(request.to) <= MAX_MULTICAST_RECIPIENTS:
        details.append(
            ErrorDetail(
                message=f"Size must be between 1 and {MAX_MULTICAST_RECIPIENTS}", property="to"
            )
        )
    for index, user_id in enumerate(request.to):
        if _USER_ID.fullmatch(user_id) is None:
            details.append(ErrorDetail(message="Must be a valid user ID", property=f"to[{index}]"))
    _check_messages(request.messages, details)
    return details


def _failure_message(status: int) -> str:
    if status == 429:
        return "Too many requests"
    if status == 500:
        return "Internal server error"
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


# --- Internal state -----------------------------------------------------------


class _Entry(msgspec.Struct, gc=False):
    """What is kept per request: raw parts only, decoded when someone looks.

    Records and retry keys hold no containers of their own objects, so they are
    kept out of the cyclic garbage collector; with a million of them alive, full
    collections would otherwise pause the server for tens of milliseconds.
    """

    method: str
    path: str
    raw_headers: tuple[tuple[bytes, bytes], ...]
    retry_key: str | None
    request_id: str
    received_at: float
    raw_body: bytes | None = None
    status: int = 0

    def public(self) -> ReceivedRequest:
        body: Any = None
        if self.raw_body:
            try:
                body = msgspec.json.decode(self.raw_body)
            except msgspec.DecodeError:
                body = None
        headers = {
            name.decode("latin-1").lower(): value.decode("utf-8", "replace")
            for name, value in self.raw_headers
        }
        return ReceivedRequest(
            method=self.method,
            path=self.path,
            headers=headers,
            body=body,
            retry_key=self.retry_key,
            request_id=self.request_id,
            status=self.status,
            received_at=self.received_at,
        )


class _Accepted(msgspec.Struct, gc=False):
    """An accepted retry key: who accepted it, until when, and what a repeat is told.

    ``sent`` is the push's sentMessages (None for multicast, whose 409 has none).
    """

    key: tuple[str, str, str]
    expires_at: float
    request_id: str
    sent: list[SentMessage] | None


class _SendEndpoint:
    """Per-endpoint fixed one-second rate window."""

    __slots__ = ("count", "limit", "multicast", "path", "window")

    def __init__(self, path: str, limit: int, multicast: bool) -> None:
        self.path = path
        self.limit = limit
        self.multicast = multicast
        self.window = -1
        self.count = 0

    def over_limit(self, now: float) -> bool:
        window = int(now)
        if window != self.window:
            self.window = window
            self.count = 0
        self.count += 1
        return self.count > self.limit


def _check_count(count: int) -> None:
    if count < 0:
        raise ValueError("count must be >= 0")


class LineSimulator:
    """An in-process LINE Messaging API server with inspection and fault injection.

    ``received`` and :meth:`accepted_pushes` show what arrived; the fault
    methods mirror ``POST /__simulator/faults`` for callers in another process.
    """

    def __init__(
        self,
        *,
        access_tokens: Collection[str],
        push_rate_per_second: int = DEFAULT_PUSH_RATE,
        multicast_rate_per_second: int = DEFAULT_MULTICAST_RATE,
        monthly_quota: int | None = None,
        max_recorded: int = DEFAULT_MAX_RECORDED,
        max_retry_keys: int = DEFAULT_MAX_RETRY_KEYS,
    ) -> None:
        if isinstance(access_tokens, str):
            raise TypeError("access_tokens must be a collection of tokens, not one string")
        tokens = frozenset(access_tokens)
        if not tokens or not all(tokens):
            raise ValueError("at least one non-empty access token is required")
        if push_rate_per_second < 0 or multicast_rate_per_second < 0:
            raise ValueError("rate limits must be >= 0")
        if monthly_quota is not None and monthly_quota < 0:
            raise ValueError("monthly_quota must be >= 0 or None")
        if max_recorded < 1 or max_retry_keys < 1:
            raise ValueError("max_recorded and max_retry_keys must be >= 1")
        self._tokens = tokens
        self._initial_push_rate = push_rate_per_second
        self._initial_multicast_rate = multicast_rate_per_second
        self._initial_quota = monthly_quota
        self._max_retry_keys = max_retry_keys
        self._recorded: deque[_Entry] = deque(maxlen=max_recorded)
        # Request ids look like UUIDs; a counter after a random prefix keeps them unique.
        self._request_id_prefix = str(uuid.uuid4())[:24]
        self._request_seq = 0
        self._message_seq = 0
        self._message_id_base = 500_000_000_000_000_000 + secrets.randbelow(10**15)
        self._quote_prefix = secrets.token_urlsafe(24)
        self._epoch_base = time.time() - time.monotonic()
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None
        self._push = _SendEndpoint(PUSH_PATH, push_rate_per_second, multicast=False)
        self._multicast = _SendEndpoint(MULTICAST_PATH, multicast_rate_per_second, multicast=True)
        self._retry_keys: dict[tuple[str, str, str], _Accepted] = {}
        self._retry_order: deque[_Accepted] = deque()
        self._init_state()
        self.app = self._make_app()

    def _init_state(self) -> None:
        self._recorded.clear()
        self._retry_keys.clear()
        self._retry_order.clear()
        self._clock_offset = 0.0
        self._push.limit = self._initial_push_rate
        self._multicast.limit = self._initial_multicast_rate
        self._push.window = self._multicast.window = -1
        self._monthly_quota = self._initial_quota
        self._usage = 0
        self._failures_left = 0
        self._failure_status = 500
        self._failure_body = b""
        self._delays_left = 0
        self._delay_seconds = 0.0
        self._delay_before = False
        self._requests = 0
        self._accepted_pushes = 0
        self._accepted_multicasts = 0
        self._accepted_messages = 0
        self._conflicts = 0
        self._rate_limited = 0
        self._quota_exceeded = 0
        self._injected_failures = 0
        self._by_status: dict[int, int] = {}

    # --- lifecycle ---

    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post(PUSH_PATH, self._handle_push)
        app.router.add_post(MULTICAST_PATH, self._handle_multicast)
        app.router.add_get(QUOTA_PATH, self._handle_quota)
        app.router.add_get(CONSUMPTION_PATH, self._handle_consumption)
        app.router.add_get(f"{CONTROL_PREFIX}/requests", self._control_requests)
        app.router.add_get(f"{CONTROL_PREFIX}/stats", self._control_stats)
        app.router.add_post(f"{CONTROL_PREFIX}/reset", self._control_reset)
        app.router.add_post(f"{CONTROL_PREFIX}/faults", self._control_faults)
        app.on_response_prepare.append(self._ensure_request_id)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (0 picks a free port) and return the base URL."""
        if self._runner is not None:
            raise RuntimeError("simulator already started")
        runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_port = runner.addresses[0][1]
        url_host = f"[{host}]" if ":" in host else host
        self._base_url = f"http://{url_host}:{bound_port}"
        return self._base_url

    async def stop(self) -> None:
        """Close the listener and open connections; in-flight requests get a second."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> LineSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("simulator not started")
        return self._base_url

    # --- inspection ---

    @property
    def received(self) -> list[ReceivedRequest]:
        """API requests received, oldest first (bounded to the last ``max_recorded``)."""
        return [entry.public() for entry in self._recorded]

    def accepted_pushes(self) -> list[ReceivedRequest]:
        """Push and multicast requests answered 200 (a 409 repeat is not a delivery)."""
        return [entry.public() for entry in self._accepted_entries()]

    def _accepted_entries(self) -> Iterable[_Entry]:
        return (
            entry
            for entry in self._recorded
            if entry.status == 200 and entry.path in (PUSH_PATH, MULTICAST_PATH)
        )

    @property
    def total_usage(self) -> int:
        return self._usage

    def now(self) -> float:
        """The simulator's clock: Unix time plus whatever :meth:`advance_clock` added."""
        return self._epoch_base + time.monotonic() + self._clock_offset

    def stats(self) -> SimulatorStats:
        self._prune_retry_keys(self.now())
        return SimulatorStats(
            requests=self._requests,
            accepted_pushes=self._accepted_pushes,
            accepted_multicasts=self._accepted_multicasts,
            accepted_messages=self._accepted_messages,
            conflicts=self._conflicts,
            rate_limited=self._rate_limited,
            quota_exceeded=self._quota_exceeded,
            server_errors=sum(n for status, n in self._by_status.items() if status >= 500),
            injected_failures=self._injected_failures,
            by_status=dict(sorted(self._by_status.items())),
            total_usage=self._usage,
            monthly_quota=self._monthly_quota,
            push_rate_per_second=self._push.limit,
            multicast_rate_per_second=self._multicast.limit,
            pending_failures=self._failures_left,
            pending_delays=self._delays_left,
            retry_keys=len(self._retry_keys),
            recorded=len(self._recorded),
            clock_offset_seconds=self._clock_offset,
        )

    # --- faults and settings ---

    def fail_next(self, count: int, status: int = 500, message: str | None = None) -> None:
        """Answer the next ``count`` push/multicast requests with ``status``, unexecuted."""
        _check_count(count)
        if not 100 <= status <= 599:
            raise ValueError("status must be an HTTP status code")
        self._failures_left = count
        self._failure_status = status
        self._failure_body = _encode(ErrorResponse(message=message or _failure_message(status)))

    def delay_next(self, count: int, seconds: float, *, before_processing: bool = False) -> None:
        """Answer the next ``count`` push/multicast requests ``seconds`` late (see DelayNext)."""
        _check_count(count)
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        self._delays_left = count
        self._delay_seconds = seconds
        self._delay_before = before_processing

    def set_monthly_quota(self, limit: int | None) -> None:
        """Set the monthly message limit (None: unlimited); usage so far is kept."""
        if limit is not None and limit < 0:
            raise ValueError("limit must be >= 0 or None")
        self._monthly_quota = limit

    def set_rate_limits(self, *, push: int | None = None, multicast: int | None = None) -> None:
        """Set requests per second per endpoint; None leaves an endpoint unchanged."""
        for value in (push, multicast):
            if value is not None and value < 0:
                raise ValueError("rate limits must be >= 0")
        if push is not None:
            self._push.limit = push
        if multicast is not None:
            self._multicast.limit = multicast

    def advance_clock(self, seconds: float) -> None:
        """Move the clock forward, e.g. past the 24 h life of retry keys."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self._clock_offset += seconds

    def reset(self) -> None:
        """Forget requests, retry keys, usage, counters and faults; restore initial limits."""
        self._init_state()

    def _apply_faults(self, faults: FaultsRequest) -> None:
        if faults.advance_clock is not None:
            self.advance_clock(faults.advance_clock)
        if faults.rate_limits is not None:
            self.set_rate_limits(
                push=faults.rate_limits.push, multicast=faults.rate_limits.multicast
            )
        if not isinstance(faults.monthly_quota, UnsetType):
            self.set_monthly_quota(faults.monthly_quota)
        if faults.fail_next is not None:
            spec = faults.fail_next
            self.fail_next(spec.count, spec.status, spec.message)
        if faults.delay_next is not None:
            delay = faults.delay_next
            self.delay_next(delay.count, delay.seconds, before_processing=delay.before_processing)

    # --- request path ---

    def _next_request_id(self) -> str:
        self._request_seq += 1
        return f"{self._request_id_prefix}{self._request_seq:012x}"

    def _begin(self, request: web.Request, path: str) -> _Entry:
        self._requests += 1
        entry = _Entry(
            request.method,
            path,
            request.raw_headers,
            request.headers.get(RETRY_KEY_HEADER),
            self._next_request_id(),
            self.now(),
        )
        self._recorded.append(entry)
        return entry

    def _answer(
        self,
        entry: _Entry,
        status: int,
        body: bytes,
        accepted_request_id: str | None = None,
    ) -> web.Response:
        entry.status = status
        self._by_status[status] = self._by_status.get(status, 0) + 1
        headers = {"Content-Type": "application/json", REQUEST_ID_HEADER: entry.request_id}
        if accepted_request_id is not None:
            headers[ACCEPTED_REQUEST_ID_HEADER] = accepted_request_id
        return web.Response(status=status, body=body, headers=headers)

    def _authorized_token(self, request: web.Request) -> str | None:
        token = _bearer_token(request.headers.get("Authorization"))
        return token if token is not None and token in self._tokens else None

    async def _handle_push(self, request: web.Request) -> web.Response:
        return await self._handle_send(request, self._push)

    async def _handle_multicast(self, request: web.Request) -> web.Response:
        return await self._handle_send(request, self._multicast)

    async def _handle_send(self, request: web.Request, endpoint: _SendEndpoint) -> web.Response:
        entry = self._begin(request, endpoint.path)
        length = request.content_length
        if length is not None and length > MAX_BODY_BYTES:
            return self._answer(entry, 413, _TOO_LARGE)
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._answer(entry, 413, _TOO_LARGE)
        entry.raw_body = raw
        delay = 0.0
        if self._delays_left:
            self._delays_left -= 1
            delay = self._delay_seconds
            if self._delay_before:
                await asyncio.sleep(delay)
                delay = 0.0
        response = self._process_send(entry, request, raw, endpoint)
        if delay:
            await asyncio.sleep(delay)
        return response

    def _process_send(
        self, entry: _Entry, request: web.Request, raw: bytes, endpoint: _SendEndpoint
    ) -> web.Response:
        """Everything between reading the body and answering, with no await in between.

        Running without suspension makes the retry-key check and registration atomic.
        """
        if self._failures_left:
            self._failures_left -= 1
            self._injected_failures += 1
            return self._answer(entry, self._failure_status, self._failure_body)
        token = self._authorized_token(request)
        if token is None:
            return self._answer(entry, 401, _UNAUTHORIZED)
        now = self.now()
        if endpoint.over_limit(now):
            self._rate_limited += 1
            return self._answer(entry, 429, _TOO_MANY_REQUESTS)

        retry_key = entry.retry_key
        dedupe_key: tuple[str, str, str] | None = None
        if retry_key is not None:
            if _UUID.fullmatch(retry_key) is None:
                return self._answer(entry, 400, _BAD_RETRY_KEY)
            dedupe_key = (endpoint.path, token, retry_key.lower())
            accepted = self._retry_keys.get(dedupe_key)
            if accepted is not None and accepted.expires_at > now:
                self._conflicts += 1
                conflict = ErrorResponse(
                    message=_RETRY_KEY_ACCEPTED,
                    sentMessages=UNSET if accepted.sent is None else accepted.sent,
                )
                return self._answer(entry, 409, _encode(conflict), accepted.request_id)

        content_type = request.headers.get("Content-Type", "")
        media_type = content_type.partition(";")[0].strip().lower()
        if media_type != "application/json":
            body = _encode(
                ErrorResponse(message=f"The content type, {content_type!r}, is not supported")
            )
            return self._answer(entry, 400, body)

        parsed: PushMessageRequest | MulticastRequest
        try:
            if endpoint.multicast:
                parsed = _MULTICAST_DECODER.decode(raw)
            else:
                parsed = _PUSH_DECODER.decode(raw)
        except msgspec.ValidationError as error:
            return self._answer(entry, 400, _bad_request([_validation_detail(error)]))
        except msgspec.DecodeError as error:
            return self._answer(entry, 400, _parse_error(raw, error))

        if isinstance(parsed, MulticastRequest):
            details = _check_multicast(parsed)
            recipients = len(parsed.to)
        else:
            details = _check_push(parsed)
            recipients = 1
        if details:
            return self._answer(entry, 400, _bad_request(details))

        delivered = len(parsed.messages) * recipients
        if self._monthly_quota is not None and self._usage + delivered > self._monthly_quota:
            self._quota_exceeded += 1
            return self._answer(entry, 429, _MONTHLY_LIMIT)
        self._usage += delivered
        self._accepted_messages += delivered

        sent: list[SentMessage] | None = None
        if endpoint.multicast:
            self._accepted_multicasts += 1
            body = _MULTICAST_OK
        else:
            self._accepted_pushes += 1
            sent = [self._sent_message(message) for message in parsed.messages]
            body = _encode(PushMessageResponse(sentMessages=sent))
        if dedupe_key is not None:
            self._remember(dedupe_key, now, entry.request_id, sent)
        return self._answer(entry, 200, body)

    def _sent_message(self, message: Message) -> SentMessage:
        self._message_seq += 1
        message_id = str(self._message_id_base + self._message_seq)
        if isinstance(message, _QUOTABLE):
            # Opaque to clients; a random prefix and the sequence keep it unique and cheap.
            return SentMessage(
                id=message_id, quoteToken=f"{self._quote_prefix}{self._message_seq:x}"
            )
        return SentMessage(id=message_id)

    def _remember(
        self, key: tuple[str, str, str], now: float, request_id: str, sent: list[SentMessage] | None
    ) -> None:
        accepted = _Accepted(key, now + RETRY_KEY_TTL_SECONDS, request_id, sent)
        self._retry_keys[key] = accepted
        self._retry_order.append(accepted)
        self._prune_retry_keys(now)

    def _prune_retry_keys(self, now: float) -> None:
        """Drop expired keys, oldest first; past ``max_retry_keys`` the oldest go early."""
        order = self._retry_order
        keys = self._retry_keys
        while order:
            oldest = order[0]
            if oldest.expires_at > now and len(keys) <= self._max_retry_keys:
                break
            order.popleft()
            if keys.get(oldest.key) is oldest:
                del keys[oldest.key]

    async def _handle_quota(self, request: web.Request) -> web.Response:
        entry = self._begin(request, QUOTA_PATH)
        refused = self._refuse_read(request, entry)
        if refused is not None:
            return refused
        if self._monthly_quota is None:
            quota = MessageQuotaResponse(type="none")
        else:
            quota = MessageQuotaResponse(type="limited", value=self._monthly_quota)
        return self._answer(entry, 200, _encode(quota))

    async def _handle_consumption(self, request: web.Request) -> web.Response:
        entry = self._begin(request, CONSUMPTION_PATH)
        refused = self._refuse_read(request, entry)
        if refused is not None:
            return refused
        return self._answer(entry, 200, _encode(QuotaConsumptionResponse(totalUsage=self._usage)))

    def _refuse_read(self, request: web.Request, entry: _Entry) -> web.Response | None:
        """Read-only endpoints need a token and, per LINE, reject a retry key with 400."""
        if self._authorized_token(request) is None:
            return self._answer(entry, 401, _UNAUTHORIZED)
        if entry.retry_key is not None:
            return self._answer(entry, 400, _RETRY_KEY_NOT_SUPPORTED)
        return None

    async def _ensure_request_id(self, request: web.Request, response: web.StreamResponse) -> None:
        """Every response carries a request id, including 404s and control answers."""
        if REQUEST_ID_HEADER not in response.headers:
            response.headers[REQUEST_ID_HEADER] = self._next_request_id()

    # --- control API ---

    @staticmethod
    def _control_json(payload: object, status: int = 200) -> web.Response:
        return web.Response(status=status, body=_encode(payload), headers=_JSON_HEADERS)

    async def _control_requests(self, request: web.Request) -> web.Response:
        query = request.query
        try:
            limit = int(query["limit"]) if "limit" in query else None
            status = int(query["status"]) if "status" in query else None
        except ValueError:
            return self._control_json(ErrorResponse(message="limit and status are integers"), 400)
        path = query.get("path")
        accepted_only = query.get("accepted", "").lower() in ("1", "true", "yes")
        entries: Iterable[_Entry] = (
            self._accepted_entries() if accepted_only else iter(self._recorded)
        )
        selected = [
            entry
            for entry in entries
            if (path is None or entry.path == path) and (status is None or entry.status == status)
        ]
        if limit is not None:
            selected = selected[-limit:] if limit > 0 else []
        return self._control_json([entry.public() for entry in selected])

    async def _control_stats(self, request: web.Request) -> web.Response:
        return self._control_json(self.stats())

    async def _control_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return self._control_json(self.stats())

    async def _control_faults(self, request: web.Request) -> web.Response:
        try:
            faults = _FAULTS_DECODER.decode(await request.read())
        except msgspec.DecodeError as error:
            return self._control_json(ErrorResponse(message=str(error)), 400)
        self._apply_faults(faults)
        return self._control_json(self.stats())


# --- Foreground server ------------------------------------------------------------


def parse_listen(listen: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[::1]:PORT`` for IPv6) into host and port."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"expected HOST:PORT, got {listen!r}")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port out of range in {listen!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


def _fast_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop roughly doubles the requests per second a single core can answer."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _serve_until_signalled(simulator: LineSimulator, host: str, port: int) -> None:
    url = await simulator.start(host, port)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stopping.set)
            handled.append(signum)
        except (NotImplementedError, RuntimeError):
            pass  # no loop signal support here: Ctrl-C still raises KeyboardInterrupt
    sys.stdout.write(f"LINE Messaging API simulator listening on {url}\n")
    sys.stdout.flush()
    try:
        await stopping.wait()
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)
        await simulator.stop()


def run(
    listen: str,
    access_tokens: list[str],
    *,
    push_rate_per_second: int = DEFAULT_PUSH_RATE,
    multicast_rate_per_second: int = DEFAULT_MULTICAST_RATE,
    monthly_quota: int | None = None,
) -> None:
    """Serve on ``listen`` (``HOST:PORT``) until SIGINT or SIGTERM.

    Prints one line with the base URL once listening, so a parent process
    started with port 0 can learn the port.
    """
    host, port = parse_listen(listen)
    simulator = LineSimulator(
        access_tokens=access_tokens,
        push_rate_per_second=push_rate_per_second,
        multicast_rate_per_second=multicast_rate_per_second,
        monthly_quota=monthly_quota,
    )
    with asyncio.Runner(loop_factory=_fast_loop_factory()) as runner:
        runner.run(_serve_until_signalled(simulator, host, port))
