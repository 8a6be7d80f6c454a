"""`Allow` on OPTIONS answers names every method of the path.

Litestar 2 builds the automatic OPTIONS answer of a path when the path's first handler is
registered and never updates it, so `OPTIONS /v1/members/{id}` listed one of GET, PUT and
DELETE (fixed in Litestar 3). This middleware puts the path's final methods in its place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from litestar.enums import ScopeType
from litestar.routes import HTTPRoute

if TYPE_CHECKING:
    from litestar import Litestar
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

_ALLOW = b"allow"


def _methods_by_path(app: Litestar) -> dict[str, bytes]:
    return {
        route.path: ", ".join(sorted(route.methods)).encode()
        for route in app.routes
        if isinstance(route, HTTPRoute)
    }


def complete_allow_header(app: ASGIApp) -> ASGIApp:
    allowed: dict[str, bytes] = {}

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["method"] != "OPTIONS":
            await app(scope, receive, send)
            return
        if not allowed:
            allowed.update(_methods_by_path(scope["litestar_app"]))
        handler_paths = scope["route_handler"].paths
        methods = next((allowed[p] for p in handler_paths if p in allowed), None)

        async def send_with_allow(message: Message) -> None:
            if message["type"] == "http.response.start" and methods is not None:
                headers = list(message.get("headers", []))
                if any(name.lower() == _ALLOW for name, _ in headers):
                    headers = [(n, v) for n, v in headers if n.lower() != _ALLOW]
                    headers.append((_ALLOW, methods))
                    message["headers"] = headers
            await send(message)

        await app(scope, receive, send_with_allow)

    return middleware
