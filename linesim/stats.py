"""The simulator's counters and settings in one record (``GET /__simulator/stats``).

A benchmark reads these every 100 ms while millions of requests go by, so they are counted
as requests happen, whatever the bound on recorded requests; settings (rate limits, quota,
pending faults) are included so a test can see what it is running against.
"""

from __future__ import annotations

import msgspec

from linesim.accounts import Accounts
from linesim.audiences import Audiences
from linesim.exchange import Exchange
from linesim.faults import Faults
from linesim.messages import Messages
from linesim.paths import QUOTA_COUNTED_PATHS
from linesim.state import SimState
from linesim.webhooks import Webhooks


class SimulatorStats(msgspec.Struct):
    """One channel's counters, kept for every request whatever the bound on recorded
    requests; ``foreign_recipients`` counts sends refused for naming another provider's user."""

    requests: int
    accepted_pushes: int
    accepted_multicasts: int
    accepted_messages: int
    conflicts: int
    rate_limited: int
    quota_exceeded: int
    server_errors: int
    injected_failures: int
    by_status: dict[int, int]
    total_usage: int
    monthly_quota: int | None
    push_rate_per_second: int
    multicast_rate_per_second: int
    pending_failures: int
    pending_delays: int
    retry_keys: int
    recorded: int
    clock_offset_seconds: float
    accepted_replies: int
    reply_messages: int
    invalid_reply_tokens: int
    accepted_pnp: int
    pnp_messages: int
    pnp_undeliverable: int
    reply_rate_per_second: int
    pnp_rate_per_second: int
    quota_counted_paths: list[str]
    followers: int
    registered_phones: int
    link_tokens: int
    reply_tokens: int
    webhooks_sent: int
    webhooks_failed: int
    pending_webhooks: int
    pnp_delivery_delay_seconds: float
    pnp_deliveries_to_suppress: int
    audience_groups: int
    accepted_audience_uploads: int
    audience_requests_per_window: int
    audience_window_seconds: float
    channel: str = "default"
    foreign_recipients: int = 0


def collect_stats(
    channel: str,
    state: SimState,
    exchange: Exchange,
    faults: Faults,
    messages: Messages,
    audiences: Audiences,
    accounts: Accounts,
    webhooks: Webhooks,
) -> SimulatorStats:
    """Every area's counters and current settings, as one flat record."""
    counters = state.counters
    messages.retry_keys.prune(state.clock.now())
    return SimulatorStats(
        requests=exchange.requests,
        accepted_pushes=counters.accepted_pushes,
        accepted_multicasts=counters.accepted_multicasts,
        accepted_messages=counters.accepted_messages,
        conflicts=counters.conflicts,
        rate_limited=counters.rate_limited,
        quota_exceeded=counters.quota_exceeded,
        server_errors=sum(n for status, n in exchange.by_status.items() if status >= 500),
        injected_failures=counters.injected_failures,
        by_status=dict(sorted(exchange.by_status.items())),
        total_usage=state.quota.usage,
        monthly_quota=state.quota.limit,
        push_rate_per_second=messages.push_limit.limit,
        multicast_rate_per_second=messages.multicast_limit.limit,
        pending_failures=faults.failures_left,
        pending_delays=faults.delays_left,
        retry_keys=len(messages.retry_keys),
        recorded=len(exchange.recorded),
        clock_offset_seconds=state.clock.offset,
        accepted_replies=counters.accepted_replies,
        reply_messages=counters.reply_messages,
        invalid_reply_tokens=counters.invalid_reply_tokens,
        accepted_pnp=counters.accepted_pnp,
        pnp_messages=counters.pnp_messages,
        pnp_undeliverable=counters.pnp_undeliverable,
        reply_rate_per_second=messages.reply_limit.limit,
        pnp_rate_per_second=messages.pnp_limit.limit,
        quota_counted_paths=list(QUOTA_COUNTED_PATHS),
        followers=len(state.followers),
        registered_phones=len(state.phones),
        link_tokens=accounts.link_tokens,
        reply_tokens=len(state.reply_tokens),
        webhooks_sent=counters.webhooks_sent,
        webhooks_failed=counters.webhooks_failed,
        pending_webhooks=webhooks.pending,
        pnp_delivery_delay_seconds=faults.pnp_delivery_delay,
        pnp_deliveries_to_suppress=faults.pnp_suppress_left,
        audience_groups=len(audiences),
        accepted_audience_uploads=counters.accepted_audience_uploads,
        audience_requests_per_window=audiences.create_limit.limit,
        audience_window_seconds=audiences.create_limit.window,
        channel=channel,
        foreign_recipients=counters.foreign_recipients,
    )
