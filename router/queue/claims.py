"""Claiming work: the one module whose SQL takes rows with `FOR UPDATE SKIP LOCKED`.

Any number of loops in any number of processes claim from the same tables; skipping locked
rows hands each row to exactly one of them without waiting. A queue is described once, by the
store module that owns its table, and its statements are generated here:

- `Leased`: rows go pending -> claimed under a lease (a claim token and an expiry) in a
  statement that commits at once; the work happens outside any transaction, and `sweep` puts
  the rows of a claimer that stopped back to pending. Rows may carry `Parts`, rows of another
  table claimed and swept with them (a send group's deliveries). A process keeps the leases of
  the claims it holds (`Holdings`) alive with `extend`, and gives back at once with `release`
  a claim it can no longer finish, so the lease can be short: it only has to outlive a
  process that died.
- `Locked`: rows are claimed inside the transaction that does the work and are released by
  its commit or rollback, so a claimer that stops frees them at once.
- `Timed`: as `Locked`, for rows due at a time the caller's clock judges (journey runs).
- `Ordered`: rows go out in order, one transaction at a time per key (or for the whole table):
  a transaction-scoped advisory lock gives one transaction the key's turn, and it takes the
  head of the key's queue.
"""

# ruff: noqa: S608 - statements are built from the constant queue descriptions only; every
# value travels as a parameter.
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import msgspec

from router.database import Connection
from router.queue.wakeups import notify

# The last error of rows given back by a process that could not finish their claim.
RELEASED_ERROR = "the database connection was lost while this claim was in hand; requeued"

# The lease columns a leased table (and its parts) has: status ('pending', 'claimed', ...),
# attempts, claim_token, lease_expires_at, first_attempt_at, next_attempt_at, last_error and
# updated_at. The claim statement's parameters: $1 lane, $2 limit, $3 token, $4 lease seconds.


def _lease(alias: str) -> str:
    return (
        f"status = 'claimed', attempts = {alias}.attempts + 1, claim_token = $3,"
        " lease_expires_at = now() + make_interval(secs => $4),"
        f" first_attempt_at = coalesce({alias}.first_attempt_at, now()), updated_at = now()"
    )


def _from(*items: str) -> str:
    present = [i for i in items if i]
    return f"FROM {', '.join(present)}" if present else ""


@dataclass(frozen=True)
class Parts:
    """Rows of another table that belong to a claimed row and go with it: claimed when it is
    (if still pending), requeued when it is. Locked after the row they belong to.

    `leased=False`: the parts keep no lease of their own (their state is the claimed row's);
    the claim only reads those in `status` (through `read_joins`, join clauses after the
    part's table, instead of `joins`), and a requeue leaves them as they are."""

    table: str
    alias: str
    parent: str  # the column naming the claimed row
    returning: Callable[[str], str]  # per part, over `alias` and `joins`, for a lane
    collect: str  # the select list aggregating one claimed row's parts, over `returning`'s names
    joins: str = ""
    join_on: str = "true"
    leased: bool = True
    status: str = "pending"
    read_joins: str = ""


@dataclass(frozen=True)
class InDoubt:
    """Claimed rows whose worker had begun something that must not be repeated: when their
    lease expires they go to `to`, not back to pending."""

    status: str
    to: str
    error: str


