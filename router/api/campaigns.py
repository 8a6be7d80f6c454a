"""HTTP routes for campaigns: thin wrappers over `router.campaigns`."""

from __future__ import annotations

from uuid import UUID

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from litestar.response import Response

from router import campaigns
from router.api.openapi import problems
from router.campaigns import CampaignRequest, CampaignView
from router.problems import FieldError, ProblemError, invalid
from router.service import Runtime


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
        self, data: JSONBody[CampaignRequest], runtime: NamedDependency[Runtime]
    ) -> Response[CampaignAccepted]:
        errors = campaigns.check(data)
        if errors:
            raise invalid(errors)
        async with runtime.pool.acquire() as conn, conn.transaction():
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
    async def read(
        self, campaign_id: FromPath[UUID], runtime: NamedDependency[Runtime]
    ) -> CampaignView:
        async with runtime.pool.acquire() as conn:
            found = await campaigns.view(conn, campaign_id)
        if found is None:
            raise ProblemError(404, "Not found", f"no campaign with id {campaign_id}")
        return found

    @post(
        "/{campaign_id:uuid}/cancel",
        status_code=200,
        summary="Stop the fan-out and every delivery not yet sent",
        responses=problems(404),
    )
    async def cancel(
        self, campaign_id: FromPath[UUID], runtime: NamedDependency[Runtime]
    ) -> CampaignView:
        async with runtime.pool.acquire() as conn:
            if not await campaigns.cancel(conn, campaign_id):
                raise ProblemError(404, "Not found", f"no campaign with id {campaign_id}")
            found = await campaigns.view(conn, campaign_id)
        assert found is not None
        return found
