"""Intents over real HTTP: routing plans, idempotency, batches, validation, OpenAPI."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import asyncpg

from router.queue import wakeups
from router.store.deliveries import QUEUE as DELIVERIES
from tests.harness import RouterUnderTest, running_router
from tests.test_api_members import problem

FRIEND = "U" + "c" * 32
MAIL = {"subject": "Sale", "text": "Everything 20% off"}


async def members(r: RouterUnderTest) -> None:
    resp = await r.client.post(
        "/v1/members/batch",
        json={
            "members": [
                {"member_id": "friend", "email": "friend@example.jp", "line_user_id": FRIEND},
                {"member_id": "mail-only", "email": "mail@example.jp"},
                {"member_id": "line-only", "line_user_id": "U" + "d" * 32},
                {
                    "member_id": "opted-out",
                    "email": "out@example.jp",
                    "line_user_id": "U" + "e" * 32,
                    "line_opt_out": True,
                    "email_opt_out": True,
                },
            ]
        },
    )
    assert resp.status_code == 200 and all(
        x["status"] == "created" for x in resp.json()["results"]
    ), resp.text


async def post(r: RouterUnderTest, **intent: Any) -> Any:
    return await r.client.post("/v1/intents", json=intent)


async def test_planned_channels_follow_route_and_reach(router: RouterUnderTest) -> None:
    await members(router)
    cases = [
        ({"member_id": "friend"}, ["line"], "email"),
        ({"member_id": "friend", "route": "both"}, ["line", "email"], None),
        ({"member_id": "friend", "route": "email_only"}, ["email"], None),
        ({"member_id": "friend", "route": "line_only"}, ["line"], None),
        ({"member_id": "mail-only"}, ["email"], None),
        ({"member_id": "mail-only", "route": "both"}, ["email"], None),
        ({"member_id": "line-only"}, ["line"], None),
        ({"email_address": "friend@example.jp"}, ["line"], "email"),  # matched to the member
        ({"email_address": "stranger@example.org"}, ["email"], None),
    ]
    for fields, channels, fallback in cases:
        resp = await post(router, email=MAIL, **fields)
        assert resp.status_code == 202, (fields, resp.text)
        assert resp.json()["channels"] == channels, fields
        assert resp.json().get("fallback") == fallback, fields


async def test_unroutable_intents_are_refused_with_the_reason(router: RouterUnderTest) -> None:
    await members(router)
    body = problem(await post(router, member_id="mail-only", route="line_only", email=MAIL), 422)
    assert "no LINE user ID" in body["detail"]
    body = problem(await post(router, member_id="opted-out", email=MAIL), 422)
    assert "opted out of LINE" in body["detail"] and "opted out of email" in body["detail"]
    body = problem(await post(router, member_id="nobody", email=MAIL), 422)
    assert body["errors"][0]["field"] == "member_id"
    # LINE messages only, for a member without LINE: nothing to send by email
    line_only_content = {"messages": [{"type": "text", "text": "hi"}]}
    body = problem(await post(router, member_id="mail-only", line=line_only_content), 422)
    assert "no email content" in body["detail"]


async def test_content_is_validated_field_by_field(router: RouterUnderTest) -> None:
    await members(router)
    body = problem(await post(router, member_id="friend"), 400)
    assert body["errors"][0]["field"] == "email"
    body = problem(await post(router, member_id="friend", email={"subject": "x"}), 400)
    assert body["errors"][0]["field"] == "email"
    body = problem(
        await post(router, member_id="friend", email={**MAIL, "headers": {"Bcc": "a@b.jp"}}), 400
    )
    assert body["errors"][0]["field"] == "email.headers"
    body = problem(
        await post(router, member_id="friend", email={**MAIL, "subject": "a\r\nBcc: x@y.jp"}), 400
    )
    assert body["errors"][0]["field"] == "email.subject"
    too_long = {"messages": [{"type": "text", "text": "あ" * 5001}]}
    body = problem(await post(router, member_id="friend", email=MAIL, line=too_long), 400)
    assert body["errors"][0]["field"].startswith("line.messages[0]")
    six = {"messages": [{"type": "text", "text": "x"}] * 6}
    body = problem(await post(router, member_id="friend", email=MAIL, line=six), 400)
    assert "line.messages" in body["detail"]
    body = problem(await post(router, member_id="friend", email=MAIL, route="sometimes"), 400)
    assert "route" in body["detail"]
    body = problem(
        await post(router, member_id="friend", email=MAIL, idempotency_key="k" * 256), 400
    )
    assert "idempotency_key" in body["detail"]
    body = problem(await post(router, member_id="friend", email_address="a@b.jp", email=MAIL), 400)
    assert body["errors"][0]["field"] == "member_id"


async def test_idempotency_key_replays_and_conflicts(router: RouterUnderTest) -> None:
    await members(router)
    first = await post(router, member_id="friend", email=MAIL, idempotency_key="order-1")
    assert first.status_code == 202
    again = await post(router, member_id="friend", email=MAIL, idempotency_key="order-1")
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    assert [d["channel"] for d in again.json()["deliveries"]] == ["line"]
    assert again.json()["fallback"] == "email"
    other = await post(
        router, member_id="friend", email={**MAIL, "text": "changed"}, idempotency_key="order-1"
    )
    problem(other, 409)


async def test_batch_mixes_accepted_duplicate_and_rejected(
    router: RouterUnderTest, dsn: str
) -> None:
    await members(router)
    prior = await post(router, member_id="friend", email=MAIL, idempotency_key="k-prior")
    items = [
        {"member_id": "friend", "email": MAIL},
        {"member_id": "friend", "email": MAIL, "idempotency_key": "k-prior"},
        {"member_id": "mail-only", "email": {"subject": "no body"}},
        {"member_id": "mail-only", "route": "line_only", "email": MAIL},
        {"member_id": 42, "email": MAIL},
        {"email_address": "x@example.org", "email": MAIL, "idempotency_key": "k-new"},
        {"email_address": "x@example.org", "email": MAIL, "idempotency_key": "k-new"},
    ]
    resp = await router.client.post("/v1/intents/batch", json={"intents": items})
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert [r["status"] for r in results] == [
        "accepted",
        "duplicate",
        "rejected",
        "rejected",
        "rejected",
        "accepted",
        "duplicate",
    ]
    assert results[1]["id"] == prior.json()["id"]
    assert results[2]["errors"][0]["field"] == "intents[2].email"
    assert results[3]["code"] == 422
    assert results[4]["errors"][0]["field"] == "intents[4].member_id"
    assert results[6]["id"] == results[5]["id"]
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM intents") == 3
        # the same content is stored once however many intents use it
        assert await conn.fetchval("SELECT count(*) FROM contents") == 1
    finally:
        await conn.close()


async def test_batch_limits(router: RouterUnderTest) -> None:
    problem(await router.client.post("/v1/intents/batch", json={"intents": []}), 400)
    problem(await router.client.post("/v1/intents/batch", json={"items": []}), 400)
    too_many = {"intents": [{"email_address": "a@b.jp"}] * 10_001}
    body = problem(await router.client.post("/v1/intents/batch", json=too_many), 400)
    assert "10,000" in body["detail"]


async def test_channels_not_configured(dsn: str) -> None:
    async with running_router(dsn, None, None, ROUTER_API_KEYS="test-api-key") as r:
        await r.client.put("/v1/members/m", json={"email": "m@example.jp"})
        body = problem(await post(r, member_id="m", email=MAIL), 422)
        assert "email is not configured" in body["detail"]


async def test_openapi_schema_describes_the_api(router: RouterUnderTest) -> None:
    resp = await router.client.get("/schema/openapi.json")
    assert resp.status_code == 200
    spec = resp.json()
    paths = spec["paths"]
    for path in (
        "/v1/members/{member_id}",
        "/v1/members/batch",
        "/v1/intents",
        "/v1/intents/batch",
        "/v1/intents/{intent_id}",
        "/healthz",
    ):
        assert path in paths, path
    assert "IntentRequest" in str(paths["/v1/intents"]["post"]["requestBody"])
    assert "IntentRequest" in str(paths["/v1/intents/batch"]["post"]["requestBody"])


async def test_an_accepted_intent_wakes_its_queue_from_the_statement_that_stores_it(
    router: RouterUnderTest, dsn: str
) -> None:
    """The NOTIFY goes with the rows: delivered at their commit, naming the delivery's queue,
    and by then the delivery is there to claim."""
    await members(router)
    conn = await asyncpg.connect(dsn)
    heard: asyncio.Queue[str] = asyncio.Queue()
    try:
        await conn.add_listener(wakeups.CHANNEL, lambda *args: heard.put_nowait(args[3]))
        resp = await post(router, member_id="mail-only", email=MAIL)
        assert resp.status_code == 202, resp.text
        queue = DELIVERIES.queue_name("email")
        while (await asyncio.wait_for(heard.get(), 30)) != queue:
            pass
        stored = await conn.fetchval(
            "SELECT count(*) FROM deliveries WHERE intent_id = $1", UUID(resp.json()["id"])
        )
        assert stored == 1
    finally:
        await conn.close()
