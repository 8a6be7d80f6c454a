"""LINE's documented numbers, and the counters that enforce its rate limits and quota.

Sizes, lifetimes and default rates are those of LINE's reference; the limiters answer "one
request too many?" the way LINE does, so a client's back-off and retry paths are exercised
by the same 429s it would meet in production.
"""

from __future__ import annotations

from collections import deque
from typing import Final

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


class PerSecondLimit:
    """Requests per second on one endpoint, counted in fixed one-second windows."""

    __slots__ = ("count", "initial", "limit", "window")

    def __init__(self, limit: int) -> None:
        self.initial = limit
        self.limit = limit
        self.window = -1
        self.count = 0

    def over_limit(self, now: float) -> bool:
        window = int(now)
        if window != self.window:
            self.window = window
            self.count = 0
        self.count += 1
        return self.count > self.limit

    def reset(self) -> None:
        """Back to the limit it was made with, and a fresh window."""
        self.limit = self.initial
        self.window = -1


class SlidingWindowLimit:
    """At most ``limit`` requests in any ``window`` seconds (a sliding log).

    A refused request is not counted, so a client that waits is served again.
    """

    __slots__ = ("initial", "limit", "times", "window")

    def __init__(self, limit: int, window: float) -> None:
        self.initial = (limit, window)
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

    def reset(self) -> None:
        """Back to the limit and window it was made with, nothing counted."""
        self.limit, self.window = self.initial
        self.times.clear()


class MonthlyQuota:
    """The account's monthly message limit (None: unlimited) and what has been used of it.

    LINE counts one message per recipient of an accepted push or multicast, however many
    message objects the request carries.
    """

    __slots__ = ("initial", "limit", "usage")

    def __init__(self, limit: int | None) -> None:
        self.initial = limit
        self.limit = limit
        self.usage = 0

    def set_limit(self, limit: int | None) -> None:
        """Set the monthly message limit (None: unlimited); usage so far is kept."""
        if limit is not None and limit < 0:
            raise ValueError("limit must be >= 0 or None")
        self.limit = limit

    def allows(self, recipients: int) -> bool:
        return self.limit is None or self.usage + recipients <= self.limit

    def reset(self) -> None:
        self.limit = self.initial
        self.usage = 0
