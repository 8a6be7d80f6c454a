"""What became of a campaign's messages, on each channel: `GET /v1/campaigns/{id}/results`.

Three sources, each read without counting rows:

- the deliveries per channel and status (`campaign_counts`, kept by triggers), which say how
  many were sent, failed, are still to go, and were made as fallbacks (`campaign_results`);
- the delivery events recorded for the campaign's intents (`campaign_results`, kept by a
  trigger on `delivery_events`): delivered, bounce, dropped, deferred, unsubscribe,
  group_unsubscribe, spamreport. The router records no opens or clicks of email;
- LINE's own figures for the campaign's aggregation unit (`router.campaign_units`), read
  through the LINE account's insight API and kept for `LINE_FIGURES_TTL` seconds, so a page
  polled every second asks LINE a few times an hour. A LINE that fails is reported in
  `line.error`, never as a failed request.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Final
from uuid import UUID

import msgspec

from channels.base import LineAccount, ProviderError, UnitStatistics
from router.database import Pool
from router.store import campaign_counts

LINE_FIGURES_TTL: Final = 180.0
LINE_PERIOD_DAYS: Final = 30  # the longest period LINE's statistics per unit covers
_LINE_DAYS: Final = timezone(timedelta(hours=9))  # LINE's insight dates are UTC+9
# Statuses of deliveries the provider took, and of those not yet settled.
_SENT: Final = frozenset({"sent", "bounced", "complained"})
WAITING_STATUSES: Final = frozenset({"pending", "claimed", "sending", "held", "grouped"})


class ChannelResults(msgspec.Struct, kw_only=True):
    """One channel's deliveries of the campaign."""

    channel: str
    deliveries: int
    waiting: int  # not yet sent: pending, being sent, held
    sent: int  # taken by the provider (email: accepted by the receiving server)
    delivered: int | None  # `delivered` events; None when delivery events are not recorded
    failed: int  # failed for good on this channel (a fallback may have carried it)
    fell_back: int  # deliveries made on this channel because another channel failed
    cancelled: int
    uncertain: int  # may or may not have been sent (an answer lost)


class EmailResults(msgspec.Struct, kw_only=True):
    """What the delivery-event stream recorded for the campaign's email."""

    events_recorded: bool  # false: [events] webhook_url is not set, so no events are kept
    delivered: int
    deferred: int
    bounced: int
    dropped: int
    unsubscribed: int
    group_unsubscribed: int
    spam_reports: int


class LineResults(msgspec.Struct, kw_only=True):
    """LINE's own figures for the campaign's aggregation unit, as last read."""

    aggregation_unit: str
    period_from: date | None = None  # LINE's days (UTC+9) the figures cover
    period_to: date | None = None
    unique_impressions: int | None = None  # users who displayed the message
    unique_clicks: int | None = None  # users who opened a URL in it
    clicks: int | None = None  # URL opens, repeats included
    unique_media_played: int | None = None
    unique_media_played_100_percent: int | None = None
    read_at: datetime | None = None  # when LINE was asked (figures are cached a few minutes)
    error: str | None = None  # why LINE's figures could not be read


class CampaignResults(msgspec.Struct, kw_only=True):
    id: UUID
    status: str
    channels: list[ChannelResults]
    email: EmailResults
    line: LineResults | None  # None: the campaign has no aggregation unit


class _Row(msgspec.Struct, frozen=True):
    status: str
    created_at: datetime
    unit: str | None


_RESULTS = """
SELECT channel, outcome, sum(n)::bigint AS n FROM campaign_results
WHERE campaign_id = $1 GROUP BY channel, outcome
"""


