"""Email templates and their versions (SendGrid's Templates API model): the only writer of
`email_templates` and `email_template_versions`. At most one version of a template is active;
making one active makes the others inactive in the same statement."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import msgspec
from asyncpg import Record

from router.database import Connection

Generation = Literal["dynamic", "legacy"]
Editor = Literal["code", "design"]


class Version(msgspec.Struct, kw_only=True):
    id: UUID
    template_id: str
    name: str
    subject: str = ""
    html_content: str = ""
    plain_content: str = ""
    active: bool = False
    generate_plain_content: bool = True
    editor: Editor = "code"
    test_data: str | None = None
    line_messages: list[dict[str, Any]] | None = None
    updated_at: datetime | None = None


class Template(msgspec.Struct, kw_only=True):
    id: str
    name: str
    generation: Generation
    updated_at: datetime | None = None
    created_at: datetime | None = None
    versions: list[Version] = msgspec.field(default_factory=list)


_VERSION_COLUMNS = (
    "id, template_id, name, subject, html_content, plain_content, active,"
    " generate_plain_content, editor, test_data, line_messages, updated_at"
)


def _version(row: Record) -> Version:
    return Version(**dict(row))


def _template(row: Record, versions: list[Version]) -> Template:
    return Template(
        id=row["id"],
        name=row["name"],
        generation=row["generation"],
        updated_at=row["updated_at"],
        created_at=row["created_at"],
        versions=versions,
    )


async def _versions_of(conn: Connection, ids: Sequence[str]) -> dict[str, list[Version]]:
    rows = await conn.fetch(
        f"SELECT {_VERSION_COLUMNS} FROM email_template_versions"  # noqa: S608 - constant
        " WHERE template_id = ANY($1::text[]) ORDER BY created_at, id",
        list(ids),
    )
    out: dict[str, list[Version]] = {i: [] for i in ids}
    for row in rows:
        out[row["template_id"]].append(_version(row))
    return out


async def create(conn: Connection, template: Template) -> Template:
    """Store a new template (no versions); its id is the caller's."""
    row = await conn.fetchrow(
        "INSERT INTO email_templates (id, name, generation) VALUES ($1, $2, $3)"
        " RETURNING id, name, generation, created_at, updated_at",
        template.id,
        template.name,
        template.generation,
    )
    assert row is not None
    return _template(row, [])


async def get(conn: Connection, template_id: str) -> Template | None:
    row = await conn.fetchrow(
        "SELECT id, name, generation, created_at, updated_at FROM email_templates WHERE id = $1",
        template_id,
    )
    if row is None:
        return None
    return _template(row, (await _versions_of(conn, [template_id]))[template_id])


async def page(
    conn: Connection,
    generations: Sequence[Generation],
    limit: int,
    after: tuple[datetime, str] | None,
) -> tuple[list[Template], int]:
    """One page of templates in creation order after `after` (the last one of the previous
    page), and how many there are in these generations."""
    rows = await conn.fetch(
        "SELECT id, name, generation, created_at, updated_at FROM email_templates"
        " WHERE generation = ANY($1::text[])"
        " AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3))"
        " ORDER BY created_at, id LIMIT $4",
        list(generations),
        after[0] if after else None,
        after[1] if after else "",
        limit,
    )
    total: int = await conn.fetchval(
        "SELECT count(*) FROM email_templates WHERE generation = ANY($1::text[])",
        list(generations),
    )
    versions = await _versions_of(conn, [r["id"] for r in rows])
    return [_template(r, versions[r["id"]]) for r in rows], total


async def rename(conn: Connection, template_id: str, name: str) -> bool:
    status: str = await conn.execute(
        "UPDATE email_templates SET name = $2, updated_at = now() WHERE id = $1",
        template_id,
        name,
    )
    return status != "UPDATE 0"


async def delete(conn: Connection, template_id: str) -> bool:
    status: str = await conn.execute("DELETE FROM email_templates WHERE id = $1", template_id)
    return status != "DELETE 0"


