"""Sending messages: push, multicast, reply and LINE notification messages (PNP).

These are the endpoints durable delivery depends on, so they behave as LINE documents it:
an ``X-Line-Retry-Key`` accepted once makes a repeat answer 409 with the original request id
(and, for a push, the original ``sentMessages``) for 24 hours; each endpoint has its own
per-second rate limit; push and multicast use the monthly quota, one message per recipient;
a reply needs a live reply token; a notification message goes to the LINE user behind a
hashed phone number, or is answered 422, and is later confirmed by a delivery event.  A push
or multicast naming a user ID of another provider's channel is refused 400 (``users``).
Message objects are checked as LINE checks them: count, text and altText lengths, and the
whole tree against LINE's schemas (``message_rules``).
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Callable, Iterable
from functools import partial
from typing import Final

import msgspec
from aiohttp import web
from msgspec import UNSET

from linesim.exchange import Entry, Exchange, Step
from linesim.faults import Faults
from linesim.insight import AggregationUnits, check_units
from linesim.limits import (
    MAX_ALT_TEXT_UTF16,
    MAX_DELIVERY_TAG,
    MAX_MESSAGES,
    MAX_MULTICAST_RECIPIENTS,
    MAX_TEXT_UTF16,
    MIN_DELIVERY_TAG,
    RETRY_KEY_TTL_SECONDS,
    PerSecondLimit,
)
from linesim.message_rules import check_message
from linesim.paths import (
    DELIVERY_TAG_HEADER,
    MULTICAST_PATH,
    PNP_PATH,
    PUSH_PATH,
    REPLY_PATH,
    RETRY_KEY_HEADER,
)
from linesim.schemas import (
    QUOTABLE,
    WITH_ALT_TEXT,
    ErrorDetail,
    ErrorResponse,
    Message,
    MulticastRequest,
    PnpMessagesRequest,
    PushMessageRequest,
    PushMessageResponse,
    ReplyMessageRequest,
    ReplyMessageResponse,
    SentMessage,
    TextMessage,
    TextMessageV2,
    encode,
)
from linesim.state import SimState
from linesim.validation import EMPTY_OBJECT, USER_ID, Refusal, check_length, check_size
from linesim.webhooks import Webhooks

_PUSH_TARGET_ID: Final = re.compile(r"[UCR][0-9a-f]{32}")
_UUID: Final = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_PHONE_HASH: Final = re.compile(r"[0-9a-f]{64}")

_PUSH_DECODER: Final = msgspec.json.Decoder(PushMessageRequest)
_MULTICAST_DECODER: Final = msgspec.json.Decoder(MulticastRequest)
_REPLY_DECODER: Final = msgspec.json.Decoder(ReplyMessageRequest)
_PNP_DECODER: Final = msgspec.json.Decoder(PnpMessagesRequest)

_MONTHLY_LIMIT: Final = encode(ErrorResponse(message="You have reached your monthly limit."))
_RETRY_KEY_ACCEPTED: Final = "The retry key is already accepted"
_BAD_RETRY_KEY: Final = encode(
    ErrorResponse(
        message="The retry key is invalid",
        details=[
            ErrorDetail(message="Must be a UUID in hexadecimal format", property=RETRY_KEY_HEADER)
        ],
    )
)
# LINE's answer to a send naming a user ID that is not a user of the channel's provider
# (a user ID of another provider, as LINE gives each provider its own IDs for one person).
_FOREIGN_USER: Final = encode(
    ErrorResponse(message="The property, 'to', in the request body is invalid (line: -, column: -)")
)
_INVALID_REPLY_TOKEN: Final = encode(ErrorResponse(message="Invalid reply token"))
# LINE's error message for a message that could not be sent; a phone number with no
# LINE user behind it is answered 422 with it.
_PNP_UNDELIVERABLE: Final = encode(ErrorResponse(message="Failed to send messages"))
_BAD_DELIVERY_TAG: Final = encode(
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

RetryKey = tuple[str, str, str]  # path, access token, lower-case key


class _MessageTrees(msgspec.Struct):
    """A send request's message objects as parsed JSON, for the walk over LINE's schemas."""

    messages: list[object]


_TREES_DECODER: Final = msgspec.json.Decoder(_MessageTrees)


def check_messages(
    messages: list[Message], details: list[ErrorDetail], raw: bytes
) -> list[ErrorDetail]:
    check_size(details, len(messages), 1, MAX_MESSAGES, "messages")
    for index, message in enumerate(messages):
        if isinstance(message, TextMessage | TextMessageV2):
            check_length(details, message.text, MAX_TEXT_UTF16, f"messages[{index}].text")
        elif isinstance(message, WITH_ALT_TEXT):
            check_length(details, message.altText, MAX_ALT_TEXT_UTF16, f"messages[{index}].altText")
    for index, tree in enumerate(_TREES_DECODER.decode(raw).messages):
        details.extend(check_message(tree, f"messages[{index}]"))
    return details


def _check_push(request: PushMessageRequest, raw: bytes) -> list[ErrorDetail]:
    details: list[ErrorDetail] = []
    if _PUSH_TARGET_ID.fullmatch(request.to) is None:
        details.append(ErrorDetail(message="Must be a valid user, group or room ID", property="to"))
    check_units(request.customAggregationUnits, details)
    return check_messages(request.messages, details, raw)


def _check_multicast(request: MulticastRequest, raw: bytes) -> list[ErrorDetail]:
    details: list[ErrorDetail] = []
    check_size(details, len(request.to), 1, MAX_MULTICAST_RECIPIENTS, "to")
    for index, user_id in enumerate(request.to):
        if USER_ID.fullmatch(user_id) is None:
            details.append(ErrorDetail(message="Must be a valid user ID", property=f"to[{index}]"))
    check_units(request.customAggregationUnits, details)
    return check_messages(request.messages, details, raw)


def _check_reply(request: ReplyMessageRequest, raw: bytes) -> list[ErrorDetail]:
    return check_messages(request.messages, [], raw)


def _check_pnp(request: PnpMessagesRequest, raw: bytes) -> list[ErrorDetail]:
    details: list[ErrorDetail] = []
    if _PHONE_HASH.fullmatch(request.to) is None:
        details.append(
            ErrorDetail(
                message="Must be a SHA-256 hash of an E.164 phone number in lower-case hex",
                property="to",
            )
        )
    return check_messages(request.messages, details, raw)


class _Accepted(msgspec.Struct, gc=False):
    """An accepted retry key: who accepted it, until when, and what a repeat is told.

    ``sent`` is the push's sentMessages (None for multicast, whose 409 has none).
    """

    key: RetryKey
    expires_at: float
    request_id: str
    sent: list[SentMessage] | None


class RetryKeys:
    """Retry keys accepted in the last 24 hours, bounded to ``max_keys`` (oldest go first)."""

    def __init__(self, max_keys: int) -> None:
        self._max_keys = max_keys
        self._keys: dict[RetryKey, _Accepted] = {}
        self._order: deque[_Accepted] = deque()

    def __len__(self) -> int:
        return len(self._keys)

    def clear(self) -> None:
        self._keys.clear()
        self._order.clear()

    def find(self, key: RetryKey, now: float) -> _Accepted | None:
        accepted = self._keys.get(key)
        return accepted if accepted is not None and accepted.expires_at > now else None

    def remember(
        self, key: RetryKey, now: float, request_id: str, sent: list[SentMessage] | None
    ) -> None:
        accepted = _Accepted(key, now + RETRY_KEY_TTL_SECONDS, request_id, sent)
        self._keys[key] = accepted
        self._order.append(accepted)
        self.prune(now)

    def prune(self, now: float) -> None:
        """Drop expired keys, oldest first; past ``max_keys`` the oldest go early."""
        order = self._order
        keys = self._keys
        while order:
            oldest = order[0]
            if oldest.expires_at > now and len(keys) <= self._max_keys:
                break
            order.popleft()
            if keys.get(oldest.key) is oldest:
                del keys[oldest.key]


Accept = Callable[[web.Request, Entry, bytes], web.Response]


class Messages:
    """The four send endpoints, their rate limits and the retry-key memory."""

    def __init__(
        self,
        state: SimState,
        exchange: Exchange,
        faults: Faults,
        webhooks: Webhooks,
        units: AggregationUnits,
        *,
        push_rate: int,
        multicast_rate: int,
        reply_rate: int,
        pnp_rate: int,
        max_retry_keys: int,
        every_phone_reachable: bool = False,
    ) -> None:
        self._state = state
        self._every_phone_reachable = every_phone_reachable
        self._exchange = exchange
        self._faults = faults
        self._webhooks = webhooks
        self._units = units
        self.push_limit = PerSecondLimit(push_rate)
        self.multicast_limit = PerSecondLimit(multicast_rate)
        self.reply_limit = PerSecondLimit(reply_rate)
        self.pnp_limit = PerSecondLimit(pnp_rate)
        self.retry_keys = RetryKeys(max_retry_keys)

    def routes(self) -> list[web.RouteDef]:
        handler = self._exchange.handler
        return [
            web.post(PUSH_PATH, handler(PUSH_PATH, self.held(self._accept_push))),
            web.post(MULTICAST_PATH, handler(MULTICAST_PATH, self.held(self._accept_multicast))),
            web.post(REPLY_PATH, handler(REPLY_PATH, self._reply)),
            web.post(PNP_PATH, handler(PNP_PATH, self.held(self._accept_pnp))),
        ]

    def reset(self) -> None:
        """Forget retry keys; back to the initial rate limits."""
        self.retry_keys.clear()
        for limit in self._limits():
            limit.reset()

    def _limits(self) -> tuple[PerSecondLimit, ...]:
        return (self.push_limit, self.multicast_limit, self.reply_limit, self.pnp_limit)

    def set_rate_limits(
        self,
        *,
        push: int | None = None,
        multicast: int | None = None,
        reply: int | None = None,
        pnp: int | None = None,
    ) -> None:
        """Set requests per second per endpoint; None leaves an endpoint unchanged."""
        values = (push, multicast, reply, pnp)
        if any(value is not None and value < 0 for value in values):
            raise ValueError("rate limits must be >= 0")
        for limit, value in zip(self._limits(), values, strict=True):
            if value is not None:
                limit.limit = value

    def held(self, accept: Accept) -> Step:
        """A send step: read the body, then ``accept`` it as late as a pending fault says.

        A fault's delay holds the answer back whatever it is, refusals included; a fault
        drawn at its rate refuses the request unexecuted or holds back an executed one's answer.
        """

        async def step(request: web.Request, entry: Entry) -> web.Response:
            raw = await self._exchange.read_body(request, entry)
            delay = await self._faults.hold()
            try:
                delay += self._faults.draw()
                response = accept(request, entry, raw)
            except Refusal as refusal:
                response = self._exchange.refuse(entry, refusal)
            if delay:
                await asyncio.sleep(delay)
            return response

        return step

    # Push and multicast run from the injected failure to the answer with no await in
    # between, which makes the retry-key check and its registration atomic.

    def _accept_push(self, request: web.Request, entry: Entry, raw: bytes) -> web.Response:
        now, retry_key = self._admit_send(request, entry, self.push_limit)
        parsed = self._exchange.decode(request, raw, _PUSH_DECODER, partial(_check_push, raw=raw))
        self._refuse_foreign((parsed.to,))
        self._use_quota(len(parsed.messages), recipients=1)
        self._state.counters.accepted_pushes += 1
        self._units.record(parsed.customAggregationUnits, [parsed.to], len(parsed.messages))
        sent = [self._sent_message(message) for message in parsed.messages]
        if retry_key is not None:
            self.retry_keys.remember(retry_key, now, entry.request_id, sent)
        return self._exchange.answer(entry, 200, encode(PushMessageResponse(sentMessages=sent)))

    def _accept_multicast(self, request: web.Request, entry: Entry, raw: bytes) -> web.Response:
        now, retry_key = self._admit_send(request, entry, self.multicast_limit)
        parsed = self._exchange.decode(
            request, raw, _MULTICAST_DECODER, partial(_check_multicast, raw=raw)
        )
        self._refuse_foreign(parsed.to)
        self._use_quota(len(parsed.messages), recipients=len(parsed.to))
        self._state.counters.accepted_multicasts += 1
        self._units.record(parsed.customAggregationUnits, parsed.to, len(parsed.messages))
        if retry_key is not None:
            self.retry_keys.remember(retry_key, now, entry.request_id, None)
        return self._exchange.answer(entry, 200, EMPTY_OBJECT)

    def _admit_send(
        self, request: web.Request, entry: Entry, limit: PerSecondLimit
    ) -> tuple[float, RetryKey | None]:
        """Injected failure, token, rate limit, retry key: the time and the key to remember."""
        self._faults.raise_injected_failure()
        now = self._state.clock.now()
        token = self._exchange.admit(request, limit, now)
        if entry.retry_key is None:
            return now, None
        if _UUID.fullmatch(entry.retry_key) is None:
            raise Refusal(400, _BAD_RETRY_KEY)
        key = (entry.path, token, entry.retry_key.lower())
        accepted = self.retry_keys.find(key, now)
        if accepted is not None:
            self._state.counters.conflicts += 1
            conflict = ErrorResponse(
                message=_RETRY_KEY_ACCEPTED,
                sentMessages=UNSET if accepted.sent is None else accepted.sent,
            )
            raise Refusal(409, encode(conflict), accepted.request_id)
        return now, key

    def _refuse_foreign(self, user_ids: Iterable[str]) -> None:
        """A send to another provider's user ID is refused whole, as LINE refuses an ID that
        names nobody under the channel; nothing of it is sent or counted."""
        users = self._state.users
        if any(users.foreign(user_id) for user_id in user_ids):
            self._state.counters.foreign_recipients += 1
            raise Refusal(400, _FOREIGN_USER)

    def _use_quota(self, messages: int, *, recipients: int) -> None:
        """LINE counts a request's message objects (up to five) as one message per recipient."""
        quota = self._state.quota
        counters = self._state.counters
        if not quota.allows(recipients):
            counters.quota_exceeded += 1
            raise Refusal(429, _MONTHLY_LIMIT)
        quota.usage += recipients
        counters.accepted_messages += messages * recipients

    def _sent_message(self, message: Message) -> SentMessage:
        message_id, quote_token = self._state.message_ids.next()
        if isinstance(message, QUOTABLE):
            return SentMessage(id=message_id, quoteToken=quote_token)
        return SentMessage(id=message_id)

    async def _reply(self, request: web.Request, entry: Entry) -> web.Response:
        exchange = self._exchange
        raw = await exchange.read_body(request, entry)
        now = self._state.clock.now()
        exchange.admit(request, self.reply_limit, now)
        exchange.refuse_retry_key(entry)
        parsed = exchange.decode(request, raw, _REPLY_DECODER, partial(_check_reply, raw=raw))
        counters = self._state.counters
        user_id = self._state.reply_tokens.spend(parsed.replyToken, now)
        if user_id is None:
            counters.invalid_reply_tokens += 1
            raise Refusal(400, _INVALID_REPLY_TOKEN)
        entry.recipient = user_id
        counters.accepted_replies += 1
        counters.reply_messages += len(parsed.messages)
        sent = [self._sent_message(message) for message in parsed.messages]
        return exchange.answer(entry, 200, encode(ReplyMessageResponse(sentMessages=sent)))

    def _accept_pnp(self, request: web.Request, entry: Entry, raw: bytes) -> web.Response:
        """LINE notification message: like a push, but to a phone hash and without retry keys."""
        exchange = self._exchange
        self._faults.raise_injected_failure()
        exchange.admit(request, self.pnp_limit, self._state.clock.now())
        exchange.refuse_retry_key(entry)
        tag = request.headers.get(DELIVERY_TAG_HEADER)
        if tag is not None and not MIN_DELIVERY_TAG <= len(tag) <= MAX_DELIVERY_TAG:
            raise Refusal(400, _BAD_DELIVERY_TAG)
        parsed = exchange.decode(request, raw, _PNP_DECODER, partial(_check_pnp, raw=raw))
        counters = self._state.counters
        user_id = self._state.phones.get(parsed.to)
        if user_id is None and self._every_phone_reachable:
            user_id = "U" + parsed.to[:32]  # a user of its own, stable per phone
        if user_id is None:
            counters.pnp_undeliverable += 1
            raise Refusal(422, _PNP_UNDELIVERABLE)
        entry.recipient = user_id
        counters.accepted_pnp += 1
        counters.pnp_messages += len(parsed.messages)
        self._webhooks.schedule_delivery(parsed.to if tag is None else tag)
        return exchange.answer(entry, 200, EMPTY_OBJECT)
