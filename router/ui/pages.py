"""What every dashboard page shares: templates, the signed-in session, security headers.

Pages are rendered on the server with Jinja2 (autoescaped) and enhanced with htmx, whose file
ships in `static/` with its licence, so the dashboard works with no internet. No page runs an
inline script: the Content-Security-Policy below allows scripts from the router only, and
images, frames, fonts and connections to the router only, so a page can never make the browser
reach another host (remote images in a previewed message included).

Every route under `/ui` is behind `require_session` (a guard on the whole router) unless its
handler says `opt={"public": True}` (the login form, the static files).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import jinja2
from litestar import Request, Response
from litestar.connection import ASGIConnection
from litestar.exceptions import HTTPException
from litestar.handlers.base import BaseRouteHandler
from litestar.response import Redirect

from router.api.body_checks import STREAMED
from router.service import Runtime
from router.ui.previews import line_preview
from router.ui.session import (
    COOKIE_NAME,
    CSRF_FIELD,
    CSRF_HEADER,
    UNSAFE_METHODS,
    LoginRequired,
    Session,
    Sessions,
    check_csrf,
    check_origin,
)

TEMPLATES: Final = Path(__file__).parent / "templates"
STATIC: Final = Path(__file__).parent / "static"
STATIC_PATH: Final = "/ui/static"
PUBLIC: Final[dict[str, Any]] = {"public": True}
"""Handler `opt` of the few routes reachable without a session."""
STREAMED_FORM: Final[dict[str, Any]] = {**STREAMED, "csrf_in_stream": True}
"""Handler `opt` of a route that streams a multipart body (a file upload): the guard cannot
read the form's CSRF field without reading the whole body first, so when the token is not in
the header it checks the origin only, and the handler must pass `streamed_csrf_check(request)`
to the code that reads the fields before the file."""

CONTENT_SECURITY_POLICY: Final = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "frame-src 'self'",
        "frame-ancestors 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "object-src 'none'",
    ]
)
SECURITY_HEADERS: Final = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}

EMAIL_FRAME_POLICY: Final = "; ".join(
    [
        "default-src 'none'",
        "style-src 'unsafe-inline'",
        "img-src data:",
        "frame-ancestors 'self'",
        "form-action 'none'",
        "base-uri 'none'",
    ]
)
"""An email's HTML part in its preview frame may style itself and show images it carries,
nothing more: no scripts, no remote images (which would tell the sender it was opened), no
forms; and only the dashboard may frame it."""


def email_frame(html: str) -> Response[str]:
    """An email's HTML part, served alone for a preview frame under `EMAIL_FRAME_POLICY`."""
    return Response(
        html,
        media_type="text/html; charset=utf-8",
        headers={"content-security-policy": EMAIL_FRAME_POLICY},
    )


NAVIGATION: Final = (
    ("overview", "Overview", "/ui"),
    ("intents", "Intents", "/ui/intents"),
    ("campaigns", "Campaigns", "/ui/campaigns"),
    ("audiences", "Audiences", "/ui/audiences"),
    ("journeys", "Journeys", "/ui/journeys"),
    ("members", "Members", "/ui/members"),
    ("sandbox", "Sandbox", "/ui/sandbox"),
    ("previews", "Previews", "/ui/previews"),
)


@dataclass(frozen=True)
class Dashboard:
    """Given to every dashboard handler as `dashboard`: the running router, sessions and
    templates, and the two ways to answer (`page`, `fragment`)."""

    runtime: Runtime
    sessions: Sessions
    templates: jinja2.Environment

    @property
    def sandbox(self) -> bool:
        return self.runtime.config.sandbox.enabled

    def page(
        self,
        request: Request[Any, Any, Any],
        template: str,
        *,
        active: str,
        status_code: int = 200,
        **context: Any,
    ) -> Response[str]:
        """A whole page: `template` extends `ui/base.html`; `active` names the navigation item
        to highlight (one of `NAVIGATION`, or "" for none)."""
        return self._render(request, template, active=active, status_code=status_code, **context)

    def fragment(
        self, request: Request[Any, Any, Any], template: str, **context: Any
    ) -> Response[str]:
        """Part of a page, for an htmx request (`hx-get` polling a chart, say)."""
        return self._render(request, template, active="", status_code=200, **context)

    def _render(
        self,
        request: Request[Any, Any, Any],
        template: str,
        *,
        active: str,
        status_code: int,
        **context: Any,
    ) -> Response[str]:
        session = current_session(request)
        html = self.templates.get_template(template).render(
            sandbox=self.sandbox,
            navigation=NAVIGATION,
            active=active,
            csrf_token=session.csrf_token if session is not None else "",
            static=STATIC_PATH,
            **context,
        )
        return Response(html, media_type="text/html; charset=utf-8", status_code=status_code)


def templates() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    # `line_bubbles` in ui/previews.html draws the view models this makes.
    environment.globals["line_preview"] = line_preview
    return environment


def current_session(request: Request[Any, Any, Any]) -> Session | None:
    session: Session | None = request.scope.get("state", {}).get("ui_session")
    return session


def signed_in(request: Request[Any, Any, Any]) -> Session:
    """The session `require_session` found (every non-public handler has one)."""
    session = current_session(request)
    if session is None:  # pragma: no cover - the guard stops such a request first
        raise LoginRequired(request.url.path)
    return session


async def require_session(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """The guard of every `/ui` route: a valid session cookie, and on an unsafe method the
    CSRF token and a same-site origin."""
    if handler.opt.get("public"):
        return
    dashboard: Dashboard = connection.app.state["dashboard"]
    session = await dashboard.sessions.read(connection.cookies.get(COOKIE_NAME))
    if session is None:
        query = connection.scope.get("query_string", b"").decode("latin-1")
        raise LoginRequired(connection.url.path + (f"?{query}" if query else ""))
    connection.scope.setdefault("state", {})["ui_session"] = session
    if connection.scope.get("method") in UNSAFE_METHODS:
        request: Request[Any, Any, Any] = Request(connection.scope, connection.receive)
        if handler.opt.get("csrf_in_stream") and CSRF_HEADER not in request.headers:
            check_origin(request)  # the token is checked in the stream: streamed_csrf_check
            return
        await check_csrf(request, session)


def streamed_csrf_check(request: Request[Any, Any, Any]) -> Callable[[dict[str, str]], None]:
    """For a `STREAMED_FORM` route: checks the form's CSRF field (sent before the file) unless
    the guard already checked the token in the header."""
    session = signed_in(request)
    in_header = CSRF_HEADER in request.headers

    def check(fields: dict[str, str]) -> None:
        if in_header:
            return
        token = fields.get(CSRF_FIELD)
        if token is None or not hmac.compare_digest(token, session.csrf_token):
            raise HTTPException(
                status_code=403, detail="missing or wrong CSRF token; reload the page"
            )

    return check


def to_login(request: Request[Any, Any, Any], exc: LoginRequired) -> Response[Any]:
    """Pages redirect to the login form; htmx requests are told to load it whole."""
    from urllib.parse import quote

    target = f"/ui/login?next={quote(exc.next_path, safe='/')}"
    if request.headers.get("hx-request"):
        return Response("", status_code=401, headers={"HX-Redirect": target})
    return Redirect(target, status_code=303)


def add_security_headers(response: Response[Any]) -> Response[Any]:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response
