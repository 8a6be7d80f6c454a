"""The running router: configuration, database pool, channels and workers, wired once.

This is the composition root: the only module that turns configuration into adapters
(through `channels.registry`) and hands them to the outbox workers.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from uuid import UUID

from channels import registry
from channels.base import Channel, GroupChannel, LineAccount
from router import intake
from router.api_keys import bootstrap as bootstrap_api_keys
from router.campaigns import CampaignFanOut
from router.config import Config
from router.content import Relayed
from router.database import (
    Connection,
    DatabaseTarget,
    Pool,
    create_pool,
    embedded_target,
    migrate,
    url_target,
)
from router.delivery_events import DeliveryEventSender
from router.ingress.smtp_relay import start_smtp_ingress
from router.intake import IntakeChannels
from router.intents import IntentRequest, IntentResult
from router.line.events import LineEventProcessor
from router.line.webhook_forwarding import WebhookForwarder
from router.retention import Retention
from router.worker import OutboxWorkers


@dataclass
class Runtime:
    config: Config
    target: DatabaseTarget
    pool: Pool
    channels: dict[str, Channel]
    workers: OutboxWorkers | None
    api_key_hashes: frozenset[bytes]
    generated_api_key: str | None = None
    line_account: LineAccount | None = None
    line_events: LineEventProcessor | None = None
    forwarder: WebhookForwarder | None = None
    delivery_events: DeliveryEventSender | None = None
    background: list[asyncio.Task[None]] = field(default_factory=list)
    smtp_server: asyncio.Server | None = None
    campaign_fan_out: CampaignFanOut | None = None
    retention: Retention | None = None
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def configured_channels(self) -> frozenset[str]:
        return frozenset(self.channels)

    @functools.cached_property
    def intake_channels(self) -> IntakeChannels:
        """The registered channels as intake plans over them: descriptors, which ones this
        router has adapters for, and the group size of those that send to many at once."""
        return IntakeChannels(
            descriptors=registry.descriptors(),
            configured=self.configured_channels,
            group_sizes={
                name: adapter.max_group_size
                for name, adapter in self.channels.items()
                if isinstance(adapter, GroupChannel) and adapter.max_group_size > 1
            },
        )

    async def accept_intents(
        self,
        conn: Connection,
        requests: Sequence[IntentRequest | IntentResult],
        *,
        prefix: str = "",
        relayed: Relayed | None = None,
        campaign_id: UUID | None = None,
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
        )

    def after_webhook(self) -> None:
        """New webhook events and forwards are stored: have them handled now, not at the sweep."""
        if self.line_events is not None:
            self.line_events.kick()
        if self.forwarder is not None:
            self.forwarder.kick()

    async def aclose(self) -> None:
        self.stopping.set()
        if self.smtp_server is not None:
            self.smtp_server.close()
            await self.smtp_server.wait_closed()
        self.after_webhook()  # wakes the background loops, which then see `stopping`
        for loop in (self.campaign_fan_out, self.delivery_events, self.retention):
            if loop is not None:
                loop.kick()
        if self.background:
            await asyncio.wait(self.background, timeout=10)
            for task in self.background:
                task.cancel()
            await asyncio.gather(*self.background, return_exceptions=True)
        if self.workers is not None:
            await self.workers.stop()
        for channel in self.channels.values():
            await channel.aclose()
        if self.line_account is not None:
            await self.line_account.aclose()
        await self.pool.close()


def database_target(config: Config) -> DatabaseTarget:
    if config.database.url:
        return url_target(config.database.url)
    return embedded_target(config.database.data_dir)


async def start_runtime(config: Config) -> Runtime:
    """Open the database (embedded if no URL), migrate, build channels, start workers."""
    target = database_target(config)
    await migrate(target.dsn)
    pool = await create_pool(target.dsn, config.database.pool_size)
    hashes, generated = await bootstrap_api_keys(pool, config)
    channels, line_account = registry.build_adapters(config)
    workers = None
    if config.workers.enabled and channels:
        confirm_after = (
            config.line.notification_confirm_seconds if "line_notification" in channels else None
        )
        workers = OutboxWorkers(
            pool,
            target.dsn,
            channels,
            config.workers,
            confirm_after,
            events=config.events_configured,
        )
        await workers.start()
    runtime = Runtime(
        config=config,
        target=target,
        pool=pool,
        channels=channels,
        workers=workers,
        api_key_hashes=hashes,
        generated_api_key=generated,
        line_account=line_account,
    )
    if config.line_configured and config.workers.enabled:
        runtime.line_events = LineEventProcessor(
            pool, runtime.line_account, config.line, events=config.events_configured
        )
        runtime.forwarder = WebhookForwarder(pool, config.line.timeout_seconds)
        runtime.background = [
            asyncio.create_task(runtime.line_events.run(runtime.stopping), name="line-events"),
            asyncio.create_task(runtime.forwarder.run(runtime.stopping), name="line-forwards"),
        ]
    if config.events_configured and config.workers.enabled:
        runtime.delivery_events = DeliveryEventSender(pool, config.events)
        runtime.background.append(
            asyncio.create_task(
                runtime.delivery_events.run(runtime.stopping), name="delivery-events"
            )
        )
    if config.workers.enabled and config.retention.days > 0:
        runtime.retention = Retention(pool, config.retention.days)
        runtime.background.append(
            asyncio.create_task(runtime.retention.run(runtime.stopping), name="retention")
        )
    if config.workers.enabled:
        runtime.campaign_fan_out = CampaignFanOut(runtime)
        runtime.background.append(
            asyncio.create_task(runtime.campaign_fan_out.run(runtime.stopping), name="campaigns")
        )
    try:
        runtime.smtp_server = await start_smtp_ingress(
            config.smtp_ingress, pool, runtime.accept_intents, runtime.intake_channels
        )
    except OSError as exc:
        await runtime.aclose()
        raise ListenError(
            f"cannot listen for SMTP on {config.smtp_ingress.listen}: {exc.strerror}"
        ) from exc
    return runtime


class ListenError(Exception):
    """A configured listener could not be opened."""
