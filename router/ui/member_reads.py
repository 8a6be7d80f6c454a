"""What the members page reads: finding a member, their LINE identity under each LINE
account, history and events.

Every statement is bounded and walks an index: search unites four equality look-ups, each
its own index scan (an OR of them would walk the whole primary key): the member ID (primary
key), `members_email_sha256`, `members_phone_sha256`, and a LINE user ID under any account
(`member_line_accounts (user_id, account)`, the unique key, by its leading column);
the found members' identities come by the primary key `(member_id, account)`. A member's
LINE link reads `line_users` by its primary key `(account, line_user_id)` and the redeemed
account-link nonces by `line_link_nonces_redeemed (member_id, used_at)` (a member's
nonces are few: retention prunes them once expired). History is keyset-paged over
`intents_member_recent (member_id, id)` with each page's deliveries found through
`deliveries (intent_id, channel)`; events use `events_member`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
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


class LineIdentityFound(msgspec.Struct, frozen=True):
    """A found member's LINE user ID under one account; `matched` when the search text is it."""

    account: str
    user_id: str
    matched: bool


class Found(msgspec.Struct, frozen=True, kw_only=True):
    """A member a search matched, with their LINE user IDs (and which one matched)."""

    member_id: str
    email: str | None
    phone: str | None
    created_at: datetime
    line: list[LineIdentityFound]

    @property
    def matched_accounts(self) -> list[str]:
        return [i.account for i in self.line if i.matched]


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
WITH matched AS (
    SELECT $1::text AS member_id
    UNION (SELECT member_id FROM members WHERE email_sha256 = $2 ORDER BY member_id LIMIT $4)
    UNION (SELECT member_id FROM members WHERE phone_sha256 = $3 ORDER BY member_id LIMIT $4)
    UNION (SELECT member_id FROM member_line_accounts WHERE user_id = $1
           ORDER BY member_id LIMIT $4)
)
SELECT m.member_id, m.email, m.phone, m.created_at FROM matched JOIN members m USING (member_id)
ORDER BY m.member_id LIMIT $4
"""
_FOUND_IDENTITIES = """
SELECT member_id, account, user_id FROM member_line_accounts
WHERE member_id = ANY($1::text[]) AND user_id IS NOT NULL
ORDER BY member_id, account <> 'default', account
"""


async def search(conn: Connection, query: Query) -> list[Found]:
    """The members the text names (at most `SEARCH_LIMIT`), each with every account's LINE
    user ID, the one equal to the text marked: the same person has a different ID under
    each provider, so the page says under which account the ID matched."""
    rows = await conn.fetch(_SEARCH, query.text, query.email_hash, query.phone_hash, SEARCH_LIMIT)
    identities: dict[str, list[LineIdentityFound]] = {r["member_id"]: [] for r in rows}
    if rows:
        for i in await conn.fetch(_FOUND_IDENTITIES, list(identities)):
            identities[i["member_id"]].append(
                LineIdentityFound(i["account"], i["user_id"], i["user_id"] == query.text)
            )
    return [Found(line=identities[r["member_id"]], **dict(r)) for r in rows]


class LineLink(msgspec.Struct, frozen=True, kw_only=True):
    """What the router knows of a member's LINE user under one account: the identity stored
    for them, LINE's last word on friendship (a follow, or an unfollow, which is also how LINE
    reports a block) and when they last linked through that account's account link."""

    account: str
    configured: bool  # the router has this account in its configuration now
    line_user_id: str | None
    friend: bool
    opt_out: bool
    friend_status_at: datetime | None
    account_linked_at: datetime | None


class StoredIdentity(msgspec.Struct, frozen=True):
    """A member's stored identity under one account (`member_line_accounts`)."""

    user_id: str | None
    friend: bool
    opt_out: bool


_LINE_USERS = """
SELECT u.account, u.status_at FROM unnest($1::text[], $2::text[]) AS k(account, line_user_id)
JOIN line_users u ON u.account = k.account AND u.line_user_id = k.line_user_id
"""
_ACCOUNT_LINKED = """
SELECT account, max(used_at) AS linked_at FROM line_link_nonces
WHERE member_id = $1 AND used_at IS NOT NULL GROUP BY account
"""


async def line_links(
    conn: Connection,
    member_id: str,
    stored: Mapping[str, StoredIdentity],
    configured: Sequence[str],
) -> list[LineLink]:
    """One row per configured account (in configuration order) and per account the member
    has an identity under: an account without one reads as "not linked"."""
    accounts = [*configured, *sorted(a for a in stored if a not in configured)]
    with_id = [(a, i.user_id) for a, i in stored.items() if i.user_id is not None]
    status_at: dict[str, datetime | None] = {}
    if with_id:
        keys = [a for a, _ in with_id], [u for _, u in with_id]
        status_at = {r["account"]: r["status_at"] for r in await conn.fetch(_LINE_USERS, *keys)}
    linked = {r["account"]: r["linked_at"] for r in await conn.fetch(_ACCOUNT_LINKED, member_id)}
    links: list[LineLink] = []
    for account in accounts:
        identity = stored.get(account, StoredIdentity(None, False, False))
        links.append(
            LineLink(
                account=account,
                configured=account in configured,
                line_user_id=identity.user_id,
                friend=identity.friend,
                opt_out=identity.opt_out,
                friend_status_at=status_at.get(account),
                account_linked_at=linked.get(account),
            )
        )
    return links


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
