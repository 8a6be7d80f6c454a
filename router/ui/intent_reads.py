"""What the dashboard's intent pages read: a bounded, keyset-paged search and one intent's
whole record (deliveries with their attempts and leases, send groups, events, content).

Every statement here is bounded and walks an index ordered by the intent id, which is
time-ordered (UUIDv7, `router.store.row_ids`), so "newest first" costs no index of its own:

- all intents: the primary key;
- one member's (or the members an email address resolves to, at most `MAX_MEMBERS`):
  `intents_member_recent (member_id, id)`, one index range per member; and an address's
  intents made when no member had it: `intents_address_recent (lower(email_address), id)`;
- one campaign label's: `intents_campaign_recent (campaign, id)`;
- the created-time range becomes an id range (`ID_TIME_SLACK` wider, as an id is made a
  moment before its row's `created_at`), then `created_at` itself is checked exactly; the
  keyset cursor is the last id.

Tag, channel, status and LINE account are checked on the rows those give, at most
`SCAN_WINDOW` a page, so a rare value never turns a page into a scan of the table: a page that found fewer than
its size says how far it looked and continues from there. The LINE account has no index of
its own: every intent would pay an entry for it on intake, the busiest write, while most
searches narrow by member, address or campaign first, and within those (or within a time
range) a page's window finds an account's intents as it finds a tag's. The deliveries of a page's
intents come by `deliveries (intent_id, channel)` (the unique key), their events by
`delivery_events_intent`, their content by the primary key of `contents`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Final
from uuid import UUID

import asyncpg
import msgspec

from router.channel_rules import confirmed_by_provider
from router.database import Connection
from router.identifiers import email_sha256
from router.intents import DeliveryView, NarrowcastNote, intent_status
from router.members import address_only_id
from router.store import group_state
from router.store.row_ids import uuid7_floor

PAGE_SIZES: Final = (25, 50, 100)
SCAN_WINDOW: Final = 500
"""Intents a page reads at most when tag, channel or status must be checked row by row."""
MAX_MEMBERS: Final = 20
"""Members an email address may resolve to in a search (several members may share one)."""
MAX_EVENTS: Final = 200
"""Delivery events one intent's page lists (oldest first)."""

STATUSES: Final = (
    "queued",
    "sent",
    "delivered",
    "partially_delivered",
    "failed",
    "uncertain",
    "cancelled",
)


ID_TIME_SLACK: Final = timedelta(minutes=1)
"""How much earlier than its row's `created_at` an intent's id may have been made (the id is
made when the intent is accepted, `created_at` when its transaction began)."""


class Cursor(msgspec.Struct, frozen=True):
    """Where a page ended: the next page holds intents strictly older than this one."""

    id: UUID

    def encode(self) -> str:
        return str(self.id)

    @staticmethod
    def decode(text: str) -> Cursor | None:
        """None for anything that is not a cursor this module wrote."""
        try:
            return Cursor(UUID(text))
        except ValueError:
            return None


class IntentSearch(msgspec.Struct, frozen=True, kw_only=True):
    """A search as the page's form gives it, checked. `member_ids` is None when no member
    or email was asked for; an empty tuple when one was but names nobody."""

    member_ids: tuple[str, ...] | None = None
    email_address: str | None = None  # lower case; with member_ids, for recipients no member had
    campaign: str | None = None
    tag: str | None = None
    status: str | None = None
    channel: str | None = None
    line_account: str | None = None
    created_from: datetime | None = None
    created_before: datetime | None = None
    after: Cursor | None = None
    page_size: int = PAGE_SIZES[0]

    @property
    def checks_rows(self) -> bool:
        checked = (self.tag, self.status, self.channel, self.line_account)
        return any(v is not None for v in checked)


class IntentRow(msgspec.Struct, frozen=True, kw_only=True):
    """One intent in the search results."""

    id: UUID
    member_id: str | None
    route: str
    campaign: str | None
    tags: list[str]
    created_at: datetime
    status: str
    channels: list[str]  # its deliveries', primary first
    line_account: str  # the LINE account it goes out under


