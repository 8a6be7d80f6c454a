"""LINE account operations other than sending: link tokens, replies, followers, ID tokens.

These use line-bot-sdk's typed API (they are rare, so its per-call validation costs nothing
that matters), except ID token verification, which belongs to LINE Login and is a plain
form POST to `/oauth2/v2.1/verify` on the same base URL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import msgspec
from linebot.v3.messaging import (
    ApiException,
    AsyncApiClient,
    AsyncMessagingApi,
    Configuration,
    ReplyMessageRequest,
    TextMessage,
)

from channels.base import ProviderError, QuotaFigures
from channels.line.push import describe_error, proxy_for
from channels.line.quota import LineQuota
from router.config import LineConfig

FOLLOWERS_PAGE = 1000


class IdTokenClaims(msgspec.Struct, kw_only=True):
    """The verified claims LINE returns for an ID token (only what the router uses)."""

    sub: str
    aud: str
    exp: int


class IdTokenError(msgspec.Struct):
    error: str = ""
    error_description: str = ""


class LineAccountApi:
    """The LINE account behind the configured channel access token."""

    def __init__(self, config: LineConfig, quota: LineQuota) -> None:
        configuration = Configuration(
            host=config.api_base, access_token=config.channel_access_token
        )
        configuration.proxy = proxy_for(config.api_base)
        self._client = AsyncApiClient(configuration)
        self._api = AsyncMessagingApi(self._client)
        self._base = config.api_base.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=config.timeout_seconds)
        self._session: aiohttp.ClientSession | None = None
        self._quota = quota

    async def quota(self) -> QuotaFigures:
        return await self._quota.figures()

    async def issue_link_token(self, line_user_id: str) -> str:
        try:
            response = await self._api.issue_link_token(line_user_id)
        except ApiException as exc:
            raise _provider_error(exc) from None
        token: str = response.link_token
        return token

    async def reply_text(self, reply_token: str, text: str) -> None:
        request = ReplyMessageRequest(reply_token=reply_token, messages=[TextMessage(text=text)])
        try:
            await self._api.reply_message(request)
        except ApiException as exc:
            raise _provider_error(exc) from None

    async def follower_pages(self) -> AsyncIterator[list[str]]:
        """Every follower's user ID, a page at a time."""
        start: str | None = None
        while True:
            try:
                page = await self._api.get_followers(start=start, limit=FOLLOWERS_PAGE)
            except ApiException as exc:
                raise _provider_error(exc) from None
            yield list(page.user_ids)
            if not page.next:
                return
            start = page.next

    async def verify_id_token(self, id_token: str, client_id: str) -> IdTokenClaims:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout, trust_env=False)
        form = {"id_token": id_token, "client_id": client_id}
        async with self._session.post(f"{self._base}/oauth2/v2.1/verify", data=form) as resp:
            body = await resp.read()
            if resp.status != 200:
                try:
                    error = msgspec.json.decode(body, type=IdTokenError)
                    message = error.error_description or error.error
                except msgspec.DecodeError:
                    message = body[:200].decode(errors="replace")
                raise ProviderError(resp.status, message or "ID token refused")
            try:
                return msgspec.json.decode(body, type=IdTokenClaims)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise ProviderError(502, f"unexpected answer from LINE: {exc}") from None

    async def aclose(self) -> None:
        await self._client.close()
        if self._session is not None:
            await self._session.close()


def _provider_error(exc: ApiException) -> ProviderError:
    error = describe_error(exc.body)
    return ProviderError(int(exc.status or 0), error.message or str(exc.reason or "LINE error"))
