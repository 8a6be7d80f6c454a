"""HTTP routes for LINE: the webhook receiver and account linking."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.params import JSONBody

from channels.base import LineAccount, ProviderError, QuotaFigures
from router import members
from router.api.dependencies import Injected, require_line_account
from router.api.errors import found
from router.api.openapi import problem_response, problems
from router.config import LineConfig
from router.database import Pool
from router.identifiers import LINE_USER_ID, LineUserId, MemberId
from router.line import events as line_events
from router.line import identity as line_identity
from router.line import webhooks as line_webhooks
from router.members import Member
from router.problems import FieldError, ProblemError


class WebhookAccepted(msgspec.Struct):
    stored: int
    duplicates: int


class LinkTokenRequest(msgspec.Struct, forbid_unknown_fields=True):
    line_user_id: LineUserId


class LinkTokenResponse(msgspec.Struct):
    link_token: str


class LinkNonceRequest(msgspec.Struct, forbid_unknown_fields=True):
    member_id: MemberId
    link_token: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]


class LinkNonceResponse(msgspec.Struct):
    redirect_url: str
    nonce_expires_in: int


class LoginLinkRequest(msgspec.Struct, forbid_unknown_fields=True):
    member_id: MemberId
    id_token: Annotated[str, msgspec.Meta(min_length=1, max_length=10_000)]


def _provider_problem(exc: ProviderError) -> ProblemError:
    status = 422 if 400 <= exc.status < 500 else 502
    return ProblemError(status, "LINE refused the request", f"LINE {exc.status}: {exc.message}")


@post(
    "/webhooks/line",
    status_code=200,
    summary="LINE webhook receiver (verified by X-Line-Signature)",
    tags=["line"],
    security=[],
    responses={
        **problems(400),
        401: problem_response("Missing or wrong X-Line-Signature"),
        503: problem_response(
            "[line] channel_secret is not set, or the database does not answer (LINE retries)"
        ),
    },
)
async def line_webhook(
    request: Request[Any, Any, Any],
    pool: Injected[Pool],
    line_config: Injected[LineConfig],
) -> WebhookAccepted:
    """Verify, store, answer; events are handled and forwarded after LINE has its 200."""
    secret = line_config.channel_secret
    if not secret:
        raise ProblemError(
            503,
            "Service unavailable",
            "[line] channel_secret is not set: webhooks cannot be verified",
        )
    body = await request.body()
    signature = request.headers.get(line_webhooks.SIGNATURE_HEADER)
    if not line_webhooks.signature_matches(secret, body, signature):
        raise ProblemError(401, "Unauthorized", "missing or wrong X-Line-Signature")
    assert signature is not None
    try:
        async with pool.acquire() as conn:
            stored = await line_webhooks.store(
                conn, body, signature, line_config.forward_webhooks_to
            )
    except line_webhooks.BadWebhook as exc:
        raise ProblemError(400, "Invalid request", f"not a LINE webhook body: {exc}") from None
    return WebhookAccepted(stored=stored.events, duplicates=stored.duplicates)


class LineController(Controller):
    path = "/v1/line"
    tags = ["line"]  # noqa: RUF012

    @get(
        "/quota",
        summary="The month's LINE message quota: LINE's figures and what was sent since",
        responses=problems(409),
    )
    async def quota(self, line_account: Injected[LineAccount | None]) -> QuotaFigures:
        try:
            figures = await require_line_account(line_account).quota()
        except ProviderError as exc:
            raise _provider_problem(exc) from None
        return figures

    @post(
        "/link-token",
        status_code=200,
        summary="Issue a LINE link token for a user (account linking, step 1)",
        responses=problems(400, 409, 422),
    )
    async def link_token(
        self, data: JSONBody[LinkTokenRequest], line_account: Injected[LineAccount | None]
    ) -> LinkTokenResponse:
        if not LINE_USER_ID.fullmatch(data.line_user_id):
            raise ProblemError(
                400,
                "Invalid request",
                "line_user_id: 'U' followed by 32 lower-case hex digits",
                [FieldError("line_user_id", "not a LINE user ID")],
            )
        try:
            token = await require_line_account(line_account).issue_link_token(data.line_user_id)
        except ProviderError as exc:
            raise _provider_problem(exc) from None
        return LinkTokenResponse(link_token=token)

    @post(
        "/link-nonce",
        status_code=200,
        summary="After the member logs in: the URL that completes the link at LINE",
        responses=problems(400, 404),
    )
    async def link_nonce(
        self,
        data: JSONBody[LinkNonceRequest],
        pool: Injected[Pool],
        line_config: Injected[LineConfig],
    ) -> LinkNonceResponse:
        ttl = line_events.nonce_ttl(line_config)
        async with pool.acquire() as conn:
            nonce = await line_identity.new_nonce(conn, data.member_id, data.link_token, ttl)
        nonce = found(nonce, f"no member with id {data.member_id!r}")
        url = line_identity.account_link_url(line_config.account_link_base, data.link_token, nonce)
        return LinkNonceResponse(redirect_url=url, nonce_expires_in=int(ttl.total_seconds()))

    @post(
        "/login-link",
        status_code=200,
        summary="Link a member to the LINE user of a verified LINE Login ID token",
        responses=problems(400, 404, 409, 422),
    )
    async def login_link(
        self,
        data: JSONBody[LoginLinkRequest],
        pool: Injected[Pool],
        line_config: Injected[LineConfig],
        line_account: Injected[LineAccount | None],
    ) -> Member:
        client_id = line_config.login_channel_id
        if not client_id:
            raise ProblemError(409, "Conflict", "[line] login_channel_id is not set")
        try:
            claims = await require_line_account(line_account).verify_id_token(
                data.id_token, client_id
            )
        except ProviderError as exc:
            raise ProblemError(
                422,
                "ID token refused",
                f"LINE says: {exc.message}",
                [FieldError("id_token", exc.message)],
            ) from None
        async with pool.acquire() as conn, conn.transaction():
            try:
                await line_identity.link(conn, data.member_id, claims.sub)
            except line_identity.LinkRefused as exc:
                status = 404 if "no member" in str(exc) else 409
                raise ProblemError(status, "Link refused", str(exc)) from None
            member = await members.get(conn, data.member_id)
        assert member is not None
        return member
