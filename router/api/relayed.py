"""HTTP route for messages the SMTP relay received: the reference in its 250 reply, resolved."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.params import PathParameter

from router import intents
from router.api.dependencies import Injected
from router.api.errors import found
from router.api.openapi import problems
from router.database import Pool
from router.intents import RelayedMessageView

ReferenceParam = Annotated[
    str,
    PathParameter(
        description="The reference in the relay's `250 2.0.0 OK: ... queued as ...` reply:"
        " the SHA-256 of the message's bytes, in lowercase hex",
        pattern="^[0-9a-f]{64}$",
        min_length=64,
        max_length=64,
    ),
]


class RelayedMessageController(Controller):
    path = "/v1/relayed-messages"
    tags = ["intents"]  # noqa: RUF012

    @get(
        "/{reference:str}",
        summary="The intents made from a message the SMTP relay received",
        responses=problems(404),
    )
    async def read(self, reference: ReferenceParam, pool: Injected[Pool]) -> RelayedMessageView:
        async with pool.acquire() as conn:
            view = await intents.relayed_view(conn, bytes.fromhex(reference))
        return found(view, f"no intent was made from a relayed message {reference}")
