"""The dashboard's first page: how much went out, by channel, and what LINE has left."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get

from router.ui.pages import Dashboard


@get("/", name="ui-overview")
async def overview(request: Request[Any, Any, Any]) -> Response[str]:
    dashboard: Dashboard = request.app.state["dashboard"]
    return dashboard.page(request, "ui/overview.html", active="overview")
