"""The simulator as one object: ``LineSimulator`` serves its LINE channels at one base URL.

Tests and benchmarks hold a ``LineSimulator``: they start it on a port, point the real
``line-bot-sdk`` at its base URL, and call its methods to look at what arrived, inject
faults or play users.  Like LINE at ``api.line.me`` it serves several channels (Official
Accounts) at that one URL and tells them apart by the bearer token: each request goes to the
:class:`~linesim.channel.LineChannel` whose token it carries, which plays every API area for
itself (``messages``, ``audiences``, ``accounts``, ``narrowcast``, ``insight``, ``webhooks``
...).  The simulator owns what the channels share (the clock, message ids, which provider
each user ID belongs to, LINE Login's ID tokens), the aiohttp application and the listener,
and ``control`` (the same over HTTP).  The channel it is made with is its first: the
simulator's own test-facing methods are that channel's, so a one-channel test never names one.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection
from typing import Final

from aiohttp import web

from linesim.audiences import AudienceGroupState
from linesim.channel import LineChannel, RouteHandler, RouteKey, check_access_tokens
from linesim.control import Control
from linesim.exchange import ReceivedRequest, SendHook, bearer_token
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
from linesim.narrowcast import NarrowcastState
from linesim.paths import ACCOUNT_LINK_DIALOG_PATH
from linesim.state import Clock, MessageIds
from linesim.users import UserDirectory
from linesim.webhooks import SentWebhook

DEFAULT_CHANNEL: Final = "default"


class LineSimulator:
    """An in-process LINE Messaging API server with inspection and fault injection.

    The keywords describe its first channel, named ``channel_name``; :meth:`add_channel`
    adds more, each reached by its own access tokens.  ``received``, :meth:`accepted_pushes`,
    ``fail_next``, ``follow`` and the other test-facing members act on the first channel, the
    same object as ``channel(channel_name)``; the fault methods mirror ``POST
    /__simulator/faults`` for callers in another process.  Webhook events go to
    ``webhook_url`` signed with ``channel_secret``; both are wiring rather than state, so
    :meth:`reset` keeps them.

    ``on_accepted_send`` is awaited with each accepted send before it is answered (a host
    that keeps what was sent); ``every_phone_reachable`` makes a LINE notification message
    to any phone number delivered, as to a user of its own, instead of refused as unknown.
    ``provider`` names the channel's provider (default: the channel's name): channels of one
    provider share user IDs, those of different providers never do.
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
        channel_name: str = DEFAULT_CHANNEL,
        provider: str | None = None,
    ) -> None:
        self._clock = clock = Clock()
        self._message_ids = MessageIds()
        self._directory = UserDirectory()
        self._channels: dict[str, LineChannel] = {}
        self._by_token: dict[str, LineChannel] = {}
        self._first = first = self.add_channel(
            channel_name,
            access_tokens=access_tokens,
            provider=provider,
            push_rate_per_second=push_rate_per_second,
            multicast_rate_per_second=multicast_rate_per_second,
            monthly_quota=monthly_quota,
            max_recorded=max_recorded,
            max_retry_keys=max_retry_keys,
            reply_rate_per_second=reply_rate_per_second,
            pnp_rate_per_second=pnp_rate_per_second,
            channel_secret=channel_secret,
            webhook_url=webhook_url,
            bot_user_id=bot_user_id,
            webhook_timeout=webhook_timeout,
            max_webhooks=max_webhooks,
            audience_rate=audience_rate,
            audience_window_seconds=audience_window_seconds,
            on_accepted_send=on_accepted_send,
            every_phone_reachable=every_phone_reachable,
        )
        secret = (id_token_secret or secrets.token_hex(32)).encode()
        # LINE Login is a channel of its own kind, apart from the Messaging API channels.
        id_tokens = IdTokens(clock, first.exchange, secret)
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None
        self.app = web.Application(client_max_size=MAX_BODY_BYTES)
        self.app.add_routes(
            web.RouteDef(route.method, route.path, self._dispatcher(route), route.kwargs)
            for route in first.routes
        )
        self.app.add_routes(id_tokens.routes())
        self.app.add_routes(Control(self).routes())
        self.app.on_response_prepare.append(first.exchange.ensure_request_id)

        # What a test does to the first channel: the simulator is that channel too.
        self.now = clock.now
        self.advance_clock = clock.advance
        self.mint_id_token = id_tokens.mint
        self.set_monthly_quota = first.set_monthly_quota
        self.fail_next = first.fail_next
        self.delay_next = first.delay_next
        self.set_pnp_delivery = first.set_pnp_delivery
        self.set_fault_rates = first.set_fault_rates
        self.set_rate_limits = first.set_rate_limits
        self.set_audience_limit = first.set_audience_limit
        self.audience_group = first.audience_group
        self.set_narrowcast_timing = first.set_narrowcast_timing
        self.set_narrowcast_limit = first.set_narrowcast_limit
        self.set_followers = first.set_followers
        self.register_phone = first.register_phone
        self.forget_phone = first.forget_phone
        self.set_webhook = first.set_webhook
        self.follow_event = first.follow_event
        self.unfollow_event = first.unfollow_event
        self.message_event = first.message_event
        self.account_link_event = first.account_link_event
        self.delivery_event = first.delivery_event
        self.send_events = first.send_events
        self.follow = first.follow
        self.unfollow = first.unfollow
        self.message = first.message
        self.account_link = first.account_link
        self.delivery = first.delivery
        self.redeliver = first.redeliver
        self.drain_webhooks = first.drain_webhooks
        self.mark_unit = first.mark_unit
        self.unit_recipients = first.unit_recipients
        self.accepted_pushes = first.accepted_pushes
        self.accepted_replies = first.accepted_replies
        self.accepted_pnp = first.accepted_pnp
        self.stats = first.stats

    # --- channels ---

    def add_channel(
        self,
        name: str,
        *,
        access_tokens: Collection[str],
        channel_secret: str | None = None,
        webhook_url: str | None = None,
        monthly_quota: int | None = None,
        bot_user_id: str | None = None,
        provider: str | None = None,
        push_rate_per_second: int = DEFAULT_PUSH_RATE,
        multicast_rate_per_second: int = DEFAULT_MULTICAST_RATE,
        reply_rate_per_second: int = DEFAULT_REPLY_RATE,
        pnp_rate_per_second: int = DEFAULT_PNP_RATE,
        max_recorded: int = DEFAULT_MAX_RECORDED,
        max_retry_keys: int = DEFAULT_MAX_RETRY_KEYS,
        webhook_timeout: float = DEFAULT_WEBHOOK_TIMEOUT,
        max_webhooks: int = DEFAULT_MAX_WEBHOOKS,
        audience_rate: int = DEFAULT_AUDIENCE_RATE,
        audience_window_seconds: float = DEFAULT_AUDIENCE_WINDOW,
        on_accepted_send: SendHook | None = None,
        every_phone_reachable: bool = False,
    ) -> LineChannel:
        """Another channel at the same base URL, reached by ``access_tokens``; it works at
        once, also while the simulator is serving.  The keywords are the constructor's.

        ValueError when the name or a token is already another channel's; a channel of
        another ``provider`` (by default each channel is its own) never shares a user ID.
        """
        tokens = check_access_tokens(access_tokens)
        if name in self._channels:
            raise ValueError(f"there already is a channel named {name!r}")
        taken = sorted(self._by_token[token].name for token in tokens if token in self._by_token)
        if taken:
            raise ValueError(f"an access token is already channel {taken[0]!r}'s")
        channel = LineChannel(
            name,
            access_tokens=tokens,
            clock=self._clock,
            message_ids=self._message_ids,
            directory=self._directory,
            provider=provider,
            push_rate_per_second=push_rate_per_second,
            multicast_rate_per_second=multicast_rate_per_second,
            monthly_quota=monthly_quota,
            max_recorded=max_recorded,
            max_retry_keys=max_retry_keys,
            reply_rate_per_second=reply_rate_per_second,
            pnp_rate_per_second=pnp_rate_per_second,
            channel_secret=channel_secret,
            webhook_url=webhook_url,
            bot_user_id=bot_user_id,
            webhook_timeout=webhook_timeout,
            max_webhooks=max_webhooks,
            audience_rate=audience_rate,
            audience_window_seconds=audience_window_seconds,
            on_accepted_send=on_accepted_send,
            every_phone_reachable=every_phone_reachable,
        )
        self._channels[name] = channel
        self._by_token.update(dict.fromkeys(tokens, channel))
        return channel

    async def remove_channel(self, name: str) -> None:
        """Take a channel added with :meth:`add_channel` away: its tokens stop working (401)
        and its pending webhook events are dropped.  The first channel stays."""
        channel = self.channel(name)
        if channel is self._first:
            raise ValueError("the first channel cannot be removed")
        del self._channels[name]
        for token in channel.access_tokens:
            del self._by_token[token]
        self._directory.remove_channel(name)
        await channel.webhooks.close()

    def channel(self, name: str) -> LineChannel:
        """The channel named ``name``; KeyError if there is none."""
        try:
            return self._channels[name]
        except KeyError:
            raise KeyError(f"no channel named {name!r}") from None

    @property
    def channels(self) -> list[LineChannel]:
        """Every channel, the first first."""
        return list(self._channels.values())

    @property
    def name(self) -> str:
        """The first channel's name."""
        return self._first.name

    def _channel_for(self, request: web.Request) -> LineChannel:
        """The channel a LINE API request is for: the one its bearer token belongs to.

        Without a known token it is the first channel's, which refuses it 401 as before;
        the account-link page, opened by a user without a token, is the channel's whose
        link token it carries.
        """
        if len(self._channels) == 1:
            return self._first  # the common case, at benchmark rates: nothing to choose
        token = bearer_token(request.headers.get("Authorization"))
        if token is not None:
            return self._by_token.get(token, self._first)
        if request.path == ACCOUNT_LINK_DIALOG_PATH:
            link_token = request.query.get("linkToken", "")
            for channel in self._channels.values():
                if channel.issued_link_token(link_token):
                    return channel
        return self._first

    def _dispatcher(self, route: web.RouteDef) -> RouteHandler:
        key: RouteKey = (route.method, route.path)

        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._channel_for(request).handlers[key](request)

        return handle

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
        for channel in self._channels.values():
            channel.webhooks.cancel_pending()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        for channel in self._channels.values():
            await channel.webhooks.close()

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
        """Reset every channel (see :meth:`LineChannel.reset`) and the clock.

        Channels stay, with their tokens, webhook URLs, secrets and bot user IDs: they are
        wiring that a test session sets up once.
        """
        self._clock.offset = 0.0
        for channel in self._channels.values():
            channel.reset()

    # --- the first channel, inspected ---

    @property
    def received(self) -> list[ReceivedRequest]:
        """API requests received, oldest first (bounded to the last ``max_recorded``).

        Those under another channel's token are that channel's."""
        return self._first.received

    @property
    def audience_groups(self) -> list[AudienceGroupState]:
        """Audiences created through ``POST /v2/bot/audienceGroup/upload``, oldest first."""
        return self._first.audience_groups

    @property
    def narrowcasts(self) -> list[NarrowcastState]:
        """Narrowcasts accepted, oldest first, in their phase as of the simulator's clock."""
        return self._first.narrowcasts

    @property
    def sent_webhooks(self) -> list[SentWebhook]:
        """Webhook requests sent, oldest first, with the receiver's answers."""
        return self._first.sent_webhooks

    @property
    def followers(self) -> list[str]:
        """User IDs ``GET /v2/bot/followers/ids`` lists, in the order they followed."""
        return self._first.followers

    @property
    def bot_user_id(self) -> str:
        """The ``destination`` of every webhook body."""
        return self._first.bot_user_id

    @property
    def webhook_url(self) -> str | None:
        return self._first.webhook_url

    @property
    def total_usage(self) -> int:
        return self._first.total_usage