class SearchPage(msgspec.Struct, frozen=True, kw_only=True):
    rows: list[IntentRow]
    next: Cursor | None  # None: nothing older matches
    scanned: int  # intents read to fill this page
    window_exhausted: bool  # the page stopped at SCAN_WINDOW, not at its size


_SEARCH_COLUMNS = (
    "i.id, i.member_id, i.route, i.campaign, i.tags::text AS tags, i.created_at, i.line_account"
)


def _bounds(search: IntentSearch, first: int) -> tuple[list[str], list[Any]]:
    """The created range and keyset conditions on `i`, from parameter `$first` on."""
    conditions: list[str] = []
    args: list[Any] = []
    if search.created_from is not None:
        args += [uuid7_floor(search.created_from - ID_TIME_SLACK), search.created_from]
        n = first + len(args) - 2
        conditions += [f"i.id >= ${n}", f"i.created_at >= ${n + 1}"]
    if search.created_before is not None:
        args += [uuid7_floor(search.created_before + ID_TIME_SLACK), search.created_before]
        n = first + len(args) - 2
        conditions += [f"i.id < ${n}", f"i.created_at < ${n + 1}"]
    if search.after is not None:
        args.append(search.after.id)
        conditions.append(f"i.id < ${first + len(args) - 1}")
    return conditions, args


def search_statement(search: IntentSearch, limit: int) -> tuple[str, list[Any]]:
    """The statement that reads at most `limit` candidate intents, newest first, through
    the one index that narrows them most (see the module's docstring), and its arguments."""
    order = "ORDER BY i.id DESC"
    if search.member_ids is not None:
        conditions, args = _bounds(search, 4)
        where = " AND ".join(["i.member_id = m.member_id", *conditions])
        by_address = " AND ".join(
            ["i.email_address IS NOT NULL", "lower(i.email_address) = $3", *conditions]
        )
        return (
            f"""SELECT * FROM (
    SELECT i.* FROM unnest($1::text[]) AS m(member_id)
    CROSS JOIN LATERAL (
        SELECT {_SEARCH_COLUMNS} FROM intents i WHERE {where} {order} LIMIT $2) i
    UNION ALL
    (SELECT {_SEARCH_COLUMNS} FROM intents i WHERE {by_address} {order} LIMIT $2)
) AS i {order} LIMIT $2""",  # noqa: S608 - constant fragments and numbered parameters only
            [list(search.member_ids), limit, search.email_address or "", *args],
        )
    if search.campaign is not None:
        conditions, args = _bounds(search, 3)
        where = " AND ".join(["i.campaign = $1", *conditions])
        return (
            f"SELECT {_SEARCH_COLUMNS} FROM intents i WHERE {where} {order} LIMIT $2",  # noqa: S608
            [search.campaign, limit, *args],
        )
    conditions, args = _bounds(search, 2)
    where = " AND ".join(conditions) or "true"
    return (
        f"SELECT {_SEARCH_COLUMNS} FROM intents i WHERE {where} {order} LIMIT $1",  # noqa: S608
        [limit, *args],
    )


