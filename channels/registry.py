"""The registered channels: the one place adapters are named.

Each channel registers its descriptor and a builder that makes its adapter from the router's
configuration (or returns None when it is not configured). Routing, intake, dispatch,
delivery events and the CLI iterate over `descriptors()`; none of them names a channel. A new
channel is one module under `channels/` and one `register` call below (or, for a channel that
lives outside this package, a `register` call before the router starts).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from channels import email
from channels.base import Channel, ChannelDescriptor, LineAccount, Narrowcaster, QuotaLedger
from channels.line import notification, push
from router.config import Config

Builder = Callable[[Config, Mapping[str, Channel]], Channel | None]
"""Makes a channel's adapter from configuration and the adapters built before it."""

_registered: dict[str, tuple[ChannelDescriptor, Builder]] = {}
# A channel's name is written into SQL the core composes (as a quoted constant): keep it plain.
_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


def register(descriptor: ChannelDescriptor, build: Builder) -> None:
    """Add a channel; adapters are built in registration order."""
    if not _NAME.fullmatch(descriptor.name):
        raise ValueError(f"a channel name is lower-case letters, digits and _: {descriptor.name!r}")
    if descriptor.name in _registered:
        raise ValueError(f"a channel named {descriptor.name!r} is already registered")
    _registered[descriptor.name] = (descriptor, build)


def unregister(name: str) -> None:
    _registered.pop(name, None)


def descriptors() -> tuple[ChannelDescriptor, ...]:
    return tuple(d for d, _ in _registered.values())


def descriptor(name: str) -> ChannelDescriptor:
    return _registered[name][0]


LedgerFor = Callable[[str], QuotaLedger]
"""Where a LINE account's monthly quota is reserved, given the account's name."""


def build_adapters(
    config: Config, quota_ledger: LedgerFor | None = None
) -> tuple[dict[str, Channel], dict[str, LineAccount]]:
    """The adapters this configuration enables, by channel name, and each configured LINE
    account's operations by account name. `quota_ledger` gives where an account's monthly
    quota is reserved (in memory without one)."""
    channels: dict[str, Channel] = {}
    for name, (_, build) in _registered.items():
        adapter = build(config, channels)
        if adapter is not None:
            channels[name] = adapter
    accounts: dict[str, LineAccount] = {}
    line = channels.get(push.LINE.name)
    if isinstance(line, push.LinePushChannel):
        from channels.line.account import LineAccountApi

        for account, settings in config.line_accounts().items():
            # The account's operations share its sender's quota, so both reserve in one ledger.
            sender = line.sender(account)
            quota = None if sender is None else sender.quota
            if quota is not None and quota_ledger is not None:
                quota.ledger = quota_ledger(account)
            api = LineAccountApi(settings, quota)
            if quota is None and quota_ledger is not None:
                api.line_quota.ledger = quota_ledger(account)
            accounts[account] = api
    return channels, accounts


def narrowcaster(channels: Mapping[str, Channel]) -> Narrowcaster | None:
    """What sends LINE narrowcasts, over the built LINE channel (None without one)."""
    line = channels.get(push.LINE.name)
    if not isinstance(line, push.LinePushChannel):
        return None
    from channels.line.narrowcast import LineNarrowcast

    return LineNarrowcast(line)


register(push.LINE, push.build)
register(email.EMAIL, email.build)
register(notification.LINE_NOTIFICATION, notification.build)
