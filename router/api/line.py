"""HTTP routes for LINE: the webhook receivers and account linking, per LINE account.

Each configured account has its own webhook URL, `/webhooks/line/<name>`, verified with that
account's channel secret (`/webhooks/line` is the account "default"'s). Linking, LINE Login
and the quota read take `line_account` (default "default"), since a person has a different
LINE user ID under each account.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.params import JSONBody, PathParameter, QueryParameter

from channels.base import LineAccount, ProviderError, QuotaFigures
from router import members
from router.api.dependencies import Injected, require_line_account
from router.api.errors import found
from router.api.openapi import problem_response, problems
from router.config import DEFAULT_LINE_ACCOUNT, LineConfig
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


AccountName = Annotated[
    str,
    # Checked against the configured accounts (400 naming `line_account`).
    msgspec.Meta(
        description='A configured LINE account (`[line.accounts.<name>]`; "default": `[line]`)',
    ),
]
LineAccountQuery = Annotated[
    str | None,
    QueryParameter(
        name="line_account",
        required=False,
        max_length=32,
        description='The LINE account (default "default"); the body\'s `line_account` wins',
    ),
]


class LinkTokenRequest(msgspec.Struct, forbid_unknown_fields=True):
    line_user_id: LineUserId
    line_account: AccountName | None = None


class LinkTokenResponse(msgspec.Struct):
    link_token: str


class LinkNonceRequest(msgspec.Struct, forbid_unknown_fields=True):
    member_id: MemberId
    link_token: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]
    line_account: AccountName | None = None


class LinkNonceResponse(msgspec.Struct):
    redirect_url: str
    nonce_expires_in: int


class LoginLinkRequest(msgspec.Struct, forbid_unknown_fields=True):
    member_id: MemberId
    id_token: Annotated[str, msgspec.Meta(min_length=1, max_length=10_000)]
    line_account: AccountName | None = None


def account_name(body: str | None, query: str | None) -> str:
    """The account a request names: its body's `line_account`, else the query's, else
    "default"; both given and different is refused."""
    if body is not None and query is not None and body != query:
        detail = f"the body names LINE account {body!r} and the query {query!r}"
        raise ProblemError(400, "Invalid request", detail, [FieldError("line_account", detail)])
    name = body if body is not None else query
    if name == "":
        detail = "an empty LINE account name: leave line_account out for the account default"
        raise ProblemError(400, "Invalid request", detail, [FieldError("line_account", detail)])
    return name or DEFAULT_LINE_ACCOUNT


def _unknown_account(name: str, configured: Mapping[str, object]) -> ProblemError:
    known = ", ".join(sorted(configured)) or "none"
    detail = f"no LINE account named {name!r} is configured (configured: {known})"
    return ProblemError(400, "Invalid request", detail, [FieldError("line_account", detail)])


def account_settings(
    name: str, line_configs: Mapping[str, LineConfig], line_config: LineConfig
) -> LineConfig:
    """The settings of LINE account `name`: 400 naming `line_account` when it is not
    configured ("default" is always `[line]`)."""
    if name == DEFAULT_LINE_ACCOUNT:
        return line_configs.get(name, line_config)
    settings = line_configs.get(name)
    if settings is None:
        raise _unknown_account(name, line_configs)
    return settings


def account_operations(name: str, line_accounts: Mapping[str, LineAccount]) -> LineAccount:
    """The operations of LINE account `name`: 400 naming `line_account` when it is not
    configured, 409 when no LINE account is ("default" without a token)."""
    operations = line_accounts.get(name)
    if operations is not None:
        return operations
    if name == DEFAULT_LINE_ACCOUNT:
        return require_line_account(None)
    raise _unknown_account(name, line_accounts)


def _provider_problem(exc: ProviderError) -> ProblemError:
    status = 422 if 400 <= exc.status < 500 else 502
    return ProblemError(status, "LINE refused the request", f"LINE {exc.status}: {exc.message}")


_WEBHOOK_RESPONSES = {
    **problems(400),
    401: problem_response("Missing or wrong X-Line-Signature"),
    503: problem_response(
        "The account's channel_secret is not set, or the database does not answer (LINE retries)"
    ),
}


@post(
    "/webhooks/line",
    status_code=200,
    summary='LINE webhook receiver of the account "default" (verified by X-Line-Signature)',
    tags=["line"],
    security=[],
    responses=_WEBHOOK_RESPONSES,
)
async def line_webhook(
    request: Request[Any, Any, Any],
    pool: Injected[Pool],
    line_config: Injected[LineConfig],
) -> WebhookAccepted:
    """Verify, store, answer; events are handled and forwarded after LINE has its 200."""
    return await _receive(request, pool, DEFAULT_LINE_ACCOUNT, line_config)


@post(
    "/webhooks/line/{account:str}",
    status_code=200,
    summary="LINE webhook receiver of one LINE account (verified with its channel secret)",
    tags=["line"],
    security=[],
    responses={**_WEBHOOK_RESPONSES, **problems(404)},
)
async def line_account_webhook(
    request: Request[Any, Any, Any],
    account: Annotated[str, PathParameter(description="The LINE account's name", max_length=64)],
    pool: Injected[Pool],
    line_config: Injected[LineConfig],
    line_configs: Injected[Mapping[str, LineConfig]],
) -> WebhookAccepted:
    """The same as `/webhooks/line`, for the account the path names; a body signed with
    another account's secret is refused as any wrong signature is."""
    settings = line_configs.get(account)
    if settings is None and account == DEFAULT_LINE_ACCOUNT:
        settings = line_config
    if settings is None:
        raise ProblemError(
            404, "Not found", f"no LINE account named {account!r} is configured on this router"
        )
    return await _receive(request, pool, account, settings)


