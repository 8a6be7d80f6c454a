"""The sandbox page: what `router serve --sandbox` "sent", newest first, as it arrives.

Each LINE message is shown through the shared `line_bubbles` macro and each email through
`email_preview`, whose frame loads the HTML part from `/ui/sandbox/{id}/email.html` under a
policy of its own that lets nothing load but inline styles and data: images, so remote
images (tracking pixels included) never load. Reads `sandbox_messages` newest first by its
primary key (keyset: `id < before`, `id > after`), 50 a page.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from litestar import Request, Response, get, post
from litestar.params import PathParameter, QueryParameter
from litestar.response import Redirect

from router.store import sandbox_messages
from router.ui.pages import Dashboard, email_frame

PAGE_SIZE: Final = 50

Position = Annotated[int | None, QueryParameter(ge=0, le=2**63 - 1)]


def _dashboard(request: Request[Any, Any, Any]) -> Dashboard:
    dashboard: Dashboard = request.app.state["dashboard"]
    return dashboard


@get("/sandbox", name="ui-sandbox")
async def sandbox_page(request: Request[Any, Any, Any], before: Position = None) -> Response[str]:
    dashboard = _dashboard(request)
    messages: list[sandbox_messages.SandboxMessage] = []
    if dashboard.sandbox:
        async with dashboard.runtime.pool.acquire() as conn:
            messages = await sandbox_messages.page(conn, limit=PAGE_SIZE + 1, before_id=before)
    more = len(messages) > PAGE_SIZE
    messages = messages[:PAGE_SIZE]
    return dashboard.page(
        request,
        "ui/sandbox.html",
        active="sandbox",
        messages=messages,
        newest=messages[0].id if messages else 0,
        polling=before is None,
        next_before=messages[-1].id if more else None,
    )


@get("/sandbox/newer", name="ui-sandbox-newer")
async def sandbox_newer(
    request: Request[Any, Any, Any], after: Annotated[int, QueryParameter(ge=0)] = 0
) -> Response[str]:
    """What arrived since `after`, for the page's poll: a new poll, then the new messages."""
    dashboard = _dashboard(request)
    messages: list[sandbox_messages.SandboxMessage] = []
    if dashboard.sandbox:
        async with dashboard.runtime.pool.acquire() as conn:
            messages = await sandbox_messages.page(conn, limit=PAGE_SIZE, after_id=after)
    if len(messages) == PAGE_SIZE:  # perhaps more than a page arrived: show the page anew
        return Response("", status_code=200, headers={"HX-Refresh": "true"})
    return dashboard.fragment(
        request,
        "ui/sandbox_messages.html",
        messages=messages,
        newest=messages[0].id if messages else after,
        polling=True,
    )


@get("/sandbox/{message_id:int}/email.html", name="ui-sandbox-email")
async def sandbox_email_html(
    request: Request[Any, Any, Any], message_id: Annotated[int, PathParameter(ge=1)]
) -> Response[str]:
    """An email's HTML part, alone, for its preview frame."""
    dashboard = _dashboard(request)
    async with dashboard.runtime.pool.acquire() as conn:
        found = await sandbox_messages.one(conn, message_id)
    if found is None or found.email is None or found.email.html is None:
        return Response(
            "no such email HTML part", media_type="text/plain; charset=utf-8", status_code=404
        )
    return email_frame(found.email.html)


@post("/sandbox/clear", name="ui-sandbox-clear")
async def sandbox_clear(request: Request[Any, Any, Any]) -> Response[Any]:
    dashboard = _dashboard(request)
    if dashboard.sandbox:
        async with dashboard.runtime.pool.acquire() as conn:
            await sandbox_messages.clear(conn)
    return Redirect("/ui/sandbox", status_code=303)
