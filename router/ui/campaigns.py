"""The dashboard's campaigns: the list, newest first, and one campaign's live page.

A running campaign's page polls its progress fragment about once a second (htmx,
`hx-trigger="every 1s"`); the fragment holds the chart, the counts and the results of both
channels, and once the campaign is done (cancelled, failed, or sending with nothing left to
send) it is rendered without the trigger, so the polling stops. The chart is an inline SVG
made here: one stacked bar per channel. Every read is bounded and indexed: the list is a
keyset page of `campaigns_newest`; a campaign's counts come from `campaign_counts` and
`campaign_results` by primary key (`router.campaign_results`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final
from uuid import UUID

import msgspec
from litestar import Request, Response, get, post
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect

from router import campaign_results, campaigns
from router.campaign_results import CampaignResults, ChannelResults
from router.campaigns import CampaignRequest
from router.content import Content
from router.store import campaign_counts
from router.ui.pages import Dashboard, email_frame

PAGE_SIZE: Final = 25
POLL_SECONDS: Final = 1
# Segments of a channel's bar, in order, with the colour each is drawn in.
SEGMENTS: Final = (
    ("sent", "#06c755"),
    ("failed", "#b42318"),
    ("cancelled", "#98a2b3"),
    ("uncertain", "#f79009"),
    ("waiting", "#d9dee3"),
)
CHART_WIDTH: Final = 600
BAR_HEIGHT: Final = 22
ROW_HEIGHT: Final = 34
LABEL_WIDTH: Final = 110


class Listed(msgspec.Struct, kw_only=True):
    """One campaign in the list, with how much of it is settled."""

    id: UUID
    name: str | None
    status: str
    created_at: datetime
    accepted: int
    line_account: str
    deliveries: int
    settled: int

    @property
    def percent(self) -> int:
        return _percent(self.settled, self.deliveries, self.status)


class Segment(msgspec.Struct, frozen=True):
    x: float
    width: float
    colour: str
    label: str
    count: int


class Bar(msgspec.Struct, frozen=True):
    channel: str
    y: int
    total: int
    segments: list[Segment]


def _percent(settled: int, total: int, status: str) -> int:
    if total == 0:
        return 100 if status not in ("fanning_out",) else 0
    return min(100, settled * 100 // total)


def _done(results: CampaignResults) -> bool:
    """Nothing more will happen to its deliveries: stopped, or all sent and settled."""
    if results.status in ("cancelled", "failed"):
        return True
    return results.status == "sending" and all(c.waiting == 0 for c in results.channels)


def chart(channels: list[ChannelResults]) -> list[Bar]:
    """One stacked bar per channel, its segments' widths in proportion to their counts."""
    bars: list[Bar] = []
    span = CHART_WIDTH - LABEL_WIDTH
    for row, channel in enumerate(channels):
        total = max(channel.deliveries, 1)
        x = float(LABEL_WIDTH)
        segments: list[Segment] = []
        for name, colour in SEGMENTS:
            count = int(getattr(channel, name))
            if count <= 0:
                continue
            width = span * count / total
            segments.append(Segment(x, width, colour, name, count))
            x += width
        bars.append(Bar(channel.channel, row * ROW_HEIGHT, channel.deliveries, segments))
    return bars


async def _listed(dashboard: Dashboard, before: tuple[datetime, UUID] | None) -> list[Listed]:
    """A page of campaigns newest first (index `campaigns_newest`), each with its counts read
    from `campaign_counts` by primary key."""
    async with dashboard.runtime.pool.acquire() as conn:
        if before is None:
            rows = await conn.fetch(
                "SELECT id, name, status, created_at, accepted, line_account FROM campaigns"
                " ORDER BY created_at DESC, id DESC LIMIT $1",
                PAGE_SIZE,
            )
        else:
            rows = await conn.fetch(
                "SELECT id, name, status, created_at, accepted, line_account FROM campaigns"
                " WHERE (created_at, id) < ($2, $3) ORDER BY created_at DESC, id DESC LIMIT $1",
                PAGE_SIZE,
                *before,
            )
        listed: list[Listed] = []
        for row in rows:
            counted = await campaign_counts.read(conn, row["id"])
            total = sum(c.deliveries for c in counted)
            waiting = sum(
                c.deliveries for c in counted if c.status in campaign_results.WAITING_STATUSES
            )
            listed.append(Listed(deliveries=total, settled=total - waiting, **dict(row)))
    return listed


@get("/campaigns", name="ui-campaigns")
async def campaign_list(
    request: Request[Any, Any, Any], after: FromQuery[str | None] = None
) -> Response[str]:
    """`after`: the last campaign of the previous page, as `<created_at>_<id>`."""
    dashboard: Dashboard = request.app.state["dashboard"]
    before = None
    if after:
        stamp, _, ident = after.rpartition("_")
        try:
            before = (datetime.fromisoformat(stamp), UUID(ident))
        except ValueError:
            before = None
    listed = await _listed(dashboard, before)
    more = (
        f"{listed[-1].created_at.isoformat()}_{listed[-1].id}" if len(listed) == PAGE_SIZE else None
    )
    return dashboard.page(
        request, "ui/campaigns.html", active="campaigns", campaigns=listed, more=more
    )