async def read(
    pool: Pool, campaign_id: UUID, accounts: Mapping[str, LineAccount], *, events: bool
) -> CampaignResults | None:
    """The campaign's results, or None if there is no such campaign. Reads: campaigns by its
    primary key; campaign_counts and campaign_results by theirs (a few rows per channel,
    outcome and backend shard, whatever the campaign's size). LINE is asked after the
    connection is given back, through the LINE account the campaign went out under."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT status, created_at, line_aggregation_unit AS unit, line_account"
            " FROM campaigns WHERE id = $1",
            campaign_id,
        )
        if row is None:
            return None
        campaign = _Row(row["status"], row["created_at"], row["unit"])
        account = accounts.get(row["line_account"])
        counted = await campaign_counts.read(conn, campaign_id)
        outcomes: dict[tuple[str, str], int] = {
            (r["channel"], r["outcome"]): r["n"] for r in await conn.fetch(_RESULTS, campaign_id)
        }
    channels = _channels(counted, outcomes, events)
    email = EmailResults(
        events_recorded=events,
        delivered=outcomes.get(("email", "delivered"), 0),
        deferred=outcomes.get(("email", "deferred"), 0),
        bounced=outcomes.get(("email", "bounce"), 0),
        dropped=outcomes.get(("email", "dropped"), 0),
        unsubscribed=outcomes.get(("email", "unsubscribe"), 0),
        group_unsubscribed=outcomes.get(("email", "group_unsubscribe"), 0),
        spam_reports=outcomes.get(("email", "spamreport"), 0),
    )
    line = None
    if campaign.unit is not None:
        line = await line_figures(account, campaign_id, campaign.unit, campaign.created_at)
    return CampaignResults(
        id=campaign_id, status=campaign.status, channels=channels, email=email, line=line
    )


def _channels(
    counted: list[campaign_counts.Counted], outcomes: dict[tuple[str, str], int], events: bool
) -> list[ChannelResults]:
    by_channel: dict[str, dict[str, int]] = {}
    for c in counted:
        statuses = by_channel.setdefault(c.channel, {})
        statuses[c.status] = statuses.get(c.status, 0) + c.deliveries
    for channel, outcome in outcomes:
        if outcome == "fell_back":
            by_channel.setdefault(channel, {})
    return [
        ChannelResults(
            channel=channel,
            deliveries=sum(statuses.values()),
            waiting=sum(n for s, n in statuses.items() if s in WAITING_STATUSES),
            sent=sum(n for s, n in statuses.items() if s in _SENT),
            delivered=outcomes.get((channel, "delivered"), 0) if events else None,
            failed=statuses.get("failed", 0),
            fell_back=outcomes.get((channel, "fell_back"), 0),
            cancelled=statuses.get("cancelled", 0),
            uncertain=statuses.get("uncertain", 0),
        )
        for channel, statuses in sorted(by_channel.items())
    ]


class _Cached(msgspec.Struct):
    at: float
    figures: LineResults


class _LineFigures:
    """LINE's figures per campaign, kept `LINE_FIGURES_TTL` seconds; one read at a time per
    campaign, so a burst of page polls asks LINE once."""

    def __init__(self) -> None:
        self.cached: dict[UUID, _Cached] = {}
        self.reading: dict[UUID, asyncio.Lock] = {}


_BY_ACCOUNT: weakref.WeakKeyDictionary[LineAccount, _LineFigures] = weakref.WeakKeyDictionary()


async def line_figures(
    account: LineAccount | None, campaign_id: UUID, unit: str, created_at: datetime
) -> LineResults:
    """LINE's figures for the unit since the campaign was made (at most LINE's 30 days)."""
    if account is None:
        return LineResults(aggregation_unit=unit, error="LINE is not configured on this router")
    figures = _BY_ACCOUNT.get(account)
    if figures is None:
        figures = _BY_ACCOUNT[account] = _LineFigures()
    async with figures.reading.setdefault(campaign_id, asyncio.Lock()):
        cached = figures.cached.get(campaign_id)
        if cached is not None and time.monotonic() - cached.at < LINE_FIGURES_TTL:
            return cached.figures
        fresh = await _read_line(account, unit, created_at)
        figures.cached[campaign_id] = _Cached(time.monotonic(), fresh)
        if len(figures.cached) > 1000:  # forget the oldest read
            oldest = min(figures.cached, key=lambda k: figures.cached[k].at)
            figures.cached.pop(oldest)
            figures.reading.pop(oldest, None)
        return fresh


async def _read_line(account: LineAccount, unit: str, created_at: datetime) -> LineResults:
    start = created_at.astimezone(_LINE_DAYS).date()
    today = datetime.now(UTC).astimezone(_LINE_DAYS).date()
    end = max(start, min(today, start + timedelta(days=LINE_PERIOD_DAYS)))
    read_at = datetime.now(UTC)
    try:
        stats: UnitStatistics = await account.unit_statistics(unit, start, end)
    except ProviderError as exc:
        return LineResults(
            aggregation_unit=unit,
            period_from=start,
            period_to=end,
            read_at=read_at,
            error=f"LINE answered {exc.status}: {exc.message}"
            if exc.status
            else f"LINE could not be read: {exc.message}",
        )
    return LineResults(
        aggregation_unit=unit,
        period_from=start,
        period_to=end,
        unique_impressions=stats.unique_impressions,
        unique_clicks=stats.unique_clicks,
        clicks=stats.clicks,
        unique_media_played=stats.unique_media_played,
        unique_media_played_100_percent=stats.unique_media_played_100_percent,
        read_at=read_at,
    )
