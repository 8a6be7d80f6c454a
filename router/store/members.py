"""The only writer of `members`, `member_line_accounts` and `line_users`: a member's record
and their LINE identity under each LINE Official Account.

A person has a different LINE user ID under each account, so the identity (user ID, friend
flag, opt-out) is a row per member and account in `member_line_accounts`. Friendship is kept
per account and LINE user ID in `line_users`, so a follow from someone not yet linked is
remembered; the member holding that ID carries a copy in `member_line_accounts.friend`. Each
change carries the time of the event that caused it, and an older event never overwrites a
newer one. The tables are written here, so the copy is made by the same statements that
change the original.

Every function runs in the caller's transaction; none opens its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

import msgspec

from router.database import Connection
from router.deliverability.consent import EmailConsent
from router.store import consent_records, relayed_messages


class MemberRow(msgspec.Struct, kw_only=True):
    """A member as stored: what `write` inserts, or overwrites whole."""

    member_id: str
    email: str | None
    email_sha256: bytes | None
    phone: str | None
    phone_sha256: bytes | None
    attributes: dict[str, Any]
    email_opt_out: bool
    email_consent: EmailConsent | None = None
    line: dict[str, LineIdentityRow] = msgspec.field(default_factory=dict)


class LineIdentityRow(msgspec.Struct, kw_only=True):
    """A member's LINE identity under one account, as stored."""

    user_id: str | None = None
    friend: bool = False
    opt_out: bool = False

    @property
    def empty(self) -> bool:
        """Nothing worth a row: no ID, not a friend, no opt-out."""
        return self.user_id is None and not self.friend and not self.opt_out


_ROW_COLUMNS = (
    "member_id, email, email_sha256, phone, phone_sha256,"
    " attributes::text AS attributes, email_opt_out,"
    " email_consent::text AS email_consent"
)


async def lock(conn: Connection, member_ids: Sequence[str]) -> dict[str, MemberRow]:
    """The stored rows of these members, locked until the transaction ends, so an update
    merged from them cannot overwrite a concurrent one."""
    rows = await conn.fetch(
        f"SELECT {_ROW_COLUMNS} FROM members"  # noqa: S608 - constant columns
        " WHERE member_id = ANY($1::text[]) FOR UPDATE",
        list(member_ids),
    )
    found = {
        r["member_id"]: MemberRow(
            **{
                **dict(r),
                "attributes": msgspec.json.decode(r["attributes"]),
                "email_consent": _consent(r["email_consent"]),
            },
        )
        for r in rows
    }
    if found:
        for r in await conn.fetch(
            "SELECT member_id, account, user_id, friend, opt_out FROM member_line_accounts"
            " WHERE member_id = ANY($1::text[]) FOR UPDATE",
            list(found),
        ):
            found[r["member_id"]].line[r["account"]] = LineIdentityRow(
                user_id=r["user_id"], friend=r["friend"], opt_out=r["opt_out"]
            )
    return found


def _consent(stored: str | None) -> EmailConsent | None:
    return None if stored is None else msgspec.json.decode(stored, type=EmailConsent)


_WRITE = """
INSERT INTO members AS m (
    member_id, email, email_sha256, phone, phone_sha256, attributes, email_opt_out,
    email_consent)
SELECT u.member_id, u.email, u.email_sha256, u.phone, u.phone_sha256, u.attributes::jsonb,
       u.email_opt_out, u.email_consent::jsonb
FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[], $5::bytea[], $6::text[],
            $7::bool[], $8::text[])
     AS u(member_id, email, email_sha256, phone, phone_sha256, attributes, email_opt_out,
          email_consent)
ON CONFLICT (member_id) DO UPDATE SET
    email = excluded.email, email_sha256 = excluded.email_sha256,
    phone = excluded.phone, phone_sha256 = excluded.phone_sha256,
    attributes = excluded.attributes, email_opt_out = excluded.email_opt_out,
    email_consent = excluded.email_consent, updated_at = now()
"""

# Every identity of the written members, replaced: rows not listed are deleted first (in the
# same statement), so an ID moved from one account key to another never meets itself.
_WRITE_LINE = """
WITH listed AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bool[], $5::bool[])
        AS u(member_id, account, user_id, friend, opt_out)),
gone AS (
    DELETE FROM member_line_accounts a USING unnest($6::text[]) AS w(member_id)
    WHERE a.member_id = w.member_id
      AND NOT EXISTS (SELECT 1 FROM listed l
                      WHERE l.member_id = a.member_id AND l.account = a.account)
    RETURNING 1)
INSERT INTO member_line_accounts AS a (member_id, account, user_id, friend, opt_out)
SELECT member_id, account, user_id, friend, opt_out FROM listed
ON CONFLICT (member_id, account) DO UPDATE SET
    user_id = excluded.user_id, friend = excluded.friend, opt_out = excluded.opt_out,
    updated_at = now()
WHERE (a.user_id, a.friend, a.opt_out)
      IS DISTINCT FROM (excluded.user_id, excluded.friend, excluded.opt_out)
"""


