"""A local stand-in for the LINE Messaging API, for tests, benchmarks and the quick start.

LINE offers no sandbox, so the router's tests and benchmarks run the real ``line-bot-sdk``
against this HTTP server instead.  It implements the parts of the Messaging API the router
uses (push, multicast, reply, quota, follower IDs, link tokens, LINE notification messages
by phone number, audiences of uploaded user IDs, the webhook URL: set, read, test) with the documented behaviour that matters
for durable delivery: bearer authentication, request validation, ``X-Line-Retry-Key``
de-duplication, rate limits, the monthly message quota, the 2 MB body limit and an
``X-Line-Request-Id`` on every response.  Shapes follow LINE's OpenAPI files
``messaging-api.yml``, ``manage-audience.yml`` and ``webhook.yml``.

LINE also calls the bot: the simulator sends signed webhook events (follow, unfollow,
message, accountLink, delivery) to a configured URL, stands in for the account-link dialog
on ``access.line.me`` and for LINE Login's ID token verification endpoint, so the identity
features can be tested end to end.  A control API under ``/__simulator/`` (and the
matching methods on :class:`LineSimulator`) lets a test inspect what was received, trigger
webhook events and inject faults: failures, slow responses, tighter limits and a movable
clock.

Like LINE at one base URL, it serves several channels (Official Accounts): each API request
acts on the channel its bearer token belongs to, with that channel's own followers, quota,
retry keys, rate limits, faults and webhook secret; a user ID one provider's channel knows
names nobody under another provider's (``LineSimulator.add_channel``, ``?channel=NAME``).

The package imports nothing from ``router`` or ``channels``: it is written from LINE's
documentation, so it stays an independent check of the code that talks to LINE.
"""

from linesim.accounts import hash_phone_number
from linesim.app import DEFAULT_CHANNEL, LineSimulator
from linesim.audiences import (
    AddAudienceToAudienceGroupRequest,
    Audience,
    AudienceGroup,
    AudienceGroupJob,
    AudienceGroupState,
    CreateAudienceGroupRequest,
    CreateAudienceGroupResponse,
    GetAudienceDataResponse,
)
from linesim.channel import LineChannel
from linesim.control import ChannelConfig, ChannelState
from linesim.events import (
    AccountLinkEvent,
    CallbackRequest,
    DeliveryContext,
    DeliveryEvent,
    FollowDetail,
    FollowEvent,
    LinkContent,
    MessageEvent,
    PnpDelivery,
    TextMessageContent,
    UnfollowEvent,
    UserSource,
    WebhookEvent,
)
from linesim.exchange import ReceivedRequest, SendHook
from linesim.faults import (
    AudienceLimit,
    DelayNext,
    FailNext,
    FaultRates,
    FaultsRequest,
    PnpDeliveryFault,
    RateLimits,
    parse_fault_rates,
)
from linesim.limits import (
    AUDIENCE_LIFETIME_SECONDS,
    ID_TOKEN_TTL_SECONDS,
    LINK_TOKEN_TTL_SECONDS,
    MAX_AUDIENCE_DESCRIPTION,
    MAX_AUDIENCE_IDS,
    MAX_BODY_BYTES,
    REPLY_TOKEN_TTL_SECONDS,
    RETRY_KEY_TTL_SECONDS,
)
from linesim.login import ID_TOKEN_ISSUER, IdTokenClaims, LoginErrorResponse
from linesim.narrowcast import (
    MIN_AUDIENCE_SIZE,
    NarrowcastProgressResponse,
    NarrowcastRequest,
    NarrowcastState,
)
from linesim.paths import (
    ACCOUNT_LINK_DIALOG_PATH,
    AUDIENCE_GROUP_PATH,
    AUDIENCE_UPLOAD_PATH,
    CONSUMPTION_PATH,
    CONTROL_PREFIX,
    DELIVERY_TAG_HEADER,
    FOLLOWERS_PATH,
    MULTICAST_PATH,
    NARROWCAST_PATH,
    NARROWCAST_PROGRESS_PATH,
    PNP_PATH,
    PUSH_PATH,
    QUOTA_COUNTED_PATHS,
    QUOTA_PATH,
    REPLY_PATH,
    SIGNATURE_HEADER,
    VERIFY_ID_TOKEN_PATH,
)
from linesim.schemas import (
    ErrorDetail,
    ErrorResponse,
    GetFollowersResponse,
    IssueLinkTokenResponse,
    MessageQuotaResponse,
    MulticastRequest,
    PnpMessagesRequest,
    PushMessageRequest,
    PushMessageResponse,
    QuotaConsumptionResponse,
    ReplyMessageRequest,
    ReplyMessageResponse,
    SentMessage,
)
from linesim.serve import ChannelSpec, parse_channel, parse_listen, run
from linesim.stats import SimulatorStats
from linesim.validation import utf16_length
from linesim.webhooks import SentWebhook

__all__ = [
    "ACCOUNT_LINK_DIALOG_PATH",
    "AUDIENCE_GROUP_PATH",
    "AUDIENCE_LIFETIME_SECONDS",
    "AUDIENCE_UPLOAD_PATH",
    "CONSUMPTION_PATH",
    "CONTROL_PREFIX",
    "DEFAULT_CHANNEL",
    "DELIVERY_TAG_HEADER",
    "FOLLOWERS_PATH",
    "ID_TOKEN_ISSUER",
    "ID_TOKEN_TTL_SECONDS",
    "LINK_TOKEN_TTL_SECONDS",
    "MAX_AUDIENCE_DESCRIPTION",
    "MAX_AUDIENCE_IDS",
    "MAX_BODY_BYTES",
    "MIN_AUDIENCE_SIZE",
    "MULTICAST_PATH",
    "NARROWCAST_PATH",
    "NARROWCAST_PROGRESS_PATH",
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
    "ChannelConfig",
    "ChannelSpec",
    "ChannelState",
    "CreateAudienceGroupRequest",
    "CreateAudienceGroupResponse",
    "DelayNext",
    "DeliveryContext",
    "DeliveryEvent",
    "ErrorDetail",
    "ErrorResponse",
    "FailNext",
    "FaultRates",
    "FaultsRequest",
    "FollowDetail",
    "FollowEvent",
    "GetAudienceDataResponse",
    "GetFollowersResponse",
    "IdTokenClaims",
    "IssueLinkTokenResponse",
    "LineChannel",
    "LineSimulator",
    "LinkContent",
    "LoginErrorResponse",
    "MessageEvent",
    "MessageQuotaResponse",
    "MulticastRequest",
    "NarrowcastProgressResponse",
    "NarrowcastRequest",
    "NarrowcastState",
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
    "SendHook",
    "SentMessage",
    "SentWebhook",
    "SimulatorStats",
    "TextMessageContent",
    "UnfollowEvent",
    "UserSource",
    "WebhookEvent",
    "hash_phone_number",
    "parse_channel",
    "parse_fault_rates",
    "parse_listen",
    "run",
    "utf16_length",
]
