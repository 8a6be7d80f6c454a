"""Reconciling friend flags with LINE's follower list, for when webhooks were missed.

The follower IDs are paged into a temporary table, then every flag is corrected in one
transaction. A webhook event newer than the start of the sync keeps precedence.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from channels.base import LineAccount
from router.database import Connection


class SyncReport(msgspec.Struct):
    followers: int
    members_changed: int


async def sync_followers(
    conn: Connection, account: LineAccount, progress: Callable[[int], None] | None = None
) -> SyncReport:
    started = await conn.fetchval("SELECT now()")
    async with conn.transaction():
        await conn.execute(
            "CREATE TEMP TABLE followers_now (line_user_id text PRIMARY KEY) ON COMMIT DROP"
        )
        count = 0
        async for page in account.follower_pages():
            await conn.execute(
                "INSERT INTO followers_now SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
                page,
            )
            count += len(page)
            if progress is not None:
                progress(count)
        await conn.execute(
            "INSERT INTO line_users AS u (line_user_id, friend, status_at)"
            " SELECT line_user_id, true, $1 FROM followers_now"
            " ON CONFLICT (line_user_id) DO UPDATE SET friend = true, status_at = $1,"
            "   updated_at = now() WHERE u.status_at <= $1",
            started,
        )
        await conn.execute(
            "INSERT INTO line_users AS u (line_user_id, friend, status_at)"
            " SELECT m.line_user_id, false, $1 FROM members m"
            " WHERE m.line_user_id IS NOT NULL"
            "   AND NOT EXISTS (SELECT 1 FROM followers_now f WHERE f.line_user_id = m.line_user_id)"
            " ON CONFLICT (line_user_id) DO UPDATE SET friend = false, status_at = $1,"
            "   updated_at = now() WHERE u.status_at <= $1",
            started,
        )
        await conn.execute(
            "UPDATE line_users u SET friend = false, status_at = $1, updated_at = now()"
            " WHERE u.friend AND u.status_at <= $1"
            "   AND NOT EXISTS (SELECT 1 FROM followers_now f WHERE f.line_user_id = u.line_user_id)",
            started,
        )
        changed = await conn.fetch(
            "UPDATE members m SET line_friend = u.friend, updated_at = now()"
            " FROM line_users u WHERE u.line_user_id = m.line_user_id"
            "   AND m.line_friend <> u.friend RETURNING 1"
        )
    return SyncReport(followers=count, members_changed=len(changed))
