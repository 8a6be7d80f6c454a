"""LINE Messaging API simulator.

LINE offers no sandbox, so tests and benchmarks run the real ``line-bot-sdk``
against this HTTP server instead.  It implements the parts of the Messaging
API the router uses (push, multicast, reply, quota, follower IDs, link tokens,
LINE notification messages by phone number, audiences of uploaded user IDs) with
the documented behaviour that matters for durable delivery: bearer
authentication, request validation, ``X-Line-Retry-Key`` de-duplication, rate
limits, the monthly message quota, the 2 MB body limit and an
``X-Line-Request-Id`` on every response.  Shapes follow LINE's OpenAPI files
``messaging-api.yml``, ``manage-audience.yml`` and ``webhook.yml``.

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
from typing import Annotated, Any, Final, Literal, TypeVar

import aiohttp
import msgspec
from aiohttp import web
from msgspec import UNSET, Meta, UnsetType

__all__ = [
    "ACCOUNT_LINK_DIALOG_PATH",
    "AUDIENCE_GROUP_PATH",
    "AUDIENCE_LIFETIME_SECONDS",
    "AUDIENCE_UPLOAD_PATH",
    "CONSUMPTION_PATH",
    "CONTROL_PREFIX",
    "DELIVERY_TAG_HEADER",
    "FOLLOWERS_PATH",
    "ID_TOKEN_ISSUER",
    "ID_TOKEN_TTL_SECONDS",
    "LINK_TOKEN_TTL_SECONDS",
    "MAX_AUDIENCE_DESCRIPTION",
    "MAX_AUDIENCE_IDS",
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
    "AddAudienceToAudienceGroupRequest",
    "Audience",
    "AudienceGroup",
    "AudienceGroupJob",
    "AudienceGroupState",
    "AudienceLimit",
    "CallbackRequest",
    "CreateAudienceGroupRequest",
    "CreateAudienceGroupResponse",
    "DelayNext",
    "DeliveryContext",
    "DeliveryEvent",
    "ErrorDetail",
    "ErrorResponse",
    "FailNext",
    "FaultsRequest",
    "FollowDetail",
    "FollowEvent",
    "GetAudienceDataResponse",
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
LINK_TOKEN_PATH: Final = "/v2/bot/user/{userId}/linkToken"  # noqa: S105
PNP_PATH: Final = "/bot/pnp/push"
VERIFY_ID_TOKEN_PATH: Final = "/oauth2/v2.1/verify"  # noqa: S105
AUDIENCE_UPLOAD_PATH: Final = "/v2/bot/audienceGroup/upload"  # POST creates, PUT adds
AUDIENCE_GROUP_PATH: Final = "/v2/bot/audienceGroup/{audienceGroupId}"
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
ID_TOKEN_ISSUER: Final = "https://access.line.me"  # noqa: S105
DEFAULT_FOLLOWERS_LIMIT: Final = 300
MAX_FOLLOWERS_LIMIT: Final = 1000
MAX_FOLLOWER_CURSORS: Final = 10_000
MAX_AUDIENCE_IDS: Final = 10_000  # user IDs per upload request
MAX_AUDIENCE_DESCRIPTION: Final = 120
# LINE allows 60 requests a minute on each audience upload endpoint (POST and PUT apart).
DEFAULT_AUDIENCE_RATE: Final = 60
DEFAULT_AUDIENCE_WINDOW: Final = 60.0
AUDIENCE_LIFETIME_SECONDS: Final = 180 * 24 * 60 * 60  # created + 180 days, as LINE's example
MAX_AUDIENCE_JOBS: Final = 50  # jobs a GET lists at most
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


class ReplyMessageRequest(msgspec.Struct):
    """``ReplyMessageRequest``; message sizes are checked after decoding."""

    replyToken: str
    messages: list[Message]
    notificationDisabled: bool = False


class ReplyMessageResponse(msgspec.Struct):
    """``ReplyMessageResponse``."""

    sentMessages: list[SentMessage]


class PnpMessagesRequest(msgspec.Struct):
    """``PnpMessagesRequest``: ``to`` is the SHA-256 hex of an E.164 phone number."""

    to: str
    messages: list[Message]
    notificationDisabled: bool = False


class IssueLinkTokenResponse(msgspec.Struct):
    """``IssueLinkTokenResponse``."""

    linkToken: str


class GetFollowersResponse(msgspec.Struct):
    """``GetFollowersResponse``: ``next`` only while user IDs remain."""

    userIds: list[str]
    next: str | UnsetType = UNSET


# --- Audience shapes (components/schemas in manage-audience.yml) -----------------


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


# --- Webhook shapes (components/schemas in webhook.yml) -------------------------


class DeliveryContext(msgspec.Struct):
    """``DeliveryContext``."""

    isRedelivery: bool


class UserSource(msgspec.Struct, tag_field="type", tag="user"):
    """``UserSource``: one-on-one chats are the only source the router deals with."""

    userId: str


class FollowDetail(msgspec.Struct):
    """``FollowDetail``."""

    isUnblocked: bool


class LinkContent(msgspec.Struct):
    """``LinkContent``."""

    result: Literal["ok", "failed"]
    nonce: str


class PnpDelivery(msgspec.Struct):
    """``PnpDelivery``: the delivery tag, or the hashed phone number without one."""

    data: str


class TextMessageContent(msgspec.Struct, tag_field="type", tag="text"):
    """``TextMessageContent`` (the only message content the simulator sends)."""

    id: str
    text: str
    quoteToken: str


class _EventBase(msgspec.Struct, tag_field="type", kw_only=True):
    """``Event``: the common properties; ``source`` is absent where LINE omits it."""

    source: UserSource | UnsetType = UNSET
    timestamp: int
    mode: Literal["active", "standby"] = "active"
    webhookEventId: str
    deliveryContext: DeliveryContext


class FollowEvent(_EventBase, tag="follow"):
    """``FollowEvent``."""

    replyToken: str
    follow: FollowDetail


class UnfollowEvent(_EventBase, tag="unfollow"):
    """``UnfollowEvent``."""


class MessageEvent(_EventBase, tag="message"):
    """``MessageEvent`` carrying a text message."""

    replyToken: str
    message: TextMessageContent


class AccountLinkEvent(_EventBase, tag="accountLink"):
    """``AccountLinkEvent``: no ``replyToken`` when linking failed, as webhook.yml says."""

    link: LinkContent
    replyToken: str | UnsetType = UNSET


class DeliveryEvent(_EventBase, tag="delivery"):
    """``PnpDeliveryCompletionEvent``."""

    delivery: PnpDelivery


WebhookEvent = FollowEvent | UnfollowEvent | MessageEvent | AccountLinkEvent | DeliveryEvent


class CallbackRequest(msgspec.Struct):
    """``CallbackRequest``: the body of every webhook request."""

    destination: str
    events: list[WebhookEvent]


# --- LINE Login shapes ----------------------------------------------------------


class IdTokenClaims(msgspec.Struct):
    """ID token payload, which the verify endpoint answers with; optional claims omitted."""

    iss: str
    sub: str
    aud: str
    exp: int
    iat: int
    nonce: str | UnsetType = UNSET
    amr: list[str] | UnsetType = UNSET
    name: str | UnsetType = UNSET
    picture: str | UnsetType = UNSET
    email: str | UnsetType = UNSET


class LoginErrorResponse(msgspec.Struct):
    """LINE Login's error body."""

    error: str
    error_description: str


class _JwtHeader(msgspec.Struct):
    alg: str
    typ: str


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
    recipient: str | None = None


