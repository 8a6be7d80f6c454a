"""The LINE cost arithmetic shared by the dry run, the send-time reservation and the usage
view: prices under each plan, and how many messages a budget lets through."""

from __future__ import annotations

import pytest

from router.line_costs import (
    effective_budget,
    fit,
    messages_for_yen,
    month_terms,
    needs_reserving,
    next_message_yen,
    price,
)
from router.line_plans import BudgetLimit, plan_terms

FREE = month_terms(plan_terms("free"), None)
LIGHT = month_terms(plan_terms("light"), None)
STANDARD = month_terms(plan_terms("standard"), None)
CUSTOM = month_terms(plan_terms("custom", 1_000, 2.5), None)


def test_prices_split_included_and_extra_messages_by_plan() -> None:
    p = price(STANDARD, 29_990, 20)
    assert (p.included, p.extra, p.extra_yen, p.refused) == (10, 10, 30.0, 0)
    p = price(FREE, 150, 100)
    assert (p.included, p.extra, p.extra_yen, p.refused) == (50, 0, 0.0, 50)
    p = price(LIGHT, 6_000, 3)  # already past: LINE's figure may include other senders
    assert (p.included, p.refused) == (0, 3)
    p = price(CUSTOM, 999, 3)
    assert (p.included, p.extra, p.extra_yen) == (1, 2, 5.0)
    with pytest.raises(ValueError, match=">= 0"):
        price(FREE, 0, -1)


def test_the_next_message_costs_nothing_inside_the_plan_then_its_price() -> None:
    assert next_message_yen(STANDARD, 0) == 0.0
    assert next_message_yen(STANDARD, 30_000) == 3.0
    assert next_message_yen(FREE, 199) == 0.0
    assert next_message_yen(FREE, 200) is None  # refused: the plan sells no more


def test_without_a_plan_lines_reported_limit_is_what_is_included() -> None:
    limited = month_terms(None, 500)
    assert (limited.included, limited.extra_message_yen) == (500, None)
    p = price(limited, 450, 100)
    assert (p.included, p.refused) == (50, 50)
    unlimited = month_terms(None, None)
    assert price(unlimited, 10**6, 7).included == 7
    # max_yen without a known price: nothing beyond the limit
    assert fit(limited, 450, BudgetLimit(max_yen=1000), 0, 0.0, 100).granted == 50


def test_how_many_messages_fit_in_a_yen_budget() -> None:
    assert messages_for_yen(STANDARD, 29_900, 300) == 100 + 100
    assert messages_for_yen(STANDARD, 40_000, 299) == 99
    assert messages_for_yen(FREE, 100, 10**6) == 100  # extras cannot be bought
    assert messages_for_yen(CUSTOM, 1_000, 10) == 4
    assert messages_for_yen(month_terms(None, None), 0, 5) is None


def test_a_budget_grants_up_to_its_ceiling_and_says_who_refused() -> None:
    by_count = fit(STANDARD, 0, BudgetLimit(max_messages=100), 40, 0.0, 300)
    assert (by_count.granted, by_count.refused_by) == (60, "budget")
    by_yen = fit(STANDARD, 30_000, BudgetLimit(max_yen=30), 0, 12.0, 10)
    assert (by_yen.granted, by_yen.priced.extra_yen, by_yen.refused_by) == (6, 18.0, "budget")
    included = fit(FREE, 150, "included_only", 0, 0.0, 300)
    assert (included.granted, included.refused_by) == (50, "plan")
    standard_included = fit(STANDARD, 29_950, "included_only", 0, 0.0, 300)
    assert (standard_included.granted, standard_included.refused_by) == (50, "budget")
    # A plan without extras refuses past its limit whatever the budget.
    unlimited_free = fit(FREE, 190, "unlimited", 0, 0.0, 30)
    assert (unlimited_free.granted, unlimited_free.refused_by) == (10, "plan")
    everything = fit(STANDARD, 0, "unlimited", 0, 0.0, 40_000)
    assert (everything.granted, everything.priced.extra, everything.refused_by) == (
        40_000,
        10_000,
        None,
    )
    assert fit(STANDARD, 0, BudgetLimit(max_messages=5), 9, 0.0, 3).granted == 0


def test_who_needs_a_reservation_at_send_time() -> None:
    standard, free = plan_terms("standard"), plan_terms("free")
    assert not needs_reserving(None, "unlimited")
    assert not needs_reserving(standard, "unlimited")
    assert needs_reserving(free, "unlimited")
    assert not needs_reserving(None, "included_only")
    assert needs_reserving(standard, "included_only")
    assert needs_reserving(None, BudgetLimit(max_messages=3))
    assert effective_budget(None, "promotional", "included_only") == "included_only"
    assert effective_budget(None, "transactional", "included_only") == "unlimited"
    assert effective_budget("unlimited", "promotional", "included_only") == "unlimited"