# The deliveries of many intents with their derived state, as GET /v1/intents/{id} reports
# each (a grouped delivery's state is its send group's, router/store/group_state.py).
_DELIVERIES_OF = f"""
SELECT d.intent_id, d.id, d.channel, {group_state.status("d", "s")} AS status,
       d.is_fallback AS fallback, {group_state.field("d", "s", "attempts")} AS attempts,
       {group_state.field("d", "s", "last_error")} AS last_error,
       {group_state.field("d", "s", "provider_ref")} AS provider_ref, d.smtp_queue_id,
       {group_state.field("d", "s", "next_attempt_at")} AS next_attempt_at,
       d.created_at, {group_state.field("d", "s", "updated_at")} AS updated_at,
       {group_state.field("d", "s", "sent_at")} AS sent_at, d.confirmed_at, d.feedback_at,
       n.status AS narrowcast_status, n.request_id AS narrowcast_request_id,
       d.address, d.send_group_id,
       {group_state.field("d", "s", "first_attempt_at")} AS first_attempt_at,
       {group_state.field("d", "s", "lease_expires_at")} AS lease_expires_at,
       {group_state.field("d", "s", "claim_token")} AS claim_token
FROM deliveries d
LEFT JOIN send_groups s ON s.id = d.send_group_id
LEFT JOIN line_narrowcasts n ON n.send_group_id = d.send_group_id
WHERE d.intent_id = ANY($1::uuid[])
ORDER BY d.intent_id, d.is_fallback, d.created_at
"""  # noqa: S608 - built from constant fragments only


class DeliveryDetail(msgspec.Struct, frozen=True, kw_only=True):
    """A delivery as the API reports it, and what the store keeps of its attempts."""

    view: DeliveryView
    address: str
    send_group_id: UUID | None
    first_attempt_at: datetime | None
    lease_expires_at: datetime | None
    claim_token: UUID | None


async def _deliveries(
    conn: Connection, intent_ids: Sequence[UUID]
) -> dict[UUID, list[DeliveryDetail]]:
    found: dict[UUID, list[DeliveryDetail]] = {i: [] for i in intent_ids}
    if not intent_ids:
        return found
    for r in await conn.fetch(_DELIVERIES_OF, list(intent_ids)):
        found[r["intent_id"]].append(_detail(r))
    return found


_VIEW_FIELDS: Final = tuple(f for f in DeliveryView.__struct_fields__ if f != "narrowcast")


def _detail(r: asyncpg.Record) -> DeliveryDetail:
    note = (
        None
        if r["narrowcast_status"] is None
        else NarrowcastNote(request_id=r["narrowcast_request_id"], status=r["narrowcast_status"])
    )
    view = DeliveryView(narrowcast=note, **{f: r[f] for f in _VIEW_FIELDS})
    return DeliveryDetail(
        view=view,
        address=r["address"],
        send_group_id=r["send_group_id"],
        first_attempt_at=r["first_attempt_at"],
        lease_expires_at=r["lease_expires_at"],
        claim_token=r["claim_token"],
    )


def derived_status(route: str, deliveries: Sequence[DeliveryDetail]) -> str:
    """The intent's status exactly as `GET /v1/intents/{id}` derives it."""
    return intent_status(route, [d.view for d in deliveries], frozenset(confirmed_by_provider()))


async def search(conn: Connection, query: IntentSearch) -> SearchPage:
    """One page of intents matching `query`, newest first."""
    if query.member_ids == () and query.email_address is None:
        return SearchPage(rows=[], next=None, scanned=0, window_exhausted=False)
    window = SCAN_WINDOW if query.checks_rows else query.page_size + 1
    statement, args = search_statement(query, window)
    candidates = await conn.fetch(statement, *args)
    deliveries = await _deliveries(conn, [c["id"] for c in candidates])
    rows: list[IntentRow] = []
    last: Cursor | None = None
    for scanned, candidate in enumerate(candidates):
        if len(rows) == query.page_size:
            return SearchPage(rows=rows, next=last, scanned=scanned, window_exhausted=False)
        last = Cursor(candidate["id"])
        row = _row(candidate, deliveries[candidate["id"]])
        if _matches(query, row):
            rows.append(row)
    more = len(candidates) == window
    return SearchPage(
        rows=rows,
        next=last if more else None,
        scanned=len(candidates),
        window_exhausted=more and query.checks_rows,
    )


