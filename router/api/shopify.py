"""The Shopify webhook receiver: no API key, verified by `X-Shopify-Hmac-Sha256`."""

from __future__ import annotations

from typing import Any

from litestar import Request, post

from router.api.dependencies import Injected
from router.api.openapi import problem_response, problems
from router.config import ShopifyConfig
from router.database import Pool
from router.ingress import shopify
from router.problems import FieldError, ProblemError, invalid


def _header(request: Request[Any, Any, Any], name: str, label: str) -> str:
    value = request.headers.get(name, "").strip()
    if not value:
        raise invalid([FieldError(label, "missing")], f"{label}: the header is missing")
    return value


@post(
    "/webhooks/shopify",
    status_code=200,
    summary="Shopify webhook receiver (verified by X-Shopify-Hmac-Sha256)",
    tags=["events"],
    security=[],
    responses={
        **problems(400, 422),
        401: problem_response("Missing or wrong X-Shopify-Hmac-Sha256: nothing is stored"),
        503: problem_response(
            "[shopify] webhook_secret is not set, or the database does not answer (Shopify retries)"
        ),
    },
    description="checkouts/create and checkouts/update record `cart_updated`, orders/create "
    "`order_placed`, customers/create `registered`, for the member with the payload's email "
    "(an unknown address becomes an address-only member). A repeated X-Shopify-Webhook-Id, "
    "another topic or a payload without an email address: 200, nothing stored.",
)
async def shopify_webhook(
    request: Request[Any, Any, Any],
    pool: Injected[Pool],
    shopify_config: Injected[ShopifyConfig],
) -> shopify.Answer:
    secret = shopify_config.webhook_secret
    if not secret:
        raise ProblemError(
            503,
            "Service unavailable",
            "[shopify] webhook_secret is not set: webhooks cannot be verified",
        )
    body = await request.body()
    if not shopify.signature_matches(secret, body, request.headers.get(shopify.HMAC_HEADER)):
        raise ProblemError(401, "Unauthorized", "missing or wrong X-Shopify-Hmac-Sha256")
    topic = _header(request, shopify.TOPIC_HEADER, "X-Shopify-Topic")
    webhook_id = _header(request, shopify.WEBHOOK_ID_HEADER, "X-Shopify-Webhook-Id")
    try:
        async with pool.acquire() as conn:
            return await shopify.receive(conn, topic, webhook_id, body)
    except shopify.BadPayload as exc:
        raise ProblemError(400, "Invalid request", str(exc)) from None
    except shopify.Refused as exc:
        result = exc.result
        raise ProblemError(result.code, "Event refused", result.reason, result.errors) from None