class SentWebhook(msgspec.Struct, frozen=True):
    """One webhook request the simulator sent and how the receiver answered.

    ``body`` is exactly the text that was signed; ``status`` is 0 when no HTTP
    answer came (connection refused, timeout), with the reason in ``error``.
    """

    url: str
    body: str
    payload: Any
    signature: str
    status: int
    sent_at: float
    forged: bool = False
    redelivery: bool = False
    error: str | None = None

    @property
    def events(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = self.payload["events"]
        return events


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
    accepted_replies: int
    reply_messages: int
    invalid_reply_tokens: int
    accepted_pnp: int
    pnp_messages: int
    pnp_undeliverable: int
    reply_rate_per_second: int
    pnp_rate_per_second: int
    quota_counted_paths: list[str]
    followers: int
    registered_phones: int
    link_tokens: int
    reply_tokens: int
    webhooks_sent: int
    webhooks_failed: int
    pending_webhooks: int
    pnp_delivery_delay_seconds: float
    pnp_deliveries_to_suppress: int
    audience_groups: int
    accepted_audience_uploads: int
    audience_requests_per_window: int
    audience_window_seconds: float


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
    reply: NonNegativeInt | None = None
    pnp: NonNegativeInt | None = None


class PnpDeliveryFault(msgspec.Struct, forbid_unknown_fields=True):
    """How delivery completion events follow accepted LINE notification messages.

    ``delay_seconds`` holds every later event back (LINE sends it once the user
    has the message, which may be much later); ``suppress_next`` drops the next
    events outright, as when the user never consents or verifies by SMS.
    An omitted part keeps its current value.
    """

    delay_seconds: NonNegativeFloat | None = None
    suppress_next: NonNegativeInt | None = None


class AudienceLimit(msgspec.Struct, forbid_unknown_fields=True):
    """Requests each audience upload endpoint accepts in any ``window_seconds``.

    LINE allows 60 a minute; a test shortens the window rather than wait a minute.
    An omitted part keeps its current value.
    """

    requests: NonNegativeInt | None = None
    window_seconds: Annotated[float, Meta(gt=0)] | None = None


class FaultsRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Body of ``POST /__simulator/faults``; every part is optional.

    ``monthly_quota`` distinguishes absent (unchanged) from ``null`` (unlimited).
    """

    fail_next: FailNext | None = None
    delay_next: DelayNext | None = None
    rate_limits: RateLimits | None = None
    monthly_quota: NonNegativeInt | UnsetType | None = UNSET
    advance_clock: NonNegativeFloat | None = None
    pnp_delivery: PnpDeliveryFault | None = None
    audience_limit: AudienceLimit | None = None


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


UserId = Annotated[str, Meta(pattern=r"^U[0-9a-f]{32}$")]


class WebhookConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Body of ``POST /__simulator/webhook``; ``null`` turns sending off / forgets the secret."""

    url: str | None
    channel_secret: str | None = None


class WebhookState(msgspec.Struct):
    """Answer of ``POST /__simulator/webhook``: where events go and as which bot."""

    url: str | None
    destination: str
    signed: bool


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


# --- Pre-encoded bodies -------------------------------------------------------

_T = TypeVar("_T")
_encode = msgspec.json.Encoder().encode
_PUSH_DECODER: Final = msgspec.json.Decoder(PushMessageRequest)
_MULTICAST_DECODER: Final = msgspec.json.Decoder(MulticastRequest)
_FAULTS_DECODER: Final = msgspec.json.Decoder(FaultsRequest)
_REPLY_DECODER: Final = msgspec.json.Decoder(ReplyMessageRequest)
_PNP_DECODER: Final = msgspec.json.Decoder(PnpMessagesRequest)
_CREATE_AUDIENCE_DECODER: Final = msgspec.json.Decoder(CreateAudienceGroupRequest)
_ADD_AUDIENCE_DECODER: Final = msgspec.json.Decoder(AddAudienceToAudienceGroupRequest)

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
_INVALID_REPLY_TOKEN: Final = _encode(ErrorResponse(message="Invalid reply token"))
# LINE's error message for a message that could not be sent; a phone number with no
# LINE user behind it is answered 422 with it.
_PNP_UNDELIVERABLE: Final = _encode(ErrorResponse(message="Failed to send messages"))
_BAD_DELIVERY_TAG: Final = _encode(
    ErrorResponse(
        message="The delivery tag is invalid",
        details=[
            ErrorDetail(
                message=f"Length must be between {MIN_DELIVERY_TAG} and {MAX_DELIVERY_TAG}",
                property=DELIVERY_TAG_HEADER,
            )
        ],
    )
)
_MULTICAST_OK: Final = b"{}"
_AUDIENCE_RATE_LIMITED: Final = _encode(
    ErrorResponse(message="The API rate limit has been exceeded. Try again later.")
)
# LINE's answer for an audienceGroupId it does not know (manage-audience.yml's example).
_AUDIENCE_NOT_FOUND: Final = _encode(
    ErrorResponse(
        message="audience group not found",
        details=[ErrorDetail(message="AUDIENCE_GROUP_NOT_FOUND")],
    )
)
_BAD_AUDIENCE_GROUP_ID: Final = _encode(
    ErrorResponse(message="The value for the 'audienceGroupId' parameter is invalid")
)
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


def _check_pnp(request: PnpMessagesRequest) -> list[ErrorDetail]:
    details: list[ErrorDetail] = []
    if _PHONE_HASH.fullmatch(request.to) is None:
        details.append(
            ErrorDetail(
                message="Must be a SHA-256 hash of an E.164 phone number in lower-case hex",
                property="to",
            )
        )
    _check_messages(request.messages, details)
    return details


def _check_audience_ids(
    audiences: list[Audience] | UnsetType, minimum: int, details: list[ErrorDetail]
) -> None:
    if isinstance(audiences, UnsetType):
        if minimum:
            details.append(ErrorDetail(message="Must be specified", property="audiences"))
        return
    if not minimum <= len(audiences) <= MAX_AUDIENCE_IDS:
        details.append(
            ErrorDetail(
                message=f"Size must be between {minimum} and {MAX_AUDIENCE_IDS}",
                property="audiences",
            )
        )
    for index, entry in enumerate(audiences):
        if isinstance(entry.id, UnsetType) or _USER_ID.fullmatch(entry.id) is None:
            details.append(
                ErrorDetail(message="Must be a valid user ID", property=f"audiences[{index}].id")
            )


def _check_create_audience(request: CreateAudienceGroupRequest) -> list[ErrorDetail]:
    """LINE's reference requires ``description``; an empty ``audiences`` is allowed at
    creation ("You can specify an empty array"). This channel is not approved for IFAs."""
    details: list[ErrorDetail] = []
    if isinstance(request.description, UnsetType):
        details.append(ErrorDetail(message="Must be specified", property="description"))
    elif not 1 <= utf16_length(request.description) <= MAX_AUDIENCE_DESCRIPTION:
        details.append(
            ErrorDetail(
                message=f"Length must be between 1 and {MAX_AUDIENCE_DESCRIPTION}",
                property="description",
            )
        )
    if request.isIfaAudience:
        details.append(
            ErrorDetail(message="IFA audiences are not available", property="isIfaAudience")
        )
    _check_audience_ids(request.audiences, 0, details)
    return details


def _check_add_audience(request: AddAudienceToAudienceGroupRequest) -> list[ErrorDetail]:
    details: list[ErrorDetail] = []
    if isinstance(request.audienceGroupId, UnsetType):
        details.append(ErrorDetail(message="Must be specified", property="audienceGroupId"))
    _check_audience_ids(request.audiences, 1, details)
    return details


def hash_phone_number(phone: str) -> str:
    """What LINE expects in ``to``: the lower-case SHA-256 hex of the E.164 number."""
    if _E164.fullmatch(phone) is None:
        raise ValueError(f"not an E.164 phone number: {phone!r}")
    return hashlib.sha256(phone.encode()).hexdigest()


def _signature(secret: str, body: bytes) -> str:
    """``X-Line-Signature``: base64 of the HMAC-SHA256 of the body under the channel secret."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def _ulid(now: float) -> str:
    """A ULID, as LINE's webhookEventId is: 48-bit milliseconds, 80 random bits."""
    value = (int(now * 1000) & (2**48 - 1)) << 80 | secrets.randbits(80)
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def _random_token(length: int) -> str:
    return "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(length))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _html_page(title: str, text: str) -> str:
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{title}</title></head>"
        f"<body><h1>{title}</h1><p>{text}</p></body></html>\n"
    )


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
    recipient: str | None = None

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
            recipient=self.recipient,
        )


class _Accepted(msgspec.Struct, gc=False):
    """An accepted retry key: who accepted it, until when, and what a repeat is told.

    ``sent`` is the push's sentMessages (None for multicast, whose 409 has none).
    """

    key: tuple[str, str, str]
    expires_at: float
    request_id: str
    sent: list[SentMessage] | None


class _ExpiringToken(msgspec.Struct, gc=False):
    """A link or reply token: whose it is, until when, and whether it was spent."""

    user_id: str
    expires_at: float
    used: bool = False


