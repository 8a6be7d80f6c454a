"""The running router: configuration, database pool, channels and workers, wired once.

This is the composition root: the only module that turns configuration into adapters
(through `channels.registry`) and hands them to the queue workers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from uuid import UUID

from channels import registry
from channels.base import Channel, GroupChannel, LineAccount, LineAccountSender
from router import intake
from router.api_keys import KeyRing
from router.api_keys import bootstrap as bootstrap_api_keys
from router.campaigns import CampaignFanOut
from router.channel_rules import confirmed_by_provider
from router.config import Config
from router.content import Relayed
from router.database import (
    Connection,
    DatabaseTarget,
    Pool,
    create_pool,
    database_target,
    migrate,
)
from router.deliverability.secret import fill_token_secret
from router.delivery.caches import ContentCache, RelayedCache
from router.delivery.dispatch import DeliveryDispatch
from router.delivery.event_posting import EventPoster
from router.delivery.lease_sweep import LeaseSweep
from router.delivery.line_budget_gate import LineBudgetGate
from router.delivery.narrowcast import NarrowcastWorker
from router.delivery.send_groups import SendGroupDispatch
from router.ingress.smtp_relay import start_smtp_ingress
from router.intake import IntakeChannels
from router.intents import IntentOrigin, IntentRequest, IntentResult
from router.journeys.clock import Clock
from router.journeys.entering import Definitions, JourneyEvents
from router.journeys.files import JourneyFile, check_pools, read_directory
from router.journeys.timers import JourneyTimers
from router.line.events import LineEventProcessor
from router.line.webhook_forwarding import WebhookForwarder
from router.queue.claims import Holdings
from router.queue.loops import LeaseHeartbeat, QueueWorker, Workers
from router.reach import DEFAULT_LINE_ACCOUNT, Reach
from router.retention import Retention
from router.store import coupon_pools
from router.store import journeys as stored_journeys
from router.store.line_narrowcasts import LINE_CHANNEL
from router.store.line_quota import MonthlyQuota

if TYPE_CHECKING:
    from router.sandbox import Sandbox


@dataclass
class Runtime:
    config: Config
    target: DatabaseTarget
    pool: Pool
    channels: dict[str, Channel]
    api_keys: KeyRing
    generated_api_key: str | None = None
    line_account: LineAccount | None = None
    """The LINE account "default" (the `[line]` section), when configured."""
    line_accounts: dict[str, LineAccount] = field(default_factory=dict)
    """Every configured LINE account by name, "default" included."""
    # Every queue worker of this process (None: `[workers] enabled = false`, API only), and
    # the ones reached from outside the loops.
    workers: Workers | None = None
    forwarder: WebhookForwarder | None = None
    delivery_events: EventPoster | None = None
    campaign_fan_out: CampaignFanOut | None = None
    smtp_server: asyncio.Server | None = None
    # The time journeys run by (router/journeys/clock.py), and their timer queue.
    clock: Clock = field(default_factory=Clock)
    journey_timers: JourneyTimers | None = None
    # The journey files read at this start (`[journeys] directory`), saved as versions.
    journey_files: tuple[JourneyFile, ...] = ()
    # Sandbox mode: the in-process LINE simulator and SMTP capture `config` points at.
    sandbox: Sandbox | None = None
    _intake_channels: tuple[tuple[object, ...], IntakeChannels] | None = field(
        default=None, repr=False, compare=False
    )

    @property
    def configured_channels(self) -> frozenset[str]:
        return frozenset(self.channels)

    @property
    def intake_channels(self) -> IntakeChannels:
        """The registered channels as intake plans over them: descriptors, which ones this
        router has adapters for, and the group size of those that send to many at once.

        Made again only when the descriptors or adapters change: asking each adapter whether
        it sends to many (a protocol check) costs more than the rest of accepting one intent."""
        descriptors = registry.descriptors()
        # The same objects compare equal at once (identity first), and the key holds them; a
        # group size may be changed on a running adapter.
        key = (
            descriptors,
            *((name, a, getattr(a, "max_group_size", None)) for name, a in self.channels.items()),
        )
        if self._intake_channels is not None and self._intake_channels[0] == key:
            return self._intake_channels[1]
        channels = IntakeChannels(
            descriptors=descriptors,
            configured=self.configured_channels,
            group_sizes={
                name: adapter.max_group_size
                for name, adapter in self.channels.items()
                if isinstance(adapter, GroupChannel) and adapter.max_group_size > 1
            },
            require_consent=self.config.email.require_consent,
            line_accounts=self._line_account_channels(),
        )
        self._intake_channels = (key, channels)
        return channels

    def _line_account_channels(self) -> dict[str, frozenset[str]]:
        """Each configured LINE account with the channels that send under it."""
        found: dict[str, set[str]] = {a: set() for a in self.config.line_accounts()}
        for name, adapter in self.channels.items():
            if isinstance(adapter, LineAccountSender):
                for account in adapter.line_accounts:
                    found.setdefault(account, set()).add(name)
        return {a: frozenset(names) for a, names in found.items()}

    async def accept_intents(
        self,
        conn: Connection,
        requests: Sequence[IntentRequest | IntentResult],
        *,
        prefix: str = "",
        relayed: Relayed | None = None,
        campaign_id: UUID | None = None,
        multicast: bool = True,
        origins: Sequence[IntentOrigin | None] | None = None,
        batch_id: str | None = None,
    ) -> list[IntentResult]:
        """The `AcceptIntents` every front door (JSON API, SMTP relay, compatibility APIs) is
        given: with this router's channels, recording events when they are configured."""
        return await intake.accept(
            conn,
            requests,
            self.intake_channels,
            prefix,
            relayed,
            events=self.config.events_configured,
            campaign_id=campaign_id,
            multicast=multicast,
            origins=origins,
            batch_id=batch_id,
        )

    async def aclose(self) -> None:
        if self.smtp_server is not None:
            self.smtp_server.close()
            await self.smtp_server.wait_closed()
        if self.workers is not None:
            await self.workers.stop()
        for channel in self.channels.values():
            await channel.aclose()
        for account in self.line_accounts.values():
            await account.aclose()
        if self.sandbox is not None:
            await self.sandbox.aclose()
        with contextlib.suppress(Exception):  # a last use unrecorded is no reason to fail a stop
            await self.api_keys.flush()
        await self.pool.close()


