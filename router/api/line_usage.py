"""`GET /v1/line/accounts/{name}/usage`: an account's LINE messages and their cost this month."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from litestar import Controller, get
from litestar.params import FromPath

from channels.base import LineAccount
from router import line_usage
from router.api.dependencies import Injected
from router.api.errors import not_found
from router.api.openapi import problems
from router.config import LineConfig
from router.database import Pool
from router.line_usage import LineUsage


class LineUsageController(Controller):
    path = "/v1/line/accounts"
    tags = ["line"]  # noqa: RUF012

    @get(
        "/{name:str}/usage",
        summary="This month's LINE messages of one account: used, reserved, included left, cost",
        description=(
            "The month in Japan time. `used` is LINE's own count when last read plus what this"
            " router sent since; `reserved` what budgets granted and are not yet seen sent;"
            " `extra_cost_yen` the messages beyond the plan's included ones at its price"
            " (`monthly_fee_yen` comes on top); `price_of_next_message_yen` is null when the"
            " plan would refuse the next message."
        ),
        responses=problems(404),
    )
    async def usage(
        self,
        name: FromPath[str],
        pool: Injected[Pool],
        line_configs: Injected[Mapping[str, LineConfig]],
        line_accounts: Injected[Mapping[str, LineAccount]],
    ) -> LineUsage:
        line = line_configs.get(name)
        if line is None:
            raise not_found(f"no LINE account named {name!r}")
        account = line_accounts.get(name)
        if account is not None:
            # LINE's figures, read when those stored are older than quota_cache_seconds.
            with contextlib.suppress(Exception):
                await account.quota()
        async with pool.acquire() as conn:
            return await line_usage.usage(conn, name, line)
