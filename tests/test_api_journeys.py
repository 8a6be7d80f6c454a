"""Journey definitions over real HTTP on real PostgreSQL: versions, validation errors naming
step and field, pause/resume, delete and revival, and the files read when the router starts."""

from __future__ import annotations

import shutil
from pathlib import Path

import asyncpg

from tests.harness import RouterUnderTest, running_router
from tests.test_api_members import problem

ROOT = Path(__file__).resolve().parent.parent
CART = {
    "name": "Cart abandonment",
    "trigger": {"event": "cart_updated"},
    "exit_on": ["order_placed"],
    "quiet_hours": {"start": "21:00", "end": "08:00", "time_zone": "Asia/Tokyo"},
    "steps": [
        {"wait": "PT1H"},
        {
            "send": {
                "route": "prefer_line",
                "kind": "promotional",
                "email": {
                    "subject": "Items are waiting in your cart",
                    "text": "{{ event.cart_url }}",
                },
            }
        },
        {"wait": "P1D"},
        {"send": {"email": {"subject": "Still thinking?", "text": "{{ event.cart_url }}"}}},
    ],
}


async def test_put_creates_then_versions_only_what_changed(router: RouterUnderTest) -> None:
    client = router.client
    created = await client.put("/v1/journeys/cart", json=CART)
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["id"], body["version"], body["source"]) == ("cart", 1, "api")
    assert (body["enabled"], body["paused"], body["deleted"]) == (True, False, False)
    assert body["definition"]["steps"][0] == {"wait": "PT1H"}

    # the same definition, keys in another order and a default spelled out: same version
    same = {**dict(reversed(CART.items())), "reentry": "after_exit"}
    again = await client.put("/v1/journeys/cart", json=same)
    assert again.status_code == 200, again.text
    assert again.json()["version"] == 1

    changed = {**CART, "steps": [*CART["steps"], {"exit": "done"}]}
    second = await client.put("/v1/journeys/cart", json=changed)
    assert second.status_code == 200, second.text
    assert second.json()["version"] == 2
    assert second.json()["created_at"] == body["created_at"]

    current = (await client.get("/v1/journeys/cart")).json()
    assert current["version"] == 2 and current["definition"]["steps"][-1] == {"exit": "done"}
    first = await client.get("/v1/journeys/cart", params={"version": 1})
    assert first.status_code == 200
    assert first.json()["definition"]["steps"][-1] == CART["steps"][-1]
    problem(await client.get("/v1/journeys/cart", params={"version": 3}), 404)
    problem(await client.get("/v1/journeys/nothing"), 404)
    problem(await client.get("/v1/journeys/Not_An_Id"), 400)


async def test_an_invalid_journey_is_400_naming_each_step_and_field(
    router: RouterUnderTest,
) -> None:
    bad = {
        **CART,
        "exit_on": ["cart_updated"],
        "steps": [
            {"wait": "PT0.5S"},
            {"send": {"email": {"subject": "S", "text": "{{ event.cart_url }"}}},
            {"if": {"event_since_entry": "order_placed"}, "then": [{"wait": "PT0S"}]},
        ],
    }
    body = problem(await router.client.put("/v1/journeys/cart", json=bad), 400)
    fields = [e["field"] for e in body["errors"]]
    assert fields == [
        "trigger.event",
        "steps[0].wait",
        "steps[1].send.email.text",
        "steps[2].then[0].wait",
    ]
    assert body["detail"].startswith("trigger.event: 'cart_updated' is also in exit_on")
    assert body["errors"][2]["message"].startswith("template line 1:")
    # an unknown step kind is refused by shape, naming the step
    unknown = {**CART, "steps": [{"wiat": "PT1H"}]}
    body = problem(await router.client.put("/v1/journeys/cart", json=unknown), 400)
    assert "wiat" in body["detail"] and "steps[0]" in body["detail"]
    problem(await router.client.get("/v1/journeys/cart"), 404)  # nothing was stored


async def test_pause_resume_delete_and_revive(router: RouterUnderTest) -> None:
    client = router.client
    problem(await client.post("/v1/journeys/cart/pause"), 404)
    assert (await client.put("/v1/journeys/cart", json=CART)).status_code == 201
    other = {**CART, "name": "Other"}
    assert (await client.put("/v1/journeys/other", json=other)).status_code == 201

    paused = await client.post("/v1/journeys/cart/pause")
    assert paused.status_code == 200 and paused.json()["paused"] is True
    assert (await client.get("/v1/journeys/cart")).json()["paused"] is True
    resumed = await client.post("/v1/journeys/cart/resume")
    assert resumed.status_code == 200 and resumed.json()["paused"] is False

    listed = (await client.get("/v1/journeys")).json()["journeys"]
    assert [j["id"] for j in listed] == ["cart", "other"]

    assert (await client.delete("/v1/journeys/cart")).status_code == 204
    problem(await client.delete("/v1/journeys/cart"), 404)
    problem(await client.post("/v1/journeys/cart/pause"), 404)
    gone = (await client.get("/v1/journeys/cart")).json()
    assert gone["deleted"] is True and gone["version"] == 1
    assert [j["id"] for j in (await client.get("/v1/journeys")).json()["journeys"]] == ["other"]

    # the same definition again revives it, as a new version
    revived = await client.put("/v1/journeys/cart", json=CART)
    assert revived.status_code == 200, revived.text
    assert (revived.json()["version"], revived.json()["deleted"]) == (2, False)


async def test_journey_files_are_saved_at_start_as_new_versions_when_changed(
    dsn: str, tmp_path: Path
) -> None:
    directory = tmp_path / "journeys"
    shutil.copytree(ROOT / "config" / "journeys", directory)
    env = {"ROUTER_JOURNEYS_DIRECTORY": str(directory)}
    async with running_router(dsn, None, None, **env) as router:
        listed = (await router.client.get("/v1/journeys")).json()["journeys"]
    assert [(j["id"], j["version"], j["enabled"]) for j in listed] == [
        ("cart-abandonment", 1, False),
        ("coupon-after-registration", 1, False),
        ("trial-follow-up", 1, False),
    ]
    cart = directory / "cart-abandonment.toml"
    assert listed[0]["source"] == str(cart)

    cart.write_text(cart.read_text().replace("enabled = false", "enabled = true"))
    async with running_router(dsn, None, None, **env) as router:
        listed = (await router.client.get("/v1/journeys")).json()["journeys"]
    assert [(j["id"], j["version"], j["enabled"]) for j in listed] == [
        ("cart-abandonment", 2, True),
        ("coupon-after-registration", 1, False),
        ("trial-follow-up", 1, False),
    ]
    conn = await asyncpg.connect(dsn)
    try:
        versions = await conn.fetchval("SELECT count(*) FROM journey_versions")
    finally:
        await conn.close()
    assert versions == 4
