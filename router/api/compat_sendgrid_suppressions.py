"""SendGrid's suppression endpoints over the router's suppressions, so a SendGrid client that
reads or manages its bounces and global unsubscribes only changes its host.

SendGrid's lists map to suppression reasons: bounces to `bounce`, global unsubscribes
(`/v3/asm/suppressions/global`, `/v3/suppression/unsubscribes`) to `unsubscribe`, spam reports
to `spamreport`, invalid emails to `invalid`. Errors use SendGrid's `{"errors": [...]}`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.openapi.spec import Operation
from litestar.params import JSONBody, PathParameter, QueryParameter

from router.api.compat_sendgrid import (
    EXCEPTION_HANDLERS,
    MEDIA_TYPE,
    inlined_schema,
    sendgrid_error,
)
from router.api.dependencies import Injected
from router.api.errors import field_path
from router.api.openapi import sendgrid_problems
from router.database import Pool
from router.identifiers import MAX_EMAIL, InvalidIdentifier, normalize_email
from router.ingress.sendgrid import SendGridError
from router.store import suppressions
from router.store.suppressions import Reason, Suppression

MAX_PAGE = 500  # SendGrid's most per request
MAX_EMAILS = 1_000

EmailParam = Annotated[
    str, PathParameter(min_length=1, max_length=MAX_EMAIL, description="The email address")
]
StartTime = Annotated[
    int | None,
    QueryParameter(description="Unix time: only suppressions created at or after it"),
]
EndTime = Annotated[
    int | None,
    QueryParameter(description="Unix time: only suppressions created at or before it"),
]
Limit = Annotated[int, QueryParameter(ge=1, le=MAX_PAGE, description="Entries per page")]
Offset = Annotated[int, QueryParameter(ge=0, le=10_000_000, description="Entries to skip")]


class Bounce(msgspec.Struct, kw_only=True):
    """SendGrid's bounce: `status` the enhanced status code (or the reply code)."""

    created: int
    email: str
    reason: str
    status: str


class Unsubscribe(msgspec.Struct, kw_only=True):
    created: int
    email: str


class SpamReport(msgspec.Struct, kw_only=True):
    created: int
    email: str
    ip: str  # SendGrid's sending IP; the router has none to give


class InvalidEmail(msgspec.Struct, kw_only=True):
    created: int
    email: str
    reason: str


