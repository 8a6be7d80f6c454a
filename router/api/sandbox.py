"""HTTP routes for what sandbox mode "sent" (`router serve --sandbox`): list and clear.

Outside sandbox mode nothing is captured, so both answer 409 saying how to turn it on.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, delete, get
from litestar.params import QueryParameter

from router.api.dependencies import Injected
from router.api.openapi import problem_response, problems
from router.database import Pool
from router.problems import ProblemError
from router.store import sandbox_messages
from router.store.sandbox_messages import SandboxChannel, SandboxMessage

MAX_PAGE = 500
_OFF = problem_response("Sandbox mode is off: this router sends for real and captures nothing")


class SandboxMessagePage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Newest first; `next_before` is the `before` of the next page (absent on the last)."""

    messages: list[SandboxMessage]
    next_before: int | None = None


class SandboxCleared(msgspec.Struct, kw_only=True):
    removed: int


def require_sandbox(enabled: bool) -> None:
    if not enabled:
        raise ProblemError(
            409,
            "Sandbox mode is off",
            "this router sends to the configured LINE channel and SMTP server and captures"
            " nothing; start it with `router serve --sandbox` (or [sandbox] enabled = true,"
            " ROUTER_SANDBOX_ENABLED=true)",
        )


class SandboxController(Controller):
    path = "/v1/sandbox/messages"
    tags = ["sandbox"]  # noqa: RUF012

    @get(
        "/",
        summary="What sandbox mode sent, newest first",
        responses={**problems(400), 409: _OFF},
        description="One entry per recipient: the LINE message objects as sent to LINE, or the"
        " email's headers, subject, text and HTML parts, with the member it went to. Filters"
        " combine; `before` (the previous page's `next_before`) pages back.",
    )
    async def index(
        self,
        pool: Injected[Pool],
        sandbox_enabled: Injected[bool],
        channel: Annotated[
            SandboxChannel | None, QueryParameter(description="Only this channel")
        ] = None,
        member_id: Annotated[
            str | None,
            QueryParameter(min_length=1, max_length=256, description="Only to this member"),
        ] = None,
        recipient: Annotated[
            str | None,
            QueryParameter(
                min_length=1,
                max_length=320,
                description="Only to this LINE user ID, phone hash or email address (exact)",
            ),
        ] = None,
        limit: Annotated[
            int, QueryParameter(ge=1, le=MAX_PAGE, description="Messages per page")
        ] = 50,
        before: Annotated[
            int | None,
            QueryParameter(ge=1, le=2**63 - 1, description="Only messages with a smaller id"),
        ] = None,
    ) -> SandboxMessagePage:
        require_sandbox(sandbox_enabled)
        async with pool.acquire() as conn:
            rows = await sandbox_messages.page(
                conn,
                limit=limit + 1,
                before_id=before,
                channel=channel,
                member_id=member_id,
                recipient=recipient,
            )
        more = len(rows) > limit
        return SandboxMessagePage(
            messages=rows[:limit], next_before=rows[limit - 1].id if more else None
        )

    @delete(
        "/",
        status_code=200,
        summary="Forget every message sandbox mode captured",
        responses={409: _OFF},
    )
    async def clear(self, pool: Injected[Pool], sandbox_enabled: Injected[bool]) -> SandboxCleared:
        require_sandbox(sandbox_enabled)
        async with pool.acquire() as conn:
            removed = await sandbox_messages.clear(conn)
        return SandboxCleared(removed=removed)
