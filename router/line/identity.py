"""Linking a LINE user to a member: single-use nonces for LINE's account-link flow, and the
link itself. Friendship (follows and unfollows) is recorded by `router.store.members`."""

from __future__ import annotations

import secrets
import urllib.parse
from datetime import datetime, timedelta

from router.database import Connection
from router.reach import DEFAULT_LINE_ACCOUNT
from router.store import members as member_store

NONCE_BYTES = 24  # 192 bits; LINE asks for at least 128


class LinkRefused(Exception):
    """The link would break a rule; the message says which."""


async def link(
    conn: Connection, member_id: str, line_user_id: str, account: str = DEFAULT_LINE_ACCOUNT
) -> None:
    """Give a member a LINE user ID under `account`. An ID belongs to at most one member
    per account."""
    outcome = await member_store.link_line_user(conn, account, member_id, line_user_id)
    if outcome == "held_by_another":
        raise LinkRefused("this LINE user is already linked to another member")
    if outcome == "no_member":
        raise LinkRefused("no member with this member_id")


async def new_nonce(
    conn: Connection,
    member_id: str,
    link_token: str,
    ttl: timedelta,
    account: str = DEFAULT_LINE_ACCOUNT,
) -> str | None:
    """A fresh single-use nonce for this member and link token, good only for a link made
    under LINE account `account`; None if no such member."""
    nonce = secrets.token_urlsafe(NONCE_BYTES)
    stored = await conn.fetchval(
        "INSERT INTO line_link_nonces (nonce, member_id, link_token, expires_at, account)"
        " SELECT $1, member_id, $3, now() + $4::interval, $5 FROM members WHERE member_id = $2"
        " RETURNING true",
        nonce,
        member_id,
        link_token,
        ttl,
        account,
    )
    return nonce if stored else None


def account_link_url(base: str, link_token: str, nonce: str) -> str:
    query = urllib.parse.urlencode({"linkToken": link_token, "nonce": nonce})
    return f"{base.rstrip('/')}/dialog/bot/accountLink?{query}"


async def redeem_nonce(
    conn: Connection, nonce: str, at: datetime, account: str = DEFAULT_LINE_ACCOUNT
) -> str:
    """Use a nonce of LINE account `account` once; return its member ID or raise LinkRefused
    saying why not. A nonce issued for another account is unknown here."""
    member_id = await conn.fetchval(
        "UPDATE line_link_nonces SET used_at = now()"
        " WHERE nonce = $1 AND account = $3 AND used_at IS NULL AND expires_at > $2"
        " RETURNING member_id",
        nonce,
        at,
        account,
    )
    if member_id is not None:
        return str(member_id)
    row = await conn.fetchrow(
        "SELECT used_at IS NOT NULL AS used FROM line_link_nonces"
        " WHERE nonce = $1 AND account = $2",
        nonce,
        account,
    )
    if row is None:
        raise LinkRefused("unknown nonce")
    raise LinkRefused("nonce already used" if row["used"] else "nonce expired")
