"""`POST /v1/compat/listmonk`: the URL to give listmonk as an HTTP postback messenger.

listmonk takes 200 as sent and anything else as a send error (counted towards pausing the
campaign), so the answer is 200 whenever at least one recipient has an intent, and the
status of the rejection when none has: a message the router cannot deliver to anyone shows
up in listmonk as an error instead of being marked sent.
"""

from __future__ import annotations

import logging

import msgspec
from litestar import post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from router.api.openapi import problems
from router.ingress import listmonk
from router.intents import IntentResult
from router.problems import ProblemError, invalid
from router.service import Runtime

log = logging.getLogger(__name__)


class PostbackResponse(msgspec.Struct):
    results: list[IntentResult]


@post(
    "/v1/compat/listmonk",
    status_code=200,
    tags=["compatibility"],
    responses=problems(400, 409, 422),
    summary="listmonk HTTP postback messenger: one intent per recipient",
    description="listmonk's postback JSON (subject, body, content_type, recipients, campaign). "
    "Takes the API key as Bearer or as the basic-auth password (listmonk offers only basic "
    "auth). 200 when any recipient was accepted (or already was); otherwise the rejection.",
)
async def listmonk_postback(
    data: JSONBody[listmonk.Postback], runtime: NamedDependency[Runtime]
) -> PostbackResponse:
    try:
        async with runtime.pool.acquire() as conn:
            outcome = await listmonk.submit(conn, data, runtime.accept_intents)
    except listmonk.Refused as exc:
        raise invalid(exc.errors) from None
    rejected = [r for r in outcome.results if r.status == "rejected"]
    if rejected and outcome.taken:
        log.info(
            "listmonk postback: %d of %d recipients rejected", len(rejected), len(outcome.results)
        )
    if not outcome.taken:
        first = rejected[0]
        title = {409: "Conflict", 422: "Unprocessable request"}.get(first.code, "Invalid request")
        raise ProblemError(first.code, title, first.reason, first.errors)
    return PostbackResponse(outcome.results)
