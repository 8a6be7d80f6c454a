"""Intake, step 4: accepted intents become rows, written by one statement.

Rows are built by column name (router.store.rows); each planned channel's delivery is
addressed by its descriptor. Deliveries of one call that share content and send time on a
channel that sends to many at once (LINE multicast) are dealt into send groups here, by the
statement that creates them, so no worker ever sees one of them ungrouped. The same statement
wakes the queues the deliveries wait in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from uuid import UUID

import msgspec

from channels.base import ChannelDescriptor
from router.database import Connection
from router.intake.routing import Plan
from router.intake.validate import Validated
from router.queue.wakeups import Notices
from router.reach import DEFAULT_LINE_ACCOUNT, Reach
from router.store import intents as intent_store
from router.store.deliveries import QUEUE as DELIVERIES
from router.store.intents import ContentRow, DeliveryRow, IntentColumns, SendGroupRow
from router.store.send_groups import QUEUE as SEND_GROUPS
from router.store.send_groups import deal

_EMPTY_TAGS = "[]"


class Planned(msgspec.Struct, frozen=True, gc=False):
    """An intent with its id, recipient and channels, ready to be written."""

    id: UUID
    intent: Validated
    reach: Reach
    plan: Plan


class Persisted(msgspec.Struct, frozen=True):
    intents: set[UUID]  # the planned intents that were inserted
    deliveries: list[UUID]  # their deliveries, when asked for


async def persist(
    conn: Connection,
    planned: Sequence[Planned],
    channels: Mapping[str, ChannelDescriptor],
    *,
    campaign_id: UUID | None,
    group_sizes: Mapping[str, int],
    returning_deliveries: bool,
    batch_id: str | None = None,
) -> Persisted:
    contents = {p.intent.content_id: p.intent.content_json for p in planned}
    deliveries = [
        DeliveryRow(
            intent_id=p.id,
            channel=name,
            address=_address(channels[name], p.reach),
            send_at=p.intent.request.send_at,
            send_group_id=None,
        )
        for p in planned
        for name in p.plan.primary
    ]
    content_of = {p.id: p.intent.content_id for p in planned}
    groups: list[SendGroupRow] = []
    if group_sizes:
        account_of = {
            p.id: p.intent.request.line_account
            for p in planned
            if p.intent.request.line_account != DEFAULT_LINE_ACCOUNT
        }
        deliveries, groups = deal(deliveries, content_of, group_sizes, account_of)
    # Sent by the statement itself, at its commit. An intent that loses an idempotency-key race
    # has no deliveries; the wake-up it asked for finds nothing, as any early one may.
    notices = Notices()  # deliveries due later only set the queues' timers
    for d in deliveries:
        queue = DELIVERIES if d.send_group_id is None else SEND_GROUPS
        notices.add(queue.queue_name(d.channel), d.send_at)
    inserted = await intent_store.insert(
        conn,
        [ContentRow(id=i, body=body) for i, body in contents.items()],
        _intent_columns(planned),
        groups,
        deliveries,
        campaign_id,
        returning_deliveries=returning_deliveries,
        wake=notices.payloads(),
        batch_id=batch_id,
    )
    return Persisted(inserted.intents, inserted.deliveries)


def _address(channel: ChannelDescriptor, reach: Reach) -> str:
    address = channel.address(reach)
    assert address is not None, "routing plans only channels that reach the recipient"
    return address


def _intent_columns(planned: Sequence[Planned]) -> IntentColumns:
    requests = [p.intent.request for p in planned]
    encode = msgspec.json.encode
    return IntentColumns(
        id=[p.id for p in planned],
        member_id=[p.reach.member_id for p in planned],
        email_address=[
            p.intent.email_address if p.reach.member_id is None else None for p in planned
        ],
        content_id=[p.intent.content_id for p in planned],
        route=[r.route for r in requests],
        fallback=[p.plan.fallback for p in planned],
        campaign=[r.campaign for r in requests],
        tags=[_EMPTY_TAGS if not r.tags else encode(r.tags).decode() for r in requests],
        metadata=[None if r.metadata is None else encode(r.metadata).decode() for r in requests],
        idempotency_key=[r.idempotency_key for r in requests],
        request_sha256=[p.intent.fingerprint for p in planned],
        kind=[r.kind for r in requests],
        category=[r.category for r in requests],
        journey_id=[
            None if p.intent.origin is None else p.intent.origin.journey_id for p in planned
        ],
        journey_step=[None if p.intent.origin is None else p.intent.origin.step for p in planned],
        journey_run=[None if p.intent.origin is None else p.intent.origin.run_id for p in planned],
        line_budget=[
            None if r.line_budget is None else encode(r.line_budget).decode() for r in requests
        ],
        line_account=[r.line_account for r in requests],
    )
