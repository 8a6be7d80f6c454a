"""The dashboard's intent pages: a search that can be linked (every filter is in the query
string, plain GET forms work, htmx swaps the results in place), one intent's page with its
deliveries, attempts, provider ids, events and previews, and its email's HTML part served on
its own for the preview's sandboxed frame.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urlencode
from uuid import UUID

import msgspec
from litestar import Request, Response, get
from litestar.params import FromPath

from channels.line.push import multicast_retry_key, retry_key
from router.config import LINE_ACCOUNT_NAME
from router.content import Content
from router.identifiers import InvalidIdentifier, normalize_email
from router.ui.email_render import PREVIEW_ADDRESS, EmailTarget, render_email
from router.ui.intent_reads import (
    PAGE_SIZES,
    SCAN_WINDOW,
    STATUSES,
    Cursor,
    IntentRecord,
    IntentSearch,
    SearchPage,
    members_by_email,
    read_record,
    search,
)
from router.ui.pages import Dashboard, email_frame

FILTERS: Final = (
    "member",
    "email",
    "campaign",
    "tag",
    "status",
    "channel",
    "account",
    "from",
    "to",
)
MAX_FILTER_LENGTH: Final = 320


class SearchForm(msgspec.Struct, kw_only=True):
    """The form's values as given (shown again in the form), and what was wrong with them."""

    values: dict[str, str]
    size: int
    errors: dict[str, str]


def _form(request: Request[Any, Any, Any]) -> SearchForm:
    values = {
        name: request.query_params.get(name, "").strip()[:MAX_FILTER_LENGTH] for name in FILTERS
    }
    errors: dict[str, str] = {}
    size_text = request.query_params.get("size", str(PAGE_SIZES[0]))
    size = int(size_text) if size_text.isdigit() and int(size_text) in PAGE_SIZES else 0
    if not size:
        errors["size"] = f"page size must be one of {', '.join(map(str, PAGE_SIZES))}"
        size = PAGE_SIZES[0]
    if values["account"] and not LINE_ACCOUNT_NAME.fullmatch(values["account"]):
        errors["account"] = (
            "account must be a LINE account name: 1-32 lower-case letters, digits, - or _,"
            " starting with a letter"
        )
    if values["status"] and values["status"] not in STATUSES:
        errors["status"] = f"status must be one of {', '.join(STATUSES)}"
    for name in ("from", "to"):
        if values[name] and _instant(values[name]) is None:
            errors[name] = f"{name} must be a date and time such as 2026-12-01T09:30 (UTC)"
    if values["email"]:
        try:
            normalize_email(values["email"])
        except InvalidIdentifier:
            errors["email"] = "email must be an email address such as taro@example.jp"
    return SearchForm(values=values, size=size, errors=errors)


def _instant(text: str) -> datetime | None:
    """A time from the form: ISO 8601, read as UTC when it names no zone."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


async def _search(dashboard: Dashboard, form: SearchForm, after: str) -> SearchPage:
    v = form.values
    cursor = Cursor.decode(after) if after else None
    async with dashboard.runtime.pool.acquire() as conn:
        member_ids: tuple[str, ...] | None = None
        address: str | None = None
        if v["email"]:
            address = normalize_email(v["email"]).lower()
            member_ids = await members_by_email(conn, address)
        if v["member"]:
            address = None
            member_ids = (
                (v["member"],)
                if member_ids is None or v["member"] in member_ids
                else ()  # that member does not hold that address: nothing matches both
            )
        query = IntentSearch(
            member_ids=member_ids,
            email_address=address,
            campaign=v["campaign"] or None,
            tag=v["tag"] or None,
            status=v["status"] or None,
            channel=v["channel"] or None,
            line_account=v["account"] or None,
            created_from=_instant(v["from"]) if v["from"] else None,
            created_before=_instant(v["to"]) if v["to"] else None,
            after=cursor,
            page_size=form.size,
        )
        return await search(conn, query)


def _account_choices(dashboard: Dashboard, chosen: str) -> list[str]:
    """The configured LINE accounts, and the one asked for if it is no longer configured (its
    intents are still there to find)."""
    accounts = list(dashboard.runtime.config.line_accounts())
    return [*accounts, chosen] if chosen and chosen not in accounts else accounts


def _link(form: SearchForm, **extra: str) -> str:
    query = {k: v for k, v in form.values.items() if v}
    if form.size != PAGE_SIZES[0]:
        query["size"] = str(form.size)
    return "/ui/intents?" + urlencode(query | extra)


@get("/intents", name="ui-intents")
async def intents_page(request: Request[Any, Any, Any]) -> Response[str]:
    """The search: newest first, a page at a time; an htmx request gets only the results."""
    dashboard: Dashboard = request.app.state["dashboard"]
    form = _form(request)
    after = request.query_params.get("after", "")
    if after and Cursor.decode(after) is None:
        form.errors["after"] = "that page link is not valid: start the search again"
    page = None if form.errors else await _search(dashboard, form, after)
    context = {
        "form": form,
        "page": page,
        "statuses": STATUSES,
        "channels": sorted(dashboard.runtime.channels),
        "line_accounts": _account_choices(dashboard, form.values["account"]),
        "page_sizes": PAGE_SIZES,
        "next_link": _link(form, after=page.next.encode()) if page and page.next else None,
        "first_link": _link(form) if after else None,
        "scan_window": SCAN_WINDOW,
    }
    status_code = 400 if form.errors else 200
    if request.headers.get("hx-request") and not request.headers.get("hx-history-restore-request"):
        response = dashboard.fragment(request, "ui/intents_results.html", **context)
        response.headers["hx-push-url"] = _link(form, **({"after": after} if after else {}))
        return response
    return dashboard.page(
        request, "ui/intents.html", active="intents", status_code=status_code, **context
    )


def _intent_id(text: str) -> UUID | None:
    try:
        return UUID(text)
    except ValueError:
        return None


async def _record(dashboard: Dashboard, text: str) -> IntentRecord | None:
    intent_id = _intent_id(text)
    if intent_id is None:
        return None
    async with dashboard.runtime.pool.acquire() as conn:
        return await read_record(conn, intent_id)


def _not_found(request: Request[Any, Any, Any], dashboard: Dashboard, text: str) -> Response[str]:
    return dashboard.page(
        request, "ui/intent_not_found.html", active="intents", status_code=404, intent_id=text
    )


def _email_target(record: IntentRecord) -> EmailTarget:
    """The intent's email delivery, or a stand-in when it planned none."""
    delivery = next((d for d in record.deliveries if d.view.channel == "email"), None)
    return EmailTarget(
        delivery_id=record.id if delivery is None else delivery.view.id,
        intent_id=record.id,
        address=PREVIEW_ADDRESS if delivery is None else delivery.address,
        content_id=record.content_id,
        member_id=record.member_id,
        kind=record.kind,
        category=record.category,
    )


