"""HTTP routes for campaigns: thin wrappers over `router.campaigns`."""

from __future__ import annotations

from uuid import UUID

import msgspec
from litestar import Controller, get, post
from litestar.params import FromPath, JSONBody
from litestar.response import Response

from channels.base import LineAccount
from router import campaign_results, campaigns
from router.api.dependencies import Injected
from router.api.errors import found
from router.api.openapi import problems
from router.campaign_results import CampaignResults
from router.campaigns import CampaignRequest, CampaignView
from router.database import Pool
from router.problems import FieldError, ProblemError, invalid


class CampaignAccepted(msgspec.Struct):
    id: UUID
    status: str


class CampaignController(Controller):
    path = "/v1/campaigns"
    tags = ["campaigns"]  # noqa: RUF012

    @post(
        "/",
        status_code=202,
        summary="Send to (union of audiences) minus (union of exclusions); fans out in the background",
        responses=problems(400, 409, 422),
    )
    async def create(
        self,
        data: JSONBody[CampaignRequest],
        pool: Injected[Pool],
    ) -> Response[CampaignAccepted]:
        errors = campaigns.check(data)
        if errors:
            raise invalid(errors)
        if unworkable := campaigns.unworkable(data):
            first = unworkable[0]
            raise ProblemError(
                422, "Unprocessable request", f"{first.field}: {first.message}", unworkable
            )
        async with pool.acquire() as conn, conn.transaction():
            try:
                campaign_id, new = await campaigns.create(conn, data)
            except KeyError as exc:
                raise ProblemError(
                    422,
                    "Unprocessable request",
                    f"no audience with id {exc.args[0]}",
                    [FieldError("audience_ids", f"unknown audience {exc.args[0]}")],
                ) from None
            except ValueError as exc:
                raise ProblemError(409, "Conflict", str(exc)) from None
        return Response(
            CampaignAccepted(campaign_id, "fanning_out" if new else "existing"),
            status_code=202 if new else 200,
        )

    @get(
        "/{campaign_id:uuid}",
        summary="Progress and counts per channel and status",
        responses=problems(404),
    )
    async def read(self, campaign_id: FromPath[UUID], pool: Injected[Pool]) -> CampaignView:
        async with pool.acquire() as conn:
            view = await campaigns.view(conn, campaign_id)
        return found(view, f"no campaign with id {campaign_id}")

    @get(
        "/{campaign_id:uuid}/results",
        summary="What became of its messages: counts per channel, email events, LINE's figures",
        description=(
            "Deliveries per channel (sent, delivered, failed, fell back), the delivery events"
            " recorded for its email, and LINE's own figures for its aggregation unit (unique"
            " impressions, clicks, media plays), read through LINE's insight API and kept a"
            " few minutes; when LINE cannot be read, `line.error` says why."
        ),
        responses=problems(404),
    )
    async def results(
        self,
        campaign_id: FromPath[UUID],
        pool: Injected[Pool],
        default_line_account: Injected[LineAccount | None],
        events_configured: Injected[bool],
    ) -> CampaignResults:
        results = await campaign_results.read(
            pool, campaign_id, default_line_account, events=events_configured
        )
        return found(results, f"no campaign with id {campaign_id}")

    @post(
        "/{campaign_id:uuid}/cancel",
        status_code=200,
        summary="Stop the fan-out and every delivery not yet sent",
        responses=problems(404),
    )
    async def cancel(self, campaign_id: FromPath[UUID], pool: Injected[Pool]) -> CampaignView:
        async with pool.acquire() as conn:
            cancelled = await campaigns.cancel(conn, campaign_id)
            view = await campaigns.view(conn, campaign_id) if cancelled else None
        return found(view, f"no campaign with id {campaign_id}")