async def start_runtime(config: Config) -> Runtime:
    """Read the journey files, open the database (embedded if no URL), migrate, save the
    journeys, build channels, start workers."""
    # Before anything opens: a bad journey file stops the start (JourneyFileError).
    journey_files = (
        read_directory(config.journeys.directory, known_pools=None)
        if config.journeys.directory
        else []
    )
    target = database_target(config)
    await migrate(target.dsn)
    pool = await create_pool(target.dsn, config.database.pool_size)
    try:
        await _save_journey_files(pool, journey_files)
    except BaseException:
        await pool.close()
        raise
    sandbox = None
    try:
        if config.sandbox.enabled:  # the simulator is loaded only by a sandbox
            from router.sandbox import start_sandbox

            sandbox = await start_sandbox(config, pool)
            config = sandbox.config
        api_keys, generated = await bootstrap_api_keys(pool, config)
        await fill_token_secret(pool, config.email)
    except BaseException:
        if sandbox is not None:
            await sandbox.aclose()
        await pool.close()
        raise
    channels, line_accounts = registry.build_adapters(
        config, lambda account: MonthlyQuota(pool, account)
    )
    runtime = Runtime(
        config=config,
        target=target,
        pool=pool,
        channels=channels,
        api_keys=api_keys,
        generated_api_key=generated,
        line_account=line_accounts.get(DEFAULT_LINE_ACCOUNT),
        line_accounts=line_accounts,
        journey_files=tuple(journey_files),
        sandbox=sandbox,
    )
    if config.workers.enabled:
        runtime.workers = Workers(target.dsn, _queue_workers(runtime))
        runtime.workers.start()
    try:
        runtime.smtp_server = await start_smtp_ingress(
            config.smtp_ingress,
            pool,
            runtime.accept_intents,
            runtime.intake_channels,
            config.email,
            events=config.events_configured,
        )
    except OSError as exc:
        await runtime.aclose()
        raise ListenError(
            f"cannot listen for SMTP on {config.smtp_ingress.listen}: {exc.strerror}"
        ) from exc
    return runtime


