"""One LINE channel (Official Account) of the simulator: its tokens, state and API areas.

LINE serves every channel at one base URL and tells them apart by the access token.  A
``LineChannel`` is one of them: its own followers, phone numbers, quota and usage, retry
keys, rate limits, faults, link tokens, audiences, narrowcasts, aggregation units, request
log, and its own webhook URL, secret and bot user ID.  What it shares with the other
channels of its simulator is the clock, the message id sequence, and the directory of which
provider each user ID belongs to (``users``).  The simulator routes each API request to the
channel its bearer token names; a test drives a channel through the methods here.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Collection

from aiohttp import web

from linesim.accounts import Accounts
from linesim.audiences import AudienceGroupState, Audiences
from linesim.events import Events
from linesim.exchange import Exchange, ReceivedRequest, SendHook
from linesim.faults import Faults
from linesim.insight import AggregationUnits
from linesim.limits import (
    DEFAULT_AUDIENCE_RATE,
    DEFAULT_AUDIENCE_WINDOW,
    DEFAULT_MAX_RECORDED,
    DEFAULT_MAX_RETRY_KEYS,
    DEFAULT_MAX_WEBHOOKS,
    DEFAULT_MULTICAST_RATE,
    DEFAULT_PNP_RATE,
    DEFAULT_PUSH_RATE,
    DEFAULT_REPLY_RATE,
    DEFAULT_WEBHOOK_TIMEOUT,
)
from linesim.messages import Messages
from linesim.narrowcast import Narrowcasts, NarrowcastState
from linesim.paths import PNP_PATH, PUSH_PATHS, REPLY_PATH
from linesim.state import Clock, MessageIds, SimState
from linesim.stats import SimulatorStats, collect_stats
from linesim.users import UserDirectory
from linesim.validation import USER_ID
from linesim.webhook_endpoint import WebhookEndpoint
from linesim.webhooks import SentWebhook, Webhooks

RouteKey = tuple[str, str]  # method, path pattern
RouteHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _function_handler(route: web.RouteDef) -> RouteHandler:
    """The route's handler function (the areas define no class-based views)."""
    handler = route.handler
    if isinstance(handler, type):
        raise TypeError(f"{route.path} is served by a view class, not a function")
    return handler


def check_access_tokens(access_tokens: Collection[str]) -> frozenset[str]:
    if isinstance(access_tokens, str):
        raise TypeError("access_tokens must be a collection of tokens, not one string")
    tokens = frozenset(access_tokens)
    if not tokens or not all(tokens):
        raise ValueError("at least one non-empty access token is required")
    return tokens


