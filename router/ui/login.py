"""The login form: an API key in, a session cookie out (router/ui/session.py)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.enums import RequestEncodingType
from litestar.params import Body, QueryParameter
from litestar.response import Redirect

from router.api_keys import key_hash
from router.ui.pages import PUBLIC, Dashboard
from router.ui.session import COOKIE_NAME, COOKIE_PATH, SESSION_SECONDS, check_origin, safe_next


class LoginForm(msgspec.Struct):
    api_key: str = ""
    next: str = "/ui"


def _dashboard(request: Request[Any, Any, Any]) -> Dashboard:
    dashboard: Dashboard = request.app.state["dashboard"]
    return dashboard


@get("/login", opt=PUBLIC, name="ui-login-form")
async def login_form(
    request: Request[Any, Any, Any], next: Annotated[str, QueryParameter()] = "/ui"
) -> Response[str]:
    return _dashboard(request).page(
        request, "ui/login.html", active="", next=safe_next(next), error=None
    )


@post("/login", opt=PUBLIC, name="ui-login")
async def login(
    request: Request[Any, Any, Any],
    data: Annotated[LoginForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Response[Any]:
    check_origin(request)
    dashboard = _dashboard(request)
    key = data.api_key.strip()
    digest = key_hash(key) if key else None
    if digest is None or not await dashboard.sessions.key_accepted(digest):
        return dashboard.page(
            request,
            "ui/login.html",
            active="",
            status_code=401,
            next=safe_next(data.next),
            error="That API key is not valid." if key else "Enter an API key.",
        )
    cookie = Cookie(
        key=COOKIE_NAME,
        value=await dashboard.sessions.cookie_for(digest),
        path=COOKIE_PATH,
        max_age=SESSION_SECONDS,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return Redirect(safe_next(data.next), status_code=303, cookies=[cookie])


@post("/logout", name="ui-logout")
async def logout() -> Response[Any]:
    gone = Cookie(key=COOKIE_NAME, value="", path=COOKIE_PATH, max_age=0, httponly=True)
    return Redirect("/ui/login", status_code=303, cookies=[gone])
