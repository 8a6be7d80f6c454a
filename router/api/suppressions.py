"""HTTP routes for suppressed email addresses: read, add and lift them.

An address here is never mailed (router.deliverability.rules): intake skips email for it, and
a delivery accepted before it was suppressed is dropped when its turn comes.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, delete, get, post
from litestar.params import JSONBody, PathParameter, QueryParameter

from router.api.dependencies import Injected
from router.api.errors import found, not_found
from router.api.openapi import problems
from router.database import Pool
from router.identifiers import MAX_EMAIL, InvalidIdentifier, normalize_email
from router.problems import FieldError, invalid
from router.store import suppressions
from router.store.suppressions import Reason, Suppression

MAX_PAGE = 1_000
MAX_PER_REQUEST = 10_000
MAX_DETAIL = 500

AddressParam = Annotated[
    str,
    PathParameter(
        min_length=1,
        max_length=MAX_EMAIL,
        description="The email address, percent-encoded; matched as members' emails are "
        "(trimmed, domain lower-cased)",
    ),
]


class NewSuppression(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """An address to suppress; `detail` says why, in the operator's words."""

    address: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_EMAIL)]
    reason: Reason = "manual"
    detail: Annotated[str, msgspec.Meta(max_length=MAX_DETAIL)] | None = None


class NewSuppressions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    suppressions: Annotated[
        list[NewSuppression], msgspec.Meta(min_length=1, max_length=MAX_PER_REQUEST)
    ]


class SuppressionsAdded(msgspec.Struct, kw_only=True):
    """`added`: how many were not suppressed before. `suppressions`: each address as now
    stored, in request order; one suppressed before keeps its first reason and time."""

    added: int
    suppressions: list[Suppression]


class SuppressionPage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Newest first; `next_offset` is the `offset` of the next page (absent on the last)."""

    suppressions: list[Suppression]
    next_offset: int | None = None


def email_address(value: str, field: str) -> str | FieldError:
    """`value` normalised as members' emails are, or why it is not an email address."""
    try:
        return normalize_email(value)
    except InvalidIdentifier as exc:
        return FieldError(field, str(exc))


def path_address(value: str) -> str:
    address = email_address(value, "address")
    if isinstance(address, FieldError):
        raise invalid([address])
    return address


class SuppressionController(Controller):
    path = "/v1/suppressions"
    tags = ["suppressions"]  # noqa: RUF012

    @get(
        "/",
        summary="Suppressed email addresses, newest first",
        responses=problems(400),
        description="`reason` filters; `limit` a page, `offset` where it starts (pass "
        "`next_offset` for the next page).",
    )
    async def index(
        self,
        pool: Injected[Pool],
        reason: Annotated[
            Reason | None, QueryParameter(description="Only suppressions with this reason")
        ] = None,
        limit: Annotated[
            int, QueryParameter(ge=1, le=MAX_PAGE, description="Suppressions per page")
        ] = 100,
        offset: Annotated[
            int, QueryParameter(ge=0, le=10_000_000, description="Suppressions to skip")
        ] = 0,
    ) -> SuppressionPage:
        async with pool.acquire() as conn:
            rows = await suppressions.page(
                conn, reasons=None if reason is None else [reason], limit=limit + 1, offset=offset
            )
        more = len(rows) > limit
        return SuppressionPage(
            suppressions=rows[:limit], next_offset=offset + limit if more else None
        )

    @get("/{address:str}", summary="One suppressed address", responses=problems(404))
    async def read(self, address: AddressParam, pool: Injected[Pool]) -> Suppression:
        normalized = path_address(address)
        async with pool.acquire() as conn:
            suppression = await suppressions.get(conn, normalized)
        return found(suppression, "this address is not suppressed")

    @post(
        "/",
        status_code=200,
        summary="Suppress up to 10,000 email addresses",
        description="Each item is {address, reason (default manual), detail}. An address is "
        "normalised as members' emails are; one already suppressed keeps its first reason "
        "and time. Any invalid item refuses the whole request (400, each bad item named).",
    )
    async def add(self, data: JSONBody[NewSuppressions], pool: Injected[Pool]) -> SuppressionsAdded:
        errors: list[FieldError] = []
        entries: list[Suppression] = []
        for i, item in enumerate(data.suppressions):
            address = email_address(item.address, f"suppressions[{i}].address")
            if isinstance(address, FieldError):
                errors.append(address)
                continue
            entries.append(Suppression(address=address, reason=item.reason, detail=item.detail))
        if errors:
            raise invalid(errors)
        async with pool.acquire() as conn, conn.transaction():
            added = await suppressions.add(conn, entries)
            stored = {
                s.address: s for s in await suppressions.of(conn, [e.address for e in entries])
            }
        return SuppressionsAdded(
            added=added, suppressions=[stored[e.address] for e in entries if e.address in stored]
        )

    @delete(
        "/{address:str}",
        summary="Lift an address's suppression: email may be sent to it again",
        responses=problems(404),
    )
    async def lift(self, address: AddressParam, pool: Injected[Pool]) -> None:
        normalized = path_address(address)
        async with pool.acquire() as conn:
            if not await suppressions.remove(conn, [normalized]):
                raise not_found("this address is not suppressed")
