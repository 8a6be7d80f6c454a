"""API keys: held and compared as SHA-256 digests only, never as the keys themselves.

Two sources, both valid at once: keys configured (`[api] keys`, `ROUTER_API_KEYS`), and keys
stored in PostgreSQL by their digest (the one made at a first start with no key at all, and
those `router keys create` makes). Configured keys never reach the database; stored keys are
listed and revoked by id. Every process re-reads the stored digests at most once a second
while requests come, so a revoked key stops working everywhere within about a second, and a
key made since is looked up at its first use.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from datetime import datetime
from uuid import UUID

import msgspec

from router.config import Config
from router.database import Connection, Pool
from router.database_outage import is_unavailable
from router.log_safety import describe

log = logging.getLogger(__name__)

KEY_PREFIX = "dr_"
REFRESH_SECONDS = 1.0
"""How stale a process's copy of the stored keys may be: the longest a revoked key still works."""
FIRST_START_NAME = "generated at first start"
_STORED = "SELECT key_sha256, id FROM api_keys"


def key_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def fingerprint(digest: bytes) -> str:
    """A configured key as start-up names it: the start of its digest, which says nothing of
    the key."""
    return "sha256:" + digest.hex()[:8]


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


class StoredKey(msgspec.Struct, kw_only=True):
    """A stored key as `router keys list` shows it: never the key, nor its digest."""

    id: UUID
    name: str
    created_at: datetime
    last_used_at: datetime | None


class KeyRing:
    """The keys this process takes: configured digests, and a copy of the stored ones kept
    fresh (see the module docstring); it also notes which stored keys were used, recorded as
    their `last_used_at` at the next refresh."""

    def __init__(
        self,
        pool: Pool,
        configured: frozenset[bytes],
        stored: dict[bytes, UUID],
        refresh_seconds: float = REFRESH_SECONDS,
    ) -> None:
        self._pool = pool
        self.configured = configured
        self._stored = stored
        self._refresh_seconds = refresh_seconds
        self._loaded_at = time.monotonic()
        self._used: set[bytes] = set()
        self._refreshing: asyncio.Task[None] | None = None

    @property
    def stored_ids(self) -> list[UUID]:
        return sorted(self._stored.values())

    def describe(self) -> str:
        """Which sources are active, by count and fingerprint or id: never a key."""
        parts = []
        if self.configured:
            prints = ", ".join(sorted(fingerprint(d) for d in self.configured))
            parts.append(f"{len(self.configured)} configured ([api] keys; {prints})")
        if self._stored:
            ids = ", ".join(str(i) for i in self.stored_ids[:5])
            more = ", ..." if len(self._stored) > 5 else ""
            parts.append(f"{len(self._stored)} stored (router keys list; {ids}{more})")
        return " and ".join(parts) if parts else "none (every /v1 request is refused)"

    async def accepts(self, digest: bytes) -> bool:
        if digest in self.configured:
            return True
        if time.monotonic() - self._loaded_at >= self._refresh_seconds and not self._refreshing:
            # Beside the request, not in it: this request is answered from the copy in hand.
            self._loaded_at = time.monotonic()
            self._refreshing = asyncio.create_task(self._refresh_beside())
        if digest not in self._stored:
            async with self._pool.acquire() as conn:
                found = await conn.fetchval("SELECT id FROM api_keys WHERE key_sha256 = $1", digest)
            if found is None:
                return False
            self._stored[digest] = found
        self._used.add(digest)
        return True

    async def refresh(self) -> None:
        """Record the keys used since the last refresh and re-read the stored ones. While the
        database is unreachable the copy in hand is kept: known keys go on working."""
        self._loaded_at = time.monotonic()  # one refresh at a time: others use the copy
        used, self._used = self._used, set()
        try:
            async with self._pool.acquire() as conn:
                await _record_use(conn, used)
                rows = await conn.fetch(_STORED)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            log.warning("API keys not re-read: %s", describe(exc))
            self._used |= used
            return
        self._stored = {r["key_sha256"]: r["id"] for r in rows}

    async def _refresh_beside(self) -> None:
        try:
            await self.refresh()
        except Exception as exc:  # a task's failure has no caller to reach
            log.error("API keys not re-read: %s", describe(exc))
        finally:
            self._refreshing = None

    async def flush(self) -> None:
        """Record the last uses before the process stops."""
        if self._refreshing is not None:
            await self._refreshing
        used, self._used = self._used, set()
        if used:
            async with self._pool.acquire() as conn:
                await _record_use(conn, used)


async def _record_use(conn: Connection, used: set[bytes]) -> None:
    if used:
        await conn.execute(
            "UPDATE api_keys SET last_used_at = now() WHERE key_sha256 = ANY($1::bytea[])",
            list(used),
        )


async def bootstrap(pool: Pool, config: Config) -> tuple[KeyRing, str | None]:
    """The keys this router takes, and a key generated now (else None).

    A key is generated, stored by its digest and returned this once (to be shown to the
    operator) only when there is no key at all: none configured, none stored."""
    configured = frozenset(key_hash(k) for k in config.api.keys)
    async with pool.acquire() as conn:
        stored = {r["key_sha256"]: r["id"] for r in await conn.fetch(_STORED)}
        if stored or configured:
            return KeyRing(pool, configured, stored), None
        token = new_key()
        key_id = await conn.fetchval(
            "INSERT INTO api_keys (key_sha256, name) VALUES ($1, $2) RETURNING id",
            key_hash(token),
            FIRST_START_NAME,
        )
        return KeyRing(pool, configured, {key_hash(token): key_id}), token


async def create(conn: Connection, name: str) -> tuple[UUID, str]:
    """A new stored key: its id, and the key itself (shown once, then only its digest is kept)."""
    token = new_key()
    key_id: UUID = await conn.fetchval(
        "INSERT INTO api_keys (key_sha256, name) VALUES ($1, $2) RETURNING id",
        key_hash(token),
        name,
    )
    return key_id, token


async def stored_keys(conn: Connection) -> list[StoredKey]:
    rows = await conn.fetch(
        "SELECT id, name, created_at, last_used_at FROM api_keys ORDER BY created_at, id"
    )
    return [StoredKey(**dict(r)) for r in rows]


async def revoke(conn: Connection, key_id: UUID) -> bool:
    """Delete a stored key; False if there was none with that id."""
    deleted: UUID | None = await conn.fetchval(
        "DELETE FROM api_keys WHERE id = $1 RETURNING id", key_id
    )
    return deleted is not None