async def write(conn: Connection, rows: Sequence[MemberRow]) -> None:
    """Insert these members, or overwrite every field of those that exist (their LINE
    identities included), in two statements."""
    if not rows:
        return
    await conn.execute(
        _WRITE,
        [m.member_id for m in rows],
        [m.email for m in rows],
        [m.email_sha256 for m in rows],
        [m.phone for m in rows],
        [m.phone_sha256 for m in rows],
        [msgspec.json.encode(m.attributes).decode() for m in rows],
        [m.email_opt_out for m in rows],
        [
            None if m.email_consent is None else msgspec.json.encode(m.email_consent).decode()
            for m in rows
        ],
    )
    identities = [(m.member_id, a, i) for m in rows for a, i in m.line.items() if not i.empty]
    await conn.execute(
        _WRITE_LINE,
        [member_id for member_id, _, _ in identities],
        [account for _, account, _ in identities],
        [i.user_id for _, _, i in identities],
        [i.friend for _, _, i in identities],
        [i.opt_out for _, _, i in identities],
        [m.member_id for m in rows],
    )


async def erase(conn: Connection, member_id: str) -> bool:
    """Delete a member and everything of theirs; False if there was no such member.

    Their intents, deliveries and link nonces go by cascade; then the contents no other
    intent uses, and the relayed messages no remaining content names. Their email consent
    alone is kept, while the law asks for it (router.store.consent_records). Run it in a
    transaction: the contents and the last promotional send are read before the member's
    intents are gone."""
    await consent_records.keep_for_erasure(conn, member_id)
    content_ids = [
        r["content_id"]
        for r in await conn.fetch(
            "SELECT DISTINCT content_id FROM intents WHERE member_id = $1", member_id
        )
    ]
    deleted = await conn.fetchval(
        "DELETE FROM members WHERE member_id = $1 RETURNING true", member_id
    )
    if content_ids:
        unused = await conn.fetch(
            "DELETE FROM contents c WHERE c.id = ANY($1::bytea[])"
            " AND NOT EXISTS (SELECT 1 FROM intents i WHERE i.content_id = c.id)"
            " AND NOT EXISTS (SELECT 1 FROM campaigns k WHERE k.content_id = c.id)"
            " RETURNING c.relayed_message_id",
            content_ids,
        )
        await relayed_messages.delete_unnamed(
            conn, [r["relayed_message_id"] for r in unused if r["relayed_message_id"]]
        )
    return bool(deleted)


# LINE identity


async def record_friendship(
    conn: Connection, account: str, line_user_id: str, friend: bool, at: datetime
) -> list[str]:
    """A follow or unfollow of `account` that happened `at`; an older event never overwrites
    a newer one. Returns the members whose flag now follows it (at most one: an ID is held
    by one member per account)."""
    await conn.execute(
        "INSERT INTO line_users AS u (account, line_user_id, friend, status_at)"
        " VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (account, line_user_id) DO UPDATE SET friend = excluded.friend,"
        "   status_at = excluded.status_at, updated_at = now()"
        " WHERE u.status_at <= excluded.status_at",
        account,
        line_user_id,
        friend,
        at,
    )
    rows = await conn.fetch(
        "UPDATE member_line_accounts a SET friend = u.friend, updated_at = now()"
        " FROM line_users u"
        " WHERE u.account = $1 AND u.line_user_id = $2 AND a.account = $1 AND a.user_id = $2"
        " RETURNING a.member_id",
        account,
        line_user_id,
    )
    return [r["member_id"] for r in rows]


LinkOutcome = Literal["linked", "held_by_another", "no_member"]


async def link_line_user(
    conn: Connection, account: str, member_id: str, line_user_id: str
) -> LinkOutcome:
    """Give a member a LINE user ID under `account`, with the friend flag LINE last reported
    for it (a friend if LINE never said: links start from a follow). An ID belongs to at
    most one member per account."""
    owner = await conn.fetchval(
        "SELECT member_id FROM member_line_accounts WHERE account = $1 AND user_id = $2 FOR UPDATE",
        account,
        line_user_id,
    )
    if owner is not None and owner != member_id:
        return "held_by_another"
    linked = await conn.fetchval(
        "INSERT INTO member_line_accounts AS a (member_id, account, user_id, friend)"
        " SELECT m.member_id, $2, $3, coalesce((SELECT friend FROM line_users"
        "                                        WHERE account = $2 AND line_user_id = $3), true)"
        " FROM members m WHERE m.member_id = $1"
        " ON CONFLICT (member_id, account) DO UPDATE SET user_id = excluded.user_id,"
        "   friend = excluded.friend, updated_at = now()"
        " RETURNING true",
        member_id,
        account,
        line_user_id,
    )
    return "linked" if linked else "no_member"


