"""Intents: accepting message intents (one or ten thousand at a time) and reporting on them.

Acceptance validates each intent on its own, resolves recipients and idempotency keys in a
few set-based queries, plans channels (router.routing) and commits intents, contents and
deliveries in one transaction before anyone is told "accepted".
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID, uuid4

import msgspec

from router import members, routing
from router.content import (
    Content,
    EmailContent,
    LineContent,
    Relayed,
    check_content,
    content_id,
)
from router.database import Connection
from router.identifiers import InvalidIdentifier, email_sha256, normalize_email, phone_sha256_hex
from router.problems import FieldError
from router.queue.wakeups import Notices
from router.routing import ChannelName, Kind, Route
from router.store.deliveries import QUEUE as DELIVERIES
from router.store.delivery_events import QUEUE as EVENTS
from router.store.row_ids import uuid7
from router.store.send_groups import QUEUE as SEND_GROUPS

MAX_SCHEDULE_AHEAD = timedelta(days=30)
MAX_BATCH = 10_000


class IntentRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One message for one recipient: a member, or an email address."""

    member_id: str | None = None
    email_address: str | None = None
    route: Route = "prefer_line"
    kind: Kind = "promotional"
    email: EmailContent | None = None
    line: LineContent | None = None
    idempotency_key: Annotated[str, msgspec.Meta(min_length=1, max_length=255)] | None = None
    campaign: Annotated[str, msgspec.Meta(max_length=255)] | None = None
    tags: Annotated[
        list[Annotated[str, msgspec.Meta(min_length=1, max_length=100)]],
        msgspec.Meta(max_length=50),
    ] = msgspec.field(default_factory=list)
    metadata: dict[str, Any] | None = None
    send_at: datetime | None = None


class IntentResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Outcome of one intent in a request. `code` is the HTTP status it would have alone."""

    status: Literal["accepted", "duplicate", "rejected"]
    code: int
    id: UUID | None = None
    channels: list[ChannelName] = msgspec.field(default_factory=list)
    fallback: ChannelName | None = None
    reason: str | None = None
    errors: list[FieldError] = msgspec.field(default_factory=list)


class DeliveryView(msgspec.Struct, kw_only=True):
    id: UUID
    channel: str
    status: str
    fallback: bool
    attempts: int
    last_error: str | None
    provider_ref: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    confirmed_at: datetime | None


class IntentView(msgspec.Struct, kw_only=True):
    id: UUID
    status: str
    member_id: str | None
    email_address: str | None
    route: str
    fallback: str | None
    campaign: str | None
    tags: list[str]
    metadata: dict[str, Any] | None
    idempotency_key: str | None
    created_at: datetime
    deliveries: list[DeliveryView]


def rejected(reason: str, errors: list[FieldError] | None = None, code: int = 400) -> IntentResult:
    return IntentResult(status="rejected", code=code, reason=reason, errors=errors or [])


class _Pending(msgspec.Struct):
    """An intent that passed validation, on its way to the database."""

    index: int
    request: IntentRequest
    fingerprint: bytes
    content_id: bytes
    content_json: str
    email_hash: bytes | None = None
    email_address: str | None = None


def _prepare(
    index: int, req: IntentRequest, prefix: str, relayed: Relayed | None = None
) -> _Pending | IntentResult:
    errors: list[FieldError] = []
    if (req.member_id is None) == (req.email_address is None):
        errors.append(
            FieldError(f"{prefix}member_id", "give exactly one of member_id and email_address")
        )
    address: str | None = None
    if req.email_address is not None:
        try:
            address = normalize_email(req.email_address)
        except InvalidIdentifier as exc:
            errors.append(FieldError(f"{prefix}email_address", str(exc)))
    if req.send_at is not None:
        if req.send_at.tzinfo is None:
            errors.append(
                FieldError(f"{prefix}send_at", "give a time zone, like 2026-12-01T09:00:00+09:00")
            )
        elif req.send_at - datetime.now(UTC) > MAX_SCHEDULE_AHEAD:
            errors.append(FieldError(f"{prefix}send_at", "at most 30 days ahead"))
    if req.email is None and req.line is None:
        errors.append(FieldError(f"{prefix}email", "give email content, LINE messages, or both"))
    content = Content(email=req.email, line=req.line, relayed=relayed)
    errors.extend(check_content(content, prefix))
    if errors:
        return rejected(f"{errors[0].field}: {errors[0].message}", errors)
    encoded = content.encode()
    return _Pending(
        index=index,
        request=req,
        fingerprint=hashlib.sha256(msgspec.json.encode(req)).digest(),
        content_id=content_id(encoded),
        content_json=encoded.decode(),
        email_hash=email_sha256(address) if address else None,
        email_address=address,
    )


async def accept(
    conn: Connection,
    requests: Sequence[IntentRequest | IntentResult],
    configured: frozenset[str],
    prefix: str = "",
    relayed: Relayed | None = None,
    *,
    events: bool = False,
    campaign_id: UUID | None = None,
    line_group_size: int = 1,
) -> list[IntentResult]:
    """Accept a batch; `requests` may already hold per-item decoding failures (kept as-is).

    Returns one result per input, in order. One bad item never affects the others. With
    `events`, each new delivery gets a `processed` delivery event in the same statement.
    With `line_group_size` > 1, LINE deliveries that share content and send time are put in
    send batches of at most that many (LINE multicast) by the same statement."""
    results: list[IntentResult | None] = [None] * len(requests)
    pending: list[_Pending] = []
    for i, item in enumerate(requests):
        if isinstance(item, IntentResult):
            results[i] = item
            continue
        prepared = _prepare(i, item, prefix.format(i=i), relayed)
        if isinstance(prepared, IntentResult):
            results[i] = prepared
        else:
            pending.append(prepared)

    async with conn.transaction():
        pending = await _drop_replays(conn, pending, results)
        by_id, by_email = await members.resolve(
            conn,
            [p.request.member_id for p in pending if p.request.member_id is not None],
            [p.email_hash for p in pending if p.email_hash is not None],
        )
        rows = _IntentRows()
        contents: dict[bytes, str] = {}
        accepted: dict[UUID, tuple[_Pending, IntentResult]] = {}
        for p in pending:
            req = p.request
            if req.member_id is not None:
                reach = by_id.get(req.member_id)
                if reach is None:
                    field = f"{prefix.format(i=p.index)}member_id"
                    results[p.index] = rejected(
                        "no member with this member_id",
                        [FieldError(field, "no member with this id")],
                        code=422,
                    )
                    continue
            else:
                assert p.email_hash is not None
                reach = by_email.get(p.email_hash) or members.Reach.address_only(p.email_address)
            decision = routing.plan(
                req.route,
                reach,
                has_line_content=req.line is not None or req.email is not None,
                has_email_content=req.email is not None,
                configured=configured,
                kind=req.kind,
            )
            if isinstance(decision, routing.Unroutable):
                results[p.index] = rejected(decision.reason, code=422)
                continue
            intent_id = uuid7()
            contents[p.content_id] = p.content_json
            rows.add(intent_id, p, reach, decision)
            accepted[intent_id] = (
                p,
                IntentResult(
                    status="accepted",
                    code=202,
                    id=intent_id,
                    channels=list(decision.primary),
                    fallback=decision.fallback,
                ),
            )

        if accepted:
            batches = _SendBatches.deal(rows.plans, line_group_size)
            inserted = {
                r["id"]
                for r in await conn.fetch(
                    _INSERT_WITH_EVENTS if events else _INSERT,
                    *rows.columns(),
                    list(contents.keys()),
                    list(contents.values()),
                    rows.notification_addresses(),
                    [p.request.send_at for _, p, _, _ in rows.plans],
                    campaign_id,
                    batches.of_intent,
                    batches.ids,
                    batches.content_ids,
                    batches.send_at,
                )
            }
            notices = Notices()  # rows due later only set the queues' timers
            for (intent_id, p, _, d), group in zip(rows.plans, batches.of_intent, strict=True):
                if intent_id not in inserted:
                    continue
                for c in d.primary:
                    queue = SEND_GROUPS if group is not None and c == routing.LINE else DELIVERIES
                    notices.add(queue.queue_name(c), p.request.send_at)
            if events and inserted:
                notices.add(EVENTS.queue_name)
            await notices.send(conn)
            lost = []
            for intent_id, (p, result) in accepted.items():
                if intent_id in inserted:
                    results[p.index] = result
                else:
                    lost.append(p)  # a concurrent request took the idempotency key first
            if lost:
                await _drop_replays(conn, lost, results)

    by_key = {
        p.request.idempotency_key: r.id
        for p, r in accepted.values()
        if p.request.idempotency_key is not None
    }
    for i, r in enumerate(results):
        if r is not None and r.status == "duplicate" and r.id is None and r.reason:
            original = by_key.get(r.reason)
            results[i] = (
                IntentResult(status="duplicate", code=200, id=original)
                if original is not None
                else rejected("the earlier intent with this idempotency_key was rejected", code=409)
            )
    out = [r for r in results if r is not None]
    assert len(out) == len(requests)
    return out


# Contents, intents and their first deliveries in one statement. Deliveries are created only
# for intents that were inserted (not for those that lost an idempotency-key race).
_INSERT = """
WITH new_contents AS (
    INSERT INTO contents (id, body)
    SELECT id, body::jsonb FROM unnest($14::bytea[], $15::text[]) AS c(id, body)
    ON CONFLICT DO NOTHING
), added AS (
    INSERT INTO intents (id, member_id, email_address, content_id, route, fallback, campaign,
                         tags, metadata, idempotency_key, request_sha256, campaign_id)
    SELECT id, member_id, email_address, content_id, route, fallback, campaign, tags::jsonb,
           metadata::jsonb, idempotency_key, request_sha256, $18::uuid
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bytea[], $5::text[], $6::text[],
                $7::text[], $8::text[], $9::text[], $10::text[], $11::bytea[])
         AS i(id, member_id, email_address, content_id, route, fallback, campaign, tags,
              metadata, idempotency_key, request_sha256)
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id, member_id, email_address
), planned AS (
    SELECT p.intent_id, p.line, p.email, p.notification, p.batch,
           greatest(coalesce(p.send_at, now()), now()) AS due
    FROM unnest($1::uuid[], $12::text[], $13::text[], $16::text[], $17::timestamptz[],
                $19::uuid[])
         AS p(intent_id, line, email, notification, send_at, batch)
    WHERE p.intent_id IN (SELECT id FROM added)
), new_batches AS (
    INSERT INTO send_groups (id, channel, content_id, status, next_attempt_at)
    SELECT id, 'line', content_id, 'pending', greatest(coalesce(send_at, now()), now())
    FROM unnest($20::uuid[], $21::bytea[], $22::timestamptz[]) AS b(id, content_id, send_at)
), new_deliveries AS (
    INSERT INTO deliveries (intent_id, channel, address, status, next_attempt_at, send_group_id)
    SELECT intent_id, 'line', line, 'pending', due, batch FROM planned WHERE line IS NOT NULL
    UNION ALL
    SELECT intent_id, 'email', email, 'pending', due, NULL FROM planned WHERE email IS NOT NULL
    UNION ALL
    SELECT intent_id, 'line_notification', notification, 'pending', due, NULL FROM planned
    WHERE notification IS NOT NULL
    RETURNING id, intent_id, channel, address
)
SELECT id FROM added
"""
# With delivery events, each new delivery also gets its `processed` event in the statement;
# without them the new deliveries need not come back from the INSERT at all.
_INSERT_WITH_EVENTS = _INSERT.replace(
    ")\nSELECT id FROM added",
    """), processed AS (
    INSERT INTO delivery_events (event, intent_id, delivery_id, channel, email)
    SELECT 'processed', d.intent_id, d.id, d.channel,
           CASE WHEN d.channel = 'email' THEN d.address
                ELSE coalesce(a.email_address, m.email) END
    FROM new_deliveries d JOIN added a ON a.id = d.intent_id
    LEFT JOIN members m ON m.member_id = a.member_id
)
SELECT id FROM added""",
)
_INSERT = _INSERT.replace("    RETURNING id, intent_id, channel, address\n", "")


class _IntentRows:
    """Accepted intents as columns, the shape `unnest` takes them in."""

    def __init__(self) -> None:
        self.plans: list[tuple[UUID, _Pending, members.Reach, routing.Plan]] = []

    def add(self, intent_id: UUID, p: _Pending, reach: members.Reach, plan: routing.Plan) -> None:
        self.plans.append((intent_id, p, reach, plan))

    def notification_addresses(self) -> list[str | None]:
        """LINE notification messages are addressed by the SHA-256 of the E.164 number."""
        return [
            phone_sha256_hex(reach.phone)
            if routing.NOTIFICATION in plan.primary and reach.phone
            else None
            for _, _, reach, plan in self.plans
        ]

    def columns(self) -> list[list[Any]]:
        cols: list[list[Any]] = [[] for _ in range(13)]
        for intent_id, p, reach, plan in self.plans:
            req = p.request
            values = (
                intent_id,
                reach.member_id,
                p.email_address if reach.member_id is None else None,
                p.content_id,
                req.route,
                plan.fallback,
                req.campaign,
                _EMPTY_TAGS if not req.tags else msgspec.json.encode(req.tags).decode(),
                None if req.metadata is None else msgspec.json.encode(req.metadata).decode(),
                req.idempotency_key,
                p.fingerprint,
                reach.line_user_id if routing.LINE in plan.primary else None,
                reach.email if routing.EMAIL in plan.primary else None,
            )
            for col, value in zip(cols, values, strict=True):
                col.append(value)
        return cols


_EMPTY_TAGS = "[]"


class _SendBatches(msgspec.Struct):
    """Send batches for a campaign chunk's LINE deliveries, as the INSERT takes them.

    Deliveries that share content and send time are dealt round-robin into as few batches
    as fit, of near-equal size (1,001 recipients: 334 + 334 + 333, not 500 + 500 + 1). A
    content only one intent has is sent as a push. Formed here, the batch exists before any
    worker can see its deliveries, so they are never claimed one by one. An intent that loses
    an idempotency-key race leaves its batch one short (or empty, closed when claimed)."""

    of_intent: list[UUID | None]  # each intent's LINE delivery's batch, in plan order
    ids: list[UUID]
    content_ids: list[bytes]
    send_at: list[datetime | None]

    @classmethod
    def deal(
        cls, plans: list[tuple[UUID, _Pending, members.Reach, routing.Plan]], size: int
    ) -> _SendBatches:
        dealt = cls([None] * len(plans), [], [], [])
        if size < 2:
            return dealt
        groups: dict[tuple[bytes, datetime | None], list[int]] = {}
        for n, (_, p, _, plan) in enumerate(plans):
            if routing.LINE in plan.primary:
                groups.setdefault((p.content_id, p.request.send_at), []).append(n)
        for (content, send_at), members_of in groups.items():
            if len(members_of) < 2:
                continue
            slots = [uuid4() for _ in range(-(-len(members_of) // size))]
            for i, n in enumerate(members_of):
                dealt.of_intent[n] = slots[i % len(slots)]
            dealt.ids.extend(slots)
            dealt.content_ids.extend([content] * len(slots))
            dealt.send_at.extend([send_at] * len(slots))
        return dealt


async def _drop_replays(
    conn: Connection, pending: list[_Pending], results: list[IntentResult | None]
) -> list[_Pending]:
    """Answer intents whose idempotency key was seen before (here or earlier in the batch)."""
    keys = [p.request.idempotency_key for p in pending if p.request.idempotency_key is not None]
    if not keys:
        return pending
    seen: dict[str, tuple[UUID | None, bytes]] = {
        r["idempotency_key"]: (r["id"], r["request_sha256"])
        for r in await conn.fetch(
            "SELECT idempotency_key, id, request_sha256 FROM intents"
            " WHERE idempotency_key = ANY($1::text[])",
            keys,
        )
    }
    fresh: list[_Pending] = []
    for p in pending:
        key = p.request.idempotency_key
        if key is None:
            fresh.append(p)
            continue
        if key not in seen:
            seen[key] = (None, p.fingerprint)  # first use in this batch
            fresh.append(p)
            continue
        original, fingerprint = seen[key]
        if fingerprint != p.fingerprint:
            results[p.index] = rejected(
                "this idempotency_key was used with a different request", code=409
            )
        elif original is None:
            # Same request twice in one batch: answered as a duplicate once the first has an id.
            results[p.index] = IntentResult(status="duplicate", code=200, reason=key)
        else:
            results[p.index] = IntentResult(status="duplicate", code=200, id=original)
    return fresh


_VIEW_INTENT = """
SELECT id, member_id, email_address, route, fallback, campaign, tags, metadata,
       idempotency_key, created_at
