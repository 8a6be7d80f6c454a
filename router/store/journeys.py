"""The only writer of `journeys` and `journey_versions`: definitions as saved, by version.

A definition is never changed in place. Saving one that differs from the current version
adds a version (runs already under way keep theirs); saving the same one again changes
nothing, so reloading unchanged files at every start and repeating a PUT are both no-ops.
"Same" is judged by the fingerprint: SHA-256 of the definition's canonical JSON (msgspec,
keys sorted, defaults left out), so key order and spelled-out defaults do not count.

Deleting sets `deleted_at` and keeps the rows (the id, its versions, the runs' history).
Saving a deleted journey again revives it: a new version, `deleted_at` cleared, not paused.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

import msgspec
from asyncpg import Record

from router.database import Connection
from router.journeys.definition import Journey


class SavedJourney(msgspec.Struct, frozen=True, kw_only=True):
    version: int
    created: bool  # the id was new
    changed: bool  # a version was added (new id, changed definition, or a revival)


class StoredJourney(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    version: int
    source: str
    paused: bool
    deleted_at: datetime | None
    definition: Journey
    created_at: datetime
    updated_at: datetime


def canonical(journey: Journey) -> bytes:
    return msgspec.json.encode(journey, order="sorted")


def fingerprint(journey: Journey) -> bytes:
    return hashlib.sha256(canonical(journey)).digest()


async def save(conn: Connection, journey_id: str, journey: Journey, source: str) -> SavedJourney:
    """Store `journey` under `journey_id` as a new version if it changed; in the caller's
    transaction (the journey's row is locked until it ends, so concurrent saves queue)."""
    inserted = await conn.fetchval(
        """
        INSERT INTO journeys (id, version, source) VALUES ($1, 0, $2)
        ON CONFLICT (id) DO NOTHING RETURNING true
        """,
        journey_id,
        source,
    )
    current = await conn.fetchrow(
        """
        SELECT j.version, j.deleted_at IS NOT NULL AS deleted, v.fingerprint
        FROM journeys j
        LEFT JOIN journey_versions v ON v.journey_id = j.id AND v.version = j.version
        WHERE j.id = $1 FOR UPDATE OF j
        """,
        journey_id,
    )
    assert current is not None
    wanted = fingerprint(journey)
    if current["fingerprint"] == wanted and not current["deleted"]:
        await conn.execute(
            "UPDATE journeys SET source = $2 WHERE id = $1 AND source <> $2", journey_id, source
        )
        return SavedJourney(version=current["version"], created=False, changed=False)
    version = int(current["version"]) + 1
    await conn.execute(
        """
        INSERT INTO journey_versions (journey_id, version, definition, fingerprint)
        VALUES ($1, $2, $3::text::jsonb, $4)
        """,
        journey_id,
        version,
        canonical(journey).decode(),
        wanted,
    )
    await conn.execute(
        """
        UPDATE journeys SET version = $2, source = $3, updated_at = now(),
            paused = CASE WHEN deleted_at IS NULL THEN paused ELSE false END,
            deleted_at = NULL
        WHERE id = $1
        """,
        journey_id,
        version,
        source,
    )
    return SavedJourney(version=version, created=bool(inserted), changed=True)


_READ = """
    SELECT j.id, v.version, j.source, j.paused, j.deleted_at, v.definition::text AS definition,
           j.created_at, j.updated_at
    FROM journeys j JOIN journey_versions v ON v.journey_id = j.id
"""


def _stored(row: Record) -> StoredJourney:
    return StoredJourney(
        id=row["id"],
        version=row["version"],
        source=row["source"],
        paused=row["paused"],
        deleted_at=row["deleted_at"],
        definition=msgspec.json.decode(row["definition"], type=Journey),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def read(
    conn: Connection, journey_id: str, version: int | None = None
) -> StoredJourney | None:
    """The journey with its current definition, or the one of `version`; None if neither
    is stored (a deleted journey is read, with its `deleted_at`)."""
    if version is None:
        row = await conn.fetchrow(f"{_READ} WHERE j.id = $1 AND v.version = j.version", journey_id)
    else:
        row = await conn.fetchrow(
            f"{_READ} WHERE j.id = $1 AND v.version = $2", journey_id, version
        )
    return None if row is None else _stored(row)


async def list_current(conn: Connection, *, deleted: bool = False) -> list[StoredJourney]:
    """Every journey with its current definition, by id; deleted ones only if asked."""
    rows = await conn.fetch(
        f"{_READ} WHERE v.version = j.version AND ($1 OR j.deleted_at IS NULL) ORDER BY j.id",
        deleted,
    )
    return [_stored(row) for row in rows]


async def set_paused(conn: Connection, journey_id: str, paused: bool) -> bool:
    """Pause (no new runs, no steps fire) or resume; False if there is no such journey."""
    status = await conn.execute(
        """
        UPDATE journeys SET paused = $2, updated_at = now()
        WHERE id = $1 AND deleted_at IS NULL AND version > 0
        """,
        journey_id,
        paused,
    )
    return bool(status != "UPDATE 0")


async def delete(conn: Connection, journey_id: str) -> bool:
    """Mark the journey deleted; False if there is no such journey (or it already is)."""
    status = await conn.execute(
        """
        UPDATE journeys SET deleted_at = now(), updated_at = now()
        WHERE id = $1 AND deleted_at IS NULL AND version > 0
        """,
        journey_id,
    )
    return bool(status != "UPDATE 0")
