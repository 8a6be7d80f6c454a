"""The only writer of `members` and `line_users`: a member's record and LINE identity.

Friendship is kept per LINE user ID in `line_users`, so a follow from someone not yet linked
is remembered; the member holding that ID carries a copy in `members.line_friend`. Each
change carries the time of the event that caused it, and an older event never overwrites a
newer one. Both tables are written here, so the copy is made by the same statements that
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
    line_user_id: str | None
    line_friend: bool
    attributes: dict[str, Any]
    email_opt_out: bool
    line_opt_out: bool
    email_consent: EmailConsent | None = None


_ROW_COLUMNS = (
    "member_id, email, email_sha256, phone, phone_sha256, line_user_id, line_friend,"
    " attributes::text AS attributes, email_opt_out, line_opt_out,"
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
    return {
        r["member_id"]: MemberRow(
            **{
                **dict(r),
                "attributes": msgspec.json.decode(r["attributes"]),
                "email_consent": _consent(r["email_consent"]),
            },
        )
        for r in rows
    }


def _consent(stored: str | None) -> EmailConsent | None:
    return None if stored is None else msgspec.json.decode(stored, type=EmailConsent)


_WRITE = """
INSERT INTO members AS m (
    member_id, email, email_sha256, phone, phone_sha256, line_user_id, line_friend,
    attributes, email_opt_out, line_opt_out, email_consent)
SELECT u.member_id, u.email, u.email_sha256, u.phone, u.phone_sha256, u.line_user_id,
       u.line_friend, u.attributes::jsonb, u.email_opt_out, u.line_opt_out,
       u.email_consent::jsonb
FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[], $5::bytea[], $6::text[],
            $7::bool[], $8::text[], $9::bool[], $10::bool[], $11::text[])
     AS u(member_id, email, email_sha256, phone, phone_sha256, line_user_id, line_friend,
          attributes, email_opt_out, line_opt_out, email_consent)
ON CONFLICT (member_id) DO UPDATE SET
    email = excluded.email, email_sha256 = excluded.email_sha256,
    phone = excluded.phone, phone_sha256 = excluded.phone_sha256,
    line_user_id = excluded.line_user_id, line_friend = excluded.line_friend,
    attributes = excluded.attributes, email_opt_out = excluded.email_opt_out,
    line_opt_out = excluded.line_opt_out, email_consent = excluded.email_consent,
    updated_at = now()
