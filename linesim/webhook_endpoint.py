"""The bot's webhook URL as the Messaging API manages it: set, read and test the endpoint.

``PUT /v2/bot/channel/webhook/endpoint`` moves where events go (the same URL ``set_webhook``
and ``POST /__simulator/webhook`` set), ``GET`` reads it, and ``POST
/v2/bot/channel/webhook/test`` sends the endpoint LINE's test webhook: a body with the bot's
``destination`` and no events, signed with the channel secret, reporting how the receiver
answered.  LINE takes only HTTPS URLs; the simulator also takes ``http://`` to 127.0.0.1,
::1 or localhost, so a router under test needs no TLS.  The simulator has no "Use webhook"
switch: events go to the endpoint once one is set, so ``active`` is whether one is.
"""

from __future__ import annotations

import datetime
import urllib.parse
from typing import Final

import msgspec
from aiohttp import web

from linesim.exchange import Entry, Exchange
from linesim.paths import WEBHOOK_ENDPOINT_PATH, WEBHOOK_TEST_PATH
from linesim.schemas import ErrorDetail, ErrorResponse, encode
from linesim.state import SimState
from linesim.validation import EMPTY_OBJECT, Refusal
from linesim.webhooks import SentWebhook, Webhooks

MAX_ENDPOINT_LENGTH: Final = 500
LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "::1", "localhost"})


class SetWebhookEndpointRequest(msgspec.Struct):
    """``SetWebhookEndpointRequest``."""

    endpoint: str


class TestWebhookEndpointRequest(msgspec.Struct):
    """``TestWebhookEndpointRequest``: without ``endpoint``, the one set is tested."""

    endpoint: str | None = None


class GetWebhookEndpointResponse(msgspec.Struct):
    """``GetWebhookEndpointResponse``; ``endpoint`` is empty while none is set."""

    endpoint: str
    active: bool


class TestWebhookEndpointResponse(msgspec.Struct):
    """``TestWebhookEndpointResponse``: ``statusCode`` 0 when no HTTP answer came."""

    success: bool
    timestamp: str
    statusCode: int
    reason: str
    detail: str


_SET_DECODER: Final = msgspec.json.Decoder(SetWebhookEndpointRequest)
_TEST_DECODER: Final = msgspec.json.Decoder(TestWebhookEndpointRequest)
_NOT_SET: Final = encode(ErrorResponse(message="The webhook endpoint URL is not set"))
_NO_SECRET: Final = encode(
    ErrorResponse(
        message="The simulator has no channel secret to sign webhooks with"
        " (set one with POST /__simulator/webhook or channel_secret=)"
    )
)


def endpoint_details(endpoint: str) -> list[ErrorDetail]:
    """What is wrong with ``endpoint`` as a webhook URL (nothing: it is fine)."""
    if not 1 <= len(endpoint) <= MAX_ENDPOINT_LENGTH:
        message = f"Length must be between 1 and {MAX_ENDPOINT_LENGTH}"
        return [ErrorDetail(message=message, property="endpoint")]
    try:
        parts = urllib.parse.urlsplit(endpoint)
        host = parts.hostname
    except ValueError:
        host = None
    if host is None:
        return [ErrorDetail(message="Must be a valid URL", property="endpoint")]
    if parts.scheme == "https" or (parts.scheme == "http" and host in LOOPBACK_HOSTS):
        return []
    message = "Must be an HTTPS URL (the simulator also takes http:// to a loopback host)"
    return [ErrorDetail(message=message, property="endpoint")]


def _outcome(sent: SentWebhook) -> tuple[str, str]:
    """LINE's ``reason`` and ``detail`` for how the receiver answered."""
    if 200 <= sent.status < 300:
        return "OK", str(sent.status)
    if sent.status:
        return "ERROR_STATUS_CODE", str(sent.status)
    error = sent.error or ""
    if error.startswith("TimeoutError") or "Timeout" in error.partition(":")[0]:
        return "REQUEST_TIMEOUT", error
    return "COULD_NOT_CONNECT", error


class WebhookEndpoint:
    """The three webhook endpoint requests, over the simulator's ``Webhooks``."""

    def __init__(self, state: SimState, exchange: Exchange, webhooks: Webhooks) -> None:
        self._state = state
        self._exchange = exchange
        self._webhooks = webhooks

    def routes(self) -> list[web.RouteDef]:
        handler = self._exchange.handler
        return [
            web.get(WEBHOOK_ENDPOINT_PATH, handler(WEBHOOK_ENDPOINT_PATH, self._get)),
            web.put(WEBHOOK_ENDPOINT_PATH, handler(WEBHOOK_ENDPOINT_PATH, self._set)),
            web.post(WEBHOOK_TEST_PATH, handler(WEBHOOK_TEST_PATH, self._test)),
        ]

    async def _get(self, request: web.Request, entry: Entry) -> web.Response:
        self._exchange.authorize_read(request, entry)
        url = self._webhooks.url
        answer = GetWebhookEndpointResponse(endpoint=url or "", active=url is not None)
        return self._exchange.answer(entry, 200, encode(answer))

    async def _set(self, request: web.Request, entry: Entry) -> web.Response:
        exchange = self._exchange
        raw = await exchange.read_body(request, entry)
        exchange.authorize_read(request, entry)
        parsed = exchange.decode(request, raw, _SET_DECODER, lambda r: endpoint_details(r.endpoint))
        self._webhooks.configure(parsed.endpoint)
        return exchange.answer(entry, 200, EMPTY_OBJECT)

    async def _test(self, request: web.Request, entry: Entry) -> web.Response:
        exchange = self._exchange
        raw = await exchange.read_body(request, entry)
        exchange.authorize_read(request, entry)
        wanted = None
        if raw.strip():
            parsed = exchange.decode(request, raw, _TEST_DECODER, _test_details)
            wanted = parsed.endpoint
        url = wanted or self._webhooks.url
        if url is None:
            raise Refusal(400, _NOT_SET)
        if self._webhooks.channel_secret is None:
            raise Refusal(500, _NO_SECRET)
        at = datetime.datetime.fromtimestamp(self._state.clock.now(), datetime.UTC)
        sent = await self._webhooks.post([], url=url)
        reason, detail = _outcome(sent)
        answer = TestWebhookEndpointResponse(
            success=reason == "OK",
            timestamp=at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            statusCode=sent.status,
            reason=reason,
            detail=detail,
        )
        return exchange.answer(entry, 200, encode(answer))


def _test_details(request: TestWebhookEndpointRequest) -> list[ErrorDetail]:
    return [] if not request.endpoint else endpoint_details(request.endpoint)
