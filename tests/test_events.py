"""Events in over real HTTP: one and a batch, idempotency, members by address, the limits,
the journeys woken in the same transaction, reading a member's events, erasure."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from router.queue.wakeups import CHANNEL
from tests.harness import RouterUnderTest, running_router
from tests.test_api_members import problem


@pytest.fixture
async def events_router(dsn: str) -> AsyncIterator[RouterUnderTest]:
    """Events need no channel: the router with neither LINE nor email."""
    async with running_router(dsn, None, None) as r:
        resp = await r.client.put("/v1/members/m-1", json={"email": "taro@example.jp"})
        assert resp.status_code == 201, resp.text
        yield r


async def rows(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def test_one_event_is_recorded_and_wakes_the_journeys(
    events_router: RouterUnderTest, dsn: str
) -> None:
    woken: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(dsn)
    await listener.add_listener(CHANNEL, lambda *args: woken.put_nowait(args[3]))
    try:
        resp = await events_router.client.post(
            "/v1/events",
            json={
                "member_id": "m-1",
                "name": "trial_started",
                "properties": {"plan": "basic", "trial_ends_at": "2026-12-15"},
                "occurred_at": "2026-12-01T09:00:00+09:00",
            },
        )
        assert resp.status_code == 202, resp.text
        body = resp.json()
        assert body["status"] == "accepted" and body["code"] == 202
        assert await asyncio.wait_for(woken.get(), 5) == "journey_events"
    finally:
        await listener.close()
    (row,) = await rows(
        dsn,
        "SELECT id::text, member_id, name, properties::text, occurred_at, source, handled_at"
        " FROM events",
    )
    assert row["id"] == body["id"] and row["member_id"] == "m-1"
    assert row["name"] == "trial_started" and row["source"] == "api"
    assert row["properties"] == '{"plan": "basic", "trial_ends_at": "2026-12-15"}'
    assert row["occurred_at"].isoformat() == "2026-12-01T00:00:00+00:00"
    # The wake-up reaches the journeys' queue, which takes the event (no journey starts on it).
    deadline = asyncio.get_running_loop().time() + 10
    while (await rows(dsn, "SELECT handled_at FROM events"))[0]["handled_at"] is None:
        assert asyncio.get_running_loop().time() < deadline, "the journeys never took the event"
        await asyncio.sleep(0.05)


async def test_bad_fields_are_400_naming_the_field(
    events_router: RouterUnderTest, dsn: str
) -> None:
    post = events_router.client.post
    cases: list[tuple[dict[str, Any], str]] = [
        ({"member_id": "m-1", "name": "router:line_follow"}, "name"),
        ({"member_id": "m-1", "name": "Cart Updated"}, "name"),
        ({"member_id": "m-1", "name": "x" * 65}, "name"),
        ({"member_id": "m-1", "name": "a", "occurred_at": "2026-12-01T09:00:00"}, "occurred_at"),
        ({"member_id": "m-1", "name": "a", "occurred_at": "2026-12-01"}, "occurred_at"),
        ({"member_id": "m-1", "name": "a", "occurred_at": 1764547200}, "occurred_at"),
        ({"member_id": "m-1", "name": "a", "properties": [1]}, "properties"),
        ({"member_id": "m-1", "email_address": "taro@example.jp", "name": "a"}, "member_id"),
        ({"name": "a"}, "member_id"),
        ({"email_address": "not an address", "name": "a"}, "email_address"),
    ]
    for event, field in cases:
        body = problem(await post("/v1/events", json=event), 400)
        assert [e["field"] for e in body["errors"]] == [field], (event, body)
    unknown = {"member_id": "m-1", "name": "a", "colour": "red"}
    assert "`colour`" in problem(await post("/v1/events", json=unknown), 400)["detail"]
    reserved = problem(await post("/v1/events", json=cases[0][0]), 400)
    assert "reserved" in reserved["detail"]
    assert await rows(dsn, "SELECT 1 FROM events") == []


async def test_properties_up_to_16_kb(events_router: RouterUnderTest) -> None:
    # {"k":"..."}: 8 bytes around the value
    fits = {"member_id": "m-1", "name": "big", "properties": {"k": "x" * (16 * 1024 - 8)}}
    assert (await events_router.client.post("/v1/events", json=fits)).status_code == 202
    over = {"member_id": "m-1", "name": "big", "properties": {"k": "x" * (16 * 1024 - 7)}}
    body = problem(await events_router.client.post("/v1/events", json=over), 400)
    assert body["errors"] == [
        {"field": "properties", "message": "16,385 bytes encoded; at most 16,384"}
    ]


async def test_idempotency_same_body_same_event_other_body_409(
    events_router: RouterUnderTest,
    dsn: str,
) -> None:
    event = {"member_id": "m-1", "name": "order_placed", "idempotency_key": "order-1001"}
    first = await events_router.client.post("/v1/events", json=event)
    assert first.status_code == 202
    again = await events_router.client.post("/v1/events", json=event)
    assert again.status_code == 200
    assert again.json() == {"status": "duplicate", "code": 200, "id": first.json()["id"]}
    other = {**event, "properties": {"total": "100"}}
    body = problem(await events_router.client.post("/v1/events", json=other), 409)
    assert "different request" in body["detail"]
    stored = await rows(dsn, "SELECT id::text FROM events")
    assert [r["id"] for r in stored] == [first.json()["id"]]
    # the same new key from two requests at once: one event, the other told it is a duplicate
    racing = {"member_id": "m-1", "name": "order_placed", "idempotency_key": "order-1002"}
    answers = await asyncio.gather(
        *(events_router.client.post("/v1/events", json=racing) for _ in range(4))
    )
    assert sorted(a.status_code for a in answers) == [200, 200, 200, 202]
    assert len({a.json()["id"] for a in answers}) == 1


async def test_unknown_member_id_is_422_and_an_unknown_address_becomes_a_member(
    events_router: RouterUnderTest,
    dsn: str,
) -> None:
    post = events_router.client.post
    body = problem(await post("/v1/events", json={"member_id": "nobody", "name": "a"}), 422)
    assert body["errors"] == [{"field": "member_id", "message": "no member with this id"}]
    # a known address is its member; a new one (twice) is one address-only member
    known = await post("/v1/events", json={"email_address": "TARO@example.jp", "name": "a"})
    new1 = await post("/v1/events", json={"email_address": "Hanako@Example.jp", "name": "a"})
    new2 = await post("/v1/events", json={"email_address": "hanako@example.jp", "name": "b"})
    assert {known.status_code, new1.status_code, new2.status_code} == {202}
    stored = await rows(dsn, "SELECT id::text, member_id FROM events ORDER BY seq")
    assert stored[0]["member_id"] == "m-1"
    assert stored[1]["member_id"] == stored[2]["member_id"]
    address_only = stored[1]["member_id"]
    assert address_only.startswith("email:") and "hanako" not in address_only
    member = (await events_router.client.get(f"/v1/members/{address_only}")).json()
    assert member["email"] == "Hanako@example.jp"
    assert (member["line_user_id"], member["email_opt_out"]) == (None, False)


async def test_a_batch_answers_each_item_as_the_intent_batch_does(
    events_router: RouterUnderTest,
    dsn: str,
) -> None:
    resp = await events_router.client.post(
        "/v1/events/batch",
        json={
            "events": [
                {"member_id": "m-1", "name": "viewed", "idempotency_key": "k1"},
                {"member_id": "ghost", "name": "viewed"},
                {"member_id": "m-1", "name": "router:attribute_set"},
                {"member_id": "m-1", "name": "viewed", "idempotency_key": "k1"},
                {"member_id": "m-1", "name": "other", "idempotency_key": "k1"},
                {"email_address": "new@example.jp", "name": "viewed"},
                {"member_id": "m-1", "name": "viewed", "occurred_at": "yesterday"},
            ]
        },
    )
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert [(r["status"], r["code"]) for r in results] == [
        ("accepted", 202),
        ("rejected", 422),
        ("rejected", 400),
        ("duplicate", 200),
        ("rejected", 409),
        ("accepted", 202),
        ("rejected", 400),
    ]
    assert results[3]["id"] == results[0]["id"]
    assert results[1]["errors"] == [
        {"field": "events[1].member_id", "message": "no member with this id"}
    ]
    assert results[2]["errors"][0]["field"] == "events[2].name"
    assert results[6]["errors"][0]["field"] == "events[6].occurred_at"
    stored = await rows(dsn, "SELECT id::text FROM events")
    assert {r["id"] for r in stored} == {results[0]["id"], results[5]["id"]}
    # a repeat of the whole batch records nothing new for the keyed item
    again = await events_router.client.post(
        "/v1/events/batch",
        json={"events": [{"member_id": "m-1", "name": "viewed", "idempotency_key": "k1"}]},
    )
    assert again.json()["results"] == [{"status": "duplicate", "code": 200, "id": results[0]["id"]}]


async def test_a_batch_of_many_resolves_members_at_once(
    events_router: RouterUnderTest, dsn: str
) -> None:
    items = [
        {"email_address": f"shopper{i % 500}@example.jp", "name": "viewed", "properties": {"i": i}}
        for i in range(2_000)
    ]
    resp = await events_router.client.post("/v1/events/batch", json={"events": items})
    assert resp.status_code == 200
    assert {r["status"] for r in resp.json()["results"]} == {"accepted"}
    (counts,) = await rows(
        dsn, "SELECT count(*) AS events, count(DISTINCT member_id) AS members FROM events"
    )
    assert (counts["events"], counts["members"]) == (2_000, 500)
    too_many = {"events": [{"member_id": "m-1", "name": "a"}] * 10_001}
    body = problem(await events_router.client.post("/v1/events/batch", json=too_many), 400)
    assert "at most 10,000" in body["detail"]


async def test_a_member_s_events_newest_first_in_pages_and_erased_with_them(
    events_router: RouterUnderTest,
    dsn: str,
) -> None:
    client = events_router.client
    items = [
        {"member_id": "m-1", "name": f"step_{d}", "occurred_at": f"2026-11-{d:02d}T12:00:00Z"}
        for d in (3, 1, 4, 2, 5)
    ]
    assert (await client.post("/v1/events/batch", json={"events": items})).status_code == 200
    first = (await client.get("/v1/members/m-1/events", params={"limit": 2})).json()
    assert [e["name"] for e in first["events"]] == ["step_5", "step_4"]
    assert first["events"][0]["occurred_at"] == "2026-11-05T12:00:00Z"
    second = (
        await client.get(
            "/v1/members/m-1/events", params={"limit": 2, "before": first["next_before"]}
        )
    ).json()
    assert [e["name"] for e in second["events"]] == ["step_3", "step_2"]
    last = (
        await client.get(
            "/v1/members/m-1/events", params={"limit": 2, "before": second["next_before"]}
        )
    ).json()
    assert [e["name"] for e in last["events"]] == ["step_1"] and "next_before" not in last
    problem(await client.get("/v1/members/nobody/events"), 404)
    problem(await client.get("/v1/members/m-1/events", params={"limit": 0}), 400)
    stranger = "0190c6c4-7c6a-7000-8000-000000000001"
    problem(await client.get("/v1/members/m-1/events", params={"before": stranger}), 422)

    assert (await client.delete("/v1/members/m-1")).status_code == 204
    assert await rows(dsn, "SELECT 1 FROM events WHERE member_id = 'm-1'") == []
    problem(await client.get("/v1/members/m-1/events"), 404)


async def test_the_document_states_the_event_rules(events_router: RouterUnderTest) -> None:
    spec = (await events_router.client.get("/schema/openapi.json")).json()
    fields = spec["components"]["schemas"]["EventRequest"]["properties"]
    assert fields["name"]["pattern"] == "^(?!router:)[a-z0-9_.:-]{1,64}$"
    assert "date-time" in str(fields["occurred_at"]), fields["occurred_at"]
    assert spec["components"]["schemas"]["EventRequest"]["additionalProperties"] is False
    assert spec["paths"]["/webhooks/shopify"]["post"]["security"] == []
