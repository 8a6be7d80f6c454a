"""LINE account operations other than sending: link tokens, replies, followers, ID tokens,
audiences.

These use line-bot-sdk's typed API (they are rare, so its per-call validation costs nothing
that matters), except ID token verification, which belongs to LINE Login and is a plain
form POST to `/oauth2/v2.1/verify` on the same base URL, and the Audience API. An audience
upload carries up to 10,000 user IDs, and the SDK's models spend about half a second of event
loop per request building and serialising them; the audience calls go through the SDK's
`AsyncApiClient` (bearer auth, `ApiException`) with plain JSON bodies and msgspec answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

import aiohttp
import msgspec
from linebot.v3 import audience as line_audience
from linebot.v3 import insight as line_insight
from linebot.v3.messaging import (
    ApiException,
    AsyncApiClient,
    AsyncMessagingApi,
    Configuration,
    ReplyMessageRequest,
    TextMessage,
)

from channels.base import FollowerPage, ProviderError, QuotaFigures, UnitStatistics
from channels.line.push import describe_error, proxy_for
from channels.line.quota import LineQuota
from router.config import LineConfig

FOLLOWERS_PAGE = 1000
AUDIENCE_UPLOAD_PATH = "/v2/bot/audienceGroup/upload"
AUDIENCE_GROUP_PATH = "/v2/bot/audienceGroup/{audienceGroupId}"
AUDIENCE_NOT_FOUND = "AUDIENCE_GROUP_NOT_FOUND"


class IdTokenClaims(msgspec.Struct, kw_only=True):
    """The verified claims LINE returns for an ID token (only what the router uses)."""

    sub: str
    aud: str
    exp: int


class IdTokenError(msgspec.Struct):
    error: str = ""
    error_description: str = ""


class CreatedAudienceGroup(msgspec.Struct):
    """What the router reads of `CreateAudienceGroupResponse` (manage-audience.yml)."""

    audienceGroupId: int


class AudienceGroupStatus(msgspec.Struct):
    """`AudienceGroup`, only its status."""

    status: str = ""


class AudienceData(msgspec.Struct):
    """`GetAudienceDataResponse`, only what the router reads."""

    audienceGroup: AudienceGroupStatus


class LineAccountApi:
    """The LINE account behind the configured channel access token."""

    def __init__(self, config: LineConfig, quota: LineQuota | None = None) -> None:
        configuration = Configuration(
            host=config.api_base, access_token=config.channel_access_token
        )
        configuration.proxy = proxy_for(config.api_base)
        self._client = AsyncApiClient(configuration)
        self._api = AsyncMessagingApi(self._client)
        self._base = config.api_base.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=config.timeout_seconds)
        self._session: aiohttp.ClientSession | None = None
        # The account's monthly quota: shared with the sending channel when it sends for
        # this account, else read through this account's own client.
        self.line_quota = quota or LineQuota(self._client, config.quota_cache_seconds)
        self._config = config
        self._audience_client: line_audience.AsyncApiClient | None = None
        self._insight_client: line_insight.AsyncApiClient | None = None

    async def quota(self) -> QuotaFigures:
        return await self.line_quota.figures()

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

    async def follower_page(self, start: str | None) -> FollowerPage:
        try:
            page = await self._api.get_followers(start=start, limit=FOLLOWERS_PAGE)
        except ApiException as exc:
            raise _provider_error(exc) from None
        return FollowerPage(user_ids=list(page.user_ids), next=page.next or None)

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

    async def create_audience(
        self, description: str, upload_description: str, user_ids: Sequence[str]
    ) -> int:
        body = {
            "description": description,
            "isIfaAudience": False,
            "uploadDescription": upload_description,
            "audiences": [{"id": user_id} for user_id in user_ids],
        }
        raw = await self._audience_call("POST", AUDIENCE_UPLOAD_PATH, body=body)
        try:
            return msgspec.json.decode(raw, type=CreatedAudienceGroup).audienceGroupId
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ProviderError(502, f"unexpected answer from LINE: {exc}") from None

    async def add_to_audience(
        self, audience_group_id: int, upload_description: str, user_ids: Sequence[str]
    ) -> None:
        body = {
            "audienceGroupId": audience_group_id,
            "uploadDescription": upload_description,
            "audiences": [{"id": user_id} for user_id in user_ids],
        }
        await self._audience_call("PUT", AUDIENCE_UPLOAD_PATH, body=body)

    async def audience_status(self, audience_group_id: int) -> str | None:
        try:
            raw = await self._audience_call(
                "GET", AUDIENCE_GROUP_PATH, path_params={"audienceGroupId": audience_group_id}
            )
        except ProviderError as exc:
            # LINE answers an unknown audienceGroupId with 400 and this detail.
            if exc.status == 404 or (exc.status == 400 and AUDIENCE_NOT_FOUND in exc.message):
                return None
            raise
        try:
            return msgspec.json.decode(raw, type=AudienceData).audienceGroup.status
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ProviderError(502, f"unexpected answer from LINE: {exc}") from None

    async def unit_statistics(self, unit: str, start: date, end: date) -> UnitStatistics:
        """Through the SDK's typed Insight API: a rare read, so its validation costs nothing
        that matters."""
        if self._insight_client is None:
            configuration = line_insight.Configuration(
                host=self._config.api_base, access_token=self._config.channel_access_token
            )
            configuration.proxy = proxy_for(self._config.api_base)
            self._insight_client = line_insight.AsyncApiClient(configuration)
        api = line_insight.AsyncInsight(self._insight_client)
        try:
            answer = await api.get_statistics_per_unit(
                unit,
                start.strftime("%Y%m%d"),
                end.strftime("%Y%m%d"),
                _request_timeout=self._config.timeout_seconds,
            )
        except line_insight.ApiException as exc:
            raise _audience_error(exc) from None
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ProviderError(0, f"no answer from LINE ({type(exc).__name__})") from None
        except ValueError as exc:  # the SDK's pydantic models refuse the answer or the unit
            raise ProviderError(502, f"unexpected exchange with LINE: {exc}") from None
        overview = answer.overview
        clicks = [c.click for c in answer.clicks]
        return UnitStatistics(
            unique_impressions=overview.unique_impression,
            unique_clicks=overview.unique_click,
            unique_media_played=overview.unique_media_played,
            unique_media_played_100_percent=overview.unique_media_played100_percent,
            clicks=None if any(c is None for c in clicks) else sum(c or 0 for c in clicks),
        )

    async def _audience_call(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        path_params: dict[str, Any] | None = None,
    ) -> bytes:
        """One Audience API request; the raw answer, or ProviderError (status 0: no answer)."""
        if self._audience_client is None:
            configuration = line_audience.Configuration(
                host=self._config.api_base, access_token=self._config.channel_access_token
            )
            configuration.proxy = proxy_for(self._config.api_base)
            self._audience_client = line_audience.AsyncApiClient(configuration)
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            response = await self._audience_client.call_api(
                path,
                method,
                path_params=path_params,
                header_params=headers,
                body=body,
                response_types_map={},
                auth_settings=["Bearer"],
                _request_timeout=self._config.timeout_seconds,
            )
        except line_audience.ApiException as exc:
            raise _audience_error(exc) from None
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ProviderError(0, f"no answer from LINE ({type(exc).__name__})") from None
        raw: bytes = response.raw_data or b""
        return raw

    async def aclose(self) -> None:
        await self._client.close()
        if self._audience_client is not None:
            await self._audience_client.close()
        if self._insight_client is not None:
            await self._insight_client.close()
        if self._session is not None:
            await self._session.close()


def _provider_error(exc: ApiException) -> ProviderError:
    error = describe_error(exc.body)
    return ProviderError(int(exc.status or 0), error.message or str(exc.reason or "LINE error"))


def _audience_error(exc: line_audience.ApiException | line_insight.ApiException) -> ProviderError:
    """LINE's message with the first few of its details (which name the bad properties)."""
    error = describe_error(exc.body)
    message = error.message or str(exc.reason or "LINE error")
    details = [
        f"{d['property']}: {d.get('message', '')}" if d.get("property") else d.get("message", "")
        for d in error.details
    ]
    if details:
        more = f" and {len(details) - 3} more" if len(details) > 3 else ""
        message = f"{message} ({'; '.join(details[:3])}{more})"
    return ProviderError(int(exc.status or 0), message)
