"""API keys: held and compared as SHA-256 digests only, never as the keys themselves."""

from __future__ import annotations

import hashlib
import secrets

from router.config import Config
from router.database import Pool


def key_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def bootstrap(pool: Pool, config: Config) -> tuple[frozenset[bytes], str | None]:
    """The digests of the keys this router takes, and a key generated now (else None).

    Configured keys win; else the stored digests; else a new key is stored by its digest
    and returned this once, to be shown to the operator."""
    if config.api.keys:
        return frozenset(key_hash(k) for k in config.api.keys), None
    async with pool.acquire() as conn:
        stored = {r["key_sha256"] for r in await conn.fetch("SELECT key_sha256 FROM api_keys")}
        if stored:
            return frozenset(stored), None
        token = "dr_" + secrets.token_urlsafe(32)
        await conn.execute(
            "INSERT INTO api_keys (key_sha256, label) VALUES ($1, 'generated at first start')",
            key_hash(token),
        )
        return frozenset({key_hash(token)}), token
