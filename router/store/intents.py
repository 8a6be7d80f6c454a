"""The SQL of intents and what acceptance creates with them: contents, first deliveries and
send groups, written by one statement so that an intent is never seen half-made.

The only writer of `intents` and `contents` (member erasure deletes through the cascades on
members and intents and prunes contents no one uses). The database checks per statement that
each intent's member and content, and each delivery's intent, exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import asyncpg
import msgspec

from router.database import Connection
from router.queue import wakeups
from router.reach import DEFAULT_LINE_ACCOUNT
from router.store import group_state
from router.store.rows import column_lists, columns, unnest, width


class ContentRow(msgspec.Struct, frozen=True, gc=False):
    id: bytes  # SHA-256 of the canonical JSON
    body: str


class IntentColumns(msgspec.Struct, frozen=True, gc=False):
    """The new intents, one list per column (all of one length): built column by column
    from what intake planned, with no object per intent."""

    id: list[UUID]
    member_id: list[str | None]
    email_address: list[str | None]  # only for a recipient without a member record
    content_id: list[bytes]
    route: list[str]
    fallback: list[str | None]
    campaign: list[str | None]
    tags: list[str]  # JSON arrays
    metadata: list[str | None]  # JSON objects
    idempotency_key: list[str | None]
    request_sha256: list[bytes | None]  # only for an intent with an idempotency key
    kind: list[str | None]
    category: list[str | None]
    # Set only on intents the router made itself (router.intents.IntentOrigin).
    journey_id: list[str | None]
    journey_step: list[str | None]
    journey_run: list[UUID | None]
    line_account: list[str]
    # The intent's own LINE budget (JSON), None: the account's default by kind (an empty
    # list: none has one; unnest pads it with NULLs).
    line_budget: list[str | None] = msgspec.field(default_factory=list)


class DeliveryRow(msgspec.Struct, gc=False):
    intent_id: UUID
    channel: str
    address: str
    send_at: datetime | None
    send_group_id: UUID | None


class SendGroupRow(msgspec.Struct, frozen=True, gc=False):
    id: UUID
    channel: str
    content_id: bytes
    send_at: datetime | None
    line_account: str = DEFAULT_LINE_ACCOUNT


_CONTENT_TYPES = {"id": "bytea", "body": "text"}
_INTENT_TYPES = {
    "id": "uuid",
    "member_id": "text",
    "email_address": "text",
    "content_id": "bytea",
    "route": "text",
    "fallback": "text",
    "campaign": "text",
    "tags": "text",
    "metadata": "text",
    "idempotency_key": "text",
    "request_sha256": "bytea",
    "kind": "text",
    "category": "text",
    "journey_id": "text",
    "journey_step": "text",
    "journey_run": "uuid",
    "line_budget": "text",
    "line_account": "text",
}
_DELIVERY_TYPES = {
    "intent_id": "uuid",
    "channel": "text",
    "address": "text",
    "send_at": "timestamptz",
    "send_group_id": "uuid",
}
_SEND_GROUP_TYPES = {
    "id": "uuid",
    "channel": "text",
    "content_id": "bytea",
    "send_at": "timestamptz",
    "line_account": "text",
}


def _insert_statement(*, returning_deliveries: bool) -> str:
    """Contents, intents, send groups and first deliveries in one statement. Deliveries are
    created only for intents that were inserted (not for those that lost an idempotency-key
    race); a send group that loses members that way is one short, or empty and closed when
    claimed. The statement answers with the new intents' ids (kind 'intent') and, when asked,
    the new deliveries' (kind 'delivery'). It also sends the given queue notifications
    (`router.queue.wakeups`), delivered when it commits, so a caller outside a transaction
    needs no other statement."""
    p_contents = 1
    p_intents = p_contents + width(ContentRow)
    p_groups = p_intents + width(IntentColumns)
    p_deliveries = p_groups + width(SendGroupRow)
    p_campaign = p_deliveries + width(DeliveryRow)
    p_batch = p_campaign + 1
    p_wake = p_batch + 1
    # Referenced by the answer, so it runs: a CTE that only selects runs only when read.
    answer = "SELECT 'intent' AS kind, id FROM added UNION ALL SELECT 'woken', NULL FROM woken"
    returning = ""
    if returning_deliveries:
        answer += " UNION ALL SELECT 'delivery', id FROM new_deliveries"
        returning = "RETURNING id"
    return f"""
