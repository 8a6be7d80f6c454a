"""`router templates import FILE`: templates exported from SendGrid, stored with their ids.

The file holds what SendGrid's `GET /v3/templates/{id}` answers: one template object or a list
of them, each with its `versions`. Ids are kept, so sends naming them work unchanged; importing
the same file again replaces what the last import stored. Each entry is taken or refused on its
own, and a refused one is reported in one line naming the entry and the field.
"""

from __future__ import annotations

import re
from typing import Any, Literal
from uuid import UUID

import msgspec

from router.database import Connection
from router.ingress.sendgrid_templates import version_problems
from router.store import email_templates
from router.store.email_templates import Template, Version

_DYNAMIC_ID = re.compile(r"d-[0-9a-f]{32}")


class ExportedVersion(msgspec.Struct, kw_only=True):
    id: UUID
    name: str
    subject: str = ""
    html_content: str = ""
    plain_content: str = ""
    active: Literal[0, 1] | bool = 0
    generate_plain_content: bool = True
    editor: Literal["code", "design"] = "code"
    test_data: str | None = None
    line_messages: list[dict[str, Any]] | None = None


class ExportedTemplate(msgspec.Struct, kw_only=True):
    id: str
    name: str
    generation: Literal["dynamic", "legacy"] = "legacy"
    versions: list[ExportedVersion] = msgspec.field(default_factory=list)


class ImportReport(msgspec.Struct, kw_only=True):
    imported: list[str]
    refused: list[str]  # one line per refused entry


def _entries(data: bytes) -> list[Any]:
    try:
        decoded = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if isinstance(decoded, dict) and isinstance(decoded.get("result"), list):
        return list(decoded["result"])  # a page of `GET /v3/templates`
    return decoded if isinstance(decoded, list) else [decoded]


def _template(entry: Any) -> Template:
    """The entry as a template to store; raises ValueError saying what is wrong."""
    try:
        exported = msgspec.convert(entry, type=ExportedTemplate)
    except msgspec.ValidationError as exc:
        raise ValueError(str(exc)) from None
    if exported.generation == "dynamic" and not _DYNAMIC_ID.fullmatch(exported.id):
        raise ValueError("id: a dynamic template's id is d- and 32 hex digits")
    if exported.generation == "legacy":
        try:
            UUID(exported.id)
        except ValueError:
            raise ValueError("id: a legacy template's id is a UUID") from None
    if sum(bool(v.active) for v in exported.versions) > 1:
        raise ValueError("versions: more than one is active")
    versions = [
        Version(
            id=v.id,
            template_id=exported.id,
            name=v.name,
            subject=v.subject,
            html_content=v.html_content,
            plain_content=v.plain_content,
            active=bool(v.active),
            generate_plain_content=v.generate_plain_content,
            editor=v.editor,
            test_data=v.test_data,
            line_messages=v.line_messages,
        )
        for v in exported.versions
    ]
    for k, version in enumerate(versions):
        problems = version_problems(version, f"versions[{k}].")
        if problems:
            raise ValueError("; ".join(f"{p.field}: {p.message}" for p in problems))
    return Template(
        id=exported.id, name=exported.name, generation=exported.generation, versions=versions
    )


def _label(index: int, entry: Any) -> str:
    named = entry.get("id") if isinstance(entry, dict) else None
    return f"entry {index}" + (f" ({named})" if isinstance(named, str) else "")


async def import_export(conn: Connection, data: bytes) -> ImportReport:
    """Store every good entry of an export; raises ValueError if the file is not JSON."""
    report = ImportReport(imported=[], refused=[])
    for index, entry in enumerate(_entries(data)):
        try:
            template = _template(entry)
            await email_templates.import_template(conn, template)
        except ValueError as exc:
            report.refused.append(f"{_label(index, entry)}: {exc}")
        except email_templates.VersionIdTaken as exc:
            report.refused.append(
                f"{_label(index, entry)}: version {exc} belongs to another template"
            )
        else:
            report.imported.append(template.id)
    return report
