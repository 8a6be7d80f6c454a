"""API-key authentication for `/v1`, `/v3` and `/metrics`, checked before a request body is
read.

The key comes as `Authorization: Bearer <key>`. listmonk's messenger settings offer only
HTTP basic auth, so its postback path also takes the key as the basic-auth password. `/v3`
is SendGrid's API, whose clients expect SendGrid's error body on a 401.
"""

from __future__ import annotations

import base64
import binascii

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

from router.api_keys import KeyRing, key_hash
from router.ingress import sendgrid
from router.problems import PROBLEM_MEDIA_TYPE, Problem

PROTECTED_PREFIX = "/v1/"
SENDGRID_PREFIX = "/v3/"
METRICS_PATH = "/metrics"
"""Behind the same keys: the figures say how much is sent, to whom by channel."""
BASIC_AUTH_PATHS = frozenset({"/v1/compat/listmonk"})
"""Paths whose callers can only send basic auth: the password is checked as an API key."""


def bearer_token(scope: Scope, *, basic: bool = False) -> str | None:
    """The API key of a request; with `basic`, a basic-auth password counts as one."""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            if basic and scheme.lower() == "basic":
                return _basic_password(token.strip())
            return None
    return None


def _basic_password(credentials: str) -> str | None:
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    _, colon, password = decoded.partition(":")
    return password if colon and password else None


def auth_middleware_factory(keys: KeyRing) -> Middleware:
    """ASGI middleware: a missing or unknown key gets 401 and the request goes no further.

    Keys are compared by SHA-256 digest (set membership, then an indexed look-up), so the time
    taken says nothing about how close a guess was, and only digests are held in memory."""

    def middleware(app: ASGIApp) -> ASGIApp:
        async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == ScopeType.HTTP and (
                scope["path"].startswith((PROTECTED_PREFIX, SENDGRID_PREFIX))
                or scope["path"] == METRICS_PATH
            ):
                path: str = scope["path"]
                basic = path.rstrip("/") in BASIC_AUTH_PATHS
                token = bearer_token(scope, basic=basic)
                digest = key_hash(token) if token is not None else None
                if digest is None or not await keys.accepts(digest):
                    if path.startswith(SENDGRID_PREFIX):
                        await _unauthorized_sendgrid(send, missing=token is None)
                    else:
                        await _unauthorized(send, missing=token is None, basic=basic)
                    return
                scope["auth"] = digest  # which key: its request rate is counted per key
            await app(scope, receive, send)

        return guarded

    return middleware


async def _unauthorized(send: Send, *, missing: bool, basic: bool = False) -> None:
    if not missing:
        detail = "the API key is not valid"
    elif basic:
        detail = "send the API key as the basic-auth password, or as 'Authorization: Bearer <key>'"
    else:
        detail = "send the API key as 'Authorization: Bearer <key>'"
    body = msgspec.json.encode(Problem(title="Unauthorized", status=401, detail=detail))
    challenges = [(b"www-authenticate", b'Bearer realm="delivery-router"')]
    if basic:
        challenges.append((b"www-authenticate", b'Basic realm="delivery-router"'))
    await _respond(send, body, PROBLEM_MEDIA_TYPE, challenges)


async def _unauthorized_sendgrid(send: Send, *, missing: bool) -> None:
    message = sendgrid.AUTHORIZATION_REQUIRED if missing else sendgrid.UNAUTHORIZED
    body = sendgrid.error_body([sendgrid.SendGridError(message=message)])
    await _respond(send, body, "application/json", [])


async def _respond(
    send: Send, body: bytes, media_type: str, extra: list[tuple[bytes, bytes]]
) -> None:
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": 401,
        "headers": [
            (b"content-type", media_type.encode()),
            (b"content-length", str(len(body)).encode()),
            *extra,
        ],
    }
    end: HTTPResponseBodyEvent = {"type": "http.response.body", "body": body, "more_body": False}
    await send(start)
    await send(end)
