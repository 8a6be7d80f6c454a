"""The Litestar application: routes, dependencies, error shape, body limit, OpenAPI."""

from __future__ import annotations

import msgspec
from litestar import Litestar, get
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from router.api.audiences import AudienceController
from router.api.auth import auth_middleware_factory
from router.api.campaigns import CampaignController
from router.api.compat_listmonk import listmonk_postback
from router.api.compat_sendgrid import SendGridController
from router.api.dependencies import ApiDependencies, Injected
from router.api.errors import EXCEPTION_HANDLERS
from router.api.intents import IntentController
from router.api.line import LineController, line_webhook
from router.api.members import MemberController
from router.api.relayed import RelayedMessageController
from router.database import Pool
from router.problems import ProblemError
from router.service import Runtime


class Health(msgspec.Struct):
    status: str
    database: str


@get("/healthz", summary="200 when the database answers", tags=["health"])
async def healthz(pool: Injected[Pool]) -> Health:
    try:
        async with pool.acquire(timeout=2.0) as conn:
            await conn.fetchval("SELECT 1")
    except Exception as exc:
        raise ProblemError(503, "Service unavailable", "the database does not answer") from exc
    return Health(status="ok", database="ok")


def dependencies(runtime: Runtime) -> ApiDependencies:
    """What handlers may ask for, taken once from the running router."""

    return ApiDependencies(
        pool=runtime.pool,
        accept_intents=runtime.accept_intents,
        members_config=runtime.config.members,
        line_config=runtime.config.line,
        line_account=runtime.line_account,
    )


def create_app(runtime: Runtime) -> Litestar:
    return Litestar(
        route_handlers=[
            CampaignController,
            healthz,
            MemberController,
            IntentController,
            RelayedMessageController,
            AudienceController,
            LineController,
            line_webhook,
            SendGridController,
            listmonk_postback,
        ],
        dependencies=dependencies(runtime).providers(),
        middleware=[auth_middleware_factory(runtime.api_key_hashes)],
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=runtime.config.http.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="delivery-router",
            version="0.1.0",
            path="/schema",
            components=Components(
                security_schemes={
                    "bearer": SecurityScheme(type="http", scheme="bearer", description="API key")
                }
            ),
            security=[{"bearer": []}],
        ),
        debug=False,
    )
