"""Reconciling friend flags with LINE's follower list, for when webhooks were missed.

The follower IDs are paged into a temporary table, then every flag is corrected in one
transaction. A webhook event newer than the start of the sync keeps precedence.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from channels.base import LineAccount
from router.database import Connection
from router.store import members as member_store


class SyncReport(msgspec.Struct):
    followers: int
    members_changed: int


async def sync_followers(
    conn: Connection, account: LineAccount, progress: Callable[[int], None] | None = None
) -> SyncReport:
    started = await conn.fetchval("SELECT now()")
    async with conn.transaction():
        await member_store.start_follower_list(conn)
        count = 0
        async for page in account.follower_pages():
            await member_store.add_followers(conn, page)
            count += len(page)
            if progress is not None:
                progress(count)
        changed = await member_store.apply_follower_list(conn, started)
    return SyncReport(followers=count, members_changed=changed)