FROM intents WHERE id = $1
"""

_VIEW_DELIVERIES = """
SELECT id, channel, status, is_fallback AS fallback, attempts, last_error, provider_ref,
       CASE WHEN status = 'pending' THEN next_attempt_at END AS next_attempt_at,
       created_at, updated_at, sent_at, confirmed_at
FROM deliveries WHERE intent_id = $1 ORDER BY is_fallback, created_at
"""


async def view(conn: Connection, intent_id: UUID) -> IntentView | None:
    row = await conn.fetchrow(_VIEW_INTENT, intent_id)
    if row is None:
        return None
    deliveries = [DeliveryView(**dict(r)) for r in await conn.fetch(_VIEW_DELIVERIES, intent_id)]
    return IntentView(
        status=intent_status(row["route"], deliveries), deliveries=deliveries, **dict(row)
    )


def intent_status(route: str, deliveries: Sequence[DeliveryView]) -> str:
    """Summarise deliveries: queued until every active delivery has an outcome.

    With `both`, each channel counts on its own (`partially_delivered` when some failed);
    with the other routes one successful channel delivers the intent."""
    active = [d for d in deliveries if d.status != "cancelled"]
    if any(d.status in ("pending", "claimed", "sending") for d in active):
        return "queued"
    sent = sum(d.status == "sent" for d in active)
    if route == "both":
        if sent == len(active) and sent:
            return "delivered"
        if sent:
            return "partially_delivered"
    elif sent:
        return "delivered"
    if any(d.status == "uncertain" for d in active):
        return "uncertain"
    if not active:
        return "cancelled"
    return "failed"
