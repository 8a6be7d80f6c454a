"""The members pages: find a member by ID, email, phone or LINE user ID (under any LINE
account), and see one member: the channels that reach them and why not (LINE once per
account), their LINE identity under each account, opt-outs, consent, suppression, their
intents (newest first) and their events.

Personal data is shown as `GET /v1/members/{id}` shows it to the same API key's holder.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Request, Response, get
from litestar.params import PathParameter

from router import members as member_records
from router.members import Member
from router.service import Runtime
from router.ui.member_reads import (
    SEARCH_LIMIT,
    Found,
    LineLink,
    StoredIdentity,
    events,
    history,
    line_links,
    read_query,
    search,
)
from router.ui.pages import Dashboard


class ChannelReach(msgspec.Struct, frozen=True):
    """Whether one channel reaches the member now, and if not, why. `account` names the LINE
    account for the LINE channel (each account is a separate identity)."""

    channel: str
    reachable: bool
    detail: str
    account: str | None = None


def _line_reach(link: LineLink) -> ChannelReach:
    """Whether LINE reaches the member through one account, by `Reach.line_reachable`'s rule."""
    if not link.configured:
        why = "this account is not in the router's configuration"
        return ChannelReach("line", False, why, link.account)
    if link.line_user_id is None:
        return ChannelReach("line", False, "no LINE user ID linked", link.account)
    if link.opt_out:
        return ChannelReach("line", False, "opted out of LINE", link.account)
    if not link.friend:
        why = "not a friend of the account (unfollowed or blocked)"
        return ChannelReach("line", False, why, link.account)
    return ChannelReach("line", True, "a friend, not opted out", link.account)


def reach(member: Member, links: list[LineLink], runtime: Runtime) -> list[ChannelReach]:
    """The member's channels by the rules routing applies (router/reach.py and the email
    deliverability rules), in words: LINE once per account in `links`."""
    out = [_line_reach(link) for link in links]
    if not links:
        out.append(ChannelReach("line", False, "no LINE account configured"))
    if member.email is None:
        out.append(ChannelReach("email", False, "no email address"))
    elif member.email_opt_out:
        out.append(ChannelReach("email", False, "opted out of all email"))
    elif member.email_suppression is not None:
        out.append(
            ChannelReach("email", False, f"address suppressed: {member.email_suppression.reason}")
        )
    elif member.email_consent is None and runtime.config.email.require_consent:
        out.append(
            ChannelReach("email", True, "transactional email only: no consent to promotional email")
        )
    else:
        out.append(ChannelReach("email", True, "not opted out, not suppressed"))
    if "line_notification" in runtime.channels:
        out.append(
            ChannelReach(
                "line_notification",
                member.phone is not None,
                "by phone number" if member.phone is not None else "no phone number",
            )
        )
    return out


def _bad_request(message: str) -> Response[str]:
    return Response(
        f"Bad request: {message}", media_type="text/plain; charset=utf-8", status_code=400
    )


@get("/members", name="ui-members")
async def members(request: Request[Any, Any, Any]) -> Response[str]:
    """The search form, and with `q` the members it finds."""
    dashboard: Dashboard = request.app.state["dashboard"]
    text = request.query_params.get("q", "").strip()
    if len(text) > 320:
        return _bad_request("q: at most 320 characters")
    found: list[Found] | None = None
    notes: list[str] = []
    if text:
        query = read_query(text, dashboard.runtime.config.members.default_region)
        notes = query.notes
        async with dashboard.runtime.pool.acquire() as conn:
            found = await search(conn, query)
    return dashboard.page(
        request,
        "ui/members.html",
        active="members",
        q=text,
        found=found,
        notes=notes,
        limit=SEARCH_LIMIT,
    )


@get("/members/{member_id:str}", name="ui-member")
async def member(
    request: Request[Any, Any, Any], member_id: Annotated[str, PathParameter(max_length=255)]
) -> Response[str]:
    """One member; `before` pages their history back from that intent."""
    dashboard: Dashboard = request.app.state["dashboard"]
    before_text = request.query_params.get("before")
    before: UUID | None = None
    if before_text:
        try:
            before = UUID(before_text)
        except ValueError:
            return _bad_request("before: an intent id (a UUID)")
    async with dashboard.runtime.pool.acquire() as conn:
        found = await member_records.get(conn, member_id)
        if found is None:
            return dashboard.page(
                request,
                "ui/member.html",
                active="members",
                status_code=404,
                member_id=member_id,
                member=None,
            )
        stored = {
            account: StoredIdentity(i.user_id, i.friend, i.opt_out)
            for account, i in found.line.items()
        }
        configured = list(dashboard.runtime.config.line_accounts())
        links = await line_links(conn, member_id, stored, configured)
        page = await history(conn, member_id, before)
        latest = await events(conn, member_id)
    return dashboard.page(
        request,
        "ui/member.html",
        active="members",
        member_id=member_id,
        member=found,
        channels=reach(found, links, dashboard.runtime),
        line_links=links,
        history=page,
        before=before,
        events=latest,
    )
