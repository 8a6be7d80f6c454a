"""Every HTTP request's id: the caller's `X-Request-Id` when it is short and printable, else a
new one; echoed in the response's `X-Request-Id` and carried by every log record written
while the request is handled (router/log_json.py)."""

from __future__ import annotations

import logging
import re
import time
import uuid

from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Middleware, Receive, Scope, Send

from router.log_json import REQUEST_ID

log = logging.getLogger(__name__)

HEADER = "x-request-id"
MAX_LENGTH = 128
_ACCEPTED = re.compile(rf"[\x21-\x7e]{{1,{MAX_LENGTH}}}")
"""Printable ASCII without spaces: safe in a header and a log line, and not a novel."""


def request_id(scope: Scope) -> str:
    """The caller's id if acceptable, else a new random one."""
    for name, value in scope.get("headers", []):
        if name == HEADER.encode():
            given = value.decode("latin-1")
            if _ACCEPTED.fullmatch(given):
                return given
            break
    return uuid.uuid4().hex


def request_id_middleware(*, access_log: bool) -> Middleware:
    """The middleware; with `access_log`, one line per request: method, route template (not
    the path, which may hold an address), status and duration."""

    def middleware(app: ASGIApp) -> ASGIApp:
        async def with_id(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != ScopeType.HTTP:
                await app(scope, receive, send)
                return
            rid = request_id(scope)
            token = REQUEST_ID.set(rid)
            started = time.perf_counter()
            status = 0

            async def send_with_id(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    MutableScopeHeaders.from_message(message)[HEADER] = rid
                await send(message)

            try:
                await app(scope, receive, send_with_id)
            finally:
                if access_log:
                    log.info(
                        "%s %s %d %.1f ms",
                        scope.get("method", ""),
                        scope.get("path_template") or "(unrouted)",
                        status,
                        (time.perf_counter() - started) * 1000,
                    )
                REQUEST_ID.reset(token)

        return with_id

    return middleware