async def _save_journey_files(pool: Pool, files: list[JourneyFile]) -> None:
    """Each file's journey as its current version (a new one where the file changed). An
    enabled journey's coupon pools must exist by now (JourneyFileError naming the line); a
    disabled one may name a pool whose codes are not uploaded yet."""
    async with pool.acquire() as conn, conn.transaction():
        known = await coupon_pools.pool_ids(conn)
        for file in files:
            if file.journey.enabled:
                check_pools(file, known)
            await stored_journeys.save(conn, file.journey_id, file.journey, file.path)


def line_budget_gate(runtime: Runtime) -> LineBudgetGate:
    """The LINE budget check of this process's LINE workers, over every account's plan."""
    accounts = runtime.config.line_accounts()
    return LineBudgetGate(
        runtime.pool,
        {name: line.plan_terms() for name, line in accounts.items()},
        runtime.line_accounts,
        {name: line.quota_cache_seconds for name, line in accounts.items()},
        {name: line.default_budget for name, line in accounts.items()},
    )


def _queue_workers(runtime: Runtime) -> list[QueueWorker]:
    """Every queue this process works on: each channel's deliveries (and send groups), the
    lease sweep, LINE webhook events and forwards, delivery events, campaigns, retention,
    journeys' events and timers."""
    config, pool, events = runtime.config, runtime.pool, runtime.config.events_configured
    contents, relayed = ContentCache(), RelayedCache()
    held = Holdings()  # the claims this process has in hand, whose leases it renews
    found: list[QueueWorker] = []
    budgets = line_budget_gate(runtime)
    for channel in runtime.channels.values():
        gate = budgets if channel.name == LINE_CHANNEL else None
        found.append(
            DeliveryDispatch(
                pool,
                held,
                channel,
                config.workers,
                contents,
                relayed,
                events=events,
                budget_gate=gate,
            )
        )
        if isinstance(channel, GroupChannel) and channel.max_group_size > 1:
            found.append(
                SendGroupDispatch(
                    pool, held, channel, config.workers, contents, events=events, budget_gate=gate
                )
            )
    if runtime.channels:
        confirm_after = (
            config.line.notification_confirm_seconds
            if set(confirmed_by_provider()) & set(runtime.channels)
            else None
        )
        found.append(LeaseSweep(pool, held, config.workers, confirm_after, events=events))
        found.append(LeaseHeartbeat(pool, held, config.workers.lease_seconds))
    narrowcaster = registry.narrowcaster(runtime.channels)
    if narrowcaster is not None:
        found.append(
            NarrowcastWorker(pool, narrowcaster, config.line, config.workers, events=events)
        )
    if config.line_configured:
        runtime.forwarder = WebhookForwarder(pool, config.line.timeout_seconds)
        found += [
            LineEventProcessor(pool, runtime.line_accounts, config.line_accounts(), events=events),
            runtime.forwarder,
        ]
    if events:
        runtime.delivery_events = EventPoster(pool, config.events)
        found.append(runtime.delivery_events)
    found.append(Retention(pool, config.retention.days, config.retention.audience_days))
    runtime.campaign_fan_out = CampaignFanOut(
        pool,
        lambda: runtime.intake_channels,
        config.campaigns.fan_out_chunk,
        max_failures=config.campaigns.fan_out_max_failures,
        events=events,
        workers=config.campaigns.fan_out_workers,
        range_members=config.campaigns.fan_out_range_members,
    )
    found.append(runtime.campaign_fan_out)
    definitions = Definitions()
    runtime.journey_timers = JourneyTimers(
        pool,
        runtime.clock,
        definitions,
        runtime.accept_intents,
        config.journeys,
        _reachable_on_line,
        # Each loop holds a connection while its claim's transaction runs: a third of the
        # pool at most, up to four (firing is bounded by round trips, so loops overlap them).
        concurrency=max(1, min(4, config.database.pool_size // 3)),
    )
    found += [JourneyEvents(pool, runtime.clock, definitions), runtime.journey_timers]
    return found


def _reachable_on_line(reach: Reach) -> bool:
    """Whether a LINE push would reach the member now (the LINE channel's own rule)."""
    descriptors = {d.name: d for d in registry.descriptors()}
    line = descriptors.get("line")
    return line is not None and line.unreachable(reach) is None


class ListenError(Exception):
    """A configured listener could not be opened."""