async def _results(dashboard: Dashboard, campaign_id: UUID) -> CampaignResults:
    runtime = dashboard.runtime
    results = await campaign_results.read(
        runtime.pool,
        campaign_id,
        runtime.line_accounts,
        events=runtime.config.events_configured,
    )
    if results is None:
        raise NotFoundException(f"no campaign with id {campaign_id}")
    return results


def _progress_context(results: CampaignResults) -> dict[str, Any]:
    total = sum(c.deliveries for c in results.channels)
    waiting = sum(c.waiting for c in results.channels)
    done = _done(results)
    return {
        "results": results,
        "bars": chart(results.channels),
        "chart_width": CHART_WIDTH,
        "chart_height": max(len(results.channels), 1) * ROW_HEIGHT,
        "bar_height": BAR_HEIGHT,
        "label_width": LABEL_WIDTH,
        "segments": SEGMENTS,
        "percent": 100 if done else _percent(total - waiting, total, results.status),
        "done": done,
        "poll_seconds": POLL_SECONDS,
    }


class StoredCampaign(msgspec.Struct, frozen=True):
    """What the pages read of the campaign's row beyond its view: the request as stored, for
    its content, and the LINE account it goes out under."""

    template: CampaignRequest
    line_account: str


async def _stored(dashboard: Dashboard, campaign_id: UUID) -> StoredCampaign:
    """The campaign's stored request and LINE account (by primary key)."""
    async with dashboard.runtime.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT template::text AS template, line_account FROM campaigns WHERE id = $1",
            campaign_id,
        )
    if row is None:
        raise NotFoundException(f"no campaign with id {campaign_id}")
    template = msgspec.json.decode(row["template"], type=CampaignRequest)
    return StoredCampaign(template, row["line_account"])


@get("/campaigns/{campaign_id:uuid}", name="ui-campaign")
async def campaign_page(
    request: Request[Any, Any, Any], campaign_id: FromPath[UUID]
) -> Response[str]:
    dashboard: Dashboard = request.app.state["dashboard"]
    stored = await _stored(dashboard, campaign_id)
    template = stored.template
    async with dashboard.runtime.pool.acquire() as conn:
        view = await campaigns.view(conn, campaign_id)
    if view is None:
        raise NotFoundException(f"no campaign with id {campaign_id}")
    results = await _results(dashboard, campaign_id)
    content = Content(email=template.email, line=template.line)
    line_messages = [msgspec.to_builtins(m) for m in content.line_messages()]
    email = template.email
    return dashboard.page(
        request,
        "ui/campaign.html",
        active="campaigns",
        campaign=view,
        line_account=stored.line_account,
        line_messages=line_messages,
        email_html_url=(
            f"/ui/campaigns/{campaign_id}/email.html" if email and email.html else None
        ),
        email_text=email.text if email else None,
        email_subject=email.subject if email else None,
        **_progress_context(results),
    )


@get("/campaigns/{campaign_id:uuid}/progress", name="ui-campaign-progress")
async def campaign_progress(
    request: Request[Any, Any, Any], campaign_id: FromPath[UUID]
) -> Response[str]:
    """The part of the page that changes: chart, counts, results (polled while running)."""
    dashboard: Dashboard = request.app.state["dashboard"]
    results = await _results(dashboard, campaign_id)
    return dashboard.fragment(
        request,
        "ui/campaign_progress.html",
        campaign_id=campaign_id,
        **_progress_context(results),
    )


@post("/campaigns/{campaign_id:uuid}/cancel", name="ui-campaign-cancel")
async def campaign_cancel(request: Request[Any, Any, Any], campaign_id: FromPath[UUID]) -> Redirect:
    """The API's cancel (`router.campaigns.cancel`), from the page's form."""
    dashboard: Dashboard = request.app.state["dashboard"]
    async with dashboard.runtime.pool.acquire() as conn:
        found = await campaigns.cancel(conn, campaign_id)
    if not found:
        raise NotFoundException(f"no campaign with id {campaign_id}")
    return Redirect(f"/ui/campaigns/{campaign_id}", status_code=303)


@get("/campaigns/{campaign_id:uuid}/email.html", name="ui-campaign-email")
async def campaign_email(
    request: Request[Any, Any, Any], campaign_id: FromPath[UUID]
) -> Response[str]:
    """The email's HTML part for the preview frame, under a policy that lets it load nothing
    (no scripts, no remote images or styles) and keeps it out of the router's origin."""
    dashboard: Dashboard = request.app.state["dashboard"]
    template = (await _stored(dashboard, campaign_id)).template
    if template.email is None or not template.email.html:
        raise NotFoundException("this campaign has no HTML email")
    return email_frame(template.email.html)