# Reconciling with LINE's follower list. The list is collected in a temporary table that
# lives until the end of the transaction: start it, add each page, then apply.


# The follower sync's corrections, one chunk of LINE user IDs (in ID order after `$2`, at most
# `$3`) per call, against account `$4`'s list in line_follower_sync_ids. Everyone listed is a friend and
# everyone else is not, as of `$1` (the sync's start); webhook events newer than that keep
# precedence. Each returns the chunk's last ID, NULL when there was nothing after `$2`.
_LISTED_ARE_FRIENDS = """
    WITH chunk AS (
        SELECT line_user_id FROM line_follower_sync_ids
        WHERE account = $4 AND line_user_id > $2 ORDER BY line_user_id LIMIT $3),
    corrected AS (
        INSERT INTO line_users AS u (account, line_user_id, friend, status_at)
        SELECT $4, line_user_id, true, $1 FROM chunk
        ON CONFLICT (account, line_user_id) DO UPDATE SET friend = true, status_at = $1,
            updated_at = now() WHERE u.status_at <= $1)
    SELECT max(line_user_id) FROM chunk"""
_UNLISTED_USERS_ARE_NOT = """
    WITH chunk AS (
        SELECT line_user_id FROM line_users
        WHERE account = $4 AND line_user_id > $2 ORDER BY line_user_id LIMIT $3),
    corrected AS (
        UPDATE line_users u SET friend = false, status_at = $1, updated_at = now()
        FROM chunk c
        WHERE u.account = $4 AND u.line_user_id = c.line_user_id AND u.friend
          AND u.status_at <= $1
          AND NOT EXISTS (SELECT 1 FROM line_follower_sync_ids f
                          WHERE f.account = $4 AND f.line_user_id = u.line_user_id))
    SELECT max(line_user_id) FROM chunk"""
_UNLISTED_MEMBERS_ARE_NOT = """
    WITH chunk AS (
        SELECT user_id AS line_user_id FROM member_line_accounts
        WHERE account = $4 AND user_id > $2 ORDER BY user_id LIMIT $3),
    corrected AS (
        INSERT INTO line_users AS u (account, line_user_id, friend, status_at)
        SELECT $4, c.line_user_id, false, $1 FROM chunk c
        WHERE NOT EXISTS (SELECT 1 FROM line_follower_sync_ids f
                          WHERE f.account = $4 AND f.line_user_id = c.line_user_id)
        ON CONFLICT (account, line_user_id) DO UPDATE SET friend = false, status_at = $1,
            updated_at = now() WHERE u.status_at <= $1)
    SELECT max(line_user_id) FROM chunk"""
FOLLOWER_CORRECTIONS: dict[str, str] = {
    "followers": _LISTED_ARE_FRIENDS,
    "line_users": _UNLISTED_USERS_ARE_NOT,
    "members": _UNLISTED_MEMBERS_ARE_NOT,
}


async def correct_friend_flags(
    conn: Connection,
    account: str,
    phase: str,
    started: datetime,
    after: str | None,
    limit: int,
) -> tuple[str | None, int]:
    """One chunk of a follower sync's `phase` for `account`: its last LINE user ID (None: the
    phase is done) and, in the members phase, how many members' copies of the flag changed."""
    last: str | None = await conn.fetchval(
        FOLLOWER_CORRECTIONS[phase], started, after or "", limit, account
    )
    if phase != "members" or last is None:
        return last, 0
    changed = await conn.fetch(
        "UPDATE member_line_accounts a SET friend = u.friend, updated_at = now()"
        " FROM line_users u WHERE u.account = $3 AND a.account = $3"
        "   AND u.line_user_id = a.user_id"
        "   AND a.user_id > $1 AND a.user_id <= $2"
        "   AND a.friend <> u.friend RETURNING 1",
        after or "",
        last,
        account,
    )
    return last, len(changed)


async def add_address_only(conn: Connection, members: Sequence[tuple[str, str, bytes]]) -> None:
    """Members known only by an email address: (member_id, address, its SHA-256) each,
    inserted in one statement unless a member with that id exists already."""
    if not members:
        return
    await conn.execute(
        "INSERT INTO members (member_id, email, email_sha256)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[])"
        " ON CONFLICT (member_id) DO NOTHING",
        [m[0] for m in members],
        [m[1] for m in members],
        [m[2] for m in members],
    )
