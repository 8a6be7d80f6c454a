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
from litestar.params import JSONBody

from router.api.dependencies import Injected
from router.api.errors import refusal
from router.api.openapi import problems
from router.database import Pool
from router.ingress import listmonk
from router.intake_port import AcceptIntents
from router.intents import IntentResult
from router.problems import invalid

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
    data: JSONBody[listmonk.Postback],
    pool: Injected[Pool],
    accept_intents: Injected[AcceptIntents],
) -> PostbackResponse:
    try:
        async with pool.acquire() as conn:
            outcome = await listmonk.submit(conn, data, accept_intents)
    except listmonk.Refused as exc:
        raise invalid(exc.errors) from None
    rejected = [r for r in outcome.results if r.status == "rejected"]
    if rejected and outcome.taken:
        log.info(
            "listmonk postback: %d of %d recipients rejected", len(rejected), len(outcome.results)
        )
    if not outcome.taken:
        raise refusal(rejected[0])
    return PostbackResponse(outcome.results)