_SAVE_VERSION = f"""
INSERT INTO email_template_versions AS v (id, template_id, name, subject, html_content,
        plain_content, active, generate_plain_content, editor, test_data, line_messages)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
    ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, subject = EXCLUDED.subject,
        html_content = EXCLUDED.html_content, plain_content = EXCLUDED.plain_content,
        active = EXCLUDED.active, generate_plain_content = EXCLUDED.generate_plain_content,
        editor = EXCLUDED.editor, test_data = EXCLUDED.test_data,
        line_messages = EXCLUDED.line_messages, updated_at = now()
    WHERE v.template_id = EXCLUDED.template_id
RETURNING {_VERSION_COLUMNS}
"""  # noqa: S608 - built from constants only


class VersionIdTaken(Exception):
    """The version id is already another template's."""


class TemplateMissing(Exception):
    """The version's template does not exist (or was deleted meanwhile)."""


async def save_version(conn: Connection, version: Version) -> Version:
    """Insert or replace a version of its template; active, it becomes the only active one.
    Raises `VersionIdTaken` (and stores nothing) when the id is another template's, and
    `TemplateMissing` when the template is gone."""
    async with conn.transaction():
        # Also the lock that makes saves of one template's versions take turns.
        touched = await conn.execute(
            "UPDATE email_templates SET updated_at = now() WHERE id = $1", version.template_id
        )
        if touched == "UPDATE 0":
            raise TemplateMissing(version.template_id)
        if version.active:
            # The one-active index holds row by row, so the others step down first.
            await conn.execute(
                "UPDATE email_template_versions SET active = false, updated_at = now()"
                " WHERE template_id = $1 AND active AND id <> $2",
                version.template_id,
                version.id,
            )
        row = await conn.fetchrow(
            _SAVE_VERSION,
            version.id,
            version.template_id,
            version.name,
            version.subject,
            version.html_content,
            version.plain_content,
            version.active,
            version.generate_plain_content,
            version.editor,
            version.test_data,
            version.line_messages,
        )
        if row is None:
            raise VersionIdTaken(str(version.id))
    return _version(row)


async def get_version(conn: Connection, template_id: str, version_id: UUID) -> Version | None:
    row = await conn.fetchrow(
        f"SELECT {_VERSION_COLUMNS} FROM email_template_versions"  # noqa: S608 - constant
        " WHERE template_id = $1 AND id = $2",
        template_id,
        version_id,
    )
    return _version(row) if row is not None else None


async def delete_version(conn: Connection, template_id: str, version_id: UUID) -> bool:
    status: str = await conn.execute(
        "DELETE FROM email_template_versions WHERE template_id = $1 AND id = $2",
        template_id,
        version_id,
    )
    return status != "DELETE 0"


async def active_version(
    conn: Connection, template_id: str
) -> tuple[Template, Version | None] | None:
    """What a send with this `template_id` uses: the template, and its active version."""
    row = await conn.fetchrow(
        "SELECT id, name, generation, created_at, updated_at FROM email_templates WHERE id = $1",
        template_id,
    )
    if row is None:
        return None
    version = await conn.fetchrow(
        f"SELECT {_VERSION_COLUMNS} FROM email_template_versions"  # noqa: S608 - constant
        " WHERE template_id = $1 AND active",
        template_id,
    )
    return _template(row, []), (_version(version) if version is not None else None)


async def import_template(conn: Connection, template: Template) -> None:
    """Store an exported template with its ids as given, replacing what an earlier import of
    the same template stored (its name and every version)."""
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO email_templates (id, name, generation) VALUES ($1, $2, $3)"
            " ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name,"
            " generation = EXCLUDED.generation, updated_at = now()",
            template.id,
            template.name,
            template.generation,
        )
        await conn.execute(
            "DELETE FROM email_template_versions WHERE template_id = $1 AND id <> ALL($2::uuid[])",
            template.id,
            [v.id for v in template.versions],
        )
        for version in sorted(template.versions, key=lambda v: v.active):
            await save_version(conn, version)
