"""Events: what members do, as the company (or its shop) reports it, recorded for journeys.

`record` is the one path by which every front door records events (`POST /v1/events`, its
batch, the Shopify webhook): each item checked on its own, idempotency keys resolved, members
found (or created, when given by an address no member has), then one INSERT that wakes the
journeys, all in one transaction that commits before anyone is told "accepted".
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal
from uuid import UUID

import msgspec

from router import members
from router.database import Connection
from router.identifiers import (
    EmailAddress,
    InvalidIdentifier,
    MemberId,
    documented,
    email_sha256,
    normalize_email,
)
from router.problems import FieldError
from router.store import events as event_store
from router.store.events import EventRow
from router.store.row_ids import uuid7s
from router.wire_rules import Alternatives, unmet

MAX_BATCH = 10_000
MAX_PROPERTIES_BYTES = 16 * 1024
RESERVED_PREFIX = "router:"
"""Names the router gives its own events (a LINE follow, an audience joined, an attribute
set); a client may not post them."""
NAME = re.compile(r"[a-z0-9_.:-]{1,64}")
NAME_RULE = "1 to 64 characters of a-z, 0-9, '_', '.', ':' and '-'"

EventName = Annotated[
    str,
    documented(
        pattern=f"^(?!{RESERVED_PREFIX})[a-z0-9_.:-]{{1,64}}$",
        description=f"{NAME_RULE}; not starting '{RESERVED_PREFIX}' (the router's own events)",
    ),
]
OccurredAt = Annotated[
    str,
    documented(
        format="date-time",
        description="RFC 3339 with a time zone (Z or an offset); absent: when it is received",
    ),
]
"""Read as text and parsed here: a number is not a time, whatever a lenient decoder makes
of it."""
IdempotencyKey = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
Properties = Annotated[
    dict[str, Any],
    msgspec.Meta(description="A JSON object of at most 16 KB, encoded (16,384 bytes)"),
]


class EventRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, gc=False):
    """One thing one member did: a member, or an email address (a new one becomes an
    address-only member)."""

    member_id: MemberId | None = None
    email_address: EmailAddress | None = None
    name: EventName
    properties: Properties = msgspec.field(default_factory=dict)
    occurred_at: OccurredAt | None = None
    idempotency_key: IdempotencyKey | None = None

    alternatives: ClassVar[tuple[Alternatives, ...]] = (
        Alternatives(
            ("member_id", "email_address"),
            "give exactly one of member_id and email_address",
            exactly_one=True,
        ),
    )


class EventResult(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """Outcome of one event in a request. `code` is the HTTP status it would have alone."""

    status: Literal["accepted", "duplicate", "rejected"]
    code: int
    id: UUID | None = None
    reason: str | None = None
    errors: list[FieldError] = msgspec.field(default_factory=list)


def rejected(reason: str, errors: list[FieldError] | None = None, code: int = 400) -> EventResult:
    return EventResult(status="rejected", code=code, reason=reason, errors=errors or [])


def invalid_item(errors: list[FieldError]) -> EventResult:
    return rejected(f"{errors[0].field}: {errors[0].message}", errors)


class _Valid(msgspec.Struct, gc=False):
    index: int
    request: EventRequest
    fingerprint: bytes  # SHA-256 of the request: a key reused with another body is refused
    properties_json: str
    occurred_at: datetime | None
    email_hash: bytes | None = None
    email_address: str | None = None


def _time(text: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None and "T" in text.upper() else None


def validate(index: int, req: EventRequest, prefix: str) -> _Valid | EventResult:
    """Check one event on its own; field paths under `prefix`."""
    errors = [FieldError(prefix + rule.fields[0], rule.message) for rule in unmet(req)]
    if not NAME.fullmatch(req.name):
        errors.append(FieldError(f"{prefix}name", NAME_RULE))
    elif req.name.startswith(RESERVED_PREFIX):
        errors.append(
            FieldError(
                f"{prefix}name",
                f"names starting '{RESERVED_PREFIX}' are reserved for the router's own events",
            )
        )
    occurred_at: datetime | None = None
    if req.occurred_at is not None:
        occurred_at = _time(req.occurred_at)
        if occurred_at is None:
            errors.append(
                FieldError(f"{prefix}occurred_at", "an RFC 3339 date and time with a time zone")
            )
    address: str | None = None
    if req.email_address is not None:
        try:
            address = normalize_email(req.email_address)
        except InvalidIdentifier as exc:
            errors.append(FieldError(f"{prefix}email_address", str(exc)))
    properties_json = msgspec.json.encode(req.properties)
    if len(properties_json) > MAX_PROPERTIES_BYTES:
        errors.append(
            FieldError(
                f"{prefix}properties",
                f"{len(properties_json):,} bytes encoded; at most {MAX_PROPERTIES_BYTES:,}",
            )
        )
    if errors:
        return invalid_item(errors)
    return _Valid(
        index=index,
        request=req,
        fingerprint=hashlib.sha256(msgspec.json.encode(req)).digest(),
        properties_json=properties_json.decode(),
        occurred_at=occurred_at,
        email_hash=email_sha256(address) if address else None,
        email_address=address,
    )


async def record(
    conn: Connection,
    items: Sequence[EventRequest | EventResult],
    prefix: str = "",
    *,
    source: str = "api",
) -> list[EventResult]:
    """Record events; `items` may already hold per-item decoding failures (kept as they are).

    One result per item, in order; one bad item never affects the others. `prefix` is the
    field path of item i, with `{i}` in it (`events[{i}].`)."""
    results: list[EventResult | None] = [None] * len(items)
    valid: list[_Valid] = []
    for i, item in enumerate(items):
        checked = item if isinstance(item, EventResult) else validate(i, item, prefix.format(i=i))
        if isinstance(checked, EventResult):
            results[i] = checked
        else:
            valid.append(checked)
    first_of_key: dict[str, int] = {}
    async with conn.transaction():
        fresh = await _drop_replays(conn, valid, results, first_of_key)
        known, owners = await members.existing_or_address_only(
            conn,
            [v.request.member_id for v in fresh if v.request.member_id is not None],
            {v.email_hash: v.email_address for v in fresh if v.email_hash and v.email_address},
        )
        rows: list[tuple[_Valid, EventRow]] = []
        now = datetime.now(UTC)
        for v, event_id in zip(fresh, uuid7s(len(fresh)), strict=True):
            member_id = v.request.member_id
            if member_id is None:
                assert v.email_hash is not None
                member_id = owners[v.email_hash]
            elif member_id not in known:
                results[v.index] = _unknown_member(prefix.format(i=v.index))
                continue
            rows.append((v, _row(v, event_id, member_id, now, source)))
        inserted = await event_store.insert(conn, [row for _, row in rows])
        lost: list[_Valid] = []
        for v, row in rows:
            if row.id in inserted:
                results[v.index] = EventResult(status="accepted", code=202, id=row.id)
            else:
                lost.append(v)
        if lost:
            # Another transaction took the key first, or the member was erased meanwhile.
            keyed = [v for v in lost if v.request.idempotency_key is not None]
            gone = await _drop_replays(conn, keyed, results, {}) if keyed else []
            for v in gone + [v for v in lost if v.request.idempotency_key is None]:
                results[v.index] = _unknown_member(prefix.format(i=v.index))
    return _settle_within(results, first_of_key)


def _row(v: _Valid, event_id: UUID, member_id: str, now: datetime, source: str) -> EventRow:
    return EventRow(
        id=event_id,
        member_id=member_id,
        name=v.request.name,
        properties=v.properties_json,
        occurred_at=v.occurred_at or now,
        source=source,
        idempotency_key=v.request.idempotency_key,
        fingerprint=v.fingerprint if v.request.idempotency_key is not None else None,
    )


def _unknown_member(prefix: str) -> EventResult:
    return rejected(
        "no member with this member_id",
        [FieldError(f"{prefix}member_id", "no member with this id")],
        code=422,
    )


async def _drop_replays(
    conn: Connection,
    pending: Sequence[_Valid],
    results: list[EventResult | None],
    first_of_key: dict[str, int],
) -> list[_Valid]:
    """Answer events whose idempotency key was seen before (stored, or earlier in this
    request); return the rest. `first_of_key` learns which item first used each new key."""
    keys = [v.request.idempotency_key for v in pending if v.request.idempotency_key is not None]
    if not keys:
        return list(pending)
    stored = await event_store.idempotency_keys(conn, keys)
    fingerprints = {v.index: v.fingerprint for v in pending}
    fresh: list[_Valid] = []
    for v in pending:
        key = v.request.idempotency_key
        if key is None:
            fresh.append(v)
        elif key in stored:
            original, fingerprint = stored[key]
            results[v.index] = _replay(v, fingerprint, original)
        elif key in first_of_key:
            first = first_of_key[key]
            # Answered once the first copy has its outcome; `reason` holds the key until then.
            same = fingerprints.get(first) == v.fingerprint
            results[v.index] = (
                EventResult(status="duplicate", code=200, reason=key) if same else _conflict()
            )
        else:
            first_of_key[key] = v.index
            fresh.append(v)
    return fresh


def _replay(v: _Valid, fingerprint: bytes | None, original: UUID) -> EventResult:
    if fingerprint != v.fingerprint:
        return _conflict()
    return EventResult(status="duplicate", code=200, id=original)


def _conflict() -> EventResult:
    return rejected("this idempotency_key was used with a different request", code=409)


def _settle_within(
    results: list[EventResult | None], first_of_key: dict[str, int]
) -> list[EventResult]:
    """An event repeated within one request is answered with the id its first copy got (or
    refused, when the first copy was)."""
    out: list[EventResult] = []
    for r in results:
        assert r is not None
        if r.status == "duplicate" and r.id is None and r.reason is not None:
            first = results[first_of_key[r.reason]]
            r = (
                EventResult(status="duplicate", code=200, id=first.id)
                if first is not None and first.status == "accepted"
                else rejected("the earlier event with this idempotency_key was rejected", code=409)
            )
        out.append(r)
    return out


class EventPage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A page of a member's events, newest first; `next_before` asks for the next page."""

    events: list[event_store.StoredEvent]
    next_before: UUID | None = None


async def of_member(
    conn: Connection, member_id: str, before: UUID | None, limit: int
) -> EventPage | None:
    """A member's events, newest first, `limit` at a time; None if there is no such member."""
    if await members.get(conn, member_id) is None:
        return None
    page = await event_store.of_member(conn, member_id, before, limit + 1)
    more = len(page) > limit
    page = page[:limit]
    return EventPage(events=page, next_before=page[-1].id if more else None)


async def is_event_of(conn: Connection, event_id: UUID, member_id: str) -> bool:
    return await event_store.is_event_of(conn, event_id, member_id)
