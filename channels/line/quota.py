"""The month's LINE message quota: LINE's figures, read now and then, and reservations.

LINE reports the limit (`GET /v2/bot/message/quota`) and the month's usage by every sender
(`GET /v2/bot/message/quota/consumption`). Reading them for every push would double the
requests, so they are kept in a `QuotaLedger` for `[line] quota_cache_seconds`: the router's
is PostgreSQL (`router.ratelimit.MonthlyQuota`), shared by its processes. Each request
reserves its messages there before it is sent and settles after LINE answers, so requests
in flight at once can never together pass what is left; a process without a ledger keeps
one in memory.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import msgspec
from linebot.v3.messaging import ApiException, AsyncApiClient

from channels.base import ProviderError, QuotaAnswer, QuotaFigures, QuotaLedger


class _Quota(msgspec.Struct):
    type: str
    value: int | None = None


class _Consumption(msgspec.Struct, rename="camel"):
    total_usage: int


class MemoryLedger:
    """A `QuotaLedger` for one process: what a router without a database shares nothing with."""

    def __init__(self) -> None:
        self._figures: QuotaFigures | None = None
        self._held: dict[uuid.UUID, int] = {}

    def _current(self, fresh_for: float | None) -> QuotaFigures | None:
        figures = self._figures
        if figures is None or (fresh_for is not None and time.time() - figures.read_at > fresh_for):
            return None
        reserved = sum(self._held.values())
        held = figures.used_per_line + figures.sent_since_read + reserved
        limit = figures.limit
        remaining = None if limit is None else max(0, limit - held)
        return msgspec.structs.replace(figures, reserved=reserved, remaining=remaining)

    async def reserve(
        self, key: uuid.UUID, messages: int, fresh_for: float | None
    ) -> QuotaAnswer | None:
        figures = self._current(fresh_for)
        if figures is None:
            return None
        granted = figures.remaining is None or figures.remaining >= messages
        if granted:
            self._held[key] = messages
        return QuotaAnswer(granted=granted, figures=figures)

    async def refresh(self, limit: int | None, used: int) -> None:
        self._figures = QuotaFigures(
            limited=limit is not None,
            limit=limit,
            used_per_line=used,
            sent_since_read=0,
            remaining=None,
            read_at=time.time(),
        )

    async def settle(self, key: uuid.UUID | None, sent: int) -> None:
        if key is not None:
            self._held.pop(key, None)
        if self._figures is not None:
            self._figures.sent_since_read += sent

    async def figures(self, fresh_for: float | None) -> QuotaFigures | None:
        return self._current(fresh_for)


class LineQuota:
    def __init__(self, client: AsyncApiClient, cache_seconds: float) -> None:
        self._client = client
        self._cache_seconds = cache_seconds
        self.ledger: QuotaLedger = MemoryLedger()
        self._lock = asyncio.Lock()

    async def figures(self) -> QuotaFigures:
        figures = await self.ledger.figures(self._cache_seconds)
        if figures is None:
            await self._refresh()
            figures = await self.ledger.figures(None)
            assert figures is not None
        return figures

    async def reserve(self, key: uuid.UUID, messages: int) -> QuotaAnswer:
        """Reserve `messages` for the request `key`; `granted` is False when what is left of
        the month's quota cannot cover them. Raises when LINE's figures cannot be read."""
        answer = await self.ledger.reserve(key, messages, self._cache_seconds)
        if answer is None:
            await self._refresh()
            answer = await self.ledger.reserve(key, messages, None)
            assert answer is not None
        return answer

    async def settle(self, key: uuid.UUID | None, sent: int) -> None:
        """LINE answered the request `key`: release its reservation, count what it took."""
        await self.ledger.settle(key, sent)

    async def _refresh(self) -> None:
        """Read LINE's figures into the ledger, once at a time in this process."""
        async with self._lock:
            if await self.ledger.figures(self._cache_seconds) is None:
                limit, used = await self._read()
                await self.ledger.refresh(limit, used)

    async def _read(self) -> tuple[int | None, int]:
        """LINE's limit for the month (None: unlimited) and its usage so far."""
        quota = msgspec.json.decode(await self._get("/v2/bot/message/quota"), type=_Quota)
        used = msgspec.json.decode(
            await self._get("/v2/bot/message/quota/consumption"), type=_Consumption
        ).total_usage
        return (quota.value if quota.type == "limited" else None), used

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