class LineChannel:
    """One channel: what its access tokens reach, and what a test does to it.

    Methods that act (``follow``, ``fail_next``, ``register_phone``...) are the owning
    area's own, bound in ``__init__``; their documentation is there.  ``advance_clock``
    and ``now`` are the simulator's one clock, shared by every channel.
    """

    def __init__(
        self,
        name: str,
        *,
        access_tokens: Collection[str],
        clock: Clock,
        message_ids: MessageIds,
        directory: UserDirectory,
        provider: str | None = None,
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
        webhook_timeout: float = DEFAULT_WEBHOOK_TIMEOUT,
        max_webhooks: int = DEFAULT_MAX_WEBHOOKS,
        audience_rate: int = DEFAULT_AUDIENCE_RATE,
        audience_window_seconds: float = DEFAULT_AUDIENCE_WINDOW,
        on_accepted_send: SendHook | None = None,
        every_phone_reachable: bool = False,
    ) -> None:
        tokens = check_access_tokens(access_tokens)
        if not name:
            raise ValueError("a channel needs a name")
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
        if bot_user_id is not None and USER_ID.fullmatch(bot_user_id) is None:
            raise ValueError("bot_user_id must look like U followed by 32 hex digits")
        if webhook_timeout <= 0:
            raise ValueError("webhook_timeout must be > 0")
        if audience_rate < 0 or audience_window_seconds <= 0:
            raise ValueError("audience_rate must be >= 0 and audience_window_seconds > 0")
        self.name = name
        self.provider = provider or name
        self.access_tokens = tokens
        users = directory.add_channel(name, self.provider)
        self._state = state = SimState(monthly_quota, clock, message_ids, users)
        self.exchange = exchange = Exchange(state, tokens, max_recorded)
        exchange.on_accepted_send = on_accepted_send
        self._faults = faults = Faults(state)
        events = Events(state)
        self.webhooks = webhooks = Webhooks(
            state,
            events,
            faults,
            url=webhook_url,
            channel_secret=channel_secret,
            bot_user_id=bot_user_id or "U" + secrets.token_hex(16),
            timeout=webhook_timeout,
            max_webhooks=max_webhooks,
        )
        self._units = units = AggregationUnits(state, exchange)
        self._messages = messages = Messages(
            state,
            exchange,
            faults,
            webhooks,
            units,
            push_rate=push_rate_per_second,
            multicast_rate=multicast_rate_per_second,
            reply_rate=reply_rate_per_second,
            pnp_rate=pnp_rate_per_second,
            max_retry_keys=max_retry_keys,
            every_phone_reachable=every_phone_reachable,
        )
        self._audiences = audiences = Audiences(
            state, exchange, audience_rate, audience_window_seconds
        )
        self._accounts = accounts = Accounts(state, exchange, events, webhooks)
        self._narrowcasts = narrowcasts = Narrowcasts(state, exchange, faults, messages, audiences)
        endpoint = WebhookEndpoint(state, exchange, webhooks)
        self.routes: list[web.RouteDef] = [
            route
            for area in (messages, units, accounts, audiences, narrowcasts, endpoint)
            for route in area.routes()
        ]
        self.handlers: dict[RouteKey, RouteHandler] = {
            (route.method, route.path): _function_handler(route) for route in self.routes
        }

        # What a test does to the channel is done by the area that owns it.
        self.now = clock.now
        self.advance_clock = clock.advance
        self.set_monthly_quota = state.quota.set_limit
        self.fail_next = faults.fail_next
        self.delay_next = faults.delay_next
        self.set_pnp_delivery = faults.set_pnp_delivery
        self.set_fault_rates = faults.set_rates
        self.set_rate_limits = messages.set_rate_limits
        self.set_audience_limit = audiences.set_limit
        self.audience_group = audiences.find
        self.set_narrowcast_timing = narrowcasts.set_timing
        self.set_narrowcast_limit = narrowcasts.set_limit
        self.set_followers = accounts.set_followers
        self.register_phone = accounts.register_phone
        self.forget_phone = accounts.forget_phone
        self.issued_link_token = accounts.issued
        self.set_webhook = webhooks.configure
        self.follow_event = events.follow_event
        self.unfollow_event = events.unfollow_event
        self.message_event = events.message_event
        self.account_link_event = events.account_link_event
        self.delivery_event = events.delivery_event
        self.send_events = webhooks.send_events
        self.follow = webhooks.follow
        self.unfollow = webhooks.unfollow
        self.message = webhooks.message
        self.account_link = webhooks.account_link
        self.delivery = webhooks.delivery
        self.redeliver = webhooks.redeliver
        self.drain_webhooks = webhooks.drain
        self.mark_unit = units.mark
        self.unit_recipients = units.sent_to

    def reset(self) -> None:
        """Forget requests, retry keys, usage, counters, faults, followers, phones, tokens,
        sent webhooks, audiences and the users it learnt; restore initial limits.

        The tokens, webhook URL, channel secret and bot user ID stay: they are wiring.
        Webhook events still pending are dropped.  The shared clock is left alone.
        """
        self._state.reset()
        self.exchange.reset()
        self._faults.reset()
        self.webhooks.reset()
        self._messages.reset()
        self._audiences.reset()
        self._accounts.reset()
        self._narrowcasts.reset()
        self._units.reset()

    # --- inspection ---

    @property
    def received(self) -> list[ReceivedRequest]:
        """API requests under this channel's tokens, oldest first (the last ``max_recorded``)."""
        return [entry.public() for entry in self.exchange.recorded]

    def accepted_pushes(self) -> list[ReceivedRequest]:
        """Push and multicast requests answered 200 (a 409 repeat is not a delivery)."""
        return [entry.public() for entry in self.exchange.accepted(PUSH_PATHS)]

    def accepted_replies(self) -> list[ReceivedRequest]:
        """Reply requests answered 200; ``recipient`` is the user the reply token was for."""
        return [entry.public() for entry in self.exchange.accepted((REPLY_PATH,))]

    def accepted_pnp(self) -> list[ReceivedRequest]:
        """LINE notification messages answered 200; ``recipient`` is the phone's user."""
        return [entry.public() for entry in self.exchange.accepted((PNP_PATH,))]

    @property
    def audience_groups(self) -> list[AudienceGroupState]:
        """Audiences created through ``POST /v2/bot/audienceGroup/upload``, oldest first."""
        return self._audiences.states()

    @property
    def narrowcasts(self) -> list[NarrowcastState]:
        """Narrowcasts accepted, oldest first, in their phase as of the simulator's clock."""
        return self._narrowcasts.states()

    @property
    def sent_webhooks(self) -> list[SentWebhook]:
        """Webhook requests sent, oldest first, with the receiver's answers."""
        return list(self.webhooks.sent)

    @property
    def followers(self) -> list[str]:
        """User IDs ``GET /v2/bot/followers/ids`` lists, in the order they followed."""
        return list(self._state.followers)

    @property
    def bot_user_id(self) -> str:
        """The ``destination`` of every webhook body."""
        return self.webhooks.bot_user_id

    @property
    def webhook_url(self) -> str | None:
        return self.webhooks.url

    @property
    def channel_secret(self) -> str | None:
        """The secret its webhooks are signed with."""
        return self.webhooks.channel_secret

    @property
    def monthly_quota(self) -> int | None:
        return self._state.quota.limit

    @property
    def total_usage(self) -> int:
        return self._state.quota.usage

    def stats(self) -> SimulatorStats:
        return collect_stats(
            self.name,
            self._state,
            self.exchange,
            self._faults,
            self._messages,
            self._audiences,
            self._accounts,
            self.webhooks,
        )