def _row(candidate: asyncpg.Record, deliveries: list[DeliveryDetail]) -> IntentRow:
    return IntentRow(
        id=candidate["id"],
        member_id=candidate["member_id"],
        route=candidate["route"],
        campaign=candidate["campaign"],
        tags=msgspec.json.decode(candidate["tags"], type=list[str]),
        created_at=candidate["created_at"],
        status=derived_status(candidate["route"], deliveries),
        channels=[d.view.channel for d in deliveries],
        line_account=candidate["line_account"],
    )


def _matches(query: IntentSearch, row: IntentRow) -> bool:
    return (
        (query.tag is None or query.tag in row.tags)
        and (query.channel is None or query.channel in row.channels)
        and (query.status is None or query.status == row.status)
        and (query.line_account is None or query.line_account == row.line_account)
    )


_MEMBERS_BY_EMAIL = """
SELECT member_id FROM members WHERE email_sha256 = $1 ORDER BY created_at LIMIT $2
"""


async def members_by_email(conn: Connection, address: str) -> tuple[str, ...]:
    """Who an email address names, as intake resolves it: the members holding it
    (`members_email_sha256`), and the address-only member made for it when none did."""
    digest = email_sha256(address)
    found = [r["member_id"] for r in await conn.fetch(_MEMBERS_BY_EMAIL, digest, MAX_MEMBERS)]
    address_only = address_only_id(digest)
    return tuple(found) if address_only in found else (*found, address_only)


class EventRow(msgspec.Struct, frozen=True, kw_only=True):
    """A delivery event (what an email's or a LINE message's recipient side reported)."""

    event: str
    channel: str
    delivery_id: UUID | None
    reason: str | None
    response: str | None
    bounce_type: str | None
    status_code: str | None
    attempt: int | None
    occurred_at: datetime


class IntentRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One intent, whole, for its page."""

    id: UUID
    member_id: str | None
    email_address: str | None
    route: str
    fallback: str | None
    campaign: str | None
    campaign_id: UUID | None
    line_account: str
    tags: list[str]
    metadata: dict[str, Any] | None
    idempotency_key: str | None
    kind: str | None
    category: str | None
    journey_id: str | None
    journey_step: str | None
    journey_run: UUID | None
    batch_id: str | None
    created_at: datetime
    content_id: bytes
    content: bytes  # the stored JSON body
    status: str
    updated_at: datetime
    deliveries: list[DeliveryDetail]
    events: list[EventRow]


_INTENT = """
SELECT i.id, i.member_id, i.email_address, i.route, i.fallback, i.campaign, i.campaign_id,
       i.line_account, i.tags::text AS tags, i.metadata::text AS metadata, i.idempotency_key, i.kind,
       i.category, i.journey_id, i.journey_step, i.journey_run, i.batch_id, i.created_at,
       i.content_id, c.body::text AS content
FROM intents i JOIN contents c ON c.id = i.content_id
WHERE i.id = $1
"""

_EVENTS = """
SELECT event, channel, delivery_id, reason, response, bounce_type, status_code, attempt,
       occurred_at
FROM delivery_events WHERE intent_id = $1 ORDER BY id LIMIT $2
"""


async def read_record(conn: Connection, intent_id: UUID) -> IntentRecord | None:
    """The intent with its deliveries and events, or None when there is no such intent."""
    row = await conn.fetchrow(_INTENT, intent_id)
    if row is None:
        return None
    deliveries = (await _deliveries(conn, [intent_id]))[intent_id]
    events = [EventRow(**dict(r)) for r in await conn.fetch(_EVENTS, intent_id, MAX_EVENTS)]
    fields = dict(row)
    fields["tags"] = msgspec.json.decode(fields["tags"], type=list[str])
    metadata = fields.pop("metadata")
    fields["content"] = fields["content"].encode()
    return IntentRecord(
        **fields,
        metadata=None if metadata is None else msgspec.json.decode(metadata),
        status=derived_status(row["route"], deliveries),
        updated_at=max([row["created_at"], *(d.view.updated_at for d in deliveries)]),
        deliveries=deliveries,
        events=events,
    )
