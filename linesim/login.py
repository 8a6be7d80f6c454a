"""LINE Login's ID tokens: minted for tests, checked by ``POST /oauth2/v2.1/verify``.

A web app that logs users in with LINE receives an ID token (a JWT) and must not trust it
until LINE's verify endpoint says it is good for the app's channel, nonce and user.  The
simulator signs with a key of its own, so only its verify endpoint can tell a good token
from a forged one: exactly how the router has to treat tokens.  Refusals use LINE Login's
error body (``error``, ``error_description``), not the Messaging API's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from typing import Final

import msgspec
from aiohttp import web
from msgspec import UNSET, UnsetType

from linesim.exchange import Entry, Exchange
from linesim.limits import ID_TOKEN_TTL_SECONDS
from linesim.paths import VERIFY_ID_TOKEN_PATH
from linesim.schemas import encode
from linesim.state import Clock
from linesim.validation import USER_ID, Refusal

ID_TOKEN_ISSUER: Final = "https://access.line.me"  # noqa: S105


class IdTokenClaims(msgspec.Struct):
    """ID token payload, which the verify endpoint answers with; optional claims omitted."""

    iss: str
    sub: str
    aud: str
    exp: int
    iat: int
    nonce: str | UnsetType = UNSET
    amr: list[str] | UnsetType = UNSET
    name: str | UnsetType = UNSET
    picture: str | UnsetType = UNSET
    email: str | UnsetType = UNSET


class LoginErrorResponse(msgspec.Struct):
    """LINE Login's error body."""

    error: str
    error_description: str


class _JwtHeader(msgspec.Struct):
    alg: str
    typ: str


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _refusal(description: str) -> Refusal:
    error = LoginErrorResponse(error="invalid_request", error_description=description)
    return Refusal(400, encode(error))


class IdTokens:
    """Mints ID tokens and answers LINE Login's verify endpoint."""

    def __init__(self, clock: Clock, exchange: Exchange, secret: bytes) -> None:
        self._clock = clock
        self._exchange = exchange
        self._secret = secret

    def routes(self) -> list[web.RouteDef]:
        verify = self._exchange.handler(VERIFY_ID_TOKEN_PATH, self._verify_request)
        return [web.post(VERIFY_ID_TOKEN_PATH, verify)]

    def mint(
        self,
        user_id: str,
        *,
        client_id: str,
        nonce: str | None = None,
        name: str | None = "LINE User",
        picture: str | None = None,
        email: str | None = None,
        expires_in: int = ID_TOKEN_TTL_SECONDS,
        amr: Sequence[str] = ("linesso",),
        issuer: str = ID_TOKEN_ISSUER,
    ) -> str:
        """An ID token as LINE Login issues to web apps: a JWT signed HS256.

        The key is the simulator's own, so only ``POST /oauth2/v2.1/verify`` can
        tell a good token from a bad one, which is how the router must treat them.
        ``issuer`` exists to mint tokens that verification rejects.
        """
        if USER_ID.fullmatch(user_id) is None:
            raise ValueError(f"not a LINE user ID: {user_id!r}")
        issued = int(self._clock.now())
        claims = IdTokenClaims(
            iss=issuer,
            sub=user_id,
            aud=client_id,
            exp=issued + expires_in,
            iat=issued,
            nonce=UNSET if nonce is None else nonce,
            amr=list(amr) if amr else UNSET,
            name=UNSET if name is None else name,
            picture=UNSET if picture is None else picture,
            email=UNSET if email is None else email,
        )
        header = _b64url(encode(_JwtHeader(alg="HS256", typ="JWT")))
        signing_input = f"{header}.{_b64url(encode(claims))}"
        return f"{signing_input}.{self._signature(signing_input)}"

    def _signature(self, signing_input: str) -> str:
        digest = hmac.new(self._secret, signing_input.encode(), hashlib.sha256).digest()
        return _b64url(digest)

    def verify(
        self, id_token: str, *, client_id: str, nonce: str | None, user_id: str | None
    ) -> IdTokenClaims | str:
        """The claims, or LINE's error_description for why the token is refused."""
        parts = id_token.split(".")
        if len(parts) != 3 or not hmac.compare_digest(
            self._signature(f"{parts[0]}.{parts[1]}").encode(), parts[2].encode()
        ):
            return "Invalid IdToken."
        try:
            header = msgspec.json.decode(_b64url_decode(parts[0]), type=_JwtHeader)
            claims = msgspec.json.decode(_b64url_decode(parts[1]), type=IdTokenClaims)
        except (msgspec.DecodeError, ValueError):
            return "Invalid IdToken."
        if header.alg != "HS256":
            return "Invalid IdToken."
        if claims.iss != ID_TOKEN_ISSUER:
            return "Invalid IdToken Issuer."
        if claims.exp <= self._clock.now():
            return "IdToken expired."
        if claims.aud != client_id:
            return "Invalid IdToken Audience."
        if nonce is not None and claims.nonce != nonce:
            return "Invalid IdToken Nonce."
        if user_id is not None and claims.sub != user_id:
            return "Invalid IdToken Subject Identifier."
        return claims

    async def _verify_request(self, request: web.Request, entry: Entry) -> web.Response:
        """LINE Login's ``POST /oauth2/v2.1/verify``: form-encoded, no bearer token."""
        form = await request.post()
        values = {
            name: value
            for name in ("id_token", "client_id", "nonce", "user_id")
            if isinstance(value := form.get(name), str) and value
        }
        if "id_token" not in values or "client_id" not in values:
            missing = "id_token" if "id_token" not in values else "client_id"
            raise _refusal(f"{missing} is required.")
        claims = self.verify(
            values["id_token"],
            client_id=values["client_id"],
            nonce=values.get("nonce"),
            user_id=values.get("user_id"),
        )
        if isinstance(claims, str):
            raise _refusal(claims)
        entry.recipient = claims.sub
        return self._exchange.answer(entry, 200, encode(claims))
