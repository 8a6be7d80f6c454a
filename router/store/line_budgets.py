"""LINE budgets and the month's messages they reserve: the only writer of `line_budgets`,
`line_budget_months`, `deliveries.line_budget_granted` / `line_budget_refused` and
`send_groups.line_budget_reserved`.

A reservation is one short transaction, taken when LINE deliveries are claimed and before
any request: it locks the account's month row, then the budgets' rows (always in that order,
so two reservations never deadlock), weighs what the claim asks against both with
`router.line_costs.fit`, adds what it grants to both and marks the granted deliveries, all
committed together (a send group is marked once, with its refused deliveries, rather than
each granted one). A retry of a granted delivery or group reserves nothing again, and a
crash after the commit leaves the messages counted as spent, never spent twice: the total
can fall short of a budget, never pass it.
"""

# ruff: noqa: S608 - the statements interpolate the constants below only

from __future__ import annotations

from collections.abc import Sequence
from typing import Final
from uuid import UUID

import msgspec

from router import line_costs
from router.database import Connection, Pool
from router.line_plans import LineBudget, LinePlan
from router.store.line_narrowcasts import LINE_CHANNEL

MONTH: Final = "date_trunc('month', now() AT TIME ZONE 'Asia/Tokyo')::date"
"""LINE counts messages per calendar month in Japan time."""

_BUDGET_OF_INTENT = "(SELECT b.id FROM line_budgets b WHERE b.id = i.campaign_id)"


def delivery_columns(channel: str) -> str:
    """Columns the claim of deliveries sent on their own returns for the budget check (after
    every other column, the intent's account last among them; none for a channel that is not
    LINE): its budget (NULL: none to check) and whether the delivery was granted already."""
    if channel != LINE_CHANNEL:
        return ""
    return f", {_BUDGET_OF_INTENT}, i.line_budget::text, d.line_budget_granted"


GROUP_PART_COLUMNS: Final = (
    "d.line_budget_refused AS refused, d.campaign_id, i.line_account,"
    " i.line_budget::text AS own_budget, coalesce(i.kind, 'promotional') AS kind"
)
"""Per grouped delivery, what the group's budget check needs (its intent is `i`)."""
GROUP_COLLECT: Final = """coalesce(array_agg(id) FILTER (WHERE reachable AND refused), '{}')
             AS budget_refused,
           (SELECT g.line_budget_reserved FROM send_groups g
            WHERE g.id = (array_agg(claimed_id))[1]) AS budget_reserved,
           (SELECT b.id FROM line_budgets b WHERE b.id = (array_agg(campaign_id))[1])
             AS line_budget_id,
           coalesce(array_agg(own_budget ORDER BY id) FILTER (WHERE reachable), '{}')
             AS own_budgets,
           coalesce(array_agg(kind ORDER BY id) FILTER (WHERE reachable), '{}') AS kinds"""
"""Per claimed group: its deliveries refused and whether it was reserved already, its account, its campaign's budget
(NULL: none stored) and, in the order of its deliveries to send, their intents' own budgets
and kinds. A send group holds deliveries of one campaign or one call."""


def encode(budget: LineBudget) -> str:
    return msgspec.json.encode(budget).decode()


def decode(raw: str) -> LineBudget:
    return msgspec.json.decode(raw, type=LineBudget)


async def create(conn: Connection, budget_id: UUID, account: str, budget: LineBudget) -> None:
    """Store the budget of a campaign or intent (again: nothing changes)."""
    await conn.execute(
        "INSERT INTO line_budgets (id, account, budget) VALUES ($1, $2, $3::jsonb)"
        " ON CONFLICT (id) DO NOTHING",
        budget_id,
        account,
        encode(budget),
    )


class MonthFigures(msgspec.Struct, frozen=True, kw_only=True):
    """An account's month as the router knows it."""

    line_limit: int | None  # LINE's reported monthly limit (None: none, or never read)
    line_usage: int  # LINE's own count when last read
    sent_since_read: int  # what this router sent since
    outstanding: int  # granted by budgets and not yet known sent
    granted: int  # granted by budgets this month
    granted_yen: float
    read_at: float | None  # when LINE was read (epoch seconds), None: never this month
    fresh: bool

    @property
    def used(self) -> int:
        return self.line_usage + self.sent_since_read + self.outstanding


