"""What the router knows about LINE users: friendship and the link to a member.

Friendship is kept per LINE user ID (`line_users`), so a follow from someone not yet linked
is remembered, and copied to the member who holds that ID. Each change carries the time of
the event that caused it; an older event never overwrites a newer one.
"""

from __future__ import annotations

import secrets
import urllib.parse
from datetime import datetime, timedelta

from router.database import Connection

NONCE_BYTES = 24  # 192 bits; LINE asks for at least 128


async def set_friend(conn: Connection, line_user_id: str, friend: bool, at: datetime) -> list[str]:
    """Record a follow or unfollow; return the member IDs whose flag now follows it."""
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


class LinkRefused(Exception):
    """The link would break a rule; the message says which."""


async def link(conn: Connection, member_id: str, line_user_id: str) -> None:
    """Give a member a LINE user ID. An ID belongs to at most one member."""
    owner = await conn.fetchval(
        "SELECT member_id FROM members WHERE line_user_id = $1 FOR UPDATE", line_user_id
    )
    if owner is not None and owner != member_id:
        raise LinkRefused("this LINE user is already linked to another member")
    updated = await conn.fetchval(
        "UPDATE members SET line_user_id = $2,"
        "   line_friend = coalesce((SELECT friend FROM line_users WHERE line_user_id = $2), true),"
        "   updated_at = now()"
        " WHERE member_id = $1 RETURNING true",
        member_id,
        line_user_id,
    )
    if not updated:
        raise LinkRefused("no member with this member_id")


async def new_nonce(
    conn: Connection, member_id: str, link_token: str, ttl: timedelta
) -> str | None:
    """A fresh single-use nonce for this member and link token; None if no such member."""
    nonce = secrets.token_urlsafe(NONCE_BYTES)
    stored = await conn.fetchval(
        "INSERT INTO line_link_nonces (nonce, member_id, link_token, expires_at)"
        " SELECT $1, member_id, $3, now() + $4::interval FROM members WHERE member_id = $2"
        " RETURNING true",
        nonce,
        member_id,
        link_token,
        ttl,
    )
    return nonce if stored else None


def account_link_url(base: str, link_token: str, nonce: str) -> str:
    query = urllib.parse.urlencode({"linkToken": link_token, "nonce": nonce})
    return f"{base.rstrip('/')}/dialog/bot/accountLink?{query}"


async def redeem_nonce(conn: Connection, nonce: str, at: datetime) -> str:
    """Use a nonce once; return its member ID or raise LinkRefused saying why not."""
    member_id = await conn.fetchval(
        "UPDATE line_link_nonces SET used_at = now()"
        " WHERE nonce = $1 AND used_at IS NULL AND expires_at > $2 RETURNING member_id",
        nonce,
        at,
    )
    if member_id is not None:
        return str(member_id)
    row = await conn.fetchrow(
        "SELECT used_at IS NOT NULL AS used FROM line_link_nonces WHERE nonce = $1", nonce
    )
    if row is None:
        raise LinkRefused("unknown nonce")
    raise LinkRefused("nonce already used" if row["used"] else "nonce expired")
