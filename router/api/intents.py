"""HTTP routes for intents: thin wrappers over `router.intents`."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody
from litestar.response import Response

from router import intents
from router.api import body_checks
from router.api.batch import decode_batch
from router.api.dependencies import Injected
from router.api.errors import found, refusal
from router.api.openapi import batch_operation, problems, ref
from router.database import Pool
from router.intake.group_commit import GroupCommit
from router.intake_port import AcceptIntents
from router.intents import MAX_BATCH, IntentRequest, IntentResult, IntentView
from router.metrics import count_accepted
from router.problems import FieldError


class IntentBatchResponse(msgspec.Struct):
    results: list[IntentResult]


def _as_result(item: IntentRequest | list[FieldError]) -> IntentRequest | IntentResult:
    if isinstance(item, list):
        return intents.rejected(f"{item[0].field}: {item[0].message}", item)
    return item


class IntentController(Controller):
    path = "/v1/intents"
    tags = ["intents"]  # noqa: RUF012

    @post(
        "/",
        status_code=202,
        responses={
            **problems(400, 409, 422),
            200: ResponseSpec(
                data_container=IntentView,
                description="A replay with a known idempotency_key: the original intent",
            ),
        },
        summary="Send one message intent to one member",
        description="202 with the planned channels; 200 with the original intent when the "
        "idempotency_key was seen with the same body; 409 when it was seen with another body.",
    )
    async def create(
        self,
        data: JSONBody[IntentRequest],
        single_intents: Injected[GroupCommit],
    ) -> Response[IntentResult | IntentView]:
        # One dependency only: Litestar resolves two or more in a task group of their own,
        # which costs more than the rest of the request's own work.
        result = await single_intents.accept(data)
        count_accepted("api", [result])
        if result.status == "accepted":
            return Response(result, status_code=202)
        if result.status == "duplicate":
            assert result.id is not None
            view = await single_intents.original(result.id)
            assert view is not None
            return Response(view, status_code=200)
        raise refusal(result)

    @post(
        "/batch",
        status_code=200,
        responses=problems(400),
        operation_class=batch_operation("intents", ref("IntentRequest"), MAX_BATCH),
        summary="Send up to 10,000 intents",
        opt=body_checks.PER_ITEM,
        description='Body: {"intents": [IntentRequest, ...]}. Each result is accepted (with '
        "id), duplicate (with the original id) or rejected (with the reason), in request order; "
        "one bad item never rejects the others.",
    )
    async def batch(
        self,
        request: Request[Any, Any, Any],
        pool: Injected[Pool],
        accept_intents: Injected[AcceptIntents],
    ) -> IntentBatchResponse:
        decoded = decode_batch(await request.body(), "intents", IntentRequest, MAX_BATCH)
        async with pool.acquire() as conn:
            results = await accept_intents(
                conn, [_as_result(item) for item in decoded], prefix="intents[{i}]."
            )
        count_accepted("batch", results)
        return IntentBatchResponse(results)

    @get(
        "/{intent_id:uuid}",
        summary="Status of an intent and its deliveries",
        responses=problems(404),
    )
    async def read(self, intent_id: FromPath[UUID], pool: Injected[Pool]) -> IntentView:
        async with pool.acquire() as conn:
            view = await intents.view(conn, intent_id)
        return found(view, f"no intent with id {intent_id}")
