"""LINE Official Account plans in Japan and what a month's messages cost under each.

The price table is data, in one place, so that a later setting can pick an account's own plan
(or another country's table) without touching the arithmetic. Prices are LINE Japan's monthly
fees in yen, before consumption tax.
"""

from __future__ import annotations

import math
from typing import Annotated, ClassVar, Final, Literal

import msgspec

from router.problems import FieldError
from router.wire_rules import Alternatives, unmet

PlanName = Literal["", "free", "light", "standard", "custom"]
"""An account's plan as configured ("": not said, so only LINE's reported limit is known)."""
NonNegativeYen = Annotated[float, msgspec.Meta(ge=0)]


class LinePlan(msgspec.Struct, frozen=True, kw_only=True):
    """One plan: its monthly fee, the messages it includes, and the price of each message
    beyond them (None: the plan sends no more that month)."""

    name: str
    monthly_fee_yen: int
    included_messages: int
    extra_message_yen: float | None


JAPAN_PLANS: Final[tuple[LinePlan, ...]] = (
    LinePlan(name="Free", monthly_fee_yen=0, included_messages=200, extra_message_yen=None),
    LinePlan(name="Light", monthly_fee_yen=5_000, included_messages=5_000, extra_message_yen=None),
    LinePlan(
        name="Standard", monthly_fee_yen=15_000, included_messages=30_000, extra_message_yen=3
    ),
)


class PlanCost(msgspec.Struct, frozen=True, kw_only=True):
    """A month's messages priced under one plan. `blocked` is how many of them the plan
    would have refused to send (its included messages used up and no extras sold)."""

    plan: LinePlan
    messages: int
    sent: int
    extra_messages: int
    cost_yen: int
    blocked: int


def cost(plan: LinePlan, messages: int) -> PlanCost:
    """What `messages` LINE messages in one month cost under `plan`, and how many it blocks."""
    if messages < 0:
        raise ValueError("messages must be >= 0")
    over = max(0, messages - plan.included_messages)
    if plan.extra_message_yen is None:
        return PlanCost(
            plan=plan,
            messages=messages,
            sent=messages - over,
            extra_messages=0,
            cost_yen=plan.monthly_fee_yen,
            blocked=over,
        )
    return PlanCost(
        plan=plan,
        messages=messages,
        sent=messages,
        extra_messages=over,
        cost_yen=plan.monthly_fee_yen + math.ceil(over * plan.extra_message_yen),
        blocked=0,
    )


def costs(messages: int, plans: tuple[LinePlan, ...] = JAPAN_PLANS) -> list[PlanCost]:
    """The month's messages under every plan of `plans`, in their order."""
    return [cost(plan, messages) for plan in plans]


_BY_NAME: Final[dict[str, LinePlan]] = {plan.name.lower(): plan for plan in JAPAN_PLANS}


def plan_terms(
    name: str, included_messages: int | None = None, extra_message_yen: float | None = None
) -> LinePlan | None:
    """An account's plan: a named one with the overrides given, a custom one from them alone,
    or None when no plan is configured (nothing is known of its price)."""
    if not name:
        return None
    if name == "custom":
        return LinePlan(
            name="Custom",
            monthly_fee_yen=0,
            included_messages=included_messages or 0,
            extra_message_yen=extra_message_yen,
        )
    base = _BY_NAME[name]
    return msgspec.structs.replace(
        base,
        included_messages=base.included_messages
        if included_messages is None
        else included_messages,
        extra_message_yen=base.extra_message_yen
        if extra_message_yen is None
        else extra_message_yen,
    )


class BudgetLimit(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """A LINE budget as a ceiling: at most `max_messages` messages, or at most `max_yen` yen
    of messages beyond the plan's included ones. Exactly one is given."""

    max_messages: Annotated[int, msgspec.Meta(ge=0)] | None = None
    max_yen: NonNegativeYen | None = None

    # Stated in the OpenAPI document from the same declaration (router.wire_rules).
    alternatives: ClassVar[tuple[Alternatives, ...]] = (
        Alternatives(
            ("max_messages", "max_yen"),
            "give exactly one of max_messages and max_yen",
            exactly_one=True,
        ),
    )


LineBudget = Literal["included_only", "unlimited"] | BudgetLimit
"""How much LINE an intent or campaign may spend before its `prefer_line` members get email:
only the messages the plan includes, no limit, or a ceiling."""


def budget_errors(budget: LineBudget | None, field: str) -> list[FieldError]:
    """Why a decoded budget is not one (a ceiling giving both or neither limit), as errors
    naming `field`: checked where budgets are read, as the OpenAPI document states it."""
    if not isinstance(budget, BudgetLimit):
        return []
    return [FieldError(field, rule.message) for rule in unmet(budget)]
