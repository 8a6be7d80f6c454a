"""The simulator as one object: ``LineSimulator`` wires the API areas together and serves them.

Tests and benchmarks hold a ``LineSimulator``: they start it on a port, point the real
``line-bot-sdk`` at its base URL, and call its methods to look at what arrived, inject
faults or play users.  It owns the wiring (access tokens, the aiohttp application, the
listener) and delegates everything else to the area that plays that part of LINE:
``messages`` (sends), ``audiences``, ``accounts`` (quota, followers, linking), ``login``
(ID tokens), ``events`` and ``webhooks`` (LINE calling the bot), ``webhook_endpoint`` (setting
and testing where it calls), ``faults``, ``insight`` (aggregation units and their statistics), and ``control``
(the same over HTTP).  The areas share one ``SimState`` and one ``Exchange`` (the request
log).
"""

from __future__ import annotations

import secrets
from collections.abc import Collection

from aiohttp import web

from linesim.accounts import Accounts
from linesim.audiences import AudienceGroupState, Audiences
from linesim.control import Control
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
    MAX_BODY_BYTES,
)
from linesim.login import IdTokens
from linesim.messages import Messages
from linesim.narrowcast import Narrowcasts, NarrowcastState
from linesim.paths import PNP_PATH, PUSH_PATHS, REPLY_PATH
from linesim.state import SimState
from linesim.stats import SimulatorStats, collect_stats
from linesim.validation import USER_ID
from linesim.webhook_endpoint import WebhookEndpoint
from linesim.webhooks import SentWebhook, Webhooks


class LineSimulator:
    """An in-process LINE Messaging API server with inspection and fault injection.

    ``received`` and :meth:`accepted_pushes` show what arrived; the fault
    methods mirror ``POST /__simulator/faults`` for callers in another process.
    Webhook events go to ``webhook_url`` signed with ``channel_secret``; both
    are wiring rather than state, so :meth:`reset` keeps them.

    ``on_accepted_send`` is awaited with each accepted send before it is answered (a host
    that keeps what was sent); ``every_phone_reachable`` makes a LINE notification message
    to any phone number delivered, as to a user of its own, instead of refused as unknown.

    Methods that act (``follow``, ``fail_next``, ``register_phone``, ``mint_id_token``...)
    are the owning area's own, bound in ``__init__``; their documentation is there.
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
        on_accepted_send: SendHook | None = None,
        every_phone_reachable: bool = False,
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
        if bot_user_id is not None and USER_ID.fullmatch(bot_user_id) is None:
            raise ValueError("bot_user_id must look like U followed by 32 hex digits")
        if webhook_timeout <= 0:
            raise ValueError("webhook_timeout must be > 0")
        if audience_rate < 0 or audience_window_seconds <= 0:
            raise ValueError("audience_rate must be >= 0 and audience_window_seconds > 0")
        self._state = state = SimState(monthly_quota)
        self._exchange = exchange = Exchange(state, tokens, max_recorded)
        exchange.on_accepted_send = on_accepted_send
        self._faults = faults = Faults(state)
        events = Events(state)
        self._webhooks = webhooks = Webhooks(
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
        secret = (id_token_secret or secrets.token_hex(32)).encode()
        id_tokens = IdTokens(state.clock, exchange, secret)
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None
        self.app = web.Application(client_max_size=MAX_BODY_BYTES)
        endpoint = WebhookEndpoint(state, exchange, webhooks)
        for area in (messages, units, accounts, id_tokens, audiences, narrowcasts, endpoint):
            self.app.add_routes(area.routes())
        self.app.add_routes(Control(self, exchange, webhooks).routes())
        self.app.on_response_prepare.append(exchange.ensure_request_id)

        # What a test does to the simulator is done by the area that owns it.
        self.now = state.clock.now
        self.advance_clock = state.clock.advance
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
        self.mint_id_token = id_tokens.mint
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

    # --- lifecycle ---

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
        self._webhooks.cancel_pending()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        await self._webhooks.close()

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

    def reset(self) -> None:
        """Forget requests, retry keys, usage, counters, faults, followers, phones, tokens,
        sent webhooks and audiences; restore initial limits.

        The webhook URL, channel secret and bot user ID stay: they are wiring that a
        test session sets up once.  Webhook events still pending are dropped.
        """
        self._state.reset()
        self._exchange.reset()
        self._faults.reset()
        self._webhooks.reset()
        self._messages.reset()
        self._audiences.reset()
        self._accounts.reset()
        self._narrowcasts.reset()
        self._units.reset()

    # --- inspection ---

    @property
    def received(self) -> list[ReceivedRequest]:
        """API requests received, oldest first (bounded to the last ``max_recorded``)."""
        return [entry.public() for entry in self._exchange.recorded]

    def accepted_pushes(self) -> list[ReceivedRequest]:
        """Push and multicast requests answered 200 (a 409 repeat is not a delivery)."""
        return [entry.public() for entry in self._exchange.accepted(PUSH_PATHS)]

    def accepted_replies(self) -> list[ReceivedRequest]:
        """Reply requests answered 200; ``recipient`` is the user the reply token was for."""
        return [entry.public() for entry in self._exchange.accepted((REPLY_PATH,))]

    def accepted_pnp(self) -> list[ReceivedRequest]:
        """LINE notification messages answered 200; ``recipient`` is the phone's user."""
        return [entry.public() for entry in self._exchange.accepted((PNP_PATH,))]

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
        return list(self._webhooks.sent)

    @property
    def followers(self) -> list[str]:
        """User IDs ``GET /v2/bot/followers/ids`` lists, in the order they followed."""
        return list(self._state.followers)

    @property
    def bot_user_id(self) -> str:
        """The ``destination`` of every webhook body."""
        return self._webhooks.bot_user_id

    @property
    def webhook_url(self) -> str | None:
        return self._webhooks.url

    @property
    def total_usage(self) -> int:
        return self._state.quota.usage

    def stats(self) -> SimulatorStats:
        return collect_stats(
            self._state,
            self._exchange,
            self._faults,
            self._messages,
            self._audiences,
            self._accounts,
            self._webhooks,
        )
