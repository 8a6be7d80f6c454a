"""What the overview page reads: intents and deliveries per channel over a recent window.

Intent ids are time-ordered (version 7 UUIDs: their first 48 bits are the millisecond they were
made), so "the intents of the last N hours" is a range of the `intents` primary key, and their
deliveries are found through `deliveries (intent_id, channel)`, the unique index every intent's
deliveries are read by. No time index on either table is needed, and the work is bounded by
the window: what was accepted in it, never the whole table.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final, Literal
from uuid import UUID

import msgspec

from router.database import Pool
from router.store import group_state

RangeName = Literal["24h", "7d", "30d"]
RANGES: Final[dict[str, tuple[int, timedelta]]] = {
    "24h": (24, timedelta(hours=1)),
    "7d": (7, timedelta(days=1)),
    "30d": (30, timedelta(days=1)),
}
"""Each selectable window: how many buckets, each how long."""


class Window(msgspec.Struct, frozen=True):
    """The buckets of one window, oldest first; the last one holds now."""

    name: str
    start: datetime
    step: timedelta
    buckets: int

    def bucket_starts(self) -> list[datetime]:
        return [self.start + i * self.step for i in range(self.buckets)]


def window(name: str, now: datetime) -> Window:
    """The window `name` ending now: whole UTC hours or days, the current one last."""
    count, step = RANGES[name]
    if step == timedelta(hours=1):
        current = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    else:
        current = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return Window(name=name, start=current - (count - 1) * step, step=step, buckets=count)


def first_id_at(at: datetime) -> UUID:
    """The smallest version-7 UUID made at or after `at`: where the window starts in the
    primary key of `intents`."""
    ms = int(at.timestamp() * 1000)
    return UUID(int=(ms & 0xFFFF_FFFF_FFFF) << 80)


class ChannelBucket(msgspec.Struct, frozen=True):
    """One channel's deliveries of the intents accepted in one bucket, by outcome so far."""

    bucket: datetime
    channel: str
    deliveries: int
    fallbacks: int
    sent: int
    failed: int


class WindowCounts(msgspec.Struct, frozen=True):
    """Intents per bucket and each channel's deliveries per bucket, for one window."""

    window: Window
    intents: list[int]
    channels: list[ChannelBucket]


# A delivery's status is its send group's while it is grouped (router/store/group_state.py).
# 'sent' includes the email a mailbox later bounced or complained about: it left the router.
_STATUS = group_state.status("d", "s")
_CHANNEL_BUCKETS = f"""
SELECT date_bin($2::interval, i.created_at, $3::timestamptz) AS bucket, d.channel,
       count(*)::int AS deliveries,
       count(*) FILTER (WHERE d.is_fallback)::int AS fallbacks,
       count(*) FILTER (WHERE {_STATUS} IN ('sent', 'bounced', 'complained'))::int AS sent,
       count(*) FILTER (WHERE {_STATUS} = 'failed')::int AS failed
FROM intents i
JOIN deliveries d ON d.intent_id = i.id
LEFT JOIN send_groups s ON s.id = d.send_group_id
WHERE i.id >= $1 AND i.created_at >= $3
GROUP BY 1, 2
"""  # noqa: S608 - built from constant fragments only
_INTENT_BUCKETS = """
SELECT date_bin($2::interval, created_at, $3::timestamptz) AS bucket, count(*)::int AS n
FROM intents WHERE id >= $1 AND created_at >= $3
GROUP BY 1
"""


async def window_counts(pool: Pool, win: Window) -> WindowCounts:
    """The window's intents and deliveries, two statements over the `intents` key range."""
    lowest = first_id_at(win.start - timedelta(seconds=5))  # ids are made just before commit
    async with pool.acquire() as conn:
        intent_rows = await conn.fetch(_INTENT_BUCKETS, lowest, win.step, win.start)
        channel_rows = await conn.fetch(_CHANNEL_BUCKETS, lowest, win.step, win.start)
    index = {start: i for i, start in enumerate(win.bucket_starts())}
    intents = [0] * win.buckets
    for r in intent_rows:
        if r["bucket"] in index:
            intents[index[r["bucket"]]] += r["n"]
    channels = [
        ChannelBucket(
            bucket=r["bucket"],
            channel=r["channel"],
            deliveries=r["deliveries"],
            fallbacks=r["fallbacks"],
            sent=r["sent"],
            failed=r["failed"],
        )
        for r in channel_rows
        if r["bucket"] in index
    ]
    return WindowCounts(window=win, intents=intents, channels=channels)


class ChannelTotals(msgspec.Struct, frozen=True):
    """One channel's deliveries over the whole window."""

    channel: str
    deliveries: int
    fallbacks: int
    sent: int
    failed: int

    @property
    def waiting(self) -> int:
        """Neither sent nor failed yet (pending, retrying, held, uncertain, cancelled)."""
        return self.deliveries - self.sent - self.failed


def totals(counts: WindowCounts, channels: list[str]) -> list[ChannelTotals]:
    """Per channel of `channels` (and any other that has deliveries), summed over the window."""
    names = list(channels) + sorted({c.channel for c in counts.channels} - set(channels))
    out = []
    for name in names:
        rows = [c for c in counts.channels if c.channel == name]
        out.append(
            ChannelTotals(
                channel=name,
                deliveries=sum(r.deliveries for r in rows),
                fallbacks=sum(r.fallbacks for r in rows),
                sent=sum(r.sent for r in rows),
                failed=sum(r.failed for r in rows),
            )
        )
    return out
