"""The month's LINE message quota: LINE's figures, read now and then, plus what we sent since.

LINE reports the limit (`GET /v2/bot/message/quota`) and the month's usage by every sender
(`GET /v2/bot/message/quota/consumption`). Reading them for every push would double the
requests, so they are cached for `[line] quota_cache_seconds` and this process counts its own
pushes in between. Other processes' pushes show up at the next read.
"""

from __future__ import annotations

import asyncio
import time

import msgspec
from linebot.v3.messaging import ApiException, AsyncApiClient

from channels.base import ProviderError, QuotaFigures


class _Quota(msgspec.Struct):
    type: str
    value: int | None = None


class _Consumption(msgspec.Struct, rename="camel"):
    total_usage: int


class LineQuota:
    def __init__(self, client: AsyncApiClient, cache_seconds: float) -> None:
        self._client = client
        self._cache_seconds = cache_seconds
        self._figures: QuotaFigures | None = None
        self._lock = asyncio.Lock()

    async def figures(self) -> QuotaFigures:
        async with self._lock:
            cached = self._figures
            if cached is None or time.time() - cached.read_at > self._cache_seconds:
                self._figures = cached = await self._read()
            return cached

    async def can_send(self, messages: int = 1) -> tuple[bool, QuotaFigures]:
        figures = await self.figures()
        return figures.remaining is None or figures.remaining >= messages, figures

    def count_sent(self, messages: int = 1) -> None:
        figures = self._figures
        if figures is None:
            return
        figures.sent_since_read += messages
        if figures.remaining is not None:
            figures.remaining = max(0, figures.remaining - messages)

    async def _read(self) -> QuotaFigures:
        quota = msgspec.json.decode(await self._get("/v2/bot/message/quota"), type=_Quota)
        used = msgspec.json.decode(
            await self._get("/v2/bot/message/quota/consumption"), type=_Consumption
        ).total_usage
        limit = quota.value if quota.type == "limited" else None
        return QuotaFigures(
            limited=limit is not None,
            limit=limit,
            used_per_line=used,
            sent_since_read=0,
            remaining=None if limit is None else max(0, limit - used),
            read_at=time.time(),
        )

    async def _get(self, path: str) -> bytes:
        try:
            response = await self._client.call_api(
                path,
                "GET",
                header_params={"Accept": "application/json"},
                response_types_map={},
                auth_settings=["Bearer"],
                _return_http_data_only=False,
            )
        except ApiException as exc:
            raise ProviderError(int(exc.status or 0), str(exc.body or exc.reason)) from None
        raw = response.raw_data
        return raw.encode() if isinstance(raw, str) else bytes(raw)
