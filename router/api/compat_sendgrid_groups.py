"""SendGrid's unsubscribe groups (`/v3/asm/groups`) and group suppressions, so a SendGrid
client that manages its groups only changes its host.

A group's suppressions are the router's category opt-outs of `asm-<group_id>`
(router.store.asm_groups): suppressing an address here and a recipient's click on the
unsubscribe link of mail sent with the group are the same row, and every send checks it.
An address no member holds gets an address-only member to hold its opt-outs, as intake
would make for it. Errors use SendGrid's `{"errors": [...]}`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.openapi.spec import Operation
from litestar.params import JSONBody, PathParameter

from router import members
from router.api.compat_sendgrid import (
    EXCEPTION_HANDLERS,
    MEDIA_TYPE,
    inlined_schema,
    sendgrid_error,
)
from router.api.compat_sendgrid_suppressions import EmailParam, Refused
from router.api.dependencies import Injected
from router.api.errors import field_path
from router.api.openapi import sendgrid_problems
from router.database import Connection, Pool
from router.identifiers import InvalidIdentifier, email_sha256, normalize_email
from router.ingress.sendgrid import SendGridError
from router.store import asm_groups
from router.store.asm_groups import Group, NameTaken

MAX_NAME = 30  # SendGrid's limits
MAX_DESCRIPTION = 100
MAX_GROUPS = 200
MAX_EMAILS = 1_000

# Text, not int: a path segment that is no number is answered 400 in SendGrid's shape here,
# where an int parameter would make it match no route at all.
GroupIdParam = Annotated[
    str,
    PathParameter(
        min_length=1, max_length=10, pattern=r"^[0-9]+$", description="The unsubscribe group's id"
    ),
]
MAX_GROUP_ID = 2**31 - 1
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME)]
Description = Annotated[str, msgspec.Meta(max_length=MAX_DESCRIPTION)]
Emails = Annotated[list[str], msgspec.Meta(min_length=1, max_length=MAX_EMAILS)]


class NewGroup(msgspec.Struct, kw_only=True):
    name: Name
    description: Description = ""
    is_default: bool = False


class GroupChange(msgspec.Struct, kw_only=True):
    name: Name | None = None
    description: Description | None = None
    is_default: bool | None = None


class GroupView(msgspec.Struct, kw_only=True):
    """SendGrid's group; `last_email_sent_at` is not tracked (always null)."""

    id: int
    name: str
    description: str
    is_default: bool
    unsubscribes: int
    last_email_sent_at: int | None = None


class RecipientEmails(msgspec.Struct, kw_only=True):
    recipient_emails: Emails


class SuppressionView(msgspec.Struct, kw_only=True):
    email: str
    group_id: int
    group_name: str
    created_at: int


class GroupStatus(msgspec.Struct, kw_only=True):
    id: int
    name: str
    description: str
    is_default: bool
    suppressed: bool


class AddressGroups(msgspec.Struct, kw_only=True):
    suppressions: list[GroupStatus]


BodyT = TypeVar("BodyT")


def _strict(body: bytes, body_type: type[BodyT]) -> BodyT:
    """The body decoded as JSON's own types say (`"is_default": 0` is not `false`), which
    the framework's lenient decoding would take."""
    try:
        return msgspec.json.decode(body, type=body_type)
    except msgspec.ValidationError as exc:
        field, message = field_path(str(exc))
        raise Refused(400, [SendGridError(message=message, field=field or None)]) from exc
    except msgspec.DecodeError as exc:
        raise Refused(400, [SendGridError(message=f"the body is not valid JSON ({exc})")]) from exc


def _body_operation(body_type: type) -> type[Operation]:
    """An Operation documenting the body a route reads itself."""

    @dataclass
    class BodyOperation(Operation):
        def to_schema(self) -> dict[str, Any]:
            schema = super().to_schema()
            schema["requestBody"] = {
                "required": True,
                "content": {MEDIA_TYPE: {"schema": inlined_schema(body_type)}},
            }
            return schema

    return BodyOperation


