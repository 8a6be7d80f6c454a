"""One-click unsubscribe (RFC 8058): the link in every promotional email the router composes.

No API key: the token in the path is the authority (an HMAC the router signed naming the
recipient and category, router.deliverability.tokens). A token that does not verify is 404
and changes nothing. `GET` only shows what the button would do, because mail scanners and
previews fetch links; `POST` records the opt-out. Mail clients' one-click POST carries the
form body `List-Unsubscribe=One-Click`; the body is not needed, so none is read.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, MediaType, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import PathParameter
from litestar.response import Response

from router.api import body_checks, unsubscribe_pages
from router.api.dependencies import Injected
from router.config import EmailConfig
from router.database import Pool
from router.deliverability import opt_outs
from router.deliverability.secret import token_secret
from router.deliverability.tokens import Unsubscribe, read_unsubscribe_token

MAX_TOKEN = 2000

TokenParam = Annotated[
    str,
    PathParameter(
        min_length=1,
        max_length=MAX_TOKEN,
        description="The token of an unsubscribe link in an email the router composed",
    ),
]

_NOT_READ: dict[str, Any] = {body_checks.BODY_CHECKS: "not_read"}
"""The POST's body (if any) is never read, so it is not checked as JSON either."""


def _html(page: str, status: int = 200) -> Response[str]:
    return Response(
        page,
        status_code=status,
        media_type=MediaType.HTML,
        headers=unsubscribe_pages.SECURITY_HEADERS,
    )


def _not_valid_page() -> ResponseSpec:
    return ResponseSpec(
        data_container=str,
        description="The token does not verify: nothing is changed",
        media_type=MediaType.HTML,
        generate_examples=False,
    )


def _read(token: str, email_config: EmailConfig) -> Unsubscribe | None:
    return read_unsubscribe_token(token_secret(email_config), token)


async def _shown_address(pool: Pool, what: Unsubscribe) -> str | None:
    """The recipient's address, masked, as the page shows it (None: a member since erased,
    or one without an address)."""
    if what.subject == "a":
        return unsubscribe_pages.mask_address(what.recipient)
    async with pool.acquire() as conn:
        email: str | None = await conn.fetchval(
            "SELECT email FROM members WHERE member_id = $1", what.recipient
        )
    return None if email is None else unsubscribe_pages.mask_address(email)


class UnsubscribeController(Controller):
    path = "/u"
    tags = ["unsubscribe"]  # noqa: RUF012

    @get(
        "/{token:str}",
        summary="The confirmation page of an unsubscribe link (changes nothing)",
        security=[],
        media_type=MediaType.HTML,
        responses={404: _not_valid_page()},
        description="A small page in Japanese and English saying what will stop (one "
        "category, all promotional email, or all email to an address-only recipient), the "
        "address masked, and a button that POSTs to the same URL.",
    )
    async def confirm(
        self, token: TokenParam, pool: Injected[Pool], email_config: Injected[EmailConfig]
    ) -> Response[str]:
        what = _read(token, email_config)
        if what is None:
            return _html(unsubscribe_pages.not_valid(), 404)
        masked = await _shown_address(pool, what)
        return _html(unsubscribe_pages.confirmation(opt_outs.scope_of(what), what.category, masked))

    @post(
        "/{token:str}",
        summary="One-click unsubscribe (RFC 8058): records the opt-out at once",
        security=[],
        status_code=200,
        media_type=MediaType.HTML,
        opt=_NOT_READ,
        responses={
            404: ResponseSpec(
                data_container=str,
                description="The token does not verify: nothing is changed",
                media_type=MediaType.TEXT,
                generate_examples=False,
            )
        },
        description="Takes any body (mail clients send `List-Unsubscribe=One-Click`, form "
        "encoded) or none. Records the opt-out the token names and answers a page saying "
        "it is done; repeating it changes nothing. Transactional email is not affected for "
        "a member; an address-only recipient's address is suppressed for all email. With "
        "`[events]` configured, a new opt-out posts `unsubscribe` or `group_unsubscribe`.",
    )
    async def unsubscribe(
        self,
        token: TokenParam,
        pool: Injected[Pool],
        email_config: Injected[EmailConfig],
        events_configured: Injected[bool],
    ) -> Response[str]:
        what = _read(token, email_config)
        if what is None:
            return Response(
                unsubscribe_pages.NOT_VALID_TEXT,
                status_code=404,
                media_type=MediaType.TEXT,
                headers=unsubscribe_pages.SECURITY_HEADERS,
            )
        async with pool.acquire() as conn:
            outcome = await opt_outs.record_unsubscribe(conn, what, events=events_configured)
        return _html(unsubscribe_pages.done(outcome.scope, what.category))
