"""Request rates per API key (`[api] requests_per_second`, `burst`), counted in PostgreSQL so
every router process shares one bucket per key (`router.ratelimit.take_token`).

Checked before anything else a request does with the database, and before its body is read;
over the rate, the answer is 429 with `Retry-After` (in SendGrid's shape on `/v3`). Requests
without a key (LINE's webhooks, `/healthz`, the OpenAPI document) are not counted.
"""

from __future__ import annotations

import math
from typing import Any

from litestar import Request

from router import ratelimit
from router.config import ApiConfig
from router.database import Pool
from router.problems import ProblemError

BUCKET_PREFIX = "api-key:"


class ApiKeyRates:
    """One token bucket per API key: `burst` requests at once, refilled at `per_second`."""

    def __init__(self, pool: Pool, per_second: float, burst: int) -> None:
        self._pool = pool
        self.per_second = per_second
        self.burst = burst or max(1, math.ceil(per_second))

    async def take(self, request: Request[Any, Any, Any]) -> None:
        """Count the request against its key's bucket; raise the 429 when the bucket is empty."""
        digest = request.scope.get("auth")
        if not isinstance(digest, bytes):
            return
        async with self._pool.acquire() as conn:
            wait = await ratelimit.take_token(
                conn, BUCKET_PREFIX + digest.hex(), self.per_second, self.burst
            )
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise ProblemError(
                429,
                "Too many requests",
                f"this API key may make {self.per_second:g} requests a second (up to "
                f"{self.burst} at once); try again in {seconds} s",
                headers={"Retry-After": str(seconds)},
            )


def api_key_rates(pool: Pool, config: ApiConfig) -> ApiKeyRates | None:
    """The limiter `[api]` asks for, or None when requests are not limited."""
    if config.requests_per_second == 0:
        return None
    return ApiKeyRates(pool, config.requests_per_second, config.burst)
