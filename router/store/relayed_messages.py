"""The only writer of `relayed_messages`: what the SMTP relay received, byte for byte.

A message is stored once, under the SHA-256 of its bytes, and shared by its recipients'
intents through the content that names it (`relayed.message_sha256` in the content's JSON,
which migration 0011 mirrors as `contents.relayed_message_id`, a foreign key). It lives as
long as a content names it, like the content itself: erasing the member whose intent held
the last such content deletes it at once, and the retention sweep deletes messages no
content ever named (every recipient refused) once `[retention] days` have passed.
"""

from __future__ import annotations

from collections.abc import Sequence

from router.database import Connection


async def store(conn: Connection, message_id: bytes, data: bytes) -> None:
    """Keep a received message; the same bytes received again are already there."""
    await conn.execute(
        "INSERT INTO relayed_messages (id, data) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        message_id,
        data,
    )


async def load(conn: Connection, message_id: bytes) -> bytes | None:
    """The bytes to send, or None if the message is gone."""
    data: bytes | None = await conn.fetchval(
        "SELECT data FROM relayed_messages WHERE id = $1", message_id
    )
    return data


async def delete_unnamed(conn: Connection, message_ids: Sequence[bytes]) -> int:
    """Delete those of these messages that no content names any more; how many went.

    Called right after contents were deleted. The foreign key from `contents` makes a
    concurrent relay of the same bytes either wait for this and fail (the sender retries
    and stores them again) or make this fail: a named message is never lost."""
    if not message_ids:
        return 0
    status = await conn.execute(
        "DELETE FROM relayed_messages r WHERE r.id = ANY($1::bytea[])"
        " AND NOT EXISTS (SELECT 1 FROM contents c WHERE c.relayed_message_id = r.id)",
        list(message_ids),
    )
    return int(status.rsplit(" ", 1)[-1])


# For the retention sweep ($1 days, $2 rows at most): messages no content names, received
# before the window. Only a relay whose every recipient was refused leaves one behind.
PRUNE_UNNAMED = """
    DELETE FROM relayed_messages WHERE id IN (
        SELECT r.id FROM relayed_messages r
        WHERE r.created_at < now() - make_interval(days => $1)
          AND NOT EXISTS (SELECT 1 FROM contents c WHERE c.relayed_message_id = r.id)
        LIMIT $2)"""
