"""A campaign's LINE budget: stored when the campaign is (its row's id is the campaign's), and
what a dry run says the campaign would send and cost under it and under the other policies.

The dry run counts the campaign's members with the fan-out's own routing SQL
(`router.campaigns.campaign_routing`) over the same audience join, writes nothing, and prices
the LINE part with the same function the send-time reservation uses (`line_costs.fit`), from
the account's month as the router knows it now.
"""

# ruff: noqa: S608 - the statement is built from the routing's constant fragments only

from __future__ import annotations

import contextlib
from typing import Literal
from uuid import UUID

import msgspec

from channels.base import LineAccount
from router import line_costs
from router.campaigns import (
    AUDIENCE_JOINS,
    AUDIENCE_WHERE,
    CampaignRequest,
    campaign_routing,
    check_audiences,
    ids_by_type,
)
from router.config import LineConfig
from router.database import Connection
from router.intake import IntakeChannels
from router.line_plans import LineBudget
from router.reach import line_identity_join
from router.store import line_budgets
from router.store.line_narrowcasts import LINE_CHANNEL

EMAIL_CHANNEL = "email"


def budget_of(request: CampaignRequest, line: LineConfig) -> LineBudget:
    """The campaign's budget as applied: its own, else the account's default by kind."""
    return line_costs.effective_budget(request.line_budget, request.kind, line.default_budget)


async def store_budget(
    conn: Connection, campaign_id: UUID, request: CampaignRequest, line: LineConfig
) -> None:
    """Store the new campaign's budget row when its LINE messages must be reserved at send
    time (none: nothing could refuse them, and sending costs no statement more)."""
    budget = budget_of(request, line)
    if line_costs.needs_reserving(line.plan_terms(), budget):
        await line_budgets.create(conn, campaign_id, request.line_account, budget)


class PolicyFigures(msgspec.Struct, kw_only=True):
    """What the campaign would send under one LINE budget."""

    line_messages: int
    line_messages_included: int
    extra_cost_yen: float
    email_messages: int


class CampaignDryRun(msgspec.Struct, kw_only=True):
    """`POST /v1/campaigns` with `"dry_run": true`: nothing stored, nothing sent.
    `line_messages` + the LINE-reachable members the budget moves to email = the
    LINE-reachable members."""

    dry_run: Literal[True] = True
    members: int
    line_account: str
    line_reachable: int
    line_messages: int
    line_messages_included: int
    extra_cost_yen: float
    email_messages: int
    unreachable: int
    budget: LineBudget
    by_policy: dict[str, PolicyFigures]


def _count_sql(routing_code: str, channels: str, fallback: str) -> str:
    """The fan-out's members and routing, counted: $1 NULL (no cursor), $2..$7 the audiences,
    $8 the LINE account."""
    return f"""
WITH targets AS MATERIALIZED (
    SELECT {routing_code} AS code
    FROM members m {line_identity_join("$8::text")} {AUDIENCE_JOINS}
    WHERE ($1::text IS NULL OR m.member_id > $1) AND {AUDIENCE_WHERE}
), planned AS (
    SELECT {channels} AS channels, {fallback} AS fallback FROM targets
)
SELECT count(*) AS members,
       count(*) FILTER (WHERE '{LINE_CHANNEL}' = ANY(channels)) AS line,
       count(*) FILTER (WHERE '{LINE_CHANNEL}' = ANY(channels)
                        AND fallback = '{EMAIL_CHANNEL}') AS line_then_email,
       count(*) FILTER (WHERE '{EMAIL_CHANNEL}' = ANY(channels)) AS email,
       count(*) FILTER (WHERE channels IS NULL) AS unreachable
FROM planned
"""


def policy_name(budget: LineBudget) -> str:
    if isinstance(budget, str):
        return budget
    return "max_messages" if budget.max_messages is not None else "max_yen"


async def dry_run(
    conn: Connection,
    request: CampaignRequest,
    channels: IntakeChannels,
    line: LineConfig,
    account: LineAccount | None,
) -> CampaignDryRun:
    """What the campaign would send now, and what it would cost on LINE under its budget,
    "unlimited" and "included_only". Raises as `router.campaigns.check_audiences` does."""
    await check_audiences(conn, request)
    routing = campaign_routing(request, channels)
    row = await conn.fetchrow(
        _count_sql(routing.code, routing.channels, routing.fallback),
        None,
        *await ids_by_type(conn, request.audience_ids),
        *await ids_by_type(conn, request.exclude_audience_ids),
        request.line_account,
    )
    assert row is not None
    if account is not None and row["line"]:
        # LINE's month, read when the stored figures are old; else priced from those stored.
        with contextlib.suppress(Exception):
            await account.quota()
    month = await line_budgets.month(conn, request.line_account)
    terms = line_costs.month_terms(line.plan_terms(), month.line_limit)
    applied = budget_of(request, line)

    def under(budget: LineBudget) -> PolicyFigures:
        fitted = line_costs.fit(terms, month.used, budget, 0, 0.0, row["line"])
        moved = row["line"] - fitted.granted
        return PolicyFigures(
            line_messages=fitted.granted,
            line_messages_included=fitted.priced.included,
            extra_cost_yen=fitted.priced.extra_yen,
            email_messages=row["email"] + min(moved, row["line_then_email"]),
        )

    policies: dict[str, PolicyFigures] = {
        "unlimited": under("unlimited"),
        "included_only": under("included_only"),
    }
    policies[policy_name(applied)] = figures = under(applied)
    return CampaignDryRun(
        members=row["members"],
        line_account=request.line_account,
        line_reachable=row["line"],
        line_messages=figures.line_messages,
        line_messages_included=figures.line_messages_included,
        extra_cost_yen=figures.extra_cost_yen,
        email_messages=figures.email_messages,
        unreachable=row["unreachable"],
        budget=applied,
        by_policy=policies,
    )
