"""Webhook events (``webhook.yml``): what LINE tells the bot happened, ready to be sent.

Events are built as LINE builds them: a ULID ``webhookEventId``, the time in milliseconds,
``deliveryContext.isRedelivery`` false, and, where LINE gives one, a fresh reply token the
bot can spend once within a minute on ``POST /v2/bot/message/reply``.  Building is apart
from sending (``webhooks.py``) so a test can make events, alter them, and send them in any
combination.
"""

from __future__ import annotations

import secrets
from typing import Final, Literal, TypedDict

import msgspec
from msgspec import UNSET, UnsetType

from linesim.state import SimState
from linesim.validation import USER_ID

_CROCKFORD: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


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


class _EventCommon(TypedDict):
    source: UserSource | UnsetType
    timestamp: int
    webhookEventId: str
    deliveryContext: DeliveryContext


def _ulid(now: float) -> str:
    """A ULID, as LINE's webhookEventId is: 48-bit milliseconds, 80 random bits."""
    value = (int(now * 1000) & (2**48 - 1)) << 80 | secrets.randbits(80)
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


class Events:
    """Builds events on the shared clock, reply tokens and message ids."""

    def __init__(self, state: SimState) -> None:
        self._state = state

    def _common(self, user_id: str | None) -> tuple[_EventCommon, float]:
        """The properties every event has, and the time it happened."""
        if user_id is not None and USER_ID.fullmatch(user_id) is None:
            raise ValueError(f"not a LINE user ID: {user_id!r}")
        now = self._state.clock.now()
        common = _EventCommon(
            source=UNSET if user_id is None else UserSource(userId=user_id),
            timestamp=int(now * 1000),
            webhookEventId=_ulid(now),
            deliveryContext=DeliveryContext(isRedelivery=False),
        )
        return common, now

    def follow_event(self, user_id: str, *, is_unblocked: bool = False) -> FollowEvent:
        """A follow event with a fresh reply token; sending it is up to the caller."""
        common, now = self._common(user_id)
        reply_token = self._state.reply_tokens.mint(user_id, now)
        return FollowEvent(
            **common, replyToken=reply_token, follow=FollowDetail(isUnblocked=is_unblocked)
        )

    def unfollow_event(self, user_id: str) -> UnfollowEvent:
        """An unfollow event: no reply token, the user has blocked the bot."""
        return UnfollowEvent(**self._common(user_id)[0])

    def message_event(self, user_id: str, text: str) -> MessageEvent:
        """A text message from ``user_id``, with a fresh reply token."""
        common, now = self._common(user_id)
        message_id, quote_token = self._state.message_ids.next()
        content = TextMessageContent(id=message_id, text=text, quoteToken=quote_token)
        reply_token = self._state.reply_tokens.mint(user_id, now)
        return MessageEvent(**common, replyToken=reply_token, message=content)

    def account_link_event(
        self, user_id: str | None, nonce: str, *, ok: bool = True
    ) -> AccountLinkEvent:
        """An accountLink event; only a successful one carries a reply token."""
        common, now = self._common(user_id)
        reply_token: str | UnsetType = UNSET
        if ok and user_id is not None:
            reply_token = self._state.reply_tokens.mint(user_id, now)
        link = LinkContent(result="ok" if ok else "failed", nonce=nonce)
        return AccountLinkEvent(**common, link=link, replyToken=reply_token)

    def delivery_event(self, data: str) -> DeliveryEvent:
        """A delivery completion event.

        LINE's event table for it lists no ``source``: the phone number's owner
        stays unknown to the bot, so none is sent.
        """
        return DeliveryEvent(**self._common(None)[0], delivery=PnpDelivery(data=data))