WITH new_contents AS (
    INSERT INTO contents (id, body)
    SELECT id, body::jsonb FROM {unnest(ContentRow, _CONTENT_TYPES, p_contents, "c")}
    ON CONFLICT DO NOTHING
), added AS (
    INSERT INTO intents (id, member_id, email_address, content_id, route, fallback, campaign,
                         tags, metadata, idempotency_key, request_sha256, campaign_id, kind,
                         category, journey_id, journey_step, journey_run, batch_id, line_budget,
                         line_account)
    SELECT id, member_id, email_address, content_id, route, fallback, campaign, tags::jsonb,
           metadata::jsonb, idempotency_key, request_sha256, ${p_campaign}::uuid, kind,
           category, journey_id, journey_step, journey_run, ${p_batch}::text,
           line_budget::jsonb, line_account
    FROM {unnest(IntentColumns, _INTENT_TYPES, p_intents, "i")}
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id
), new_groups AS (
    INSERT INTO send_groups (id, channel, content_id, status, next_attempt_at, line_account)
    SELECT id, channel, content_id, 'pending', greatest(coalesce(send_at, now()), now()),
           line_account
    FROM {unnest(SendGroupRow, _SEND_GROUP_TYPES, p_groups, "g")}
), new_deliveries AS (
    INSERT INTO deliveries (intent_id, channel, address, status, next_attempt_at, send_group_id,
                            campaign_id)
    SELECT intent_id, channel, address, {group_state.initial_status("send_group_id")},
           greatest(coalesce(send_at, now()), now()),
           send_group_id, ${p_campaign}::uuid
    FROM {unnest(DeliveryRow, _DELIVERY_TYPES, p_deliveries, "d")}
    WHERE intent_id IN (SELECT id FROM added)
    {returning}
), woken AS (
    SELECT pg_notify('{wakeups.CHANNEL}', payload) FROM unnest(${p_wake}::text[]) AS w(payload)
)
{answer}
"""  # noqa: S608 - built from constants only


_INSERT = _insert_statement(returning_deliveries=False)
_INSERT_RETURNING_DELIVERIES = _insert_statement(returning_deliveries=True)


class Inserted(msgspec.Struct, frozen=True):
    intents: set[UUID]
    deliveries: list[UUID]  # only when asked for


async def insert(
    conn: Connection,
    contents: Sequence[ContentRow],
    intents: IntentColumns,
    groups: Sequence[SendGroupRow],
    deliveries: Sequence[DeliveryRow],
    campaign_id: UUID | None,
    *,
    returning_deliveries: bool = False,
    wake: Sequence[str] = (),
    batch_id: str | None = None,
) -> Inserted:
    """Write the rows; `wake` holds `router.queue.wakeups` payloads to notify at commit;
    `batch_id` is the SendGrid batch every intent of the call belongs to."""
    rows: list[asyncpg.Record] = await conn.fetch(
        _INSERT_RETURNING_DELIVERIES if returning_deliveries else _INSERT,
        *columns(ContentRow, contents),
        *column_lists(intents),
        *columns(SendGroupRow, groups),
        *columns(DeliveryRow, deliveries),
        campaign_id,
        batch_id,
        list(wake),
    )
    return Inserted(
        intents={r["id"] for r in rows if r["kind"] == "intent"},
        deliveries=[r["id"] for r in rows if r["kind"] == "delivery"],
    )


async def idempotency_keys(
    conn: Connection, keys: Sequence[str]
) -> list[tuple[str, tuple[UUID, bytes]]]:
    """Stored intents holding these keys: key -> (intent id, request fingerprint)."""
    return [
        (r["idempotency_key"], (r["id"], r["request_sha256"]))
        for r in await conn.fetch(
            "SELECT idempotency_key, id, request_sha256 FROM intents"
            " WHERE idempotency_key = ANY($1::text[])",
            list(keys),
        )
    ]
