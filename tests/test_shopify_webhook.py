"""The Shopify webhook over real HTTP: the HMAC, repeats, the topic mapping, members by email."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
import pytest

from router.ingress import shopify
from tests.harness import RouterUnderTest, running_router
from tests.test_api_members import problem

SECRET = "shpss_test-webhook-secret"

# Shaped as Shopify's webhook payloads are (only some of their fields).
CHECKOUT = {
    "id": 981820079255243537,
    "token": "123123123",
    "cart_token": "eeafa272cebfd4b22385bc4b645e762c",
    "email": "Hanako@Example.jp",
    "abandoned_checkout_url": "https://checkout.local/548380009/checkouts/123123123/recover?key=example",
    "created_at": "2026-12-01T10:00:00+09:00",
    "updated_at": "2026-12-01T10:05:00+09:00",
    "currency": "JPY",
    "presentment_currency": "JPY",
    "total_price": "5980",
    "line_items": [
        {"title": "Green tea", "quantity": 2, "price": "1990", "sku": "TEA-1"},
        {"title": "Tea cup", "quantity": 1, "price": "2000", "sku": "CUP-1"},
    ],
    "customer": {"id": 603851970716743426, "email": "hanako@example.jp"},
}
ORDER = {
    "id": 820982911946154508,
    "name": "#1001",
    "email": "hanako@example.jp",
    "contact_email": "hanako@example.jp",
    "created_at": "2026-12-01T11:00:00+09:00",
    "currency": "JPY",
    "total_price": "5980",
    "checkout_token": "123123123",
}
CUSTOMER = {
    "id": 706405506930370084,
    "email": "jiro@example.jp",
    "created_at": "2026-12-01T12:00:00+09:00",
}


def signed(body: bytes, topic: str, webhook_id: str, secret: str = SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return {
        "X-Shopify-Hmac-Sha256": base64.b64encode(digest).decode(),
        "X-Shopify-Topic": topic,
        "X-Shopify-Webhook-Id": webhook_id,
        "X-Shopify-Shop-Domain": "example.myshopify.com",
        "Content-Type": "application/json",
    }


@pytest.fixture
async def shop_router(dsn: str) -> AsyncIterator[RouterUnderTest]:
    async with running_router(dsn, None, None, ROUTER_SHOPIFY_WEBHOOK_SECRET=SECRET) as r:
        yield r


async def send(
    r: RouterUnderTest, payload: dict[str, Any], topic: str, webhook_id: str, **kw: str
) -> Any:
    body = msgspec.json.encode(payload)
    # no API key: the HMAC is the credential
    headers = {**signed(body, topic, webhook_id, **kw), "Authorization": ""}
    return await r.client.post("/webhooks/shopify", content=body, headers=headers)


async def events(dsn: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(
            "SELECT e.member_id, e.name, e.properties::text AS properties, e.occurred_at,"
            " e.source, m.email FROM events e JOIN members m USING (member_id) ORDER BY seq"
        )
    finally:
        await conn.close()


async def test_topics_become_events_for_the_member_with_that_email(
    shop_router: RouterUnderTest, dsn: str
) -> None:
    put = await shop_router.client.put("/v1/members/m-7", json={"email": "hanako@example.jp"})
    assert put.status_code == 201
    cart = await send(shop_router, CHECKOUT, "checkouts/create", "wh-1")
    assert cart.status_code == 200, cart.text
    assert cart.json()["status"] == "recorded"
    order = await send(shop_router, ORDER, "orders/create", "wh-2")
    assert order.json()["status"] == "recorded"
    update = await send(
        shop_router, {**CHECKOUT, "total_price": "1990"}, "checkouts/update", "wh-3"
    )
    assert update.json()["status"] == "recorded"
    registered = await send(shop_router, CUSTOMER, "customers/create", "wh-4")
    assert registered.json()["status"] == "recorded"

    stored = await events(dsn)
    assert [(e["member_id"], e["name"]) for e in stored[:3]] == [
        ("m-7", "cart_updated"),
        ("m-7", "order_placed"),
        ("m-7", "cart_updated"),
    ]
    assert {e["source"] for e in stored} == {"shopify"}
    assert msgspec.json.decode(stored[0]["properties"]) == {
        "cart_url": CHECKOUT["abandoned_checkout_url"],
        "token": "123123123",
        "total_price": "5980",
        "currency": "JPY",
        "line_items": [{"title": "Green tea", "quantity": 2}, {"title": "Tea cup", "quantity": 1}],
        "line_item_count": 2,
    }
    assert stored[0]["occurred_at"].isoformat() == "2026-12-01T01:05:00+00:00"  # updated_at
    assert msgspec.json.decode(stored[1]["properties"]) == {
        "order_id": "820982911946154508",
        "order_name": "#1001",
        "total_price": "5980",
        "currency": "JPY",
        "checkout_token": "123123123",
    }
    # an address no member has: an address-only member, made once
    assert stored[3]["name"] == "registered" and stored[3]["email"] == "jiro@example.jp"
    assert stored[3]["member_id"].startswith("email:")
    assert msgspec.json.decode(stored[3]["properties"]) == {"customer_id": "706405506930370084"}
    page = (await shop_router.client.get("/v1/members/m-7/events")).json()
    assert [e["name"] for e in page["events"]] == ["order_placed", "cart_updated", "cart_updated"]


async def test_a_wrong_or_missing_signature_is_401_and_stores_nothing(
    shop_router: RouterUnderTest, dsn: str
) -> None:
    wrong = await send(shop_router, CHECKOUT, "checkouts/create", "wh-1", secret="other")
    assert problem(wrong, 401)["detail"] == "missing or wrong X-Shopify-Hmac-Sha256"
    body = msgspec.json.encode(CHECKOUT)
    headers = signed(body, "checkouts/create", "wh-1")
    tampered = body.replace(b"5980", b"1")
    resp = await shop_router.client.post("/webhooks/shopify", content=tampered, headers=headers)
    problem(resp, 401)
    del headers["X-Shopify-Hmac-Sha256"]
    resp = await shop_router.client.post("/webhooks/shopify", content=body, headers=headers)
    problem(resp, 401)
    assert await events(dsn) == []
    # the same delivery, signed, is then taken: the refusals did not mark its id as seen
    assert (await send(shop_router, CHECKOUT, "checkouts/create", "wh-1")).json()["status"] == (
        "recorded"
    )


async def test_a_replayed_webhook_id_stores_nothing_more_and_a_big_cart_fits(
    shop_router: RouterUnderTest, dsn: str
) -> None:
    first = await send(shop_router, ORDER, "orders/create", "wh-9")
    assert first.json()["status"] == "recorded"
    again = await send(shop_router, ORDER, "orders/create", "wh-9")
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert len(await events(dsn)) == 1
    # 80 items with long Japanese titles: the event keeps what fits in 16 KB, and the count
    items = [{"title": "抹茶" * 200, "quantity": 1} for _ in range(80)]
    big = await send(shop_router, {**CHECKOUT, "line_items": items}, "checkouts/update", "wh-10")
    assert big.json()["status"] == "recorded", big.text
    properties = msgspec.json.decode((await events(dsn))[1]["properties"])
    assert properties["line_item_count"] == 80
    assert 0 < len(properties["line_items"]) < 80
    assert properties["line_items"][0]["title"] == "抹茶" * 50


async def test_other_topics_and_payloads_without_email_are_200_and_ignored(
    shop_router: RouterUnderTest, dsn: str
) -> None:
    before = sum(shopify.ignored.values())
    other = await send(shop_router, {"id": 1, "email": "a@example.jp"}, "products/update", "wh-1")
    assert other.status_code == 200 and other.json()["status"] == "ignored"
    guest = {k: v for k, v in CHECKOUT.items() if k not in ("email", "customer")}
    no_email = await send(shop_router, guest, "checkouts/create", "wh-2")
    assert no_email.status_code == 200 and no_email.json()["status"] == "ignored"
    assert sum(shopify.ignored.values()) == before + 2
    assert await events(dsn) == []
    not_json = b"{not json"
    headers = signed(not_json, "orders/create", "wh-3")
    resp = await shop_router.client.post("/webhooks/shopify", content=not_json, headers=headers)
    assert "orders/create" in problem(resp, 400)["detail"]
    no_id = signed(msgspec.json.encode(ORDER), "orders/create", "")
    resp = await shop_router.client.post(
        "/webhooks/shopify", content=msgspec.json.encode(ORDER), headers=no_id
    )
    assert problem(resp, 400)["errors"][0]["field"] == "X-Shopify-Webhook-Id"


async def test_without_a_secret_the_route_answers_503(router: RouterUnderTest) -> None:
    resp = await send(router, ORDER, "orders/create", "wh-1")
    assert "webhook_secret" in problem(resp, 503)["detail"]
