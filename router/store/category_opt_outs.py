"""Members' opt-outs of one category of promotional email (`email_category_opt_outs`):
written by unsubscribes, read by intake and at each send (router.deliverability.rules)."""

from __future__ import annotations

from router.database import Connection


async def add(conn: Connection, member_id: str, category: str) -> bool:
    """Record that the member wants no more `category` email; False when it was already
    recorded or the member no longer exists (erased: nothing is left to mail)."""
    added: bool = await conn.fetchval(
        "WITH new AS ("
        " INSERT INTO email_category_opt_outs (member_id, category)"
        " SELECT member_id, $2 FROM members WHERE member_id = $1"
        " ON CONFLICT (member_id, category) DO NOTHING RETURNING 1)"
        " SELECT count(*) > 0 FROM new",
        member_id,
        category,
    )
    return added