class _SendEndpoint:
    """Per-endpoint fixed one-second rate window."""

    __slots__ = ("count", "limit", "multicast", "path", "pnp", "window")

    def __init__(self, path: str, limit: int, multicast: bool, pnp: bool = False) -> None:
        self.path = path
        self.limit = limit
        self.multicast = multicast
        self.pnp = pnp
        self.window = -1
        self.count = 0

    def over_limit(self, now: float) -> bool:
        window = int(now)
        if window != self.window:
            self.window = window
            self.count = 0
        self.count += 1
        return self.count > self.limit


class _WindowLimit:
    """At most ``limit`` requests in any ``window`` seconds (a sliding log).

    A refused request is not counted, so a client that waits is served again.
    """

    __slots__ = ("limit", "times", "window")

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self.times: deque[float] = deque()

    def over_limit(self, now: float) -> bool:
        times = self.times
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) >= self.limit:
            return True
        times.append(now)
        return False


class _AudienceGroupRecord:
    """An audience group: its user IDs as an insertion-ordered set, and its upload jobs."""

    __slots__ = ("created", "description", "group_id", "jobs", "user_ids")

    def __init__(self, group_id: int, description: str, created: int) -> None:
        self.group_id = group_id
        self.description = description
        self.created = created
        self.user_ids: dict[str, None] = {}
        self.jobs: list[AudienceGroupJob] = []


def _check_count(count: int) -> None:
    if count < 0:
        raise ValueError("count must be >= 0")


