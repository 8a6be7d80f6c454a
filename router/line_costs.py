"""What the next LINE messages cost, and how many a budget lets through: pure arithmetic.

One function prices messages for the dry run, the send-time reservation and the usage view,
so the three never disagree. Inputs are the account's terms for the month (`MonthTerms`,
from its plan and LINE's reported limit), what the month has used so far, and what the budget
has spent; nothing here reads a clock or a database.
"""

from __future__ import annotations

import math
from typing import Literal

import msgspec

from router.line_plans import BudgetLimit, LineBudget, LinePlan


class MonthTerms(msgspec.Struct, frozen=True, kw_only=True):
    """An account's month: messages included (None: no limit known, all count as included)
    and the price of each one beyond (None: none are sold, the plan stops there)."""

    plan: str  # the plan's name, or "" when only LINE's reported limit is known
    included: int | None
    extra_message_yen: float | None
    monthly_fee_yen: int = 0


def month_terms(plan: LinePlan | None, line_limit: int | None) -> MonthTerms:
    """The terms of an account: its plan when one is configured; otherwise LINE's own reported
    monthly limit as the included messages, with nothing sold beyond it (price unknown)."""
    if plan is not None:
        return MonthTerms(
            plan=plan.name.lower(),
            included=plan.included_messages,
            extra_message_yen=plan.extra_message_yen,
            monthly_fee_yen=plan.monthly_fee_yen,
        )
    return MonthTerms(plan="", included=line_limit, extra_message_yen=None)


class Priced(msgspec.Struct, frozen=True, kw_only=True):
    """`messages` more messages after `used` this month: how many the plan includes, how many
    are extra and their yen, and how many a plan without extras refuses."""

    messages: int
    included: int
    extra: int
    extra_yen: float
    refused: int


def included_left(terms: MonthTerms, used: int) -> int | None:
    """Included messages left this month (None: no limit)."""
    return None if terms.included is None else max(0, terms.included - used)


def price(terms: MonthTerms, used: int, messages: int) -> Priced:
    """Price `messages` more LINE messages after `used` this month."""
    if messages < 0 or used < 0:
        raise ValueError("messages and used must be >= 0")
    left = included_left(terms, used)
    included = messages if left is None else min(messages, left)
    rest = messages - included
    if terms.extra_message_yen is None:
        return Priced(messages=messages, included=included, extra=0, extra_yen=0.0, refused=rest)
    return Priced(
        messages=messages,
        included=included,
        extra=rest,
        extra_yen=rest * terms.extra_message_yen,
        refused=0,
    )


def next_message_yen(terms: MonthTerms, used: int) -> float | None:
    """The price of the next message (None: the plan would refuse it)."""
    one = price(terms, used, 1)
    if one.refused:
        return None
    return one.extra_yen


def messages_for_yen(terms: MonthTerms, used: int, max_yen: float) -> int | None:
    """How many messages fit in `max_yen` yen from this point, the included ones free
    (None: no limit, every message is free or the price is 0)."""
    left = included_left(terms, used)
    if terms.extra_message_yen is None:
        return left
    if terms.extra_message_yen <= 0:
        return None
    # A small tolerance keeps 300.0 / 3.0 from landing a hair under 100.
    extra = math.floor(max(0.0, max_yen) / terms.extra_message_yen + 1e-9)
    return (left or 0) + extra


Refusal = Literal["budget", "plan"]


class Grant(msgspec.Struct, frozen=True, kw_only=True):
    """Of `asked` messages, how many go on LINE (`granted`, priced) and why the rest do not
    (`refused_by`: the budget, or a plan that sells no more)."""

    asked: int
    granted: int
    priced: Priced
    refused_by: Refusal | None


def fit(
    terms: MonthTerms,
    used: int,
    budget: LineBudget,
    spent_messages: int,
    spent_yen: float,
    asked: int,
) -> Grant:
    """How many of `asked` messages a budget that has spent `spent_messages` / `spent_yen`
    lets go out now, on an account that has used `used` this month."""
    left = included_left(terms, used)
    plan_cap = asked if terms.extra_message_yen is not None or left is None else min(asked, left)
    if budget == "unlimited":
        budget_cap = asked
    elif budget == "included_only":
        budget_cap = asked if left is None else min(asked, left)
    else:
        budget_cap = min(asked, _limit_cap(terms, used, budget, spent_messages, spent_yen))
    granted = max(0, min(plan_cap, budget_cap))
    refused_by: Refusal | None = None
    if granted < asked:
        refused_by = "plan" if plan_cap <= budget_cap else "budget"
    return Grant(
        asked=asked,
        granted=granted,
        priced=price(terms, used, granted),
        refused_by=refused_by,
    )


def _limit_cap(
    terms: MonthTerms, used: int, budget: BudgetLimit, spent_messages: int, spent_yen: float
) -> int:
    if budget.max_messages is not None:
        return max(0, budget.max_messages - spent_messages)
    assert budget.max_yen is not None
    fits = messages_for_yen(terms, used, budget.max_yen - spent_yen)
    return 2**62 if fits is None else fits


def describe_budget(budget: LineBudget) -> str:
    """A budget in words, for errors."""
    if isinstance(budget, str):
        return budget
    if budget.max_messages is not None:
        return f"max_messages {budget.max_messages:,}"
    return f"max_yen {budget.max_yen:,}"


def refusal_error(
    refused_by: Refusal,
    terms: MonthTerms,
    used: int,
    budget: LineBudget,
    spent_messages: int,
    spent_yen: float,
) -> str:
    """The error of a delivery not sent on LINE for its budget or its account's plan."""
    if refused_by == "plan":
        return (
            f"not sent: LINE plan: {terms.plan or 'LINE'}'s {terms.included or 0:,} messages this"
            f" month are used ({used:,}) and it sells no more"
        )
    return (
        f"not sent: LINE budget: {describe_budget(budget)} reached"
        f" ({spent_messages:,} messages, {spent_yen:,.0f} yen of extras spent;"
        f" {used:,} of the account's messages used this month)"
    )


def needs_reserving(plan: LinePlan | None, budget: LineBudget) -> bool:
    """Whether messages under `budget` must be reserved at send time. Not when nothing could
    refuse them: no limit and a plan that sells extras (or none configured), or "included_only"
    with no plan configured (LINE's own monthly limit, which the quota check enforces)."""
    if budget == "unlimited":
        return plan is not None and plan.extra_message_yen is None
    if budget == "included_only":
        return plan is not None
    return True


def effective_budget(own: LineBudget | None, kind: str, default: LineBudget) -> LineBudget:
    """A campaign's or intent's budget: its own, else the account's default for promotional
    sends; transactional ones without their own are unlimited."""
    if own is not None:
        return own
    return default if kind == "promotional" else "unlimited"
