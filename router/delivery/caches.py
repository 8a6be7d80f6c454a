"""What dispatch reads again and again, kept per process: message contents and relayed bytes.

A campaign's body is one row in `contents`, and a relayed newsletter one in
`relayed_messages`; each is read from PostgreSQL once per process, not once per delivery.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import msgspec

from router.content import Content
from router.database import Pool


class ContentCache:
    """Decoded contents by id, the most recently used `size` of them."""

    def __init__(self, size: int = 4096) -> None:
        self._items: OrderedDict[bytes, Content] = OrderedDict()
        self._size = size

    async def get_many(self, pool: Pool, ids: Sequence[bytes]) -> dict[bytes, Content]:
        missing = [i for i in set(ids) if i not in self._items]
        if missing:
            async with pool.acquire() as conn:
                rows = await conn.fetch(
                    "SELECT id, body::text AS body FROM contents WHERE id = ANY($1::bytea[])",
                    missing,
                )
            self._items.update(
                (r["id"], msgspec.json.decode(r["body"], type=Content)) for r in rows
            )
        while len(self._items) > self._size:
            self._items.popitem(last=False)
        return {i: self._items[i] for i in ids if i in self._items}


class RelayedCache:
    """Relayed messages' bytes by hash, up to a memory budget."""

    def __init__(self, budget_bytes: int = 64_000_000) -> None:
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._budget = budget_bytes
        self._size = 0

    async def get(self, pool: Pool, sha256_hex: str) -> bytes | None:
        cached = self._items.get(sha256_hex)
        if cached is not None:
            self._items.move_to_end(sha256_hex)
            return cached
        async with pool.acquire() as conn:
            data: bytes | None = await conn.fetchval(
                "SELECT data FROM relayed_messages WHERE id = $1", bytes.fromhex(sha256_hex)
            )
        if data is None:
            return None
        self._items[sha256_hex] = data
        self._size += len(data)
        while self._size > self._budget and len(self._items) > 1:
            _, dropped = self._items.popitem(last=False)
            self._size -= len(dropped)
        return data