def _view(g: Group) -> GroupView:
    return GroupView(
        id=g.id,
        name=g.name,
        description=g.description,
        is_default=g.is_default,
        unsubscribes=g.unsubscribes,
    )


def _no_group() -> Refused:
    return Refused(404, [SendGridError(message="Unsubscribe group not found")])


def _name_taken(name: str) -> Refused:
    message = f"Another unsubscribe group is named {name!r}: group names are unique."
    return Refused(400, [SendGridError(message=message, field="name")])


def _addresses(values: list[str], field: str) -> dict[bytes, str]:
    """The addresses by their hash, or 400 naming each bad one."""
    good: dict[bytes, str] = {}
    bad: list[SendGridError] = []
    for i, value in enumerate(values):
        try:
            address = normalize_email(value)
        except InvalidIdentifier as exc:
            bad.append(SendGridError(message=f"{value!r}: {exc}", field=f"{field}.{i}"))
            continue
        good[email_sha256(address)] = address
    if bad:
        raise Refused(400, bad)
    return good


def refused(_: object, exc: Refused) -> Response[bytes]:
    return sendgrid_error(exc.status, exc.errors)


def _group_id(text: str) -> int:
    """The path's group id; one past what any group can have names no group (404)."""
    number = int(text)
    if not 0 < number <= MAX_GROUP_ID:
        raise _no_group()
    return number


async def _known(conn: Connection, group_id: int) -> None:
    if not await asm_groups.existing(conn, [group_id]):
        raise _no_group()