_MONTH_FIGURES = """
q.quota_limit, coalesce(q.line_usage, 0) AS line_usage,
coalesce(q.sent_since_read, 0) AS sent_since_read,
extract(epoch FROM q.read_at)::float8 AS read_at,
coalesce($2::float8 IS NULL OR q.read_at > now() - make_interval(secs => $2), false) AS fresh
"""

_LOCK = f"""
WITH m AS (
    INSERT INTO line_budget_months AS m (account, month) VALUES ($1, {MONTH})
    ON CONFLICT (account, month) DO UPDATE SET account = excluded.account
    RETURNING m.account, m.month, m.outstanding, m.granted, m.granted_yen
), b AS MATERIALIZED (
    -- After the month's row (the InitPlan reading m runs first): one lock order for all.
    SELECT id, budget, spent_messages, spent_yen FROM line_budgets
    WHERE id = ANY($3::uuid[]) AND (SELECT count(*) FROM m) > 0
    ORDER BY id FOR UPDATE
)
SELECT m.outstanding, m.granted, m.granted_yen, {_MONTH_FIGURES},
       (SELECT coalesce(json_agg(b), '[]') FROM b)::text AS budgets,
       set_config('synchronous_commit', 'off', true) AS commit_mode
FROM m LEFT JOIN line_quota q ON q.account = m.account AND q.month = m.month
"""
"""Lock the account's month row, then the budgets' rows, and read both: one statement.

The transaction commits without waiting for its WAL to reach disk (`synchronous_commit` off
for it alone): a reservation is written before any request, and whatever records that
request's outcome commits synchronously after it, which flushes the reservation too (WAL is
written in order). Only a PostgreSQL crash before that can lose it, and then it is lost with
every later reservation, and the claim it belonged to is retried and reserves again: the
budget still counts each message once. A router killed at any instant loses nothing."""


class _BudgetRow(msgspec.Struct, frozen=True):
    id: UUID
    budget: LineBudget
    spent_messages: int
    spent_yen: float


_READ_MONTH = f"""
SELECT coalesce(m.outstanding, 0) AS outstanding, coalesce(m.granted, 0) AS granted,
       coalesce(m.granted_yen, 0) AS granted_yen, {_MONTH_FIGURES}
FROM (SELECT $1::text AS account, {MONTH} AS month) k
LEFT JOIN line_budget_months m ON m.account = k.account AND m.month = k.month
LEFT JOIN line_quota q ON q.account = k.account AND q.month = k.month
"""


def _month(row: object) -> MonthFigures:
    r = row  # asyncpg.Record
    return MonthFigures(
        line_limit=r["quota_limit"],  # type: ignore[index]
        line_usage=r["line_usage"],  # type: ignore[index]
        sent_since_read=r["sent_since_read"],  # type: ignore[index]
        outstanding=r["outstanding"],  # type: ignore[index]
        granted=r["granted"],  # type: ignore[index]
        granted_yen=r["granted_yen"],  # type: ignore[index]
        read_at=r["read_at"],  # type: ignore[index]
        fresh=r["fresh"],  # type: ignore[index]
    )


async def month(conn: Connection, account: str, fresh_for: float | None = None) -> MonthFigures:
    """The account's month, unlocked (for views)."""
    row = await conn.fetchrow(_READ_MONTH, account, fresh_for)
    assert row is not None
    return _month(row)


class Ask(msgspec.Struct, frozen=True):
    """One claimed LINE delivery to reserve a message for: under a stored budget
    (`budget_id`, a campaign's), or under its intent's own or default `budget`, which needs
    no counter (one intent has one LINE delivery)."""

    delivery_id: UUID
    budget_id: UUID | None
    budget: LineBudget = "unlimited"


class Reservation(msgspec.Struct, frozen=True, kw_only=True):
    granted: list[UUID]
    refused: dict[UUID, str]  # delivery -> its error ("not sent: LINE budget: ...")


class Stale(Exception):
    """LINE's figures for the month are missing or older than allowed: read them first."""


