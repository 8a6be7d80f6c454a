"""The send-time LINE budget check: one reservation per claim, before any LINE request.

Called by the dispatcher (deliveries sent on their own) and by the send groups (multicast)
with the claimed deliveries that have a budget and no grant yet; what it refuses is failed
with fallback by the caller, like any refused delivery. A claim with no such delivery costs
nothing: the claim statement already said which have a budget.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from uuid import UUID

from channels.base import LineAccount
from router import line_costs
from router.database import Pool
from router.line_plans import LineBudget, LinePlan
from router.store import line_budgets
from router.store.line_budgets import Ask, Reservation

log = logging.getLogger(__name__)


class LineBudgetGate:
    """Reserves claimed LINE deliveries' messages under their budgets and their account's
    month (`router.store.line_budgets.reserve`), reading LINE's monthly figures first when
    those in the database are older than `[line] quota_cache_seconds`."""

    def __init__(
        self,
        pool: Pool,
        plans: Mapping[str, LinePlan | None],
        accounts: Mapping[str, LineAccount],
        cache_seconds: Mapping[str, float],
        defaults: Mapping[str, LineBudget],
    ) -> None:
        self._pool = pool
        self._defaults = defaults
        self._plans = plans
        self._accounts = accounts
        self._cache_seconds = cache_seconds

    def ask(
        self,
        delivery_id: UUID,
        account: str,
        budget_id: UUID | None,
        own_budget: str | None,
        kind: str,
    ) -> Ask | None:
        """What to reserve for one claimed delivery: under its campaign's stored budget, or its
        intent's own (or the account's default) budget; None when nothing could refuse it."""
        if budget_id is not None:
            return Ask(delivery_id, budget_id)
        own = None if own_budget is None else line_budgets.decode(own_budget)
        budget = line_costs.effective_budget(
            own, kind, self._defaults.get(account, "included_only")
        )
        if not line_costs.needs_reserving(self._plans.get(account), budget):
            return None
        return Ask(delivery_id, None, budget)

    async def reserve(
        self, account: str, asks: Sequence[Ask], groups: Sequence[UUID] = ()
    ) -> Reservation:
        """Grant or refuse each ask (a refused one carries its error); `groups`: the send
        groups whose recipients the asks are."""
        plan = self._plans.get(account)
        try:
            return await line_budgets.reserve(
                self._pool, account, plan, asks, self._cache_seconds.get(account, 60.0), groups
            )
        except line_budgets.Stale:
            await self._read_line(account)
            return await line_budgets.reserve(self._pool, account, plan, asks, None, groups)

    async def release(self, account: str, granted: int) -> None:
        """The granted messages were sent (and counted) or failed: stop holding them apart."""
        try:
            await line_budgets.release(self._pool, account, granted)
        except Exception as exc:
            log.warning("LINE budget release failed (%s)", type(exc).__name__)

    async def _read_line(self, account: str) -> None:
        """Refresh LINE's figures for the month; without them the month counts only what
        this router has sent and granted."""
        operations = self._accounts.get(account)
        if operations is None:
            return
        try:
            await operations.quota()
        except Exception as exc:
            log.warning("LINE quota could not be read for %s (%s)", account, type(exc).__name__)
