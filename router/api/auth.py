"""Bearer-token authentication for `/v1`, checked before a request body is read."""

from __future__ import annotations

import msgspec
from litestar.enums import ScopeType
from litestar.types import (
    ASGIApp,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Middleware,
    Receive,
    Scope,
    Send,
)

from router.problems import PROBLEM_MEDIA_TYPE, Problem
from router.service import key_hash

PROTECTED_PREFIX = "/v1/"


def bearer_token(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


def auth_middleware_factory(key_hashes: frozenset[bytes]) -> Middleware:
    """ASGI middleware: a missing or unknown key gets 401 and the request goes no further.

    Keys are compared by SHA-256 digest set membership, so the time taken says nothing about
    how close a guess was, and only digests are held in memory."""

    def middleware(app: ASGIApp) -> ASGIApp:
        async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == ScopeType.HTTP and scope["path"].startswith(PROTECTED_PREFIX):
                token = bearer_token(scope)
                if token is None or key_hash(token) not in key_hashes:
                    await _unauthorized(send, missing=token is None)
                    return
            await app(scope, receive, send)

        return guarded

    return middleware


async def _unauthorized(send: Send, *, missing: bool) -> None:
    detail = (
        "send the API key as 'Authorization: Bearer <key>'"
        if missing
        else "the API key is not valid"
    )
    body = msgspec.json.encode(Problem(title="Unauthorized", status=401, detail=detail))
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": 401,
        "headers": [
            (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", b'Bearer realm="delivery-router"'),
        ],
    }
    end: HTTPResponseBodyEvent = {"type": "http.response.body", "body": body, "more_body": False}
    await send(start)
    await send(end)
