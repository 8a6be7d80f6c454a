"""Who is signed in to the dashboard: a signed session cookie made from an API key.

The dashboard is behind the same API keys as `/v1`. A browser cannot send a bearer header on
a plain link, so `/ui/login` takes the key once and answers with a cookie that names the key
by its digest (never the key), an expiry and a random nonce, signed with HMAC-SHA256 under a
secret the router keeps in PostgreSQL (`router_secrets`, shared by every process).

- HttpOnly, so page scripts never see it; SameSite=Strict and Path=/ui, so no other site's
  page can make the browser send it; Secure when the request came over HTTPS.
- Every request re-checks the key's digest against the key ring, so revoking a key ends its
  sessions within a second.
- Forms and htmx requests carry a CSRF token derived from the nonce (`csrf_token`), checked
  on every unsafe method, and a cross-origin `Origin` is refused before that.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any, Final

from litestar import Request
from litestar.exceptions import HTTPException

from router.api_keys import KeyRing
from router.database import Pool
from router.store import router_secrets

COOKIE_NAME: Final = "router_ui"
COOKIE_PATH: Final = "/ui"
SESSION_SECONDS: Final = 12 * 3600
CSRF_HEADER: Final = "x-csrf-token"
CSRF_FIELD: Final = "csrf_token"
UNSAFE_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_SECRET_NAME: Final = "ui-session"  # noqa: S105 - the name the secret is stored under


class LoginRequired(Exception):
    """No valid session: pages answer with a redirect to the login form."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


@dataclass(frozen=True)
class Session:
    """A signed-in browser: which key (by digest) and the nonce its CSRF token comes from."""

    key_digest: bytes
    nonce: str
    expires_at: int
    csrf_token: str


class Sessions:
    """Makes and reads session cookies; the signing secret is read once from PostgreSQL."""

    def __init__(self, pool: Pool, keys: KeyRing) -> None:
        self._pool = pool
        self._keys = keys
        self._secret: bytes | None = None

    async def _signing_secret(self) -> bytes:
        if self._secret is None:
            async with self._pool.acquire() as conn:
                self._secret = await router_secrets.get_or_make(conn, _SECRET_NAME)
        return self._secret

    async def key_accepted(self, digest: bytes) -> bool:
        return await self._keys.accepts(digest)

    async def cookie_for(self, key_digest: bytes) -> str:
        """A new session for the key with this digest, as the cookie's value."""
        nonce = secrets.token_urlsafe(16)
        expires = int(time.time()) + SESSION_SECONDS
        payload = f"{_b64(key_digest)}.{expires}.{nonce}"
        return f"{payload}.{await self._sign(payload)}"

    async def read(self, cookie: str | None) -> Session | None:
        """The session a cookie holds, or None when it is missing, forged, expired or its key
        is no longer accepted."""
        if not cookie or cookie.count(".") != 3:
            return None
        payload, _, signature = cookie.rpartition(".")
        if not hmac.compare_digest(signature, await self._sign(payload)):
            return None
        digest_text, expires_text, nonce = payload.split(".")
        try:
            digest = base64.urlsafe_b64decode(digest_text + "=" * (-len(digest_text) % 4))
            expires = int(expires_text)
        except ValueError:
            return None
        if expires < time.time() or not await self._keys.accepts(digest):
            return None
        return Session(digest, nonce, expires, await self._sign(f"csrf.{nonce}"))

    async def _sign(self, payload: str) -> str:
        mac = hmac.new(await self._signing_secret(), payload.encode(), hashlib.sha256)
        return _b64(mac.digest())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def safe_next(path: str | None) -> str:
    """Where to go after login: only a path inside the dashboard, never another site."""
    if path and path.startswith("/ui") and not path.startswith("//") and "\\" not in path:
        return path
    return "/ui"


def check_origin(request: Request[Any, Any, Any]) -> None:
    """Refuse an unsafe request whose `Origin` (or, without one, `Referer`) is another site."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if origin is None or origin == "null":
        if origin == "null":
            raise HTTPException(status_code=403, detail="cross-origin form post refused")
        return
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    if origin != own and not origin.startswith(own + "/"):
        raise HTTPException(status_code=403, detail="cross-origin form post refused")


async def check_csrf(request: Request[Any, Any, Any], session: Session) -> None:
    """An unsafe request must carry the session's CSRF token, as a header (htmx) or a form
    field (plain forms)."""
    check_origin(request)
    token = request.headers.get(CSRF_HEADER)
    if token is None:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            value = form.get(CSRF_FIELD)
            token = value if isinstance(value, str) else None
    if token is None or not hmac.compare_digest(token, session.csrf_token):
        raise HTTPException(status_code=403, detail="missing or wrong CSRF token; reload the page")
