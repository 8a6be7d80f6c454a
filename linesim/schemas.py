"""The Messaging API's own wire shapes: message objects, send requests and their answers.

Names and fields are those of ``components/schemas`` in LINE's ``messaging-api.yml``, so the
simulator decodes what the real SDK sends with the same strictness LINE applies, and answers
with bodies the SDK's models accept.  Sizes and id formats are checked after decoding
(``validation.py``, ``messages.py``), where LINE's error wording can be reproduced.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec
from msgspec import UNSET, UnsetType


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
MESSAGE_TYPES: Final = (
    "text, textV2, sticker, image, video, audio, location, imagemap, template, flex, coupon"
)
# Types that may be quoted later, so LINE returns a quoteToken for them.
QUOTABLE: Final = (TextMessage, TextMessageV2, StickerMessage)
WITH_ALT_TEXT: Final = (FlexMessage, TemplateMessage, ImagemapMessage)


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


encode = msgspec.json.Encoder().encode