@dataclass(frozen=True)
class Leased:
    """A table of leased work. `lane` is the column that splits it into queues, one per value;
    `only` (over unqualified columns) keeps rows that another queue claims out of this one."""

    table: str
    alias: str
    lane: str
    returning: Callable[[str], str]  # over `alias` and `joins`, for a lane
    requeued_error: str  # the last error of a row whose claimer stopped
    # Further assignments when a stopped claimer's row is requeued (", col = value").
    requeued_sets: str = ""
    only: str = "true"
    joins: str = ""
    join_on: str = "true"
    parts: Parts | None = None
    in_doubt: InDoubt | None = None
    _claims: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def queue_name(self, lane: str) -> str:
        return f"{self.table}:{lane}"

    def claim_sql(self, lane: str) -> str:
        """The claim statement of one lane (its returned columns may differ by lane: a
        channel's own send-time checks), written once per lane."""
        sql = self._claims.get(lane)
        if sql is None:
            sql = self._claims[lane] = self._claim_sql(lane)
        return sql

    def _claim_sql(self, lane: str) -> str:
        a = self.alias
        claim = f"""
UPDATE {self.table} {a} SET {_lease(a)}
{_from(self.joins)}
WHERE {a}.id IN (
        SELECT id FROM {self.table}
        WHERE {self.lane} = $1 AND status = 'pending' AND next_attempt_at <= now()
          AND {self.only}
        ORDER BY next_attempt_at
        LIMIT $2
        FOR UPDATE SKIP LOCKED)
  AND {self.join_on}
RETURNING {self.returning(lane)}"""
        p = self.parts
        if p is None:
            return claim
        of_claimed = f"{p.alias}.{p.parent} = claimed.id AND {p.alias}.status = '{p.status}'"
        if p.leased:
            parts = f"""UPDATE {p.table} {p.alias} SET {_lease(p.alias)}
    {_from("claimed", p.joins)}
    WHERE {of_claimed} AND {p.join_on}
    RETURNING {p.alias}.{p.parent} AS claimed_id, {p.returning(lane)}"""
        else:
            # Per claimed row, its parts through the parent's index (OFFSET 0 keeps the
            # planner from scanning the whole table to hash-join a few claimed rows).
            parts = f"""SELECT {p.alias}.{p.parent} AS claimed_id, {p.returning(lane)}
    FROM claimed CROSS JOIN LATERAL (
        SELECT * FROM {p.table} {p.alias} WHERE {of_claimed} OFFSET 0) {p.alias}
    {p.read_joins}"""
        return f"""
WITH claimed AS ({claim}
), claimed_parts AS MATERIALIZED (
    {parts}
)
SELECT claimed.*, collected.*
FROM claimed CROSS JOIN LATERAL (
    SELECT {p.collect} FROM claimed_parts WHERE claimed_parts.claimed_id = claimed.id
) collected"""

    @cached_property
    def sweep_sql(self) -> str:
        """Requeue expired leases, except those of the tokens in $2 (the sweeping process's
        own claims) and none within $3 seconds of the database server's start: after a
        restart every lease looks expired, and the processes that hold them get that long
        to extend them (or record their outcomes) before anyone takes them away."""
        return self._requeue_sql(
            "lease_expires_at < now() AND NOT claim_token = ANY($2::uuid[])"
            " AND pg_postmaster_start_time() < now() - make_interval(secs => $3)",
            in_doubt_error="$4",
        )

    @cached_property
    def release_sql(self) -> str:
        """Requeue (or put in doubt) at once the rows still held under token $2."""
        return self._requeue_sql("claim_token = $2", in_doubt_error="$3")

    def _requeue_sql(self, which: str, in_doubt_error: str) -> str:
        """Claimed rows matching `which` go back to pending with their parts; rows in doubt
        go to their own status, keeping their token so that a holder that is still alive can
        record what it knows after all. $1 is the requeued rows' last error."""
        steps = [
            f"""requeued AS (
    UPDATE {self.table} SET status = 'pending', claim_token = NULL, lease_expires_at = NULL,
           next_attempt_at = now(), updated_at = now(), last_error = $1{self.requeued_sets}
    WHERE status = 'claimed' AND {which} AND {self.only}
    RETURNING id, {self.lane} AS lane)"""
        ]
        parts = "NULL"
        if self.parts is not None:
            p = self.parts
            if p.leased:
                steps.append(f"""requeued_parts AS (
    UPDATE {p.table} {p.alias} SET status = 'pending', claim_token = NULL,
           lease_expires_at = NULL, updated_at = now(), last_error = $1
    FROM requeued WHERE {p.alias}.{p.parent} = requeued.id AND {p.alias}.status = 'claimed'
    RETURNING {p.alias}.id)""")
            else:
                steps.append(f"""requeued_parts AS (
    SELECT {p.alias}.id FROM requeued JOIN {p.table} {p.alias}
    ON {p.alias}.{p.parent} = requeued.id AND {p.alias}.status = '{p.status}')""")
            parts = "(SELECT array_agg(id) FROM requeued_parts)"
        if self.in_doubt is not None:
            d = self.in_doubt
            steps.append(f"""in_doubt AS (
    UPDATE {self.table} SET status = '{d.to}', lease_expires_at = NULL, updated_at = now(),
           last_error = {in_doubt_error}::text
    WHERE status = '{d.status}' AND {which} AND {self.only})""")
        return f"""
WITH {", ".join(steps)}
SELECT (SELECT array_agg(DISTINCT lane) FROM requeued) AS lanes,
       (SELECT array_agg(id) FROM requeued) AS ids,
       {parts} AS part_ids"""

    @cached_property
    def extend_sql(self) -> str:
        """Push out the leases of the tokens in $1 by $2 seconds from now, for rows that are
        still theirs and not yet recorded: a recorded row has no token, and one the sweep put
        in doubt has left the leased statuses, so neither comes back to life.

        Rows another transaction has locked are skipped, not waited for: that transaction is
        recording them (or sweeping them), so their lease is moot, and waiting would lock
        the renewed rows in a different order than the recorder and deadlock with it. A
        recording that rolls back leaves its rows to the next renewal."""
        held = "'claimed'" + (f", '{self.in_doubt.status}'" if self.in_doubt is not None else "")
        return f"""
UPDATE {self.table} SET lease_expires_at = now() + make_interval(secs => $2)
WHERE id IN (
    SELECT id FROM {self.table}
    WHERE status IN ({held}) AND claim_token = ANY($1::uuid[])
    FOR UPDATE SKIP LOCKED)"""

    @cached_property
    def next_due_sql(self) -> str:
        return f"""
SELECT extract(epoch FROM min(next_attempt_at) - now())::float8 FROM {self.table}
WHERE {self.lane} = $1 AND status = 'pending' AND {self.only}"""


