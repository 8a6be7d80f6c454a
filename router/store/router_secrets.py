"""Secrets the router makes for itself, kept in PostgreSQL so every process shares them."""

from __future__ import annotations

import secrets

from router.database import Connection


async def get_or_make(conn: Connection, name: str, size: int = 32) -> bytes:
    """The secret called `name`, made (random, `size` bytes) the first time it is asked for;
    two processes asking at once get the same one."""
    await conn.execute(
        "INSERT INTO router_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        name,
        secrets.token_bytes(size),
    )
    value: bytes = await conn.fetchval("SELECT value FROM router_secrets WHERE name = $1", name)
    return value


async def get_or_put(conn: Connection, name: str, made: bytes) -> bytes:
    """The secret called `name`, stored as `made` (made by the caller, a key pair say) the
    first time it is asked for; two processes asking at once get the same one."""
    await conn.execute(
        "INSERT INTO router_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        name,
        made,
    )
    value: bytes = await conn.fetchval("SELECT value FROM router_secrets WHERE name = $1", name)
    return value
