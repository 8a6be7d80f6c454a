"""`GET /metrics`: the Prometheus text format (router/metrics.py), behind the API key like
`/v1` (Prometheus sends it with `authorization: {credentials: <key>}` in its scrape config).
Not in the OpenAPI document: its body is not JSON."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from litestar import Response, get
from litestar.handlers import HTTPRouteHandler
from prometheus_client import CONTENT_TYPE_LATEST

from router import line_usage
from router.api.auth import METRICS_PATH
from router.config import LineConfig
from router.database import Pool
from router.metrics import exposition, read_figures
from router.store.line_quota import MonthlyQuota


def metrics_handler(
    pool: Pool,
    channels: Sequence[str],
    grouped: Sequence[str],
    line: bool,
    line_accounts: Mapping[str, LineConfig] | None = None,
) -> HTTPRouteHandler:
    """The handler for this router's channels (`grouped`: those with send groups); the LINE
    quota gauge only when LINE is set up."""
    names, groups = sorted(channels), sorted(grouped)
    quota = MonthlyQuota(pool) if line else None

    @get(METRICS_PATH, include_in_schema=False)
    async def metrics() -> Response[bytes]:
        rows = await read_figures(pool, names, groups)
        figures = await quota.figures(None) if quota is not None else None
        usage = []
        if line_accounts:
            async with pool.acquire() as conn:
                usage = await line_usage.every_account(conn, line_accounts)
        return Response(exposition(rows, figures, usage), media_type=CONTENT_TYPE_LATEST)

    return metrics
