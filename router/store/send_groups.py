"""Send groups: a campaign's LINE deliveries with the same content, sent as one multicast.

Groups are dealt here (`deal`) and written by the statement that accepts a campaign's
intents, so no worker ever sees those deliveries ungrouped. From then on the group is the unit
of work: it is claimed whole (its 'grouped' deliveries read, not written), sent under a retry
key derived from its id, and its outcome is recorded once, on the group row; its deliveries
take their state from it (router/store/group_state.py) until one leaves the group. A group is
never resent with other recipients under the same key: LINE would answer 409 for people who
never got the message. Only a 400 (nothing sent) lets recipients move to a new group.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from uuid import UUID, uuid4

import msgspec

from router import channel_rules
from router.database import Connection
from router.queue import claims
from router.queue.wakeups import notify
from router.reach import DEFAULT_LINE_ACCOUNT
from router.store import group_state, line_budgets
from router.store.intents import DeliveryRow, SendGroupRow


class ClaimedGroup(msgspec.Struct, frozen=True):
    group_id: UUID
    content_id: bytes
    attempts: int
    first_attempt_at: datetime
    line_account: str  # the LINE Official Account it goes out under
    delivery_ids: list[UUID]  # to send, in the order of `addresses`
    addresses: list[str]
    unreachable: list[UUID]  # not to send: see channel_rules.still_reachable
    # The LINE budget check (router.store.line_budgets): deliveries refused by an earlier
    # reservation and whether there was one, and its campaign's budget (None: none stored).
    budget_refused: list[UUID] = msgspec.field(default_factory=list)
    budget_reserved: bool = False
    line_budget_id: UUID | None = None
    own_budgets: list[str | None] = msgspec.field(default_factory=list)  # per delivery_ids
    kinds: list[str] = msgspec.field(default_factory=list)  # per delivery_ids


# Only the group rows are written; their grouped deliveries are read. A group with no grouped
# delivery left (their members erased) comes back empty and is closed by the caller.
# Recipients found unreachable on a first attempt are left out; sending fewer under a key
# never sent before is safe, and they are failed, so the key is never used for them later.
QUEUE = claims.Leased(
    table="send_groups",
    alias="s",
    lane="channel",
    returning=lambda channel: "s.id, s.content_id, s.attempts, s.first_attempt_at, s.line_account",
    parts=claims.Parts(
        table="deliveries",
        alias="d",
        parent="send_group_id",
        leased=False,
        status=group_state.GROUPED,
        # One primary-key probe per delivery (LIMIT 1 keeps the planner from turning them into
        # a hash join over every intent and member).
        read_joins="""
    JOIN LATERAL (SELECT i.member_id, i.line_account, i.line_budget, i.kind FROM intents i
                  WHERE i.id = d.intent_id LIMIT 1) i ON true
    LEFT JOIN LATERAL (SELECT * FROM members WHERE member_id = i.member_id LIMIT 1) m ON true
    LEFT JOIN LATERAL (SELECT * FROM member_line_accounts a
                       WHERE a.member_id = i.member_id AND a.account = i.line_account
                       LIMIT 1) l ON true""",
        returning=lambda channel: (
            f"d.id, d.address,"
            f" {channel_rules.still_reachable(channel, 'claimed.attempts')} AS reachable,"
            f" {line_budgets.GROUP_PART_COLUMNS}"
        ),
        collect="""coalesce(array_agg(id ORDER BY id) FILTER (WHERE reachable), '{}') AS ids,
           coalesce(array_agg(address ORDER BY id) FILTER (WHERE reachable), '{}') AS addresses,
           coalesce(array_agg(id) FILTER (WHERE NOT reachable), '{}') AS unreachable,
           """
        + line_budgets.GROUP_COLLECT,
    ),
    requeued_error="the worker holding this send group stopped; requeued",
    # A group has no 'sending' status: its holder may have stopped after LINE took it, so a
    # cancel before the retry leaves it 'uncertain', not 'cancelled'.
    requeued_sets=", maybe_sent = true",
)


async def claim(
    conn: Connection, channel: str, limit: int, token: UUID, lease_seconds: float
) -> list[ClaimedGroup]:
    rows = await claims.claim(conn, QUEUE, channel, limit, token, lease_seconds)
    return [ClaimedGroup(*r) for r in rows]


_RECORD = """
UPDATE send_groups
SET status = $3, provider_ref = coalesce($4, provider_ref), last_error = coalesce($5, last_error),
    next_attempt_at = CASE WHEN $3 = 'pending' THEN now() + make_interval(secs => $6)
                           ELSE next_attempt_at END,
    sent_at = CASE WHEN $3 = 'sent' THEN now() ELSE sent_at END,
    maybe_sent = maybe_sent OR $7,
    claim_token = NULL, lease_expires_at = NULL, updated_at = now()
