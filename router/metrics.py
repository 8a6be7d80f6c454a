"""The router's Prometheus metrics, served at `GET /metrics`.

Counters are kept per process where things happen (intake's front doors, recorded outcomes);
each router process exposes its own, and Prometheus sums them across its targets. Queue,
campaign, journey and LINE quota figures are read from PostgreSQL when scraped, by one
statement whose every part is bounded by an index: so a scrape costs the same with ten
pending deliveries or ten million (counts above `COUNT_CAP` are reported as the cap)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import msgspec
from prometheus_client import REGISTRY, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from channels.base import QuotaFigures
from router.database import Pool
from router.intents import IntentResult
from router.line_usage import LineUsage

INTENTS_ACCEPTED = Counter(
    "router_intents_accepted",
    "Intents accepted (committed), by the front door they came through.",
    ["door"],
)
DELIVERIES = Counter(
    "router_deliveries",
    "Delivery outcomes recorded, by channel and status (sent, failed, pending: a retry,"
    " uncertain).",
    ["channel", "outcome"],
)
FALLBACKS = Counter(
    "router_fallbacks",
    "Fallback deliveries made after a delivery failed for good, by the channel that failed.",
    ["channel"],
)

DOORS = ("api", "batch", "sendgrid", "smtp", "listmonk", "campaign", "journey")
"""The front doors, every one pre-declared so a rate is 0 rather than absent."""
for _door in DOORS:
    INTENTS_ACCEPTED.labels(_door)


def count_accepted(door: str, results: Iterable[IntentResult]) -> None:
    """Count the intents of `results` that were accepted (not duplicates nor rejected)."""
    accepted = sum(1 for r in results if r.status == "accepted")
    if accepted:
        INTENTS_ACCEPTED.labels(door).inc(accepted)


def count_recorded(outcomes: Iterable[tuple[str, str, bool]]) -> None:
    """Count recorded outcomes, each (channel, status, whether it made a fallback)."""
    for channel, status, fell_back in outcomes:
        DELIVERIES.labels(channel, status).inc()
        if fell_back:
            FALLBACKS.labels(channel).inc()


def count_grouped(channel: str, status: str, deliveries: int) -> None:
    """Count the deliveries that stay in a send group and take its recorded status."""
    DELIVERIES.labels(channel, status).inc(deliveries)


COUNT_CAP = 100_000
"""Counts of pending rows stop here: a bounded index scan, not a count of a huge table."""

# Each part walks a partial index only: deliveries_due and send_groups_due ((channel,
# next_attempt_at) WHERE status = 'pending'), journey_runs_due (WHERE status = 'active'); the
# campaigns table holds one row per campaign and is read whole. `min(next_attempt_at)` is the index's first
# entry for the channel. The quota row is the month's one row.
_SCRAPE = """
SELECT 'queue' AS kind, q.queue, due.n::float8 AS n, lag.s AS seconds
FROM (SELECT 'deliveries:' || c AS queue, c AS channel, false AS grouped FROM unnest($1::text[]) c
      UNION ALL
      SELECT 'send_groups:' || c, c, true FROM unnest($3::text[]) c) q
CROSS JOIN LATERAL (
    SELECT count(*) AS n FROM (
        SELECT 1 FROM deliveries d
        WHERE NOT q.grouped AND d.status = 'pending' AND d.send_group_id IS NULL
          AND d.channel = q.channel AND d.next_attempt_at <= now()
        UNION ALL
        SELECT 1 FROM send_groups s
        WHERE q.grouped AND s.status = 'pending' AND s.channel = q.channel
          AND s.next_attempt_at <= now()
        LIMIT $2) due_rows) due
CROSS JOIN LATERAL (
    SELECT extract(epoch FROM now() - least(
        (SELECT min(d.next_attempt_at) FROM deliveries d
         WHERE NOT q.grouped AND d.status = 'pending' AND d.send_group_id IS NULL
           AND d.channel = q.channel AND d.next_attempt_at <= now()),
        (SELECT min(s.next_attempt_at) FROM send_groups s
         WHERE q.grouped AND s.status = 'pending' AND s.channel = q.channel
           AND s.next_attempt_at <= now())))::float8 AS s) lag
