"""SendGrid's unsubscribe groups (`asm_groups`) and their suppressions.

Mail sent with a group is promotional in the category `asm-<id>`, so a group's suppressions
are that category's opt-outs (`email_category_opt_outs`), the same rows a recipient's
one-click unsubscribe writes and every send checks (router.deliverability.rules). They are
kept per member; an address is suppressed for every member holding it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg
import msgspec

from router.database import Connection

CATEGORY_PREFIX = "asm-"


def category(group_id: int) -> str:
    return f"{CATEGORY_PREFIX}{group_id}"


class Group(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    name: str
    description: str
    is_default: bool
    unsubscribes: int = 0


class GroupSuppression(msgspec.Struct, frozen=True, kw_only=True):
    email: str
    group_id: int
    group_name: str
    created_at: datetime


class NameTaken(Exception):
    """Another group has this name."""


_GROUP_COLUMNS = (
    "SELECT g.id, g.name, g.description, g.is_default,"
    " (SELECT count(*) FROM email_category_opt_outs o"
    "  WHERE o.category = 'asm-' || g.id) AS unsubscribes"
)
_GROUP = _GROUP_COLUMNS + " FROM asm_groups g"
_GROUPS_OF = f"""{_GROUP_COLUMNS},
    EXISTS (SELECT 1 FROM email_category_opt_outs o JOIN members m ON m.member_id = o.member_id
            WHERE m.email_sha256 = $1 AND o.category = 'asm-' || g.id) AS suppressed
FROM asm_groups g ORDER BY g.id"""  # noqa: S608 - constants only


def _group(r: asyncpg.Record) -> Group:
    return Group(
        id=r["id"],
        name=r["name"],
        description=r["description"],
        is_default=r["is_default"],
        unsubscribes=r["unsubscribes"],
    )


async def create(conn: Connection, name: str, description: str, is_default: bool) -> Group:
    try:
        row = await conn.fetchrow(
            "INSERT INTO asm_groups (name, description, is_default) VALUES ($1, $2, $3)"
            " RETURNING id, name, description, is_default, 0::bigint AS unsubscribes",
            name,
            description,
            is_default,
        )
    except asyncpg.UniqueViolationError as exc:
        raise NameTaken(name) from exc
    assert row is not None
    return _group(row)


async def listed(conn: Connection, ids: Sequence[int] = ()) -> list[Group]:
    """Every group (or those of `ids`), oldest first."""
    rows = await conn.fetch(
        _GROUP + " WHERE cardinality($1::int[]) = 0 OR g.id = ANY($1::int[]) ORDER BY g.id",
        list(ids),
    )
    return [_group(r) for r in rows]


async def get(conn: Connection, group_id: int) -> Group | None:
    row = await conn.fetchrow(_GROUP + " WHERE g.id = $1", group_id)
    return None if row is None else _group(row)


async def update(
    conn: Connection,
    group_id: int,
    name: str | None,
    description: str | None,
    is_default: bool | None,
) -> Group | None:
    """Change the given fields; None when there is no such group."""
    try:
        found = await conn.fetchval(
            "UPDATE asm_groups SET name = coalesce($2, name),"
            " description = coalesce($3, description), is_default = coalesce($4, is_default)"
            " WHERE id = $1 RETURNING id",
            group_id,
            name,
            description,
            is_default,
        )
    except asyncpg.UniqueViolationError as exc:
        raise NameTaken(name or "") from exc
    return None if found is None else await get(conn, group_id)


async def delete(conn: Connection, group_id: int) -> bool:
    """Delete the group and its suppressions (SendGrid: its addresses are mailed again)."""
    async with conn.transaction():
        found = await conn.fetchval("DELETE FROM asm_groups WHERE id = $1 RETURNING id", group_id)
        if found is None:
            return False
        await conn.execute(
            "DELETE FROM email_category_opt_outs WHERE category = $1", category(group_id)
        )
    return True


async def existing(conn: Connection, ids: Sequence[int]) -> set[int]:
    rows = await conn.fetch("SELECT id FROM asm_groups WHERE id = ANY($1::int[])", list(ids))
    return {r["id"] for r in rows}


async def suppress(conn: Connection, group_id: int, email_hashes: Sequence[bytes]) -> None:
    """Opt every member holding one of these addresses out of the group (each address has
    at least one member: the caller made address-only ones where none existed)."""
    await conn.execute(
        "INSERT INTO email_category_opt_outs (member_id, category)"
        " SELECT member_id, $2 FROM members WHERE email_sha256 = ANY($1::bytea[])"
        " ON CONFLICT (member_id, category) DO NOTHING",
        list(email_hashes),
        category(group_id),
    )


async def unsuppress(conn: Connection, group_id: int, email_hash: bytes) -> bool:
    """Lift the address's suppression from the group; False when it had none."""
    removed = await conn.fetch(
        "DELETE FROM email_category_opt_outs o USING members m"
        " WHERE o.member_id = m.member_id AND m.email_sha256 = $1 AND o.category = $2"
        " RETURNING 1",
        email_hash,
        category(group_id),
    )
    return bool(removed)


async def suppressed(
    conn: Connection, group_id: int | None = None, email_hashes: Sequence[bytes] | None = None
) -> list[GroupSuppression]:
    """The group's (or every group's) suppressed addresses, optionally only these ones,
    newest first."""
    rows = await conn.fetch(
        "SELECT DISTINCT ON (g.id, m.email) m.email, g.id AS group_id, g.name,"
        " o.created_at FROM email_category_opt_outs o"
        " JOIN asm_groups g ON o.category = 'asm-' || g.id"
        " JOIN members m ON m.member_id = o.member_id"
        " WHERE m.email IS NOT NULL AND ($1::int IS NULL OR g.id = $1)"
        " AND ($2::bytea[] IS NULL OR m.email_sha256 = ANY($2::bytea[]))"
        " ORDER BY g.id, m.email, o.created_at",
        group_id,
        None if email_hashes is None else list(email_hashes),
    )
    found = [
        GroupSuppression(
            email=r["email"],
            group_id=r["group_id"],
            group_name=r["name"],
            created_at=r["created_at"],
        )
        for r in rows
    ]
    return sorted(found, key=lambda s: s.created_at, reverse=True)


async def groups_of(conn: Connection, email_hash: bytes) -> list[tuple[Group, bool]]:
    """Every group, and whether the address is suppressed from it."""
    rows = await conn.fetch(_GROUPS_OF, email_hash)
    return [(_group(r), r["suppressed"]) for r in rows]