WHERE id = $1 AND claim_token = $2
RETURNING channel
"""


async def record(
    conn: Connection,
    group_id: UUID,
    token: UUID,
    status: str,
    provider_ref: str | None,
    error: str | None,
    retry_in_seconds: float,
    maybe_sent: bool = False,
) -> str | None:
    """Store a claimed group's own outcome, which its grouped deliveries take ('sent',
    'pending' for a retry; 'done' or 'split' once they have all left it); its channel, or None
    if the lease was lost. `maybe_sent`: the attempt timed out, so LINE may have taken it."""
    channel: str | None = await conn.fetchval(
        _RECORD, group_id, token, status, provider_ref, error, retry_in_seconds, maybe_sent
    )
    return channel


_SPLIT_OFF = """
WITH parts AS MATERIALIZED (
    SELECT part, gen_random_uuid() AS group_id FROM unnest($3::int[]) AS p(part) GROUP BY part
), created AS (
    INSERT INTO send_groups (id, channel, content_id, status, split_from, line_budget_reserved,
                             line_account)
    SELECT p.group_id, s.channel, s.content_id, 'pending', s.id, s.line_budget_reserved,
           s.line_account
    FROM parts p, send_groups s WHERE s.id = $1
)
UPDATE deliveries d SET send_group_id = p.group_id, updated_at = now()
FROM unnest($2::uuid[], $3::int[]) AS x(id, part) JOIN parts p USING (part)
WHERE d.id = x.id AND d.send_group_id = $1 AND d.status = 'grouped'
"""


async def split_off(
    conn: Connection,
    group_id: UUID,
    channel: str,
    delivery_ids: Sequence[UUID],
    halve: bool,
) -> None:
    """In the transaction that recorded the group under its lease: move unsent deliveries of
    the group into one new group (two halves with `halve`), each with its own id and so its
    own retry key, and wake the channel's group queue. A group's LINE budget reservation
    goes with its deliveries: they were granted, and are not reserved again."""
    half = (len(delivery_ids) + 1) // 2 if halve else len(delivery_ids)
    parts = [int(i >= half) for i in range(len(delivery_ids))]
    await conn.execute(_SPLIT_OFF, group_id, list(delivery_ids), parts)
    await notify(conn, QUEUE.queue_name(channel))


async def cancel_pending(conn: Connection, campaign_id: UUID) -> None:
    """Cancel the campaign's groups still waiting, and with them their grouped deliveries (in
    the caller's transaction, before its other deliveries: group rows are always locked
    before delivery rows). A group whose earlier attempt timed out, or whose holder stopped,
    may have reached LINE: it becomes 'uncertain', not 'cancelled'."""
    await conn.execute(
        "UPDATE send_groups s SET status = CASE WHEN s.maybe_sent THEN 'uncertain'"
        "   ELSE 'cancelled' END, updated_at = now(),"
        "   last_error = CASE WHEN s.maybe_sent THEN 'campaign cancelled after an attempt whose"
        " outcome is unknown: LINE may have sent it' ELSE 'campaign cancelled' END"
        " WHERE s.status = 'pending' AND s.id IN ("
        "   SELECT d.send_group_id FROM deliveries d JOIN intents i ON i.id = d.intent_id"
        "   WHERE i.campaign_id = $1 AND d.send_group_id IS NOT NULL AND d.status = 'grouped')",
        campaign_id,
    )


def deal(
    deliveries: Sequence[DeliveryRow],
    content_of: Mapping[UUID, bytes],
    group_sizes: Mapping[str, int],
    account_of: Mapping[UUID, str] | None = None,
) -> tuple[list[DeliveryRow], list[SendGroupRow]]:
    """Put deliveries that share channel, content, send time and LINE account (by intent
    id in `account_of`; "default" when absent) into send groups: a group is one request
    under one account.

    Only channels in `group_sizes` (the most recipients one request may name) are grouped.
    Deliveries are dealt round-robin into as few groups as fit, of near-equal size (1,001
    recipients: 334 + 334 + 333, not 500 + 500 + 1); a content only one delivery has is sent
    on its own. Each delivery's `send_group_id` is set in place."""
    alike: dict[tuple[str, bytes, datetime | None, str], list[DeliveryRow]] = {}
    accounts = account_of or {}
    for d in deliveries:
        if group_sizes.get(d.channel, 1) > 1:
            account = accounts.get(d.intent_id, DEFAULT_LINE_ACCOUNT)
            key = (d.channel, content_of[d.intent_id], d.send_at, account)
            alike.setdefault(key, []).append(d)
    groups: list[SendGroupRow] = []
    for (channel, content_id, send_at, account), members in alike.items():
        if len(members) < 2:
            continue
        size = group_sizes[channel]
        ids = [uuid4() for _ in range(-(-len(members) // size))]
        for n, d in enumerate(members):
            d.send_group_id = ids[n % len(ids)]
        groups.extend(
            SendGroupRow(
                id=i, channel=channel, content_id=content_id, send_at=send_at, line_account=account
            )
            for i in ids
        )
    return list(deliveries), groups
