"""HTTP routes for campaigns: thin wrappers over `router.campaigns`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from uuid import UUID

import msgspec
from litestar import Controller, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody
from litestar.response import Response

from channels.base import LineAccount
from router import campaign_budgets, campaign_results, campaigns
from router.api.dependencies import Injected
from router.api.errors import found
from router.api.openapi import problems
from router.campaign_budgets import CampaignDryRun
from router.campaign_results import CampaignResults
from router.campaigns import CampaignRequest, CampaignView
from router.config import LineConfig
from router.database import Pool
from router.intake import IntakeChannels
from router.intents import unknown_line_account
from router.problems import FieldError, ProblemError, invalid
from router.reach import DEFAULT_LINE_ACCOUNT


class CampaignAccepted(msgspec.Struct):
    id: UUID
    status: str


def _unknown_audience(audience: str) -> ProblemError:
    return ProblemError(
        422,
        "Unprocessable request",
        f"no audience with id {audience}",
        [FieldError("audience_ids", f"unknown audience {audience}")],
    )


def _audience_of_another_account(exc: campaigns.AudienceOfAnotherAccount) -> ProblemError:
    return ProblemError(
        422, "Unprocessable request", str(exc), [FieldError("audience_ids", str(exc))]
    )


def _line_settings(request: CampaignRequest, settings: Mapping[str, LineConfig]) -> LineConfig:
    """The settings of the LINE account the campaign names (its plan and default budget)."""
    line = settings.get(request.line_account)
    if line is None:
        if request.line_account == DEFAULT_LINE_ACCOUNT:
            return LineConfig()
        raise invalid(
            [FieldError("line_account", f"no LINE account named {request.line_account!r}")]
        )
    return line


class CampaignController(Controller):
    path = "/v1/campaigns"
    tags = ["campaigns"]  # noqa: RUF012

    @post(
        "/",
        status_code=202,
        summary="Send to (union of audiences) minus (union of exclusions); fans out in the background",
        responses={
            **problems(400, 409, 422),
            200: ResponseSpec(
                data_container=CampaignAccepted | CampaignDryRun,  # type: ignore[arg-type]
                description=(
                    'The campaign this idempotency_key made before; with "dry_run": true,'
                    " what it would send and cost (nothing is stored or sent)"
                ),
            ),
        },
    )
    async def create(
        self,
        data: JSONBody[CampaignRequest],
        pool: Injected[Pool],
        line_configs: Injected[Mapping[str, LineConfig]],
        line_accounts: Injected[Mapping[str, LineAccount]],
        intake_channels: Injected[Callable[[], IntakeChannels] | None],
    ) -> Response[CampaignAccepted | CampaignDryRun]:
        errors = campaigns.check(data)
        if data.line_account != DEFAULT_LINE_ACCOUNT and data.line_account not in line_accounts:
            errors.append(unknown_line_account("line_account", data.line_account, line_accounts))
        if errors:
            raise invalid(errors)
        if unworkable := campaigns.unworkable(data):
            first = unworkable[0]
            raise ProblemError(
                422, "Unprocessable request", f"{first.field}: {first.message}", unworkable
            )
        line = _line_settings(data, line_configs)
        if data.dry_run:
            assert intake_channels is not None
            async with pool.acquire() as conn:
                try:
                    answer = await campaign_budgets.dry_run(
                        conn, data, intake_channels(), line, line_accounts.get(data.line_account)
                    )
                except KeyError as exc:
                    raise _unknown_audience(str(exc.args[0])) from None
                except campaigns.AudienceOfAnotherAccount as exc:
                    raise _audience_of_another_account(exc) from None
            return Response(answer, status_code=200)
        async with pool.acquire() as conn, conn.transaction():
            try:
                campaign_id, new = await campaigns.create(conn, data)
                if new:
                    await campaign_budgets.store_budget(conn, campaign_id, data, line)
            except KeyError as exc:
                raise _unknown_audience(str(exc.args[0])) from None
            except campaigns.AudienceOfAnotherAccount as exc:
                raise _audience_of_another_account(exc) from None
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
        line_accounts: Injected[Mapping[str, LineAccount]],
        events_configured: Injected[bool],
    ) -> CampaignResults:
        results = await campaign_results.read(
            pool, campaign_id, line_accounts, events=events_configured
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