class LineSimulator:
    """An in-process LINE Messaging API server with inspection and fault injection.

    ``received`` and :meth:`accepted_pushes` show what arrived; the fault
    methods mirror ``POST /__simulator/faults`` for callers in another process.
    Webhook events go to ``webhook_url`` signed with ``channel_secret``; both
    are wiring rather than state, so :meth:`reset` keeps them.
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
        reply_rate_per_second: int = DEFAULT_REPLY_RATE,
        pnp_rate_per_second: int = DEFAULT_PNP_RATE,
        channel_secret: str | None = None,
        webhook_url: str | None = None,
        bot_user_id: str | None = None,
        id_token_secret: str | None = None,
        webhook_timeout: float = DEFAULT_WEBHOOK_TIMEOUT,
        max_webhooks: int = DEFAULT_MAX_WEBHOOKS,
        audience_rate: int = DEFAULT_AUDIENCE_RATE,
        audience_window_seconds: float = DEFAULT_AUDIENCE_WINDOW,
    ) -> None:
        if isinstance(access_tokens, str):
            raise TypeError("access_tokens must be a collection of tokens, not one string")
        tokens = frozenset(access_tokens)
        if not tokens or not all(tokens):
            raise ValueError("at least one non-empty access token is required")
        rates = (
            push_rate_per_second,
            multicast_rate_per_second,
            reply_rate_per_second,
            pnp_rate_per_second,
        )
        if any(rate < 0 for rate in rates):
            raise ValueError("rate limits must be >= 0")
        if monthly_quota is not None and monthly_quota < 0:
            raise ValueError("monthly_quota must be >= 0 or None")
        if max_recorded < 1 or max_retry_keys < 1 or max_webhooks < 1:
            raise ValueError("max_recorded, max_retry_keys and max_webhooks must be >= 1")
        if bot_user_id is not None and _USER_ID.fullmatch(bot_user_id) is None:
            raise ValueError("bot_user_id must look like U followed by 32 hex digits")
        if webhook_timeout <= 0:
            raise ValueError("webhook_timeout must be > 0")
        if audience_rate < 0 or audience_window_seconds <= 0:
            raise ValueError("audience_rate must be >= 0 and audience_window_seconds > 0")
        self._tokens = tokens
        self._initial_push_rate = push_rate_per_second
        self._initial_multicast_rate = multicast_rate_per_second
        self._initial_reply_rate = reply_rate_per_second
        self._initial_pnp_rate = pnp_rate_per_second
        self._initial_quota = monthly_quota
        self._webhook_url = webhook_url
        self._channel_secret = channel_secret
        self._bot_user_id = bot_user_id or "U" + secrets.token_hex(16)
        self._id_token_secret = (id_token_secret or secrets.token_hex(32)).encode()
        self._webhook_timeout = webhook_timeout
        self._http: aiohttp.ClientSession | None = None
        self._sent_webhooks: deque[SentWebhook] = deque(maxlen=max_webhooks)
        self._tasks: set[asyncio.Task[None]] = set()
        self._followers: dict[str, None] = {}  # insertion-ordered set
        self._follower_cursors: OrderedDict[str, tuple[tuple[str, ...], int]] = OrderedDict()
        self._phones: dict[str, str] = {}  # phone hash -> user ID
        self._link_tokens: dict[str, _ExpiringToken] = {}
        self._reply_tokens: dict[str, _ExpiringToken] = {}
        self._reply_order: deque[tuple[str, float]] = deque()
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
        self._reply = _SendEndpoint(REPLY_PATH, reply_rate_per_second, multicast=False)
        self._pnp = _SendEndpoint(PNP_PATH, pnp_rate_per_second, multicast=False, pnp=True)
        self._retry_keys: dict[tuple[str, str, str], _Accepted] = {}
        self._retry_order: deque[_Accepted] = deque()
        self._initial_audience_limit = (audience_rate, audience_window_seconds)
        self._audience_create = _WindowLimit(audience_rate, audience_window_seconds)
        self._audience_add = _WindowLimit(audience_rate, audience_window_seconds)
        self._audience_groups: dict[int, _AudienceGroupRecord] = {}
        # Not reset, so an ID is never handed out twice in one run.
        self._audience_group_seq = 1_000_000_000_000 + secrets.randbelow(10**12)
        self._audience_job_seq = 10_000_000 + secrets.randbelow(10**6)
        self._init_state()
        self.app = self._make_app()

    def _init_state(self) -> None:
        self._recorded.clear()
        self._retry_keys.clear()
        self._retry_order.clear()
        self._clock_offset = 0.0
        self._push.limit = self._initial_push_rate
        self._multicast.limit = self._initial_multicast_rate
        self._reply.limit = self._initial_reply_rate
        self._pnp.limit = self._initial_pnp_rate
        self._push.window = self._multicast.window = self._reply.window = self._pnp.window = -1
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
        self._accepted_replies = 0
        self._reply_messages = 0
        self._invalid_reply_tokens = 0
        self._accepted_pnp = 0
        self._pnp_messages = 0
        self._pnp_undeliverable = 0
        self._webhooks_sent = 0
        self._webhooks_failed = 0
        self._pnp_delivery_delay = 0.0
        self._pnp_suppress_left = 0
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        self._sent_webhooks.clear()
        self._followers.clear()
        self._follower_cursors.clear()
        self._phones.clear()
        self._link_tokens.clear()
        self._reply_tokens.clear()
        self._reply_order.clear()
        self._audience_groups.clear()
        self._accepted_audience_uploads = 0
        for limiter in (self._audience_create, self._audience_add):
            limiter.limit, limiter.window = self._initial_audience_limit
            limiter.times.clear()

    # --- lifecycle ---

    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post(PUSH_PATH, self._handle_push)
        app.router.add_post(MULTICAST_PATH, self._handle_multicast)
        app.router.add_get(QUOTA_PATH, self._handle_quota)
        app.router.add_get(CONSUMPTION_PATH, self._handle_consumption)
        app.router.add_post(REPLY_PATH, self._handle_reply)
        app.router.add_post(PNP_PATH, self._handle_pnp)
        app.router.add_get(FOLLOWERS_PATH, self._handle_followers)
        app.router.add_post(LINK_TOKEN_PATH, self._handle_link_token)
        app.router.add_post(VERIFY_ID_TOKEN_PATH, self._handle_verify_id_token)
        app.router.add_get(ACCOUNT_LINK_DIALOG_PATH, self._handle_account_link_dialog)
        app.router.add_post(AUDIENCE_UPLOAD_PATH, self._handle_audience_upload)
        app.router.add_put(AUDIENCE_UPLOAD_PATH, self._handle_audience_upload)
        app.router.add_get(AUDIENCE_GROUP_PATH, self._handle_audience_group)
        app.router.add_get(f"{CONTROL_PREFIX}/requests", self._control_requests)
        app.router.add_get(f"{CONTROL_PREFIX}/stats", self._control_stats)
        app.router.add_post(f"{CONTROL_PREFIX}/reset", self._control_reset)
        app.router.add_post(f"{CONTROL_PREFIX}/faults", self._control_faults)
        app.router.add_post(f"{CONTROL_PREFIX}/webhook", self._control_webhook)
        app.router.add_get(f"{CONTROL_PREFIX}/webhooks", self._control_webhooks)
        app.router.add_post(f"{CONTROL_PREFIX}/webhooks/drain", self._control_drain)
        app.router.add_post(f"{CONTROL_PREFIX}/events/{{kind}}", self._control_event)
        app.router.add_post(f"{CONTROL_PREFIX}/followers", self._control_followers)
        app.router.add_post(f"{CONTROL_PREFIX}/phones", self._control_phones)
        app.router.add_post(f"{CONTROL_PREFIX}/id-tokens", self._control_id_tokens)
        app.router.add_get(f"{CONTROL_PREFIX}/audience-groups", self._control_audience_groups)
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
        """Close the listener and open connections; in-flight requests get a second.

        Webhook events still waiting to be sent are dropped.
        """
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        http, self._http = self._http, None
        if http is not None:
            await http.close()

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

    def accepted_replies(self) -> list[ReceivedRequest]:
        """Reply requests answered 200; ``recipient`` is the user the reply token was for."""
        return [entry.public() for entry in self._accepted_entries((REPLY_PATH,))]

    def accepted_pnp(self) -> list[ReceivedRequest]:
        """LINE notification messages answered 200; ``recipient`` is the phone's user."""
        return [entry.public() for entry in self._accepted_entries((PNP_PATH,))]

    @property
    def audience_groups(self) -> list[AudienceGroupState]:
        """Audiences created through ``POST /v2/bot/audienceGroup/upload``, oldest first."""
        return [self._audience_state(group) for group in self._audience_groups.values()]

    def audience_group(self, audience_group_id: int) -> AudienceGroupState | None:
        group = self._audience_groups.get(audience_group_id)
        return None if group is None else self._audience_state(group)

    @staticmethod
    def _audience_state(group: _AudienceGroupRecord) -> AudienceGroupState:
        return AudienceGroupState(
            audience_group_id=group.group_id,
            description=group.description,
            created=group.created,
            user_ids=list(group.user_ids),
            uploads=len(group.jobs),
        )

    def _accepted_entries(
        self, paths: Collection[str] = (PUSH_PATH, MULTICAST_PATH)
    ) -> Iterable[_Entry]:
        return (entry for entry in self._recorded if entry.status == 200 and entry.path in paths)

    @property
    def sent_webhooks(self) -> list[SentWebhook]:
        """Webhook requests sent, oldest first, with the receiver's answers."""
        return list(self._sent_webhooks)

    @property
    def followers(self) -> list[str]:
        """User IDs ``GET /v2/bot/followers/ids`` lists, in the order they followed."""
        return list(self._followers)

    @property
    def bot_user_id(self) -> str:
        """The ``destination`` of every webhook body."""
        return self._bot_user_id

    @property
    def webhook_url(self) -> str | None:
        return self._webhook_url

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
            accepted_replies=self._accepted_replies,
            reply_messages=self._reply_messages,
            invalid_reply_tokens=self._invalid_reply_tokens,
            accepted_pnp=self._accepted_pnp,
            pnp_messages=self._pnp_messages,
            pnp_undeliverable=self._pnp_undeliverable,
            reply_rate_per_second=self._reply.limit,
            pnp_rate_per_second=self._pnp.limit,
            quota_counted_paths=list(QUOTA_COUNTED_PATHS),
            followers=len(self._followers),
            registered_phones=len(self._phones),
            link_tokens=len(self._link_tokens),
            reply_tokens=len(self._reply_tokens),
            webhooks_sent=self._webhooks_sent,
            webhooks_failed=self._webhooks_failed,
            pending_webhooks=len(self._tasks),
            pnp_delivery_delay_seconds=self._pnp_delivery_delay,
            pnp_deliveries_to_suppress=self._pnp_suppress_left,
            audience_groups=len(self._audience_groups),
            accepted_audience_uploads=self._accepted_audience_uploads,
            audience_requests_per_window=self._audience_create.limit,
            audience_window_seconds=self._audience_create.window,
        )

    # --- faults and settings ---

    def fail_next(self, count: int, status: int = 500, message: str | None = None) -> None:
        """Answer the next ``count`` push/multicast/PNP requests with ``status``, unexecuted.

        Replies are left alone: a bot replying to a follow event would otherwise use
        up a failure meant for the push a test is about.
        """
        _check_count(count)
        if not 100 <= status <= 599:
            raise ValueError("status must be an HTTP status code")
        self._failures_left = count
        self._failure_status = status
        self._failure_body = _encode(ErrorResponse(message=message or _failure_message(status)))

    def delay_next(self, count: int, seconds: float, *, before_processing: bool = False) -> None:
        """Answer the next ``count`` push/multicast/PNP requests ``seconds`` late (see DelayNext)."""
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

    def set_rate_limits(
        self,
        *,
        push: int | None = None,
        multicast: int | None = None,
        reply: int | None = None,
        pnp: int | None = None,
    ) -> None:
        """Set requests per second per endpoint; None leaves an endpoint unchanged."""
        pairs = (
            (self._push, push),
            (self._multicast, multicast),
            (self._reply, reply),
            (self._pnp, pnp),
        )
        for _, value in pairs:
            if value is not None and value < 0:
                raise ValueError("rate limits must be >= 0")
        for endpoint, value in pairs:
            if value is not None:
                endpoint.limit = value

    def set_pnp_delivery(
        self, *, delay_seconds: float | None = None, suppress_next: int | None = None
    ) -> None:
        """Delay every later delivery completion event, or drop the next few (see PnpDeliveryFault)."""
        if delay_seconds is not None:
            if delay_seconds < 0:
                raise ValueError("delay_seconds must be >= 0")
            self._pnp_delivery_delay = delay_seconds
        if suppress_next is not None:
            _check_count(suppress_next)
            self._pnp_suppress_left = suppress_next

    def set_audience_limit(
        self, requests: int | None = None, window_seconds: float | None = None
    ) -> None:
        """Requests each audience upload endpoint accepts in any ``window_seconds``
        (LINE: 60 a minute); None leaves a part unchanged."""
        if requests is not None and requests < 0:
            raise ValueError("requests must be >= 0")
        if window_seconds is not None and window_seconds <= 0:
            raise ValueError("window_seconds must be > 0")
        for limiter in (self._audience_create, self._audience_add):
            if requests is not None:
                limiter.limit = requests
            if window_seconds is not None:
                limiter.window = window_seconds

    def set_webhook(self, url: str | None, channel_secret: str | None = None) -> None:
        """Where events go (None: nowhere) and the secret that signs them.

        A secret of None keeps the current one, so the URL can move on its own.
        """
        self._webhook_url = url
        if channel_secret is not None:
            self._channel_secret = channel_secret

    def set_followers(self, user_ids: Iterable[str]) -> None:
        """Replace the follower set that ``GET /v2/bot/followers/ids`` pages over."""
        followers = dict.fromkeys(user_ids)
        for user_id in followers:
            if _USER_ID.fullmatch(user_id) is None:
                raise ValueError(f"not a LINE user ID: {user_id!r}")
        self._followers = followers

    def register_phone(self, phone: str, user_id: str) -> str:
        """Make ``phone`` (E.164) reach ``user_id`` by PNP; returns the hash LINE expects."""
        if _USER_ID.fullmatch(user_id) is None:
            raise ValueError(f"not a LINE user ID: {user_id!r}")
        phone_hash = hash_phone_number(phone)
        self._phones[phone_hash] = user_id
        return phone_hash

    def forget_phone(self, phone: str) -> None:
        """Make ``phone`` unknown again, so PNP to it is answered 422."""
        self._phones.pop(hash_phone_number(phone), None)

    def advance_clock(self, seconds: float) -> None:
        """Move the clock forward, e.g. past the life of retry, link or reply tokens."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self._clock_offset += seconds

    def reset(self) -> None:
        """Forget requests, retry keys, usage, counters, faults, followers, phones, tokens,
        sent webhooks and audiences; restore initial limits.

        The webhook URL, channel secret and bot user ID stay: they are wiring that a
        test session sets up once.  Webhook events still pending are dropped.
        """
        self._init_state()

    def _apply_faults(self, faults: FaultsRequest) -> None:
        if faults.advance_clock is not None:
            self.advance_clock(faults.advance_clock)
        if faults.rate_limits is not None:
            limits = faults.rate_limits
            self.set_rate_limits(
                push=limits.push, multicast=limits.multicast, reply=limits.reply, pnp=limits.pnp
            )
        if faults.audience_limit is not None:
            self.set_audience_limit(
                faults.audience_limit.requests, faults.audience_limit.window_seconds
            )
        if faults.pnp_delivery is not None:
            self.set_pnp_delivery(
                delay_seconds=faults.pnp_delivery.delay_seconds,
                suppress_next=faults.pnp_delivery.suppress_next,
            )
        if not isinstance(faults.monthly_quota, UnsetType):
            self.set_monthly_quota(faults.monthly_quota)
        if faults.fail_next is not None:
            spec = faults.fail_next
            self.fail_next(spec.count, spec.status, spec.message)
        if faults.delay_next is not None:
            delay = faults.delay_next
            self.delay_next(delay.count, delay.seconds, before_processing=delay.before_processing)

    # --- webhook events ---

    def _event_base(self, user_id: str | None) -> tuple[UserSource | UnsetType, int, str, float]:
        if user_id is not None and _USER_ID.fullmatch(user_id) is None:
            raise ValueError(f"not a LINE user ID: {user_id!r}")
        now = self.now()
        source: UserSource | UnsetType = UNSET if user_id is None else UserSource(userId=user_id)
        return source, int(now * 1000), _ulid(now), now

    def _mint_reply_token(self, user_id: str, now: float) -> str:
        order = self._reply_order
        while order and order[0][1] <= now:
            self._reply_tokens.pop(order.popleft()[0], None)
        token = secrets.token_hex(16)
        expires_at = now + REPLY_TOKEN_TTL_SECONDS
        self._reply_tokens[token] = _ExpiringToken(user_id, expires_at)
        order.append((token, expires_at))
        return token

    def follow_event(self, user_id: str, *, is_unblocked: bool = False) -> FollowEvent:
        """A follow event with a fresh reply token; sending it is up to the caller."""
        source, timestamp, event_id, now = self._event_base(user_id)
        return FollowEvent(
            source=source,
            timestamp=timestamp,
            webhookEventId=event_id,
            deliveryContext=DeliveryContext(isRedelivery=False),
            replyToken=self._mint_reply_token(user_id, now),
            follow=FollowDetail(isUnblocked=is_unblocked),
        )

    def unfollow_event(self, user_id: str) -> UnfollowEvent:
        source, timestamp, event_id, _ = self._event_base(user_id)
        return UnfollowEvent(
            source=source,
            timestamp=timestamp,
            webhookEventId=event_id,
            deliveryContext=DeliveryContext(isRedelivery=False),
        )

    def message_event(self, user_id: str, text: str) -> MessageEvent:
        """A text message from ``user_id``, with a fresh reply token."""
        source, timestamp, event_id, now = self._event_base(user_id)
        self._message_seq += 1
        content = TextMessageContent(
            id=str(self._message_id_base + self._message_seq),
            text=text,
            quoteToken=f"{self._quote_prefix}{self._message_seq:x}",
        )
        return MessageEvent(
            source=source,
            timestamp=timestamp,
            webhookEventId=event_id,
            deliveryContext=DeliveryContext(isRedelivery=False),
            replyToken=self._mint_reply_token(user_id, now),
            message=content,
        )

    def account_link_event(
        self, user_id: str | None, nonce: str, *, ok: bool = True
    ) -> AccountLinkEvent:
        """An accountLink event; only a successful one carries a reply token."""
        source, timestamp, event_id, now = self._event_base(user_id)
        reply_token: str | UnsetType = UNSET
        if ok and user_id is not None:
            reply_token = self._mint_reply_token(user_id, now)
        return AccountLinkEvent(
            source=source,
            timestamp=timestamp,
            webhookEventId=event_id,
            deliveryContext=DeliveryContext(isRedelivery=False),
            link=LinkContent(result="ok" if ok else "failed", nonce=nonce),
            replyToken=reply_token,
        )

    def delivery_event(self, data: str) -> DeliveryEvent:
        """A delivery completion event.

        LINE's event table for it lists no ``source``: the phone number's owner
        stays unknown to the bot, so none is sent.
        """
        _, timestamp, event_id, _ = self._event_base(None)
        return DeliveryEvent(
            timestamp=timestamp,
            webhookEventId=event_id,
            deliveryContext=DeliveryContext(isRedelivery=False),
            delivery=PnpDelivery(data=data),
        )

    async def send_events(
        self, events: Sequence[WebhookEvent], *, forge_signature: bool = False
    ) -> int:
        """POST ``events`` in one signed body; returns the receiver's status (0: no answer).

        ``forge_signature`` signs with a wrong secret, as a forger would.
        """
        return (await self._send(list(events), forged=forge_signature)).status

    async def follow(
        self, user_id: str, *, is_unblocked: bool = False, forge_signature: bool = False
    ) -> int:
        """``user_id`` adds the bot as a friend (or unblocks it): follower set and event."""
        self._webhook_target()
        event = self.follow_event(user_id, is_unblocked=is_unblocked)
        self._followers[user_id] = None
        return await self.send_events([event], forge_signature=forge_signature)

    async def unfollow(self, user_id: str, *, forge_signature: bool = False) -> int:
        """``user_id`` blocks the bot: leaves the follower set, and the bot is told."""
        self._webhook_target()
        event = self.unfollow_event(user_id)
        self._followers.pop(user_id, None)
        return await self.send_events([event], forge_signature=forge_signature)

    async def message(self, user_id: str, text: str, *, forge_signature: bool = False) -> int:
        """``user_id`` sends the bot a text message."""
        self._webhook_target()
        return await self.send_events(
            [self.message_event(user_id, text)], forge_signature=forge_signature
        )

    async def account_link(
        self, user_id: str, nonce: str, *, ok: bool = True, forge_signature: bool = False
    ) -> int:
        """An accountLink event without going through a link token and the dialog."""
        self._webhook_target()
        event = self.account_link_event(user_id, nonce, ok=ok)
        return await self.send_events([event], forge_signature=forge_signature)

    async def delivery(self, tag: str, *, forge_signature: bool = False) -> int:
        """A delivery completion event whose ``delivery.data`` is ``tag``."""
        self._webhook_target()
        return await self.send_events([self.delivery_event(tag)], forge_signature=forge_signature)

    async def redeliver(
        self,
        event_body: SentWebhook | Mapping[str, Any] | str,
        *,
        forge_signature: bool = False,
    ) -> int:
        """Send earlier events again, as LINE's webhook redelivery does.

        ``event_body`` is a sent webhook (all its events), a webhook body or one
        event as a mapping, or a webhookEventId seen in :attr:`sent_webhooks`.
        Event IDs, timestamps and reply tokens stay; ``isRedelivery`` becomes true.
        """
        payload: Mapping[str, Any]
        if isinstance(event_body, str):
            payload = self._find_event(event_body)
        elif isinstance(event_body, SentWebhook):
            payload = event_body.payload
        elif "events" in event_body:
            payload = event_body
        else:
            payload = {"destination": self._bot_user_id, "events": [event_body]}
        original = msgspec.convert(payload, CallbackRequest)
        redelivered = DeliveryContext(isRedelivery=True)
        events: list[WebhookEvent] = [
            msgspec.structs.replace(event, deliveryContext=redelivered) for event in original.events
        ]
        sent = await self._send(
            events, forged=forge_signature, redelivery=True, destination=original.destination
        )
        return sent.status

    def _find_event(self, webhook_event_id: str) -> dict[str, Any]:
        for sent in reversed(self._sent_webhooks):
            for event in sent.events:
                if event.get("webhookEventId") == webhook_event_id:
                    return {"destination": sent.payload["destination"], "events": [event]}
        raise KeyError(f"no sent event has webhookEventId {webhook_event_id!r}")

    async def drain_webhooks(self) -> None:
        """Wait until the scheduled delivery completion events have been sent."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _webhook_target(self) -> tuple[str, str]:
        if self._webhook_url is None:
            raise RuntimeError("no webhook URL is set (set_webhook or webhook_url=)")
        if self._channel_secret is None:
            raise RuntimeError("no channel secret is set to sign webhooks with")
        return self._webhook_url, self._channel_secret

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession()
        return self._http

    async def _send(
        self,
        events: list[WebhookEvent],
        *,
        forged: bool,
        redelivery: bool = False,
        destination: str | None = None,
    ) -> SentWebhook:
        url, secret = self._webhook_target()
        body = _encode(CallbackRequest(destination=destination or self._bot_user_id, events=events))
        # Any other key gives a signature the receiver's check must refuse.
        signature = _signature(secret + "\x00forged" if forged else secret, body)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature,
            "User-Agent": "LineBotWebhook/2.0",
        }
        status, error = 0, None
        timeout = aiohttp.ClientTimeout(total=self._webhook_timeout)
        try:
            async with self._client().post(
                url, data=body, headers=headers, timeout=timeout
            ) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        self._webhooks_sent += 1
        if not 200 <= status < 300:
            self._webhooks_failed += 1
        sent = SentWebhook(
            url=url,
            body=body.decode(),
            payload=msgspec.json.decode(body),
            signature=signature,
            status=status,
            sent_at=self.now(),
            forged=forged,
            redelivery=redelivery,
            error=error,
        )
        self._sent_webhooks.append(sent)
        return sent

    def _schedule_delivery(self, data: str) -> None:
        """After an accepted PNP, tell the bot it arrived, unless told to stay quiet."""
        if self._webhook_url is None or self._channel_secret is None:
            return
        if self._pnp_suppress_left:
            self._pnp_suppress_left -= 1
            return
        task = asyncio.get_running_loop().create_task(
            self._deliver_later(data, self._pnp_delivery_delay)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver_later(self, data: str, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._webhook_url is not None and self._channel_secret is not None:
            await self._send([self.delivery_event(data)], forged=False)

    # --- LINE Login ID tokens ---

    def mint_id_token(
        self,
        user_id: str,
        *,
        client_id: str,
        nonce: str | None = None,
        name: str | None = "LINE User",
        picture: str | None = None,
        email: str | None = None,
        expires_in: int = ID_TOKEN_TTL_SECONDS,
        amr: Sequence[str] = ("linesso",),
        issuer: str = ID_TOKEN_ISSUER,
    ) -> str:
        """An ID token as LINE Login issues to web apps: a JWT signed HS256.

        The key is the simulator's own, so only ``POST /oauth2/v2.1/verify`` can
        tell a good token from a bad one, which is how the router must treat them.
        ``issuer`` exists to mint tokens that verification rejects.
        """
        if _USER_ID.fullmatch(user_id) is None:
            raise ValueError(f"not a LINE user ID: {user_id!r}")
        issued = int(self.now())
        claims = IdTokenClaims(
            iss=issuer,
            sub=user_id,
            aud=client_id,
            exp=issued + expires_in,
            iat=issued,
            nonce=UNSET if nonce is None else nonce,
            amr=list(amr) if amr else UNSET,
            name=UNSET if name is None else name,
            picture=UNSET if picture is None else picture,
            email=UNSET if email is None else email,
        )
        header = _b64url(_encode(_JwtHeader(alg="HS256", typ="JWT")))
        signing_input = f"{header}.{_b64url(_encode(claims))}"
        return f"{signing_input}.{self._jwt_signature(signing_input)}"

    def _jwt_signature(self, signing_input: str) -> str:
        digest = hmac.new(self._id_token_secret, signing_input.encode(), hashlib.sha256).digest()
        return _b64url(digest)

    def _verify_id_token(
        self, id_token: str, *, client_id: str, nonce: str | None, user_id: str | None
    ) -> IdTokenClaims | str:
        """The claims, or LINE's error_description for why the token is refused."""
        parts = id_token.split(".")
        if len(parts) != 3 or not hmac.compare_digest(
            self._jwt_signature(f"{parts[0]}.{parts[1]}").encode(), parts[2].encode()
        ):
            return "Invalid IdToken."
        try:
            header = msgspec.json.decode(_b64url_decode(parts[0]), type=_JwtHeader)
            claims = msgspec.json.decode(_b64url_decode(parts[1]), type=IdTokenClaims)
        except (msgspec.DecodeError, ValueError):
            return "Invalid IdToken."
        if header.alg != "HS256":
            return "Invalid IdToken."
        if claims.iss != ID_TOKEN_ISSUER:
            return "Invalid IdToken Issuer."
        if claims.exp <= self.now():
            return "IdToken expired."
        if claims.aud != client_id:
            return "Invalid IdToken Audience."
        if nonce is not None and claims.nonce != nonce:
            return "Invalid IdToken Nonce."
        if user_id is not None and claims.sub != user_id:
            return "Invalid IdToken Subject Identifier."
        return claims

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

    async def _handle_pnp(self, request: web.Request) -> web.Response:
        return await self._handle_send(request, self._pnp)

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
        if endpoint.pnp:
            response = self._process_pnp(entry, request, raw)
        else:
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

        # LINE counts a request's message objects (up to five) as one message per recipient.
        delivered = len(parsed.messages) * recipients
        if self._monthly_quota is not None and self._usage + recipients > self._monthly_quota:
            self._quota_exceeded += 1
            return self._answer(entry, 429, _MONTHLY_LIMIT)
        self._usage += recipients
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

    # --- reply, LINE notification messages, followers, link tokens ---

    async def _read_body(self, request: web.Request, entry: _Entry) -> bytes | web.Response:
        """The body, or a 413 answer when it is over LINE's 2 MB."""
        length = request.content_length
        if length is not None and length > MAX_BODY_BYTES:
            return self._answer(entry, 413, _TOO_LARGE)
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._answer(entry, 413, _TOO_LARGE)
        entry.raw_body = raw
        return raw

    @staticmethod
    def _content_type_error(request: web.Request) -> bytes | None:
        content_type = request.headers.get("Content-Type", "")
        if content_type.partition(";")[0].strip().lower() == "application/json":
            return None
        return _encode(
            ErrorResponse(message=f"The content type, {content_type!r}, is not supported")
        )

    async def _handle_reply(self, request: web.Request) -> web.Response:
        entry = self._begin(request, REPLY_PATH)
        raw = await self._read_body(request, entry)
        if isinstance(raw, web.Response):
            return raw
        if self._authorized_token(request) is None:
            return self._answer(entry, 401, _UNAUTHORIZED)
        now = self.now()
        if self._reply.over_limit(now):
            self._rate_limited += 1
            return self._answer(entry, 429, _TOO_MANY_REQUESTS)
        if entry.retry_key is not None:
            return self._answer(entry, 400, _RETRY_KEY_NOT_SUPPORTED)
        unsupported = self._content_type_error(request)
        if unsupported is not None:
            return self._answer(entry, 400, unsupported)
        try:
            parsed = _REPLY_DECODER.decode(raw)
        except msgspec.ValidationError as error:
            return self._answer(entry, 400, _bad_request([_validation_detail(error)]))
        except msgspec.DecodeError as error:
            return self._answer(entry, 400, _parse_error(raw, error))
        details: list[ErrorDetail] = []
        _check_messages(parsed.messages, details)
        if details:
            return self._answer(entry, 400, _bad_request(details))
        token = self._reply_tokens.get(parsed.replyToken)
        if token is None or token.used or token.expires_at <= now:
            self._invalid_reply_tokens += 1
            return self._answer(entry, 400, _INVALID_REPLY_TOKEN)
        token.used = True
        entry.recipient = token.user_id
        self._accepted_replies += 1
        self._reply_messages += len(parsed.messages)
        sent = [self._sent_message(message) for message in parsed.messages]
        return self._answer(entry, 200, _encode(ReplyMessageResponse(sentMessages=sent)))

    def _process_pnp(self, entry: _Entry, request: web.Request, raw: bytes) -> web.Response:
        """LINE notification message: like a push, but to a phone hash and without retry keys."""
        if self._failures_left:
            self._failures_left -= 1
            self._injected_failures += 1
            return self._answer(entry, self._failure_status, self._failure_body)
        if self._authorized_token(request) is None:
            return self._answer(entry, 401, _UNAUTHORIZED)
        if self._pnp.over_limit(self.now()):
            self._rate_limited += 1
            return self._answer(entry, 429, _TOO_MANY_REQUESTS)
        if entry.retry_key is not None:
            return self._answer(entry, 400, _RETRY_KEY_NOT_SUPPORTED)
        tag = request.headers.get(DELIVERY_TAG_HEADER)
        if tag is not None and not MIN_DELIVERY_TAG <= len(tag) <= MAX_DELIVERY_TAG:
            return self._answer(entry, 400, _BAD_DELIVERY_TAG)
        unsupported = self._content_type_error(request)
        if unsupported is not None:
            return self._answer(entry, 400, unsupported)
        try:
            parsed = _PNP_DECODER.decode(raw)
        except msgspec.ValidationError as error:
            return self._answer(entry, 400, _bad_request([_validation_detail(error)]))
        except msgspec.DecodeError as error:
            return self._answer(entry, 400, _parse_error(raw, error))
        details = _check_pnp(parsed)
        if details:
            return self._answer(entry, 400, _bad_request(details))
        user_id = self._phones.get(parsed.to)
        if user_id is None:
            self._pnp_undeliverable += 1
            return self._answer(entry, 422, _PNP_UNDELIVERABLE)
        entry.recipient = user_id
        self._accepted_pnp += 1
        self._pnp_messages += len(parsed.messages)
        self._schedule_delivery(parsed.to if tag is None else tag)
        return self._answer(entry, 200, _MULTICAST_OK)

    # --- audiences (manage-audience.yml) ---

    async def _handle_audience_upload(self, request: web.Request) -> web.Response:
        """``POST`` creates an audience of uploaded user IDs, ``PUT`` adds to one; both 202.

        Each method has its own rate window, as LINE limits each endpoint apart.
        """
        entry = self._begin(request, AUDIENCE_UPLOAD_PATH)
        raw = await self._read_body(request, entry)
        if isinstance(raw, web.Response):
            return raw
        if self._authorized_token(request) is None:
            return self._answer(entry, 401, _UNAUTHORIZED)
        creating = request.method == "POST"
        limiter = self._audience_create if creating else self._audience_add
        if limiter.over_limit(self.now()):
            self._rate_limited += 1
            return self._answer(entry, 429, _AUDIENCE_RATE_LIMITED)
        if entry.retry_key is not None:
            return self._answer(entry, 400, _RETRY_KEY_NOT_SUPPORTED)
        unsupported = self._content_type_error(request)
        if unsupported is not None:
            return self._answer(entry, 400, unsupported)
        parsed: CreateAudienceGroupRequest | AddAudienceToAudienceGroupRequest
        try:
            if creating:
                parsed = _CREATE_AUDIENCE_DECODER.decode(raw)
            else:
                parsed = _ADD_AUDIENCE_DECODER.decode(raw)
        except msgspec.ValidationError as error:
            return self._answer(entry, 400, _bad_request([_validation_detail(error)]))
        except msgspec.DecodeError as error:
            return self._answer(entry, 400, _parse_error(raw, error))
        if isinstance(parsed, CreateAudienceGroupRequest):
            details = _check_create_audience(parsed)
            if details:
                return self._answer(entry, 400, _bad_request(details))
            assert isinstance(parsed.description, str)
            created = int(self.now())
            self._audience_group_seq += 1
            group = _AudienceGroupRecord(self._audience_group_seq, parsed.description, created)
            self._audience_groups[group.group_id] = group
            self._add_audience(group, parsed.audiences, parsed.uploadDescription)
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
            return self._answer(entry, 202, _encode(body))
        details = _check_add_audience(parsed)
        if details:
            return self._answer(entry, 400, _bad_request(details))
        assert isinstance(parsed.audienceGroupId, int)
        found = self._audience_groups.get(parsed.audienceGroupId)
        if found is None:
            return self._answer(entry, 400, _AUDIENCE_NOT_FOUND)
        self._add_audience(found, parsed.audiences, parsed.uploadDescription)
        return self._answer(entry, 202, _MULTICAST_OK)

    def _add_audience(
        self,
        group: _AudienceGroupRecord,
        audiences: list[Audience] | UnsetType,
        description: str | UnsetType,
    ) -> None:
        """Store an upload's user IDs (validated) as one finished job."""
        self._accepted_audience_uploads += 1
        if isinstance(audiences, UnsetType) or not audiences:
            return
        before = len(group.user_ids)
        group.user_ids.update(dict.fromkeys(str(entry.id) for entry in audiences))
        self._audience_job_seq += 1
        group.jobs.append(
            AudienceGroupJob(
                audienceGroupJobId=self._audience_job_seq,
                audienceGroupId=group.group_id,
                type="DIFF_ADD",
                jobStatus="FINISHED",
                audienceCount=len(group.user_ids) - before,
                created=int(self.now()),
                description=description,
            )
        )

    async def _handle_audience_group(self, request: web.Request) -> web.Response:
        """``GET /v2/bot/audienceGroup/{audienceGroupId}``: the group and its latest jobs."""
        entry = self._begin(request, request.path)
        refused = self._refuse_read(request, entry)
        if refused is not None:
            return refused
        raw_id = request.match_info["audienceGroupId"]
        if not (raw_id.isascii() and raw_id.isdigit()) or len(raw_id) > 19:
            return self._answer(entry, 400, _BAD_AUDIENCE_GROUP_ID)
        group = self._audience_groups.get(int(raw_id))
        if group is None:
            return self._answer(entry, 400, _AUDIENCE_NOT_FOUND)
        expires = group.created + AUDIENCE_LIFETIME_SECONDS
        data = GetAudienceDataResponse(
            audienceGroup=AudienceGroup(
                audienceGroupId=group.group_id,
                type="UPLOAD",
                description=group.description,
                status="EXPIRED" if self.now() >= expires else "READY",
                audienceCount=len(group.user_ids),
                created=group.created,
                isIfaAudience=False,
                permission="READ_WRITE",
                createRoute="MESSAGING_API",
                expireTimestamp=expires,
            ),
            jobs=group.jobs[-MAX_AUDIENCE_JOBS:],
        )
        return self._answer(entry, 200, _encode(data))

    async def _handle_followers(self, request: web.Request) -> web.Response:
        entry = self._begin(request, FOLLOWERS_PATH)
        refused = self._refuse_read(request, entry)
        if refused is not None:
            return refused
        query = request.query
        try:
            limit = int(query.get("limit", DEFAULT_FOLLOWERS_LIMIT))
        except ValueError:
            limit = -1
        if not 1 <= limit <= MAX_FOLLOWERS_LIMIT:
            detail = ErrorDetail(
                message=f"Must be between 1 and {MAX_FOLLOWERS_LIMIT}", property="limit"
            )
            body = _encode(ErrorResponse(message="The request has 1 error(s)", details=[detail]))
            return self._answer(entry, 400, body)
        start = query.get("start")
        if start is None:
            # A page sequence walks one snapshot, so follows and unfollows during the
            # walk neither repeat nor skip anyone.
            user_ids, offset = tuple(self._followers), 0
        else:
            cursor = self._follower_cursors.get(start)
            if cursor is None:
                body = _encode(ErrorResponse(message="The continuation token is invalid"))
                return self._answer(entry, 400, body)
            user_ids, offset = cursor
        end = min(offset + limit, len(user_ids))
        page = GetFollowersResponse(userIds=list(user_ids[offset:end]))
        if end < len(user_ids):
            token = secrets.token_urlsafe(24)
            self._follower_cursors[token] = (user_ids, end)
            while len(self._follower_cursors) > MAX_FOLLOWER_CURSORS:
                self._follower_cursors.popitem(last=False)
            page.next = token
        return self._answer(entry, 200, _encode(page))

    async def _handle_link_token(self, request: web.Request) -> web.Response:
        entry = self._begin(request, request.path)
        refused = self._refuse_read(request, entry)
        if refused is not None:
            return refused
        user_id = request.match_info["userId"]
        if _USER_ID.fullmatch(user_id) is None:
            body = _encode(ErrorResponse(message="The value for the 'userId' parameter is invalid"))
            return self._answer(entry, 400, body)
        now = self.now()
        if len(self._link_tokens) > 1000:
            self._link_tokens = {
                key: token for key, token in self._link_tokens.items() if token.expires_at > now
            }
        link_token = _random_token(32)
        self._link_tokens[link_token] = _ExpiringToken(user_id, now + LINK_TOKEN_TTL_SECONDS)
        entry.recipient = user_id
        return self._answer(entry, 200, _encode(IssueLinkTokenResponse(linkToken=link_token)))

    async def _handle_account_link_dialog(self, request: web.Request) -> web.Response:
        """What LINE does once the user confirms on the account-link page.

        The event is sent before the page is answered, so a test that opened the
        page knows the bot has already been told.
        """
        entry = self._begin(request, ACCOUNT_LINK_DIALOG_PATH)
        link_token = request.query.get("linkToken", "")
        nonce = request.query.get("nonce", "")
        if not link_token or not nonce:
            page = _html_page("Bad request", "linkToken and nonce are required.")
            return self._answer_html(entry, 400, page)
        record = self._link_tokens.get(link_token)
        now = self.now()
        ok = record is not None and not record.used and record.expires_at > now
        user_id: str | None = None
        if record is not None:
            record.used = True
            user_id = record.user_id
        else:
            # An unknown token says nothing of who opened the page; a test may say.
            named = request.query.get("userId")
            if named is not None and _USER_ID.fullmatch(named) is not None:
                user_id = named
        entry.recipient = user_id
        if self._webhook_url is not None and self._channel_secret is not None:
            await self._send([self.account_link_event(user_id, nonce, ok=ok)], forged=False)
        if ok:
            page = _html_page("Account linked", "Your LINE account has been linked.")
        else:
            page = _html_page("Account linking failed", "The link is invalid, used or expired.")
        return self._answer_html(entry, 200, page)

    async def _handle_verify_id_token(self, request: web.Request) -> web.Response:
        """LINE Login's ``POST /oauth2/v2.1/verify``: form-encoded, no bearer token."""
        entry = self._begin(request, VERIFY_ID_TOKEN_PATH)
        form = await request.post()
        values = {
            name: value
            for name in ("id_token", "client_id", "nonce", "user_id")
            if isinstance(value := form.get(name), str) and value
        }
        if "id_token" not in values or "client_id" not in values:
            missing = "id_token" if "id_token" not in values else "client_id"
            error = LoginErrorResponse(
                error="invalid_request", error_description=f"{missing} is required."
            )
            return self._answer(entry, 400, _encode(error))
        claims = self._verify_id_token(
            values["id_token"],
            client_id=values["client_id"],
            nonce=values.get("nonce"),
            user_id=values.get("user_id"),
        )
        if isinstance(claims, str):
            error = LoginErrorResponse(error="invalid_request", error_description=claims)
            return self._answer(entry, 400, _encode(error))
        entry.recipient = claims.sub
        return self._answer(entry, 200, _encode(claims))

    def _answer_html(self, entry: _Entry, status: int, page: str) -> web.Response:
        entry.status = status
        self._by_status[status] = self._by_status.get(status, 0) + 1
        headers = {"Content-Type": "text/html; charset=utf-8", REQUEST_ID_HEADER: entry.request_id}
        return web.Response(status=status, body=page.encode(), headers=headers)

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

    async def _control_body(self, request: web.Request, kind: type[_T]) -> _T | web.Response:
        try:
            return msgspec.json.decode(await request.read(), type=kind)
        except msgspec.DecodeError as error:
            return self._control_json(ErrorResponse(message=str(error)), 400)

    async def _control_webhook(self, request: web.Request) -> web.Response:
        config = await self._control_body(request, WebhookConfig)
        if isinstance(config, web.Response):
            return config
        self.set_webhook(config.url, config.channel_secret)
        state = WebhookState(
            url=self._webhook_url,
            destination=self._bot_user_id,
            signed=self._channel_secret is not None,
        )
        return self._control_json(state)

    async def _control_webhooks(self, request: web.Request) -> web.Response:
        return self._control_json(self.sent_webhooks)

    async def _control_drain(self, request: web.Request) -> web.Response:
        await self.drain_webhooks()
        return self._control_json(self.sent_webhooks)

    async def _control_event(self, request: web.Request) -> web.Response:
        """``POST /__simulator/events/{follow,unfollow,message,accountLink,delivery,redeliver}``."""
        kind = request.match_info["kind"]
        parsed: Any
        if kind == "follow":
            parsed = await self._control_body(request, _FollowRequest)
        elif kind == "unfollow":
            parsed = await self._control_body(request, _UserEventRequest)
        elif kind == "message":
            parsed = await self._control_body(request, _MessageRequest)
        elif kind == "accountLink":
            parsed = await self._control_body(request, _AccountLinkRequest)
        elif kind == "delivery":
            parsed = await self._control_body(request, _DeliveryRequest)
        elif kind == "redeliver":
            parsed = await self._control_body(request, _RedeliverRequest)
        else:
            return self._control_json(ErrorResponse(message=f"unknown event kind {kind!r}"), 404)
        if isinstance(parsed, web.Response):
            return parsed
        try:
            self._webhook_target()
        except RuntimeError as error:
            return self._control_json(ErrorResponse(message=str(error)), 409)
        forge = parsed.forge_signature
        if isinstance(parsed, _FollowRequest):
            status = await self.follow(
                parsed.user_id, is_unblocked=parsed.is_unblocked, forge_signature=forge
            )
        elif isinstance(parsed, _UserEventRequest):
            status = await self.unfollow(parsed.user_id, forge_signature=forge)
        elif isinstance(parsed, _MessageRequest):
            status = await self.message(parsed.user_id, parsed.text, forge_signature=forge)
        elif isinstance(parsed, _AccountLinkRequest):
            status = await self.account_link(
                parsed.user_id, parsed.nonce, ok=parsed.ok, forge_signature=forge
            )
        elif isinstance(parsed, _DeliveryRequest):
            status = await self.delivery(parsed.data, forge_signature=forge)
        else:
            try:
                status = await self.redeliver(parsed.webhook_event_id, forge_signature=forge)
            except KeyError as error:
                return self._control_json(ErrorResponse(message=str(error.args[0])), 404)
        return self._control_json(EventSent(status=status, webhook=self._sent_webhooks[-1]))

    async def _control_followers(self, request: web.Request) -> web.Response:
        parsed = await self._control_body(request, _FollowersRequest)
        if isinstance(parsed, web.Response):
            return parsed
        self.set_followers(parsed.user_ids)
        return self._control_json(FollowersState(followers=self.followers))

    async def _control_phones(self, request: web.Request) -> web.Response:
        parsed = await self._control_body(request, _PhonesRequest)
        if isinstance(parsed, web.Response):
            return parsed
        hashes = {
            entry.phone: self.register_phone(entry.phone, entry.user_id) for entry in parsed.phones
        }
        return self._control_json(PhonesState(hashes=hashes))

    async def _control_audience_groups(self, request: web.Request) -> web.Response:
        return self._control_json(self.audience_groups)

    async def _control_id_tokens(self, request: web.Request) -> web.Response:
        parsed = await self._control_body(request, _IdTokenRequest)
        if isinstance(parsed, web.Response):
            return parsed
        id_token = self.mint_id_token(
            parsed.user_id,
            client_id=parsed.client_id,
            nonce=parsed.nonce,
            name=parsed.name,
            picture=parsed.picture,
            email=parsed.email,
            expires_in=parsed.expires_in,
            amr=parsed.amr,
        )
        return self._control_json(IdTokenState(id_token=id_token))


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
    channel_secret: str | None = None,
    webhook_url: str | None = None,
) -> None:
    """Serve on ``listen`` (``HOST:PORT``) until SIGINT or SIGTERM.

    Prints one line with the base URL once listening, so a parent process
    started with port 0 can learn the port.  Webhooks can also be wired up
    later through ``POST /__simulator/webhook``.
    """
    host, port = parse_listen(listen)
    simulator = LineSimulator(
        access_tokens=access_tokens,
        push_rate_per_second=push_rate_per_second,
        multicast_rate_per_second=multicast_rate_per_second,
        monthly_quota=monthly_quota,
        channel_secret=channel_secret,
        webhook_url=webhook_url,
    )
    with asyncio.Runner(loop_factory=_fast_loop_factory()) as runner:
        runner.run(_serve_until_signalled(simulator, host, port))
