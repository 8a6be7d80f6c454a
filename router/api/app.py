"""The Litestar application: routes, dependencies, error shape, body limit, OpenAPI."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from litestar import Litestar, Request, get
from litestar.datastructures import State
from litestar.logging.config import LoggingConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from router.api import api_docs, body_checks
from router.api.allow import complete_allow_header
from router.api.audiences import AudienceController
from router.api.auth import SENDGRID_PREFIX, auth_middleware_factory
from router.api.campaigns import CampaignController
from router.api.compat_listmonk import listmonk_postback
from router.api.compat_sendgrid import EXCEPTION_HANDLERS as SENDGRID_EXCEPTION_HANDLERS
from router.api.compat_sendgrid import SendGridController
from router.api.compat_sendgrid_batches import SendGridBatchController
from router.api.compat_sendgrid_groups import SendGridGroupController
from router.api.compat_sendgrid_suppressions import SendGridSuppressionController
from router.api.compat_sendgrid_templates import SendGridTemplateController
from router.api.consent_records import ConsentRecordController
from router.api.coupon_pools import CouponPoolController
from router.api.dependencies import ApiDependencies, Injected
from router.api.errors import EXCEPTION_HANDLERS, by_path_prefix
from router.api.events import EventController, member_events
from router.api.intents import IntentController
from router.api.journey_runs import JourneyRunsController
from router.api.journeys import JourneyController
from router.api.line import LineController, line_account_webhook, line_webhook
from router.api.line_usage import LineUsageController
from router.api.members import MemberController
from router.api.metrics import metrics_handler
from router.api.openapi import StandardResponses, problem_response
from router.api.rate_limits import api_key_rates
from router.api.relayed import RelayedMessageController
from router.api.request_ids import request_id_middleware
from router.api.sandbox import SandboxController
from router.api.shopify import shopify_webhook
from router.api.struct_schemas import StructSchemas
from router.api.suppressions import SuppressionController
from router.api.unsubscribe import UnsubscribeController
from router.database import Pool
from router.intake.group_commit import GroupCommit
from router.log_json import JsonFormatter
from router.log_safety import SafeFormatter
from router.problems import ProblemError
from router.service import Runtime
from router.ui import dashboard_for, ui_router


class Health(msgspec.Struct):
    status: str
    database: str
    sandbox: bool
    """Sandbox mode: LINE and email go to this process's simulator and capture, not out."""


@get(
    "/healthz",
    summary="200 when the database answers",
    tags=["health"],
    security=[],
    responses={503: problem_response("The database does not answer")},
)
async def healthz(pool: Injected[Pool], sandbox_enabled: Injected[bool]) -> Health:
    try:
        async with pool.acquire(timeout=2.0) as conn:
            await conn.fetchval("SELECT 1")
    except Exception as exc:
        raise ProblemError(503, "Service unavailable", "the database does not answer") from exc
    return Health(status="ok", database="ok", sandbox=sandbox_enabled)


def dependencies(runtime: Runtime) -> ApiDependencies:
    """What handlers may ask for, taken once from the running router."""

    return ApiDependencies(
        pool=runtime.pool,
        accept_intents=runtime.accept_intents,
        single_intents=GroupCommit(runtime.pool, runtime.accept_intents),
        members_config=runtime.config.members,
        line_config=runtime.config.line,
        default_line_account=runtime.line_account,
        line_accounts=runtime.line_accounts,
        line_configs=runtime.config.line_accounts(),
        shopify_config=runtime.config.shopify,
        email_config=runtime.config.email,
        events_configured=runtime.config.events_configured,
        sandbox_enabled=runtime.config.sandbox.enabled,
        intake_channels=lambda: runtime.intake_channels,
    )


BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def before_request(runtime: Runtime) -> Callable[[Request[Any, Any, Any]], Awaitable[None]]:
    """What every request passes before its handler is called (and its body decoded): its API
    key's request rate (`router.api.rate_limits`), then the checks every JSON body passes
    (`router.api.body_checks`) unless the route checks per item or streams."""
    rates = api_key_rates(runtime.pool, runtime.config.api)

    async def check(request: Request[Any, Any, Any]) -> None:
        if rates is not None:
            await rates.take(request)
        if (
            request.method in BODY_METHODS
            and body_checks.BODY_CHECKS not in request.route_handler.opt
        ):
            body_checks.check_whole_body(await request.body())

    return check


def create_app(runtime: Runtime) -> Litestar:
    json_logs = runtime.config.log.format == "json"
    return Litestar(
        route_handlers=[
            CampaignController,
            healthz,
            MemberController,
            ConsentRecordController,
            IntentController,
            JourneyRunsController,
            JourneyController,
            RelayedMessageController,
            AudienceController,
            CouponPoolController,
            LineController,
            LineUsageController,
            line_webhook,
            line_account_webhook,
            SendGridController,
            SendGridSuppressionController,
            SendGridTemplateController,
            SendGridGroupController,
            SendGridBatchController,
            SuppressionController,
            listmonk_postback,
            EventController,
            member_events,
            shopify_webhook,
            UnsubscribeController,
            SandboxController,
            api_docs.assets_router(),
            ui_router(),
            metrics_handler(
                runtime.pool,
                list(runtime.channels),
                list(runtime.intake_channels.group_sizes),
                runtime.config.line_configured,
                runtime.config.line_accounts() if runtime.config.line_configured else {},
            ),
        ],
        dependencies=dependencies(runtime).providers(),
        state=State({"dashboard": dashboard_for(runtime)}),
        middleware=[
            request_id_middleware(access_log=json_logs),
            complete_allow_header,
            auth_middleware_factory(runtime.api_keys),
        ],
        plugins=[StructSchemas(), StandardResponses()],
        exception_handlers=by_path_prefix(
            EXCEPTION_HANDLERS, SENDGRID_PREFIX, SENDGRID_EXCEPTION_HANDLERS
        ),
        before_request=before_request(runtime),
        request_max_body_size=runtime.config.http.max_body_bytes,
        # Litestar sets up the root logger when the app starts: with the router's format, which
        # escapes control characters a client put in a path or a field.
        # With `[log] format = "json"`, one JSON object per line instead (router/log_json.py).
        logging_config=LoggingConfig(
            formatters={"standard": {"()": JsonFormatter if json_logs else SafeFormatter}}
        ),
        openapi_config=OpenAPIConfig(
            title="delivery-router",
            version="0.1.0",
            path="/schema",
            render_plugins=api_docs.render_plugins(),
            components=Components(
                security_schemes={
                    "bearer": SecurityScheme(type="http", scheme="bearer", description="API key")
                }
            ),
            security=[{"bearer": []}],
        ),
        debug=False,
    )