def _origin(record: IntentRecord, content: Content) -> str:
    """Which front door made the intent, as far as what is stored tells."""
    metadata = record.metadata or {}
    if record.journey_id is not None:
        return f"journey {record.journey_id}, step {record.journey_step}"
    if record.campaign_id is not None:
        return f"campaign {record.campaign_id} (POST /v1/campaigns)"
    if content.relayed is not None:
        return "SMTP relay"
    if "sg_message_id" in metadata or record.batch_id is not None:
        return "SendGrid-compatible /v3/mail/send"
    if "listmonk_subscriber_uuid" in metadata:
        return "listmonk messenger"
    return "POST /v1/intents (or its batch)"


def _provider_ids(record: IntentRecord) -> dict[UUID, list[tuple[str, str]]]:
    """What each delivery is known by at its provider: retry keys, request ids, Message-IDs."""
    found: dict[UUID, list[tuple[str, str]]] = {}
    for d in record.deliveries:
        ids: list[tuple[str, str]] = []
        v = d.view
        if v.channel == "line":
            if d.send_group_id is not None and v.narrowcast is None:
                ids.append(("send group", str(d.send_group_id)))
                ids.append(("X-Line-Retry-Key", str(multicast_retry_key(d.send_group_id))))
            elif v.narrowcast is None:
                ids.append(("X-Line-Retry-Key", str(retry_key(v.id))))
        if v.narrowcast is not None:
            ids.append(("narrowcast request id", v.narrowcast.request_id or "not yet"))
            ids.append(("narrowcast status", v.narrowcast.status))
        if v.provider_ref:
            label = "Message-ID" if v.channel == "email" else "x-line-request-id"
            ids.append((label, v.provider_ref))
        if v.channel == "line" and v.status == "sent":
            ids.append(("sent message ids", "not kept by the router (LINE's request id names it)"))
        if v.smtp_queue_id:
            ids.append(("upstream SMTP reply", v.smtp_queue_id))
        found[v.id] = ids
    return found


def _fallback_reason(record: IntentRecord) -> str | None:
    """Why the fallback delivery was made: the primary's final error, as stored."""
    if not any(d.view.fallback for d in record.deliveries):
        return None
    failed = [d for d in record.deliveries if not d.view.fallback and d.view.status == "failed"]
    if not failed:
        return "the primary delivery failed for good"
    return "; ".join(f"{d.view.channel}: {d.view.last_error or 'no error stored'}" for d in failed)


@get("/intents/{intent_id:str}", name="ui-intent")
async def intent_page(request: Request[Any, Any, Any], intent_id: FromPath[str]) -> Response[str]:
    dashboard: Dashboard = request.app.state["dashboard"]
    record = await _record(dashboard, intent_id)
    if record is None:
        return _not_found(request, dashboard, intent_id)
    content = msgspec.json.decode(record.content, type=Content)
    email = render_email(dashboard.runtime.config.email, _email_target(record), content)
    on_line = any(d.view.channel.startswith("line") for d in record.deliveries)
    line_messages = (
        [msgspec.to_builtins(m) for m in content.line_messages()]
        if content.line is not None or (on_line and content.email is not None)
        else []
    )
    return dashboard.page(
        request,
        "ui/intent.html",
        active="intents",
        intent=record,
        origin=_origin(record, content),
        provider_ids=_provider_ids(record),
        fallback_reason=_fallback_reason(record),
        email=email,
        line_messages=line_messages,
        now=datetime.now(UTC),
    )


@get("/intents/{intent_id:str}/email.html", name="ui-intent-email")
async def intent_email(request: Request[Any, Any, Any], intent_id: FromPath[str]) -> Response[str]:
    """The email's HTML part alone, for the preview frame, under a policy of its own."""
    dashboard: Dashboard = request.app.state["dashboard"]
    record = await _record(dashboard, intent_id)
    if record is None:
        return _not_found(request, dashboard, intent_id)
    content = msgspec.json.decode(record.content, type=Content)
    email = render_email(dashboard.runtime.config.email, _email_target(record), content)
    if email is None or email.html is None:
        return _not_found(request, dashboard, intent_id)
    return email_frame(email.html)
