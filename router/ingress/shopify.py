"""Shopify webhooks in: verified by their HMAC, taken once per delivery, turned into events.

Shopify signs the raw body: base64(HMAC-SHA256(webhook secret, body)) in
`X-Shopify-Hmac-Sha256`. Each delivery carries `X-Shopify-Webhook-Id`, the same on every
retry of it, so a repeat is recognised and records nothing. Three topics become events, the
member matched by email (an unknown address becomes an address-only member):

    checkouts/create, checkouts/update  -> cart_updated
    orders/create                       -> order_placed
    customers/create                    -> registered

Any other topic is answered 200 and counted, with nothing stored (Shopify stops sending a
topic only when the subscription is removed, and would retry a refusal).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from collections import Counter
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import msgspec

from router import events
from router.database import Connection
from router.events import EventRequest, EventResult
from router.identifiers import InvalidIdentifier, normalize_email
from router.store import events as event_store

HMAC_HEADER = "x-shopify-hmac-sha256"
TOPIC_HEADER = "x-shopify-topic"
WEBHOOK_ID_HEADER = "x-shopify-webhook-id"
MAX_LINE_ITEMS = 50
MAX_TITLE = 100
LINE_ITEMS_BYTES = 8 * 1024
"""A cart_updated event keeps the first line items (at most 50, titles cut at 100 characters,
8 KB of them encoded) and their count, so a large cart stays inside an event's 16 KB."""

log = logging.getLogger(__name__)
ignored: Counter[str] = Counter()
"""Deliveries answered without recording anything, by reason (`topic:<topic>`, `no email`)."""


def signature_matches(secret: str, body: bytes, signature: str | None) -> bool:
    """Constant-time check of `X-Shopify-Hmac-Sha256` against the raw body."""
    if not signature or not secret:
        return False
    expected = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest())
    return hmac.compare_digest(expected, signature.strip().encode())


Id = int | str
Money = str | float | int


class _Customer(msgspec.Struct):
    id: Id | None = None
    email: str | None = None


class _LineItem(msgspec.Struct):
    title: str | None = None
    quantity: int | None = None


class Checkout(msgspec.Struct):
    """The fields of a checkout webhook payload the router reads."""

    token: str | None = None
    email: str | None = None
    customer: _Customer | None = None
    abandoned_checkout_url: str | None = None
    total_price: Money | None = None
    currency: str | None = None
    line_items: list[_LineItem] = msgspec.field(default_factory=list)
    created_at: str | None = None
    updated_at: str | None = None


class Order(msgspec.Struct):
    """The fields of an order webhook payload the router reads."""

    id: Id | None = None
    name: str | None = None
    email: str | None = None
    contact_email: str | None = None
    customer: _Customer | None = None
    total_price: Money | None = None
    currency: str | None = None
    checkout_token: str | None = None
    created_at: str | None = None


class Customer(msgspec.Struct):
    """The fields of a customer webhook payload the router reads."""

    id: Id | None = None
    email: str | None = None
    created_at: str | None = None


class BadPayload(Exception):
    """A correctly signed body that is not the topic's payload."""


class Answer(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What the webhook answers: the event recorded, a repeat, or a delivery ignored."""

    status: Literal["recorded", "duplicate", "ignored"]
    event_id: UUID | None = None
    reason: str | None = None


class Mapped(msgspec.Struct, kw_only=True):
    name: str
    email: str | None
    properties: dict[str, Any]
    occurred_at: str | None


def _first_email(*candidates: str | None) -> str | None:
    return next((c for c in candidates if c), None)


def _time(*candidates: str | None) -> str | None:
    """Shopify's timestamps carry their offset; one that does not parse or has none is
    left out (the event is then dated when it arrives)."""
    for text in candidates:
        if not text:
            continue
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            continue
        if parsed.tzinfo is not None:
            return text
    return None


def _money(value: Money | None) -> str | None:
    return None if value is None else str(value)


def _without_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _first_items(line_items: list[_LineItem]) -> list[dict[str, Any]]:
    kept: list[dict[str, Any]] = []
    size = 0
    for item in line_items[:MAX_LINE_ITEMS]:
        entry = _without_none({"title": (item.title or "")[:MAX_TITLE], "quantity": item.quantity})
        size += len(msgspec.json.encode(entry)) + 1
        if size > LINE_ITEMS_BYTES:
            break
        kept.append(entry)
    return kept


def map_payload(topic: str, body: bytes) -> Mapped | None:
    """The event a delivery of `topic` makes, or None for a topic the router does not use."""
    try:
        if topic in ("checkouts/create", "checkouts/update"):
            checkout = msgspec.json.decode(body, type=Checkout)
            customer = checkout.customer or _Customer()
            items = _first_items(checkout.line_items)
            return Mapped(
                name="cart_updated",
                email=_first_email(checkout.email, customer.email),
                properties=_without_none(
                    {
                        "cart_url": checkout.abandoned_checkout_url,
                        "token": checkout.token,
                        "total_price": _money(checkout.total_price),
                        "currency": checkout.currency,
                        "line_items": items,
                        "line_item_count": len(checkout.line_items),
                    }
                ),
                occurred_at=_time(checkout.updated_at, checkout.created_at),
            )
        if topic == "orders/create":
            order = msgspec.json.decode(body, type=Order)
            customer = order.customer or _Customer()
            return Mapped(
                name="order_placed",
                email=_first_email(order.email, order.contact_email, customer.email),
                properties=_without_none(
                    {
                        "order_id": None if order.id is None else str(order.id),
                        "order_name": order.name,
                        "total_price": _money(order.total_price),
                        "currency": order.currency,
                        "checkout_token": order.checkout_token,
                    }
                ),
                occurred_at=_time(order.created_at),
            )
        if topic == "customers/create":
            registered = msgspec.json.decode(body, type=Customer)
            return Mapped(
                name="registered",
                email=registered.email,
                properties=_without_none(
                    {"customer_id": None if registered.id is None else str(registered.id)}
                ),
                occurred_at=_time(registered.created_at),
            )
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BadPayload(f"not a Shopify {topic} payload ({exc})") from None
    return None


def _ignore(reason: str) -> Answer:
    ignored[reason] += 1
    log.info("shopify webhook ignored: %s", reason)
    return Answer(status="ignored", reason=reason)


async def receive(conn: Connection, topic: str, webhook_id: str, body: bytes) -> Answer:
    """Record what a verified delivery means, once per webhook id. Raises BadPayload for a
    body that is not the topic's payload, Refused for an event the router refuses."""
    mapped = map_payload(topic, body)
    if mapped is None:
        return _ignore(f"topic {topic}")
    try:
        address = normalize_email(mapped.email) if mapped.email else None
    except InvalidIdentifier:
        address = None
    if address is None:
        return _ignore("no usable email address")
    request = EventRequest(
        email_address=address,
        name=mapped.name,
        properties=mapped.properties,
        occurred_at=mapped.occurred_at,
    )
    async with conn.transaction():
        if not await event_store.take_shopify_webhook(conn, webhook_id, topic):
            return Answer(status="duplicate", reason="this X-Shopify-Webhook-Id was received")
        (result,) = await events.record(conn, [request], source="shopify")
        if result.status != "accepted":
            raise Refused(result)
    return Answer(status="recorded", event_id=result.id)


class Refused(Exception):
    """The event a delivery maps to was refused (its result says why); nothing is stored."""

    def __init__(self, result: EventResult) -> None:
        super().__init__(result.reason)
        self.result = result