class DeleteBounces(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Either every bounce (`delete_all`) or the listed addresses."""

    delete_all: bool = False
    emails: Annotated[list[str], msgspec.Meta(max_length=MAX_EMAILS)] | None = None


class GlobalSuppressions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    recipient_emails: Annotated[list[str], msgspec.Meta(min_length=1, max_length=MAX_EMAILS)]


class GlobalSuppression(msgspec.Struct, kw_only=True, omit_defaults=True):
    """`{"recipient_email": ...}` when the address is globally unsubscribed, `{}` if not."""

    recipient_email: str | None = None


class Refused(Exception):
    """A request answered with SendGrid's error body: bad addresses (400), none found (404)."""

    def __init__(self, status: int, errors: list[SendGridError]) -> None:
        super().__init__(errors[0].message)
        self.status = status
        self.errors = errors


def _not_found() -> Refused:
    return Refused(404, [SendGridError(message="Email does not exist")])


_STATUS = re.compile(r"^\d{3}(?: ([245]\.\d{1,3}\.\d{1,3}))?")


def _created(s: Suppression) -> int:
    return int((s.created_at or datetime.now(UTC)).timestamp())


def _bounce(s: Suppression) -> Bounce:
    detail = s.detail or s.reason
    match = _STATUS.match(detail)
    status = (match.group(1) or match.group(0)) if match else ""
    return Bounce(created=_created(s), email=s.address, reason=detail, status=status)


def _address(value: str, field: str) -> str:
    try:
        return normalize_email(value)
    except InvalidIdentifier as exc:
        raise Refused(400, [SendGridError(message=f"{value!r}: {exc}", field=field)]) from exc


def _addresses(values: list[str], field: str) -> list[str]:
    good: list[str] = []
    bad: list[SendGridError] = []
    for i, value in enumerate(values):
        try:
            good.append(_address(value, f"{field}.{i}"))
        except Refused as exc:
            bad.extend(exc.errors)
    if bad:
        raise Refused(400, bad)
    return good


def _as_time(unix: int | None) -> datetime | None:
    """A Unix time as a datetime; one past what a datetime holds, as its earliest or latest."""
    if unix is None:
        return None
    try:
        return datetime.fromtimestamp(unix, UTC)
    except (OverflowError, ValueError, OSError):
        return (datetime.min if unix < 0 else datetime.max).replace(tzinfo=UTC)


async def _listed(
    pool: Pool, reason: Reason, start: int | None, end: int | None, limit: int, offset: int
) -> list[Suppression]:
    async with pool.acquire() as conn:
        return await suppressions.page(
            conn,
            reasons=[reason],
            limit=limit,
            offset=offset,
            start=_as_time(start),
            end=_as_time(end),
        )


async def _lift(pool: Pool, email: str, reason: Reason) -> None:
    """Lift one address's suppression of this reason (SendGrid's lists are one reason
    each); 404 in SendGrid's shape when it has none."""
    address = _address(email, "email")
    async with pool.acquire() as conn:
        removed = await suppressions.remove(conn, [address], [reason])
    if not removed:
        raise _not_found()


def _strict_body(body: bytes) -> DeleteBounces:
    """The body decoded as JSON's own types say (`"delete_all": 0` is not `false`)."""
    try:
        return msgspec.json.decode(body, type=DeleteBounces)
    except msgspec.ValidationError as exc:
        field, message = field_path(str(exc))
        raise Refused(400, [SendGridError(message=message, field=field or None)]) from exc
    except msgspec.DecodeError as exc:
        raise Refused(400, [SendGridError(message=f"the body is not valid JSON ({exc})")]) from exc


@dataclass
class _DeleteBouncesOperation(Operation):
    """The body the route reads itself."""

    def to_schema(self) -> dict[str, Any]:
        schema = super().to_schema()
        schema["requestBody"] = {
            "required": True,
            "content": {MEDIA_TYPE: {"schema": inlined_schema(DeleteBounces)}},
        }
        return schema


def _refused(_: object, exc: Refused) -> Response[bytes]:
    return sendgrid_error(exc.status, exc.errors)


class SendGridSuppressionController(Controller):
    path = "/v3"
    tags = ["compatibility"]  # noqa: RUF012
    exception_handlers = {**EXCEPTION_HANDLERS, Refused: _refused}  # noqa: RUF012

    @get(
        "/suppression/bounces",
        summary="SendGrid: bounced addresses, newest first",
        responses=sendgrid_problems(400),
    )
    async def bounces(
        self,
        pool: Injected[Pool],
        start_time: StartTime = None,
        end_time: EndTime = None,
        limit: Limit = MAX_PAGE,
        offset: Offset = 0,
    ) -> list[Bounce]:
        rows = await _listed(pool, "bounce", start_time, end_time, limit, offset)
        return [_bounce(s) for s in rows]

    @get("/suppression/bounces/{email:str}", summary="SendGrid: one bounced address ([] if not)")
    async def bounce(self, email: EmailParam, pool: Injected[Pool]) -> list[Bounce]:
        address = _address(email, "email")
        async with pool.acquire() as conn:
            found = await suppressions.get(conn, address)
        return [_bounce(found)] if found is not None and found.reason == "bounce" else []

    @delete(
        "/suppression/bounces",
        summary="SendGrid: lift bounces, every one (`delete_all`) or the listed `emails`",
        operation_class=_DeleteBouncesOperation,
    )
    async def delete_bounces(self, request: Request[Any, Any, Any], pool: Injected[Pool]) -> None:
        data = _strict_body(await request.body())
        if data.delete_all == (data.emails is not None):
            message = "give either delete_all: true or emails, not both"
            raise Refused(400, [SendGridError(message=message)])
        async with pool.acquire() as conn:
            if data.delete_all:
                await suppressions.remove_all(conn, ["bounce"])
            else:
                addresses = _addresses(data.emails or [], "emails")
                await suppressions.remove(conn, addresses, ["bounce"])

    @delete(
        "/suppression/bounces/{email:str}",
        summary="SendGrid: lift one bounce",
        responses=sendgrid_problems(404),
    )
    async def delete_bounce(self, email: EmailParam, pool: Injected[Pool]) -> None:
        await _lift(pool, email, "bounce")

    @post(
        "/asm/suppressions/global",
        status_code=201,
        summary="SendGrid: unsubscribe addresses from all email",
    )
    async def add_global(
        self, data: JSONBody[GlobalSuppressions], pool: Injected[Pool]
    ) -> GlobalSuppressions:
        addresses = _addresses(data.recipient_emails, "recipient_emails")
        async with pool.acquire() as conn:
            await suppressions.add(
                conn, [Suppression(address=a, reason="unsubscribe") for a in addresses]
            )
        return GlobalSuppressions(recipient_emails=addresses)

    @get(
        "/asm/suppressions/global/{email:str}",
        summary="SendGrid: whether an address is unsubscribed from all email",
    )
    async def read_global(self, email: EmailParam, pool: Injected[Pool]) -> GlobalSuppression:
        address = _address(email, "email")
        async with pool.acquire() as conn:
            found = await suppressions.get(conn, address)
        if found is None or found.reason != "unsubscribe":
            return GlobalSuppression()
        return GlobalSuppression(recipient_email=found.address)

    @delete(
        "/asm/suppressions/global/{email:str}",
        summary="SendGrid: lift an address's global unsubscribe",
        responses=sendgrid_problems(404),
    )
    async def delete_global(self, email: EmailParam, pool: Injected[Pool]) -> None:
        await _lift(pool, email, "unsubscribe")

    @get(
        "/suppression/unsubscribes",
        summary="SendGrid: globally unsubscribed addresses",
        responses=sendgrid_problems(400),
    )
    async def unsubscribes(
        self,
        pool: Injected[Pool],
        start_time: StartTime = None,
        end_time: EndTime = None,
        limit: Limit = MAX_PAGE,
        offset: Offset = 0,
    ) -> list[Unsubscribe]:
        rows = await _listed(pool, "unsubscribe", start_time, end_time, limit, offset)
        return [Unsubscribe(created=_created(s), email=s.address) for s in rows]

    @get(
        "/suppression/spam_reports",
        summary="SendGrid: addresses that reported spam",
        responses=sendgrid_problems(400),
    )
    async def spam_reports(
        self,
        pool: Injected[Pool],
        start_time: StartTime = None,
        end_time: EndTime = None,
        limit: Limit = MAX_PAGE,
        offset: Offset = 0,
    ) -> list[SpamReport]:
        rows = await _listed(pool, "spamreport", start_time, end_time, limit, offset)
        return [SpamReport(created=_created(s), email=s.address, ip="") for s in rows]

    @get(
        "/suppression/invalid_emails",
        summary="SendGrid: addresses refused as invalid",
        responses=sendgrid_problems(400),
    )
    async def invalid_emails(
        self,
        pool: Injected[Pool],
        start_time: StartTime = None,
        end_time: EndTime = None,
        limit: Limit = MAX_PAGE,
        offset: Offset = 0,
    ) -> list[InvalidEmail]:
        rows = await _listed(pool, "invalid", start_time, end_time, limit, offset)
        return [
            InvalidEmail(created=_created(s), email=s.address, reason=s.detail or s.reason)
            for s in rows
        ]
