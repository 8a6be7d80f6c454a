"""What the members page reads: finding a member, their LINE identity, history and events.

Every statement is bounded and walks an index: search ORs three equality look-ups (the
primary key, `members_email_sha256`, `members_phone_sha256`) and the LINE user ID's unique
index; history is keyset-paged over `intents_member_recent (member_id, id)` with each page's
deliveries found through `deliveries (intent_id, channel)`; events use `events_member`.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Final
from uuid import UUID

import msgspec

from router.database import Connection
from router.identifiers import (
    InvalidIdentifier,
    email_sha256,
    normalize_email,
    normalize_phone,
    phone_sha256,
)
from router.store import group_state

_PHONE_LIKE: Final = re.compile(r"\+?[0-9][0-9 ().-]*")
"""What is also read as a phone number: digits and the separators people write them with."""
SEARCH_LIMIT: Final = 20
HISTORY_PAGE: Final = 20
EVENTS_SHOWN: Final = 20


class Found(msgspec.Struct, frozen=True):
    """A member a search matched, with what it matched on."""

    member_id: str
    email: str | None
    phone: str | None
    line_user_id: str | None
    created_at: datetime


class Query(msgspec.Struct, frozen=True, kw_only=True):
    """A search term read the way the API reads the same field: as a member ID always, and as
    an email address or phone number (normalised, then hashed) when it parses as one."""

    text: str
    email_hash: bytes | None
    phone_hash: bytes | None
    notes: list[str]


def read_query(text: str, default_region: str) -> Query:
    text = text.strip()
    notes: list[str] = []
    email_hash = phone_hash = None
    if "@" in text:
        try:
            email_hash = email_sha256(normalize_email(text))
        except InvalidIdentifier as exc:
            notes.append(f"not searched as an email address: {exc}")
    elif _PHONE_LIKE.fullmatch(text):
        try:
            phone_hash = phone_sha256(normalize_phone(text, default_region))
        except InvalidIdentifier as exc:
            notes.append(f"not searched as a phone number: {exc}")
    return Query(text=text, email_hash=email_hash, phone_hash=phone_hash, notes=notes)


_SEARCH = """
SELECT m.member_id, m.email, m.phone, l.user_id AS line_user_id, m.created_at FROM members m
LEFT JOIN member_line_accounts l ON l.member_id = m.member_id AND l.account = 'default'
WHERE m.member_id = $1 OR m.email_sha256 = $2 OR m.phone_sha256 = $3
   OR m.member_id IN (SELECT a.member_id FROM member_line_accounts a WHERE a.user_id = $1)
ORDER BY m.member_id LIMIT $4
"""


async def search(conn: Connection, query: Query) -> list[Found]:
    rows = await conn.fetch(_SEARCH, query.text, query.email_hash, query.phone_hash, SEARCH_LIMIT)
    return [Found(**dict(r)) for r in rows]


class LineLink(msgspec.Struct, frozen=True, kw_only=True):
    """What the router knows of a member's LINE user: LINE's last word on friendship (a
    follow, or an unfollow, which is also how LINE reports a block) and how the link was made."""

    line_user_id: str
    friend: bool
    friend_status_at: datetime | None
    account_linked_at: datetime | None


_LINE_USER = (
    "SELECT friend, status_at FROM line_users WHERE account = 'default' AND line_user_id = $1"
)
_ACCOUNT_LINKED = """
SELECT max(used_at) FROM line_link_nonces WHERE member_id = $1 AND used_at IS NOT NULL
"""


async def line_link(conn: Connection, member_id: str, line_user_id: str, friend: bool) -> LineLink:
    user = await conn.fetchrow(_LINE_USER, line_user_id)
    linked_at: datetime | None = await conn.fetchval(_ACCOUNT_LINKED, member_id)
    return LineLink(
        line_user_id=line_user_id,
        friend=friend,
        friend_status_at=None if user is None else user["status_at"],
        account_linked_at=linked_at,
    )


class ChannelOutcome(msgspec.Struct, frozen=True):
    channel: str
    status: str
    fallback: bool
    last_error: str | None


class HistoryEntry(msgspec.Struct, frozen=True, kw_only=True):
    intent_id: UUID
    created_at: datetime
    route: str
    campaign: str | None
    deliveries: list[ChannelOutcome]


class HistoryPage(msgspec.Struct, frozen=True):
    entries: list[HistoryEntry]
    next_before: UUID | None


_HISTORY = """
SELECT id, created_at, route, campaign FROM intents
WHERE member_id = $1 AND ($2::uuid IS NULL OR id < $2)
ORDER BY id DESC LIMIT $3
"""
_HISTORY_DELIVERIES = f"""
SELECT d.intent_id, d.channel, {group_state.status("d", "s")} AS status, d.is_fallback,
       {group_state.field("d", "s", "last_error")} AS last_error
FROM deliveries d LEFT JOIN send_groups s ON s.id = d.send_group_id
WHERE d.intent_id = ANY($1::uuid[])
ORDER BY d.intent_id, d.is_fallback, d.created_at
"""  # noqa: S608 - built from constant fragments only


async def history(conn: Connection, member_id: str, before: UUID | None) -> HistoryPage:
    """One page of the member's intents, newest first, from before the intent `before`."""
    rows = await conn.fetch(_HISTORY, member_id, before, HISTORY_PAGE + 1)
    more = len(rows) > HISTORY_PAGE
    rows = rows[:HISTORY_PAGE]
    outcomes: dict[UUID, list[ChannelOutcome]] = {r["id"]: [] for r in rows}
    if rows:
        for d in await conn.fetch(_HISTORY_DELIVERIES, list(outcomes)):
            outcomes[d["intent_id"]].append(
                ChannelOutcome(d["channel"], d["status"], d["is_fallback"], d["last_error"])
            )
    entries = [
        HistoryEntry(
            intent_id=r["id"],
            created_at=r["created_at"],
            route=r["route"],
            campaign=r["campaign"],
            deliveries=outcomes[r["id"]],
        )
        for r in rows
    ]
    return HistoryPage(entries, entries[-1].intent_id if more and entries else None)


class MemberEvent(msgspec.Struct, frozen=True):
    name: str
    occurred_at: datetime
    source: str
    properties: str


_EVENTS = """
SELECT name, occurred_at, source, left(properties::text, 200) AS properties
FROM events WHERE member_id = $1 ORDER BY occurred_at DESC, seq DESC LIMIT $2
"""


async def events(conn: Connection, member_id: str) -> list[MemberEvent]:
    """The member's latest events (the index finds theirs; they are sorted by time)."""
    return [MemberEvent(**dict(r)) for r in await conn.fetch(_EVENTS, member_id, EVENTS_SHOWN)]