_SPEND = f"""
WITH spent AS (
    UPDATE line_budgets b SET spent_messages = b.spent_messages + s.messages,
                              spent_yen = b.spent_yen + s.yen
    FROM unnest($1::uuid[], $2::bigint[], $3::float8[]) AS s(id, messages, yen)
    WHERE b.id = s.id
), month AS (
    UPDATE line_budget_months SET outstanding = outstanding + $5, granted = granted + $5,
                                  granted_yen = granted_yen + $6
    WHERE account = $4 AND month = {MONTH}
), groups AS (
    UPDATE send_groups SET line_budget_reserved = true WHERE id = ANY($9::uuid[])
), refused AS (
    UPDATE deliveries SET line_budget_refused = true WHERE id = ANY($8::uuid[])
)
UPDATE deliveries SET line_budget_granted = true WHERE id = ANY($7::uuid[])
"""


async def reserve(
    pool: Pool,
    account: str,
    plan: LinePlan | None,
    asks: Sequence[Ask],
    fresh_for: float | None,
    groups: Sequence[UUID] = (),
) -> Reservation:
    """Reserve one message per ask, in the asks' order, under each one's budget and the
    account's month; raises `Stale` (nothing reserved) when LINE's figures must be read
    first (`fresh_for` None: use them however old). `groups`: the send groups the asks are
    (all) the recipients of; they are marked reserved and their refused deliveries marked,
    instead of each granted delivery."""
    budget_ids = sorted({a.budget_id for a in asks if a.budget_id is not None})
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(_LOCK, account, fresh_for, budget_ids)
        assert row is not None
        figures = _month(row)
        if fresh_for is not None and not figures.fresh:
            raise Stale(account)
        budgets = {b.id: b for b in msgspec.json.decode(row["budgets"], type=list[_BudgetRow])}
        terms = line_costs.month_terms(plan, figures.line_limit)
        used = figures.used
        granted: list[UUID] = []
        refused: dict[UUID, str] = {}
        spent: dict[UUID, tuple[int, float]] = {}
        yen_total = 0.0
        by_budget: dict[UUID | str, list[Ask]] = {}
        for a in asks:
            # Stored budgets count together; an intent's own limit counts alone; a policy
            # without a counter ("included_only", "unlimited") is one for all.
            key: UUID | str = a.budget_id or (
                a.budget if isinstance(a.budget, str) else str(a.delivery_id)
            )
            by_budget.setdefault(key, []).append(a)
        for wanted in by_budget.values():
            stored = wanted[0].budget_id
            found = budgets.get(stored) if stored is not None else None
            if (
                stored is not None and found is None
            ):  # removed since the claim: nothing holds them back
                granted.extend(a.delivery_id for a in wanted)
                continue
            budget = found.budget if found is not None else wanted[0].budget
            spent_messages = found.spent_messages if found is not None else 0
            spent_yen = found.spent_yen if found is not None else 0.0
            fitted = line_costs.fit(terms, used, budget, spent_messages, spent_yen, len(wanted))
            granted.extend(a.delivery_id for a in wanted[: fitted.granted])
            if fitted.refused_by is not None:
                error = line_costs.refusal_error(
                    fitted.refused_by,
                    terms,
                    used + fitted.granted,
                    budget,
                    spent_messages + fitted.granted,
                    spent_yen + fitted.priced.extra_yen,
                )
                refused.update((a.delivery_id, error) for a in wanted[fitted.granted :])
            if found is not None:
                spent[found.id] = (fitted.granted, fitted.priced.extra_yen)
            used += fitted.granted
            yen_total += fitted.priced.extra_yen
        n = len(granted)
        await conn.execute(
            _SPEND,
            list(spent),
            [m for m, _ in spent.values()],
            [y for _, y in spent.values()],
            account,
            n,
            yen_total,
            [] if groups else granted,
            list(refused) if groups else [],
            list(groups),
        )
    return Reservation(granted=granted, refused=refused)


async def release(pool: Pool, account: str, messages: int) -> None:
    """Messages granted earlier were sent (and counted by the quota ledger) or will not be:
    they no longer stand apart in the month's figures."""
    if not messages:
        return
    async with pool.acquire() as conn:
        # Not waited for on disk either: a release lost to a PostgreSQL crash leaves the
        # month counting more than was used, never less.
        await conn.execute(
            "UPDATE line_budget_months SET outstanding = greatest(0, outstanding - $2)"
            " FROM (SELECT set_config('synchronous_commit', 'off', true)) AS commit_mode"
            f" WHERE account = $1 AND month = {MONTH}",
            account,
            messages,
        )
