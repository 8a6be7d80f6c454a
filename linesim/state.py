"""The in-memory model of one LINE channel (Official Account) that several API areas share.

A follow event adds a follower that ``GET /v2/bot/followers/ids`` then lists; a webhook
event hands out the reply token that ``POST /v2/bot/message/reply`` spends; a registered
phone number is what a LINE notification message reaches.  Those facts live here, once,
with the clock every lifetime is measured on and the counters behind ``stats()``.  What
only one area needs (retry keys, link tokens, audiences) stays in that area's module.
"""

from __future__ import annotations

import secrets
import time
from collections import deque

import msgspec

from linesim.limits import REPLY_TOKEN_TTL_SECONDS, MonthlyQuota
from linesim.users import ChannelUsers


class Clock:
    """Unix time that a test can move forward, past the life of keys and tokens."""

    __slots__ = ("_epoch_base", "offset")

    def __init__(self) -> None:
        self._epoch_base = time.time() - time.monotonic()
        self.offset = 0.0

    def now(self) -> float:
        """The simulator's clock: Unix time plus whatever :meth:`advance` added."""
        return self._epoch_base + time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        """Move the clock forward, e.g. past the life of retry, link or reply tokens."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self.offset += seconds


class Counters(msgspec.Struct):
    """What the simulator counts whatever the bound on recorded requests; all start at 0."""

    accepted_pushes: int = 0
    accepted_multicasts: int = 0
    accepted_messages: int = 0
    conflicts: int = 0
    rate_limited: int = 0
    quota_exceeded: int = 0
    injected_failures: int = 0
    accepted_replies: int = 0
    reply_messages: int = 0
    invalid_reply_tokens: int = 0
    accepted_pnp: int = 0
    pnp_messages: int = 0
    pnp_undeliverable: int = 0
    webhooks_sent: int = 0
    webhooks_failed: int = 0
    accepted_audience_uploads: int = 0
    accepted_narrowcasts: int = 0
    narrowcast_recipients: int = 0
    foreign_recipients: int = 0  # sends refused for naming another provider's user


class ExpiringToken(msgspec.Struct, gc=False):
    """A link or reply token: whose it is, until when, and whether it was spent."""

    user_id: str
    expires_at: float
    used: bool = False


class ReplyTokens:
    """Reply tokens that webhook events carry: each good for one reply within a minute."""

    __slots__ = ("_order", "_tokens")

    def __init__(self) -> None:
        self._tokens: dict[str, ExpiringToken] = {}
        self._order: deque[tuple[str, float]] = deque()

    def __len__(self) -> int:
        return len(self._tokens)

    def mint(self, user_id: str, now: float) -> str:
        order = self._order
        while order and order[0][1] <= now:
            self._tokens.pop(order.popleft()[0], None)
        token = secrets.token_hex(16)
        expires_at = now + REPLY_TOKEN_TTL_SECONDS
        self._tokens[token] = ExpiringToken(user_id, expires_at)
        order.append((token, expires_at))
        return token

    def spend(self, token: str, now: float) -> str | None:
        """The user a reply with ``token`` goes to, or None if it is unknown, used or expired."""
        record = self._tokens.get(token)
        if record is None or record.used or record.expires_at <= now:
            return None
        record.used = True
        return record.user_id

    def clear(self) -> None:
        self._tokens.clear()
        self._order.clear()


class MessageIds:
    """Ids of messages, those the bot sends and those users send it, from one sequence.

    Never reset, so an id is not handed out twice in one run.
    """

    __slots__ = ("_base", "_quote_prefix", "_seq")

    def __init__(self) -> None:
        self._seq = 0
        self._base = 500_000_000_000_000_000 + secrets.randbelow(10**15)
        self._quote_prefix = secrets.token_urlsafe(24)

    def next(self) -> tuple[str, str]:
        """A message id and its quote token."""
        self._seq += 1
        # Opaque to clients; a random prefix and the sequence keep it unique and cheap.
        return str(self._base + self._seq), f"{self._quote_prefix}{self._seq:x}"


class SimState:
    """One channel's model.  The clock and the message id sequence are the simulator's, shared
    by its channels; so is the directory behind ``users`` (whose user each user ID is).
    :meth:`reset` forgets the channel's own state; the clock is the simulator's to reset."""

    def __init__(
        self, monthly_quota: int | None, clock: Clock, message_ids: MessageIds, users: ChannelUsers
    ) -> None:
        self.clock = clock
        self.counters = Counters()
        self.quota = MonthlyQuota(monthly_quota)
        self.followers: dict[str, None] = {}  # insertion-ordered set
        self.phones: dict[str, str] = {}  # phone hash -> user ID
        self.reply_tokens = ReplyTokens()
        self.message_ids = message_ids
        self.users = users

    def reset(self) -> None:
        self.users.forget()
        self.counters = Counters()
        self.quota.reset()
        self.followers = {}
        self.phones.clear()
        self.reply_tokens.clear()
