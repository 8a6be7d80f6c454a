"""The dashboard's first page: how much went out, by channel, and what LINE has left and costs.

The page holds a figures panel that htmx reloads every few seconds (`/ui/overview/figures`):
the chart of the chosen window, deliveries, fallbacks and failures per channel, the queues'
backlog (the figures `/metrics` reads) and the month's LINE quota priced under each plan.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

import msgspec
from litestar import Request, Response, get

from channels.base import ProviderError, QuotaFigures
from router import line_plans, line_usage
from router.line_usage import LineUsage
from router.metrics import ScrapeRow, read_figures
from router.service import Runtime
from router.store.line_quota import MonthlyQuota
from router.ui.charts import LAYOUTS, Chart, deliveries_chart
from router.ui.overview_reads import RANGES, ChannelTotals, totals, window, window_counts
from router.ui.pages import Dashboard

POLL_SECONDS: Final = {"24h": 5, "7d": 30, "30d": 60}
"""How often the panel reloads: the longer windows count more rows and change more slowly."""


class QueueBacklog(msgspec.Struct, frozen=True):
    """One queue's due rows (capped as `/metrics` caps them) and the oldest one's wait."""

    queue: str
    due: int
    oldest_seconds: float


class LineMonth(msgspec.Struct, frozen=True, kw_only=True):
    """The month's LINE quota as the router sees it, and its messages priced per plan."""

    figures: QuotaFigures | None
    messages: int
    plans: list[line_plans.PlanCost]
    note: str | None
    # Every configured account's month under its own plan (router.line_usage).
    accounts: list[LineUsage] = msgspec.field(default_factory=list)


class OverviewFigures(msgspec.Struct, frozen=True, kw_only=True):
    range: str
    layout: str
    chart: Chart
    channels: list[ChannelTotals]
    intents: int
    backlog: list[QueueBacklog]
    line: LineMonth | None
    read_at: datetime


class BadChoice(Exception):
    """A query parameter outside the values the page offers."""


def _choice(request: Request[Any, Any, Any], name: str, allowed: tuple[str, ...]) -> str:
    value = request.query_params.get(name, allowed[0])
    if value not in allowed:
        raise BadChoice(f"{name}: one of {', '.join(allowed)}, not {value[:40]!r}")
    return value


async def read_overview(runtime: Runtime, range_name: str, layout: str) -> OverviewFigures:
    channels = sorted(runtime.channels)
    win = window(range_name, datetime.now(UTC))
    counts = await window_counts(runtime.pool, win)
    chart = deliveries_chart(counts, channels, "grouped" if layout == "grouped" else "stacked")
    rows = await read_figures(runtime.pool, channels, sorted(runtime.intake_channels.group_sizes))
    return OverviewFigures(
        range=range_name,
        layout=layout,
        chart=chart,
        channels=totals(counts, channels),
        intents=sum(counts.intents),
        backlog=_backlog(rows),
        line=await _line_month(runtime),
        read_at=datetime.now(UTC),
    )


def _backlog(rows: list[ScrapeRow]) -> list[QueueBacklog]:
    return [
        QueueBacklog(r.label, int(r.count), max(0.0, r.seconds or 0.0))
        for r in rows
        if r.kind == "queue"
    ]


async def _line_month(runtime: Runtime) -> LineMonth | None:
    """LINE's figures through the account (read from LINE when the router's copy is old),
    else the router's stored copy when LINE cannot be reached."""
    if runtime.line_account is None:
        return None
    note = None
    figures: QuotaFigures | None
    try:
        figures = await runtime.line_account.quota()
    except ProviderError as exc:
        figures = await MonthlyQuota(runtime.pool).figures(None)
        note = f"LINE's figures could not be read ({exc.status}); showing the last ones stored."
    messages = 0 if figures is None else figures.used_per_line + figures.sent_since_read
    async with runtime.pool.acquire() as conn:
        accounts = await line_usage.every_account(conn, runtime.config.line_accounts())
    return LineMonth(
        figures=figures,
        messages=messages,
        plans=line_plans.costs(messages),
        note=note,
        accounts=accounts,
    )


def _bad_request(exc: BadChoice) -> Response[str]:
    return Response(f"Bad request: {exc}", media_type="text/plain; charset=utf-8", status_code=400)


async def _requested(request: Request[Any, Any, Any]) -> tuple[OverviewFigures, str] | BadChoice:
    """The figures of the window and layout the query string asks for, and the window."""
    dashboard: Dashboard = request.app.state["dashboard"]
    try:
        range_name = _choice(request, "range", tuple(RANGES))
        layout = _choice(request, "layout", LAYOUTS)
    except BadChoice as exc:
        return exc
    return await read_overview(dashboard.runtime, range_name, layout), range_name


@get("/", name="ui-overview")
async def overview(request: Request[Any, Any, Any]) -> Response[str]:
    dashboard: Dashboard = request.app.state["dashboard"]
    found = await _requested(request)
    if isinstance(found, BadChoice):
        return _bad_request(found)
    figures, range_name = found
    return dashboard.page(
        request,
        "ui/overview.html",
        active="overview",
        figures=figures,
        ranges=tuple(RANGES),
        layouts=LAYOUTS,
        poll_seconds=POLL_SECONDS[range_name],
    )


@get("/overview/figures", name="ui-overview-figures")
async def overview_figures(request: Request[Any, Any, Any]) -> Response[str]:
    """The figures panel alone, for htmx's polling."""
    dashboard: Dashboard = request.app.state["dashboard"]
    found = await _requested(request)
    if isinstance(found, BadChoice):
        return _bad_request(found)
    figures, range_name = found
    return dashboard.fragment(
        request, "ui/overview_figures.html", figures=figures, poll_seconds=POLL_SECONDS[range_name]
    )