async def claim(
    conn: Connection, table: Leased, lane: str, limit: int, token: UUID, lease_seconds: float
) -> list[asyncpg.Record]:
    """Claim up to `limit` due rows of the lane, oldest due first, under `token`'s lease."""
    return await conn.fetch(table.claim_sql(lane), lane, limit, token, lease_seconds)


class Swept(msgspec.Struct, frozen=True):
    """What a sweep put back: the lanes that have work again, the rows, and their parts."""

    lanes: set[str]
    ids: list[Any]
    part_ids: list[Any]


async def sweep(
    conn: Connection, table: Leased, *, spare: Sequence[UUID] = (), grace_seconds: float = 0.0
) -> Swept:
    """Requeue rows whose lease expired (with their parts, in the same statement, so a row is
    never pending while its parts are still claimed); rows in doubt go to their own status.
    `spare`: tokens of claims the caller's process still holds. `grace_seconds`: how long
    after the database server starts nothing is swept. Wakes the lanes that have work again
    when the caller's transaction commits."""
    args: list[object] = [table.requeued_error, list(spare), grace_seconds]
    if table.in_doubt is not None:
        args.append(table.in_doubt.error)
    return await _requeued(conn, table, await conn.fetchrow(table.sweep_sql, *args))


async def release(conn: Connection, table: Leased, token: UUID) -> Swept:
    """Give back now what is still held under `token`, as the sweep would once its lease ran
    out: the holder lost track of the claim (its answer, or its work, was cut off by the
    database), so nothing of it will be recorded."""
    args: list[object] = [RELEASED_ERROR, token]
    if table.in_doubt is not None:
        args.append(table.in_doubt.error)
    return await _requeued(conn, table, await conn.fetchrow(table.release_sql, *args))