"""


async def write(conn: Connection, rows: Sequence[MemberRow]) -> None:
    """Insert these members, or overwrite every field of those that exist, in one statement."""
    if not rows:
        return
    await conn.execute(
        _WRITE,
        [m.member_id for m in rows],
        [m.email for m in rows],
        [m.email_sha256 for m in rows],
        [m.phone for m in rows],
        [m.phone_sha256 for m in rows],
        [m.line_user_id for m in rows],
        [m.line_friend for m in rows],
        [msgspec.json.encode(m.attributes).decode() for m in rows],
        [m.email_opt_out for m in rows],
        [m.line_opt_out for m in rows],
        [
            None if m.email_consent is None else msgspec.json.encode(m.email_consent).decode()
            for m in rows
        ],
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
    conn: Connection, line_user_id: str, friend: bool, at: datetime
) -> list[str]:
    """A follow or unfollow that happened `at`; an older event never overwrites a newer one.
    Returns the members whose flag now follows it (at most one: IDs are unique)."""
    await conn.execute(
        "INSERT INTO line_users AS u (line_user_id, friend, status_at) VALUES ($1, $2, $3)"
        " ON CONFLICT (line_user_id) DO UPDATE SET friend = excluded.friend,"
        "   status_at = excluded.status_at, updated_at = now()"
        " WHERE u.status_at <= excluded.status_at",
        line_user_id,
        friend,
        at,
    )
    rows = await conn.fetch(
        "UPDATE members m SET line_friend = u.friend, updated_at = now()"
        " FROM line_users u WHERE u.line_user_id = $1 AND m.line_user_id = $1"
        " RETURNING m.member_id",
        line_user_id,
    )
    return [r["member_id"] for r in rows]


LinkOutcome = Literal["linked", "held_by_another", "no_member"]


async def link_line_user(conn: Connection, member_id: str, line_user_id: str) -> LinkOutcome:
    """Give a member a LINE user ID, with the friend flag LINE last reported for it (a friend
    if LINE never said: links start from a follow). An ID belongs to at most one member."""
    owner = await conn.fetchval(
        "SELECT member_id FROM members WHERE line_user_id = $1 FOR UPDATE", line_user_id
    )
    if owner is not None and owner != member_id:
        return "held_by_another"
    updated = await conn.fetchval(
        "UPDATE members SET line_user_id = $2,"
        "   line_friend = coalesce((SELECT friend FROM line_users WHERE line_user_id = $2), true),"
        "   updated_at = now()"
        " WHERE member_id = $1 RETURNING true",
        member_id,
        line_user_id,
    )
    return "linked" if updated else "no_member"


# Reconciling with LINE's follower list. The list is collected in a temporary table that
# lives until the end of the transaction: start it, add each page, then apply.


# The follower sync's corrections, one chunk of LINE user IDs (in ID order after `$2`, at most
# `$3`) per call, against the list in line_follower_sync_ids. Everyone listed is a friend and
# everyone else is not, as of `$1` (the sync's start); webhook events newer than that keep
# precedence. Each returns the chunk's last ID, NULL when there was nothing after `$2`.
_LISTED_ARE_FRIENDS = """
    WITH chunk AS (
        SELECT line_user_id FROM line_follower_sync_ids
        WHERE line_user_id > $2 ORDER BY line_user_id LIMIT $3),
    corrected AS (
        INSERT INTO line_users AS u (line_user_id, friend, status_at)
        SELECT line_user_id, true, $1 FROM chunk
        ON CONFLICT (line_user_id) DO UPDATE SET friend = true, status_at = $1,
            updated_at = now() WHERE u.status_at <= $1)
    SELECT max(line_user_id) FROM chunk"""
_UNLISTED_USERS_ARE_NOT = """
    WITH chunk AS (
        SELECT line_user_id FROM line_users
        WHERE line_user_id > $2 ORDER BY line_user_id LIMIT $3),
    corrected AS (
        UPDATE line_users u SET friend = false, status_at = $1, updated_at = now()
        FROM chunk c
        WHERE u.line_user_id = c.line_user_id AND u.friend AND u.status_at <= $1
          AND NOT EXISTS (SELECT 1 FROM line_follower_sync_ids f
                          WHERE f.line_user_id = u.line_user_id))
    SELECT max(line_user_id) FROM chunk"""
_UNLISTED_MEMBERS_ARE_NOT = """
    WITH chunk AS (
        SELECT line_user_id FROM members
        WHERE line_user_id > $2 ORDER BY line_user_id LIMIT $3),
    corrected AS (
        INSERT INTO line_users AS u (line_user_id, friend, status_at)
        SELECT c.line_user_id, false, $1 FROM chunk c
        WHERE NOT EXISTS (SELECT 1 FROM line_follower_sync_ids f
                          WHERE f.line_user_id = c.line_user_id)
        ON CONFLICT (line_user_id) DO UPDATE SET friend = false, status_at = $1,
            updated_at = now() WHERE u.status_at <= $1)
    SELECT max(line_user_id) FROM chunk"""
FOLLOWER_CORRECTIONS: dict[str, str] = {
    "followers": _LISTED_ARE_FRIENDS,
    "line_users": _UNLISTED_USERS_ARE_NOT,
    "members": _UNLISTED_MEMBERS_ARE_NOT,
}


async def correct_friend_flags(
    conn: Connection, phase: str, started: datetime, after: str | None, limit: int
) -> tuple[str | None, int]:
    """One chunk of a follower sync's `phase`: its last LINE user ID (None: the phase is done)
    and, in the members phase, how many members' copies of the flag changed."""
    last: str | None = await conn.fetchval(FOLLOWER_CORRECTIONS[phase], started, after or "", limit)
    if phase != "members" or last is None:
        return last, 0
    changed = await conn.fetch(
        "UPDATE members m SET line_friend = u.friend, updated_at = now()"
        " FROM line_users u WHERE u.line_user_id = m.line_user_id"
        "   AND m.line_user_id > $1 AND m.line_user_id <= $2"
        "   AND m.line_friend <> u.friend RETURNING 1",
        after or "",
        last,
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
