"""What sandbox mode "sent" (table `sandbox_messages`): written by the sandbox's capture of
the bundled LINE simulator and the built-in SMTP server, read by GET /v1/sandbox/messages and
the dashboard, cleared by DELETE /v1/sandbox/messages."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from router.database import Connection

SandboxChannel = Literal["line", "line_notification", "email"]
SandboxKind = Literal["push", "multicast", "narrowcast", "reply", "notification", "smtp"]


class EmailHeader(msgspec.Struct, frozen=True):
    name: str
    value: str


class CapturedEmail(msgspec.Struct, kw_only=True, frozen=True):
    """An email as the SMTP capture received it: envelope, headers in order, decoded parts."""

    envelope_from: str
    headers: list[EmailHeader]
    subject: str
    text: str | None = None
    html: str | None = None


class CapturedLine(msgspec.Struct, kw_only=True, frozen=True):
    """The message objects of one LINE request, as sent to LINE (camelCase, LINE's shape)."""

    messages: list[dict[str, Any]]


class SandboxMessage(msgspec.Struct, kw_only=True, frozen=True):
    """One message to one recipient. `line` is set for the LINE channels, `email` for email."""

    id: Annotated[int, msgspec.Meta(description="Newer messages have larger ids")]
    channel: SandboxChannel
    kind: SandboxKind
    captured_at: datetime
    member_id: str | None
    recipient: Annotated[
        str | None,
        msgspec.Meta(
            description="LINE user ID, the lower-case hex SHA-256 of the phone number (LINE"
            " notification messages), or email address; null for a narrowcast"
        ),
    ]
    line: CapturedLine | None = None
    email: CapturedEmail | None = None


class NewSandboxMessage(msgspec.Struct, kw_only=True, frozen=True):
    channel: SandboxChannel
    kind: SandboxKind
    member_id: str | None
    recipient: str | None
    line: CapturedLine | None = None
    email: CapturedEmail | None = None


_SELECT = (
    "SELECT id, channel, kind, captured_at, member_id, recipient, content::text AS content"
    " FROM sandbox_messages"
)
_content = msgspec.json.Encoder()
_line = msgspec.json.Decoder(CapturedLine)
_email = msgspec.json.Decoder(CapturedEmail)


async def add(conn: Connection, messages: Sequence[NewSandboxMessage]) -> None:
    if not messages:
        return
    await conn.execute(
        "INSERT INTO sandbox_messages (channel, kind, member_id, recipient, content)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[])",
        [m.channel for m in messages],
        [m.kind for m in messages],
        [m.member_id for m in messages],
        [m.recipient for m in messages],
        [_content.encode(m.line if m.line is not None else m.email).decode() for m in messages],
    )


async def page(
    conn: Connection,
    *,
    limit: int,
    before_id: int | None = None,
    after_id: int | None = None,
    channel: SandboxChannel | None = None,
    member_id: str | None = None,
    recipient: str | None = None,
) -> list[SandboxMessage]:
    """Newest first, ids below `before_id` (the previous page's last) or above `after_id`
    (what arrived since). Each filter is walked on its own index in id order; the id's
    primary key serves the unfiltered list."""
    conditions: list[str] = []
    args: list[str | int] = []
    for column, value in (
        ("channel", channel),
        ("member_id", member_id),
        ("recipient", recipient),
    ):
        if value is not None:
            args.append(value)
            conditions.append(f"{column} = ${len(args)}")
    if before_id is not None:
        args.append(before_id)
        conditions.append(f"id < ${len(args)}")
    if after_id is not None:
        args.append(after_id)
        conditions.append(f"id > ${len(args)}")
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    args.append(limit)
    query = f"{_SELECT}{where} ORDER BY id DESC LIMIT ${len(args)}"
    rows = await conn.fetch(query, *args)
    return [_message(row) for row in rows]


async def one(conn: Connection, message_id: int) -> SandboxMessage | None:
    row = await conn.fetchrow(f"{_SELECT} WHERE id = $1", message_id)
    return None if row is None else _message(row)


async def clear(conn: Connection) -> int:
    """Forget every captured message; how many there were."""
    removed: int = await conn.fetchval(
        "WITH gone AS (DELETE FROM sandbox_messages RETURNING 1) SELECT count(*) FROM gone"
    )
    return removed


def _message(row: Any) -> SandboxMessage:
    email = row["channel"] == "email"
    content: str = row["content"]
    return SandboxMessage(
        id=row["id"],
        channel=row["channel"],
        kind=row["kind"],
        captured_at=row["captured_at"],
        member_id=row["member_id"],
        recipient=row["recipient"],
        line=None if email else _line.decode(content),
        email=_email.decode(content) if email else None,
    )