UNION ALL
SELECT 'campaigns', status, count(*)::float8, NULL FROM campaigns
WHERE status IN ('fanning_out', 'sending') GROUP BY status
UNION ALL
SELECT 'journey_runs', 'active', count(*)::float8, NULL FROM (
    SELECT 1 FROM journey_runs WHERE status = 'active' LIMIT $2) active
"""


class ScrapeRow(msgspec.Struct, frozen=True):
    """One figure read at scrape time: its kind, its label and its values."""

    kind: str
    label: str
    count: float
    seconds: float | None


async def read_figures(
    pool: Pool, channels: Sequence[str], grouped: Sequence[str]
) -> list[ScrapeRow]:
    """The scrape-time figures, by one statement: the delivery queues of `channels`, the
    send group queues of `grouped` (the channels that send to many at once)."""
    async with pool.acquire(timeout=5.0) as conn:
        rows = await conn.fetch(_SCRAPE, list(channels), COUNT_CAP, list(grouped))
    return [ScrapeRow(r["kind"], r["queue"], r["n"], r["seconds"]) for r in rows]


class _ScrapeFigures(Collector):
    """The gauges of one scrape, from figures already read (collection itself is sync)."""

    def __init__(
        self,
        rows: Sequence[ScrapeRow],
        quota: QuotaFigures | None,
        line_usage: Sequence[LineUsage] = (),
    ) -> None:
        self._rows = rows
        self._quota = quota
        self._line_usage = line_usage

    def collect(self) -> Iterable[Metric]:
        depth = GaugeMetricFamily(
            "router_queue_due",
            f"Rows due and waiting to be claimed, per queue (at most {COUNT_CAP}).",
            labels=["queue"],
        )
        oldest = GaugeMetricFamily(
            "router_queue_oldest_due_seconds",
            "How long the oldest due row of the queue has waited (0: none).",
            labels=["queue"],
        )
        campaigns = GaugeMetricFamily(
            "router_campaigns", "Campaigns still running, by status.", labels=["status"]
        )
        for status in ("fanning_out", "sending"):
            found = [r.count for r in self._rows if r.kind == "campaigns" and r.label == status]
            campaigns.add_metric([status], found[0] if found else 0.0)
        runs = GaugeMetricFamily(
            "router_journey_runs_active",
            f"Journey runs still active (at most {COUNT_CAP}).",
        )
        for row in self._rows:
            if row.kind == "queue":
                depth.add_metric([row.label], row.count)
                oldest.add_metric([row.label], max(0.0, row.seconds or 0.0))
            elif row.kind == "journey_runs":
                runs.add_metric([], row.count)
        yield from (depth, oldest, campaigns, runs)
        if self._quota is not None and self._quota.remaining is not None:
            yield GaugeMetricFamily(
                "router_line_quota_remaining",
                "LINE messages left this month, as last read from LINE less what was sent"
                " and reserved since.",
                value=float(self._quota.remaining),
            )
        yield from _line_usage_gauges(self._line_usage)


def _line_usage_gauges(usage: Sequence[LineUsage]) -> Iterable[Metric]:
    """Per LINE account, this month (Japan time): messages used, included left, yen spent."""
    if not usage:
        return
    used = GaugeMetricFamily(
        "router_line_messages_used",
        "LINE messages used this month: LINE's count when read plus what was sent since.",
        labels=["account"],
    )
    left = GaugeMetricFamily(
        "router_line_included_left",
        "Messages the account's plan still includes this month (absent: no limit known).",
        labels=["account"],
    )
    spent = GaugeMetricFamily(
        "router_line_spent_yen",
        "Yen spent this month on LINE messages beyond the plan's included ones, plus its fee.",
        labels=["account"],
    )
    for u in usage:
        used.add_metric([u.account], float(u.used))
        if u.included_left is not None:
            left.add_metric([u.account], float(u.included_left))
        spent.add_metric([u.account], u.monthly_fee_yen + u.extra_cost_yen)
    yield from (used, left, spent)


def exposition(
    rows: Sequence[ScrapeRow], quota: QuotaFigures | None, line_usage: Sequence[LineUsage] = ()
) -> bytes:
    """The text format: the process's counters and histograms, then this scrape's gauges."""
    scrape = CollectorRegistry(auto_describe=False)
    scrape.register(_ScrapeFigures(rows, quota, line_usage))
    return generate_latest(REGISTRY) + generate_latest(scrape)
