"""Where LINE sends the bot's webhooks: set, read and test the channel's webhook URL.

The same operations as the Webhook settings of LINE's console, through line-bot-sdk's typed
Messaging API (`setWebhookEndpoint`, `getWebhookEndpoint`, `testWebhookEndpoint`). Only the
access token and API base are needed, so `router line webhook` builds this alone rather than
the sending channel.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

import aiohttp
import msgspec
from linebot.v3.messaging import (
    ApiException,
    AsyncApiClient,
    AsyncMessagingApi,
    Configuration,
    SetWebhookEndpointRequest,
    TestWebhookEndpointRequest,
)

from channels.base import ProviderError
from channels.line.push import describe_error, proxy_for
from router.config import LineConfig

_T = TypeVar("_T")


class WebhookEndpointInfo(msgspec.Struct, frozen=True):
    """`GetWebhookEndpointResponse`: the URL and whether LINE sends to it ("Use webhook")."""

    endpoint: str
    active: bool


class WebhookTestResult(msgspec.Struct, frozen=True):
    """`TestWebhookEndpointResponse`: how the endpoint answered LINE's test webhook.

    `status_code` is 0 (or negative) when no HTTP answer came; `reason` is LINE's word for
    the outcome (OK, COULD_NOT_CONNECT, REQUEST_TIMEOUT, ERROR_STATUS_CODE, ...)."""

    success: bool
    timestamp: str
    status_code: int
    reason: str
    detail: str


class LineWebhookEndpoint:
    """The webhook settings of the channel whose access token is configured."""

    def __init__(self, config: LineConfig) -> None:
        configuration = Configuration(
            host=config.api_base, access_token=config.channel_access_token
        )
        configuration.proxy = proxy_for(config.api_base)
        self._client = AsyncApiClient(configuration)
        self._api = AsyncMessagingApi(self._client)
        self._timeout = config.timeout_seconds

    async def set(self, endpoint: str) -> None:
        """Make `endpoint` the channel's webhook URL (LINE takes only HTTPS)."""
        request = SetWebhookEndpointRequest(endpoint=endpoint)
        await self._call(self._api.set_webhook_endpoint(request, _request_timeout=self._timeout))

    async def get(self) -> WebhookEndpointInfo:
        answer = await self._call(self._api.get_webhook_endpoint(_request_timeout=self._timeout))
        return WebhookEndpointInfo(endpoint=str(answer.endpoint), active=bool(answer.active))

    async def test(self, endpoint: str | None = None) -> WebhookTestResult:
        """Have LINE send a test webhook to `endpoint` (None: the URL set)."""
        request = TestWebhookEndpointRequest(endpoint=endpoint) if endpoint else None
        answer = await self._call(
            self._api.test_webhook_endpoint(request, _request_timeout=self._timeout)
        )
        return WebhookTestResult(
            success=bool(answer.success),
            timestamp=str(answer.timestamp),
            status_code=int(answer.status_code),
            reason=str(answer.reason),
            detail=str(answer.detail),
        )

    async def _call(self, call: Awaitable[_T]) -> _T:
        try:
            return await call
        except ApiException as exc:
            error = describe_error(exc.body)
            details = [d.get("message", "") for d in error.details if d.get("message")]
            message = error.message or str(exc.reason or "LINE error")
            if details:
                message = f"{message} ({'; '.join(details)})"
            raise ProviderError(int(exc.status or 0), message) from None
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ProviderError(0, f"no answer from LINE ({type(exc).__name__})") from None

    async def aclose(self) -> None:
        await self._client.close()