async def _requeued(conn: Connection, table: Leased, row: asyncpg.Record | None) -> Swept:
    assert row is not None
    swept = Swept(set(row["lanes"] or ()), list(row["ids"] or ()), list(row["part_ids"] or ()))
    for lane in sorted(swept.lanes):
        await notify(conn, table.queue_name(lane))
    return swept


async def extend(
    conn: Connection, table: Leased, tokens: Sequence[UUID], lease_seconds: float
) -> int:
    """Renew the leases of these claims (one statement, however many); how many rows."""
    if not tokens:
        return 0
    status: str = await conn.execute(table.extend_sql, list(tokens), lease_seconds)
    return int(status.rpartition(" ")[2])


class Holdings:
    """The claims this process holds on each leased table, by token, from just before its
    claim statement until its outcome is stored: the leases to keep alive, and the claims the
    process's own sweep leaves alone."""

    def __init__(self) -> None:
        self._held: dict[str, tuple[Leased, set[UUID]]] = {}

    def hold(self, table: Leased) -> UUID:
        """A new claim token, held from now on."""
        token = uuid4()
        self._held.setdefault(table.table, (table, set()))[1].add(token)
        return token

    def drop(self, table: Leased, token: UUID) -> None:
        self._held[table.table][1].discard(token)

    def tokens(self, table: Leased) -> list[UUID]:
        held = self._held.get(table.table)
        return [] if held is None else list(held[1])

    def tables(self) -> Iterator[tuple[Leased, list[UUID]]]:
        """Each leased table with the tokens held on it (possibly none)."""
        for table, tokens in list(self._held.values()):
            yield table, list(tokens)


async def next_due(conn: Connection, table: Leased, lane: str) -> float | None:
    """Seconds until the lane's earliest pending row falls due (<= 0: due now)."""
    seconds: float | None = await conn.fetchval(table.next_due_sql, lane)
    return seconds


@dataclass(frozen=True)
class Locked:
    """A table whose rows are claimed inside the transaction that works on them. `pending`
    selects the rows still to do; `order` is the order they are taken in."""

    table: str
    columns: str
    pending: str
    order: str

    @property
    def queue_name(self) -> str:
        return self.table

    @cached_property
    def claim_sql(self) -> str:
        return f"""
SELECT {self.columns} FROM {self.table}
WHERE {self.pending}
ORDER BY {self.order}
LIMIT $1
FOR UPDATE SKIP LOCKED"""


async def claim_locked(conn: Connection, table: Locked, limit: int) -> list[asyncpg.Record]:
    """Lock up to `limit` rows to do that no other transaction holds; they stay this
    transaction's until it ends."""
    if not conn.is_in_transaction():
        raise RuntimeError(f"claiming {table.table} needs the transaction that does the work")
    return await conn.fetch(table.claim_sql, limit)


@dataclass(frozen=True)
class Ordered:
    """A table whose unfinished rows go out in `order`, one transaction at a time per value of
    `key` (None: the whole table is one queue). `columns` and `joins` are over `alias`; the
    head query adds `due`, whether its first row may go now (`next_attempt_at`)."""

    table: str
    alias: str
    key: str | None
    unfinished: str
    columns: str
    joins: str = ""
    order: str = "id"

    @property
    def queue_name(self) -> str:
        return self.table

    @cached_property
    def head_sql(self) -> str:
        a = self.alias
        of_key = "" if self.key is None else f" AND {a}.{self.key} = $2"
        return f"""
SELECT {self.columns}, {a}.next_attempt_at <= now() AS due
FROM {self.table} {a} {self.joins}
WHERE {self.unfinished}{of_key}
ORDER BY {a}.{self.order}
LIMIT $1
FOR UPDATE OF {a} SKIP LOCKED"""

    @cached_property
    def next_due_sql(self) -> str:
        a = self.alias
        if self.key is None:
            return f"""
SELECT extract(epoch FROM {a}.next_attempt_at - now())::float8 FROM {self.table} {a}
WHERE {self.unfinished} ORDER BY {a}.{self.order} LIMIT 1"""
        return f"""
SELECT extract(epoch FROM min(next_attempt_at) - now())::float8 FROM (
    SELECT DISTINCT ON ({a}.{self.key}) {a}.next_attempt_at FROM {self.table} {a}
    WHERE {self.unfinished} ORDER BY {a}.{self.key}, {a}.{self.order}) heads"""


