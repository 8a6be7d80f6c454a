"""What each LINE account has used and spent this month (Japan time): the figures of
`GET /v1/line/accounts/{name}/usage`, the `/metrics` gauges and the dashboard's LINE panel.

`used` is LINE's own count when last read plus what this router sent since; `reserved` what
budgets granted and the router has not yet seen sent. Prices come from `router.line_costs`,
as for the dry run and the send-time reservation.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import msgspec

from router import line_costs
from router.config import LineConfig
from router.database import Connection
from router.store import line_budgets


class LineUsage(msgspec.Struct, kw_only=True):
    account: str
    plan: str  # "" when not configured: only LINE's reported limit is known
    monthly_fee_yen: int
    included: int | None  # None: no limit known
    used: int
    reserved: int
    included_left: int | None
    extra_messages: int
    extra_cost_yen: float
    price_of_next_message_yen: float | None  # None: the plan would refuse it
    budget_granted: int  # messages budgets granted this month
    as_of: float  # when LINE's figures were read (epoch seconds; now if never)


def usage_of(account: str, line: LineConfig, month: line_budgets.MonthFigures) -> LineUsage:
    terms = line_costs.month_terms(line.plan_terms(), month.line_limit)
    used = month.line_usage + month.sent_since_read
    held = used + month.outstanding
    extra = 0 if terms.included is None else max(0, used - terms.included)
    extra_yen = 0.0 if terms.extra_message_yen is None else extra * terms.extra_message_yen
    return LineUsage(
        account=account,
        plan=terms.plan,
        monthly_fee_yen=terms.monthly_fee_yen,
        included=terms.included,
        used=used,
        reserved=month.outstanding,
        included_left=line_costs.included_left(terms, held),
        extra_messages=extra if terms.extra_message_yen is not None else 0,
        extra_cost_yen=extra_yen,
        price_of_next_message_yen=line_costs.next_message_yen(terms, held),
        budget_granted=month.granted,
        as_of=month.read_at if month.read_at is not None else time.time(),
    )


async def usage(conn: Connection, account: str, line: LineConfig) -> LineUsage:
    return usage_of(account, line, await line_budgets.month(conn, account))


async def every_account(conn: Connection, lines: Mapping[str, LineConfig]) -> list[LineUsage]:
    """Each configured account's month, by name."""
    return [await usage(conn, name, line) for name, line in sorted(lines.items())]
