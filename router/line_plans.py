"""LINE Official Account plans in Japan and what a month's messages cost under each.

The price table is data, in one place, so that a later setting can pick an account's own plan
(or another country's table) without touching the arithmetic. Prices are LINE Japan's monthly
fees in yen, before consumption tax.
"""

from __future__ import annotations

from typing import Final

import msgspec


class LinePlan(msgspec.Struct, frozen=True, kw_only=True):
    """One plan: its monthly fee, the messages it includes, and the price of each message
    beyond them (None: the plan sends no more that month)."""

    name: str
    monthly_fee_yen: int
    included_messages: int
    extra_message_yen: int | None


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
        cost_yen=plan.monthly_fee_yen + over * plan.extra_message_yen,
        blocked=0,
    )


def costs(messages: int, plans: tuple[LinePlan, ...] = JAPAN_PLANS) -> list[PlanCost]:
    """The month's messages under every plan of `plans`, in their order."""
    return [cost(plan, messages) for plan in plans]