async def take_head(
    conn: Connection, table: Ordered, limit: int, key: str | None = None
) -> list[asyncpg.Record]:
    """In the caller's transaction: the first `limit` unfinished rows of `key`'s queue, if this
    transaction gets the key's turn and the first row is due; [] otherwise. The turn is held
    until the transaction ends, so no other process works on the key meanwhile, and a failed
    head is retried before anything behind it."""
    if not conn.is_in_transaction():
        raise RuntimeError(f"taking the head of {table.table} needs a transaction")
    turn = table.table if key is None else f"{table.table}:{key}"
    if not await conn.fetchval("SELECT pg_try_advisory_xact_lock(hashtext($1))", turn):
        return []
    args: list[object] = [limit] if key is None else [limit, key]
    rows = await conn.fetch(table.head_sql, *args)
    return rows if rows and rows[0]["due"] else []


async def keys(conn: Connection, table: Ordered) -> list[str]:
    """The keys with unfinished rows."""
    assert table.key is not None
    return [
        r[0]
        for r in await conn.fetch(
            f"SELECT DISTINCT {table.alias}.{table.key} FROM {table.table} {table.alias}"
            f" WHERE {table.unfinished}"
        )
    ]


async def next_due_ordered(conn: Connection, table: Ordered) -> float | None:
    """Seconds until the earliest head of a key's queue may go (<= 0: now)."""
    seconds: float | None = await conn.fetchval(table.next_due_sql)
    return seconds


async def claim_locked_in_turn(conn: Connection, table: Locked, limit: int) -> list[asyncpg.Record]:
    """As `claim_locked`, by one transaction at a time across every process (a
    transaction-scoped advisory lock, [] when another has the turn): the rows are handled in
    `order`, never two stretches of them side by side."""
    if not conn.is_in_transaction():
        raise RuntimeError(f"claiming {table.table} needs the transaction that does the work")
    if not await conn.fetchval("SELECT pg_try_advisory_xact_lock(hashtext($1))", table.table):
        return []
    return await conn.fetch(table.claim_sql, limit)


@dataclass(frozen=True)
class Timed:
    """A table of rows each due at a time (`due`), claimed inside the transaction that works
    on them, as `Locked`. The time is the caller's ($2), not the database's, so the clock the
    work is judged by is the one the claim reads."""

    table: str
    columns: str
    pending: str
    due: str

    @property
    def queue_name(self) -> str:
        return self.table

    @cached_property
    def claim_sql(self) -> str:
        return f"""
SELECT {self.columns} FROM {self.table}
WHERE {self.pending} AND {self.due} <= $2
ORDER BY {self.due}
LIMIT $1
FOR UPDATE SKIP LOCKED"""

    @cached_property
    def next_due_sql(self) -> str:
        return f"""
SELECT extract(epoch FROM min({self.due}) - $1)::float8 FROM {self.table}
WHERE {self.pending}"""


async def claim_due(
    conn: Connection, table: Timed, limit: int, now: datetime
) -> list[asyncpg.Record]:
    """Lock up to `limit` rows due by `now`, earliest first, that no other transaction holds;
    they stay this transaction's until it ends."""
    if not conn.is_in_transaction():
        raise RuntimeError(f"claiming {table.table} needs the transaction that does the work")
    return await conn.fetch(table.claim_sql, limit, now)


async def next_due_timed(conn: Connection, table: Timed, now: datetime) -> float | None:
    """Seconds from `now` until the earliest row falls due (<= 0: due now)."""
    seconds: float | None = await conn.fetchval(table.next_due_sql, now)
    return seconds
