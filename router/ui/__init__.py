"""The dashboard at `/ui`: server-rendered pages over the same store the API reads.

One module per page; each exports its handlers and is listed in `PAGES`. Shared parts
(templates, session guard, security headers) are in `router.ui.pages`; sign-in in
`router.ui.session` and `router.ui.login`.
"""

from __future__ import annotations

from typing import Any

from litestar import Router
from litestar.handlers import HTTPRouteHandler
from litestar.static_files import create_static_files_router

from router.api.body_checks import BODY_CHECKS
from router.service import Runtime
from router.ui import (
    audiences,
    campaigns,
    intents,
    journeys,
    login,
    members,
    overview,
    previews_page,
    sandbox,
)
from router.ui.pages import (
    STATIC,
    STATIC_PATH,
    Dashboard,
    add_security_headers,
    require_session,
    templates,
    to_login,
)
from router.ui.session import LoginRequired, Sessions

PAGES: list[HTTPRouteHandler] = [
    login.login_form,
    login.login,
    login.logout,
    overview.overview,
    previews_page.previews_form,
    previews_page.previews_render,
    audiences.audience_list,
    audiences.audience_create,
    audiences.audience_page,
    audiences.audience_reach,
    audiences.audience_upload,
    journeys.journeys_page,
    overview.overview_figures,
    members.members,
    members.member,
    sandbox.sandbox_page,
    sandbox.sandbox_newer,
    sandbox.sandbox_email_html,
    sandbox.sandbox_clear,
    campaigns.campaign_list,
    campaigns.campaign_page,
    campaigns.campaign_progress,
    campaigns.campaign_cancel,
    campaigns.campaign_email,
    intents.intents_page,
    intents.intent_page,
    intents.intent_email,
]
"""Every dashboard route; a new page adds its handlers here."""


def dashboard_for(runtime: Runtime) -> Dashboard:
    return Dashboard(runtime, Sessions(runtime.pool, runtime.api_keys), templates())


def ui_router() -> Router:
    """`/ui` and its static files; the app must hold a `Dashboard` in `state["dashboard"]`."""
    opt: dict[str, Any] = {BODY_CHECKS: "form"}  # form posts are not JSON
    return Router(
        path="/ui",
        route_handlers=[
            *PAGES,
            create_static_files_router(
                path=STATIC_PATH.removeprefix("/ui"),
                directories=[STATIC],
                include_in_schema=False,
                name="ui-static",
                opt={"public": True},
            ),
        ],
        guards=[require_session],
        exception_handlers={LoginRequired: to_login},
        after_request=add_security_headers,
        include_in_schema=False,
        opt=opt,
    )
