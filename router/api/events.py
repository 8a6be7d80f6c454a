"""HTTP routes for events: thin wrappers over `router.events`."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody, QueryParameter
from litestar.response import Response

from router import events
from router.api import body_checks
from router.api.batch import decode_batch
from router.api.dependencies import Injected
from router.api.errors import not_found
from router.api.members import MemberIdParam
from router.api.openapi import batch_operation, problems, ref
from router.database import Pool
from router.events import MAX_BATCH, EventPage, EventRequest, EventResult
from router.problems import FieldError, ProblemError

MAX_PAGE = 1_000

PageLimit = Annotated[
    int, QueryParameter(ge=1, le=MAX_PAGE, description="Events per page (1 to 1,000)")
]
Before = Annotated[
    UUID | None,
    QueryParameter(description="An event id from `next_before`: the page of older events"),
]


class EventBatchResponse(msgspec.Struct):
    results: list[EventResult]


def _refusal(result: EventResult) -> ProblemError:
    title = {409: "Conflict", 422: "Unprocessable request"}.get(result.code, "Invalid request")
    return ProblemError(result.code, title, result.reason, result.errors)


def _as_result(item: EventRequest | list[FieldError]) -> EventRequest | EventResult:
    return events.invalid_item(item) if isinstance(item, list) else item


class EventController(Controller):
    path = "/v1/events"
    tags = ["events"]  # noqa: RUF012

    @post(
        "/",
        status_code=202,
        responses={
            **problems(400, 409, 422),
            200: ResponseSpec(
                data_container=EventResult,
                description="A replay with a known idempotency_key: the original event's id, "
                "status `duplicate`",
            ),
        },
        summary="Record one thing a member did",
        description="202 with the event id; 200 (status `duplicate`, the original id) when the "
        "idempotency_key was seen with the same body; 409 when it was seen with another body; "
        "422 for an unknown member_id. An email_address no member has becomes an address-only "
        "member. properties: a JSON object of at most 16 KB encoded (400 beyond).",
    )
    async def create(
        self, data: JSONBody[EventRequest], pool: Injected[Pool]
    ) -> Response[EventResult]:
        async with pool.acquire() as conn:
            (result,) = await events.record(conn, [data])
        if result.status == "rejected":
            raise _refusal(result)
        return Response(result, status_code=result.code)

    @post(
        "/batch",
        status_code=200,
        responses=problems(400),
        operation_class=batch_operation("events", ref("EventRequest"), MAX_BATCH),
        summary="Record up to 10,000 events",
        opt=body_checks.PER_ITEM,
        description='Body: {"events": [EventRequest, ...]}. Each result is accepted (with id), '
        "duplicate (with the original id) or rejected (with the reason and its status as "
        "`code`), in request order; one bad item never rejects the others.",
    )
    async def batch(
        self, request: Request[Any, Any, Any], pool: Injected[Pool]
    ) -> EventBatchResponse:
        decoded = decode_batch(await request.body(), "events", EventRequest, MAX_BATCH)
        async with pool.acquire() as conn:
            results = await events.record(
                conn, [_as_result(item) for item in decoded], prefix="events[{i}]."
            )
        return EventBatchResponse(results)


@get(
    "/v1/members/{member_id:str}/events",
    summary="A member's events, newest first",
    tags=["events"],
    responses=problems(404, 422),
    description="Ordered by occurred_at, newest first, `limit` a page; pass `next_before` as "
    "`before` for the next page (absent on the last). 422 when `before` is not an event of "
    "this member.",
)
async def member_events(
    member_id: MemberIdParam,
    pool: Injected[Pool],
    limit: PageLimit = 100,
    before: Before = None,
) -> EventPage:
    async with pool.acquire() as conn:
        if before is not None and not await events.is_event_of(conn, before, member_id):
            error = FieldError("before", "not an event of this member")
            raise ProblemError(422, "Unprocessable request", "before: " + error.message, [error])
        page = await events.of_member(conn, member_id, before, limit)
    if page is None:
        raise not_found(f"no member with id {member_id!r}")
    return page