async def _receive(
    request: Request[Any, Any, Any], pool: Pool, account: str, settings: LineConfig
) -> WebhookAccepted:
    secret = settings.channel_secret
    if not secret:
        section = "[line]" if account == DEFAULT_LINE_ACCOUNT else f"[line.accounts.{account}]"
        raise ProblemError(
            503,
            "Service unavailable",
            f"{section} channel_secret is not set: webhooks cannot be verified",
        )
    body = await request.body()
    signature = request.headers.get(line_webhooks.SIGNATURE_HEADER)
    if not line_webhooks.signature_matches(secret, body, signature):
        raise ProblemError(401, "Unauthorized", "missing or wrong X-Line-Signature")
    assert signature is not None
    try:
        async with pool.acquire() as conn:
            stored = await line_webhooks.store(
                conn, account, body, signature, settings.forward_webhooks_to
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
        responses=problems(400, 409),
    )
    async def quota(
        self,
        line_accounts: Injected[Mapping[str, LineAccount]],
        account: LineAccountQuery = None,
    ) -> QuotaFigures:
        operations = account_operations(account_name(None, account), line_accounts)
        try:
            figures = await operations.quota()
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
        self,
        data: JSONBody[LinkTokenRequest],
        line_accounts: Injected[Mapping[str, LineAccount]],
        account: LineAccountQuery = None,
    ) -> LinkTokenResponse:
        operations = account_operations(account_name(data.line_account, account), line_accounts)
        if not LINE_USER_ID.fullmatch(data.line_user_id):
            raise ProblemError(
                400,
                "Invalid request",
                "line_user_id: 'U' followed by 32 lower-case hex digits",
                [FieldError("line_user_id", "not a LINE user ID")],
            )
        try:
            token = await operations.issue_link_token(data.line_user_id)
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
        line_configs: Injected[Mapping[str, LineConfig]],
        account: LineAccountQuery = None,
    ) -> LinkNonceResponse:
        name = account_name(data.line_account, account)
        settings = account_settings(name, line_configs, line_config)
        ttl = line_events.nonce_ttl(settings)
        async with pool.acquire() as conn:
            nonce = await line_identity.new_nonce(conn, data.member_id, data.link_token, ttl, name)
        nonce = found(nonce, f"no member with id {data.member_id!r}")
        url = line_identity.account_link_url(settings.account_link_base, data.link_token, nonce)
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
        line_configs: Injected[Mapping[str, LineConfig]],
        line_accounts: Injected[Mapping[str, LineAccount]],
        account: LineAccountQuery = None,
    ) -> Member:
        name = account_name(data.line_account, account)
        client_id = account_settings(name, line_configs, line_config).login_channel_id
        if not client_id:
            section = "[line]" if name == DEFAULT_LINE_ACCOUNT else f"[line.accounts.{name}]"
            raise ProblemError(409, "Conflict", f"{section} login_channel_id is not set")
        operations = account_operations(name, line_accounts)
        try:
            claims = await operations.verify_id_token(data.id_token, client_id)
        except ProviderError as exc:
            raise ProblemError(
                422,
                "ID token refused",
                f"LINE says: {exc.message}",
                [FieldError("id_token", exc.message)],
            ) from None
        async with pool.acquire() as conn, conn.transaction():
            try:
                await line_identity.link(conn, data.member_id, claims.sub, name)
            except line_identity.LinkRefused as exc:
                status = 404 if "no member" in str(exc) else 409
                raise ProblemError(status, "Link refused", str(exc)) from None
            member = await members.get(conn, data.member_id)
        assert member is not None
        return member