class SendGridGroupController(Controller):
    path = "/v3/asm"
    tags = ["compatibility"]  # noqa: RUF012
    exception_handlers = {**EXCEPTION_HANDLERS, Refused: refused}  # noqa: RUF012

    @post(
        "/groups",
        status_code=201,
        summary="SendGrid: create an unsubscribe group",
        description=f"At most {MAX_GROUPS} groups; names are unique. Mail sent with "
        "`asm.group_id` is promotional in the category `asm-<id>`.",
        operation_class=_body_operation(NewGroup),
    )
    async def create(self, request: Request[Any, Any, Any], pool: Injected[Pool]) -> GroupView:
        data = _strict(await request.body(), NewGroup)
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("LOCK TABLE asm_groups IN SHARE ROW EXCLUSIVE MODE")
            if len(await asm_groups.listed(conn)) >= MAX_GROUPS:
                message = f"At most {MAX_GROUPS} unsubscribe groups can exist."
                raise Refused(400, [SendGridError(message=message)])
            try:
                group = await asm_groups.create(conn, data.name, data.description, data.is_default)
            except NameTaken:
                raise _name_taken(data.name) from None
        return _view(group)

    @get("/groups", summary="SendGrid: every unsubscribe group, with its unsubscribe count")
    async def groups(self, pool: Injected[Pool]) -> list[GroupView]:
        async with pool.acquire() as conn:
            return [_view(g) for g in await asm_groups.listed(conn)]

    @get(
        "/groups/{group_id:str}",
        summary="SendGrid: one unsubscribe group",
        responses=sendgrid_problems(400, 404),
    )
    async def group(self, group_id: GroupIdParam, pool: Injected[Pool]) -> GroupView:
        number = _group_id(group_id)
        async with pool.acquire() as conn:
            found = await asm_groups.get(conn, number)
        if found is None:
            raise _no_group()
        return _view(found)

    @patch(
        "/groups/{group_id:str}",
        status_code=201,
        summary="SendGrid: change a group's name, description or is_default (201, as SendGrid)",
        responses=sendgrid_problems(404),
        operation_class=_body_operation(GroupChange),
    )
    async def change(
        self, group_id: GroupIdParam, request: Request[Any, Any, Any], pool: Injected[Pool]
    ) -> GroupView:
        number = _group_id(group_id)
        data = _strict(await request.body(), GroupChange)
        async with pool.acquire() as conn:
            try:
                found = await asm_groups.update(
                    conn, number, data.name, data.description, data.is_default
                )
            except NameTaken:
                raise _name_taken(data.name or "") from None
        if found is None:
            raise _no_group()
        return _view(found)

    @delete(
        "/groups/{group_id:str}",
        summary="SendGrid: delete a group and its suppressions (its addresses are mailed again)",
        responses=sendgrid_problems(400, 404),
    )
    async def remove(self, group_id: GroupIdParam, pool: Injected[Pool]) -> None:
        number = _group_id(group_id)
        async with pool.acquire() as conn:
            if not await asm_groups.delete(conn, number):
                raise _no_group()

    @get(
        "/groups/{group_id:str}/suppressions",
        summary="SendGrid: the addresses suppressed from a group",
        responses=sendgrid_problems(400, 404),
    )
    async def group_suppressions(self, group_id: GroupIdParam, pool: Injected[Pool]) -> list[str]:
        number = _group_id(group_id)
        async with pool.acquire() as conn:
            await _known(conn, number)
            return [s.email for s in await asm_groups.suppressed(conn, number)]

    @post(
        "/groups/{group_id:str}/suppressions",
        status_code=201,
        summary="SendGrid: suppress addresses from a group",
        description="Each address stops getting mail sent with this group, queued mail "
        "included: an opt-out of the category `asm-<group_id>` for every member with the "
        "address (an address-only member is made for an address no member has).",
        responses=sendgrid_problems(404),
    )
    async def suppress(
        self, group_id: GroupIdParam, data: JSONBody[RecipientEmails], pool: Injected[Pool]
    ) -> RecipientEmails:
        number = _group_id(group_id)
        addresses = _addresses(data.recipient_emails, "recipient_emails")
        async with pool.acquire() as conn, conn.transaction():
            await _known(conn, number)
            await members.existing_or_address_only(conn, [], addresses)
            await asm_groups.suppress(conn, number, list(addresses))
        return RecipientEmails(recipient_emails=list(addresses.values()))

    @post(
        "/groups/{group_id:str}/suppressions/search",
        status_code=200,
        summary="SendGrid: which of these addresses are suppressed from a group",
        responses=sendgrid_problems(404),
    )
    async def search(
        self, group_id: GroupIdParam, data: JSONBody[RecipientEmails], pool: Injected[Pool]
    ) -> list[str]:
        number = _group_id(group_id)
        addresses = _addresses(data.recipient_emails, "recipient_emails")
        async with pool.acquire() as conn:
            await _known(conn, number)
            found = await asm_groups.suppressed(conn, number, list(addresses))
        return [s.email for s in found]

    @delete(
        "/groups/{group_id:str}/suppressions/{email:str}",
        summary="SendGrid: lift an address's suppression from a group",
        responses=sendgrid_problems(404),
    )
    async def unsuppress(
        self, group_id: GroupIdParam, email: EmailParam, pool: Injected[Pool]
    ) -> None:
        number = _group_id(group_id)
        (email_hash,) = _addresses([email], "email")
        async with pool.acquire() as conn:
            await _known(conn, number)
            if not await asm_groups.unsuppress(conn, number, email_hash):
                message = "The address is not suppressed from this group"
                raise Refused(404, [SendGridError(message=message)])

    @get("/suppressions", summary="SendGrid: every group suppression, newest first")
    async def all_suppressions(self, pool: Injected[Pool]) -> list[SuppressionView]:
        async with pool.acquire() as conn:
            found = await asm_groups.suppressed(conn)
        return [
            SuppressionView(
                email=s.email,
                group_id=s.group_id,
                group_name=s.group_name,
                created_at=int(s.created_at.timestamp()),
            )
            for s in found
        ]

    @get(
        "/suppressions/{email:str}",
        summary="SendGrid: every group, and whether the address is suppressed from it",
    )
    async def address_groups(self, email: EmailParam, pool: Injected[Pool]) -> AddressGroups:
        (email_hash,) = _addresses([email], "email")
        async with pool.acquire() as conn:
            found = await asm_groups.groups_of(conn, email_hash)
        return AddressGroups(
            suppressions=[
                GroupStatus(
                    id=g.id,
                    name=g.name,
                    description=g.description,
                    is_default=g.is_default,
                    suppressed=suppressed,
                )
                for g, suppressed in found
            ]
        )
