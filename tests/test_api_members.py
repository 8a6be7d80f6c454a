"""Members over real HTTP: validation, partial updates, erasure, batches, auth, limits."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx

from tests.harness import RouterUnderTest

FRIEND = "U" + "b" * 32


def problem(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = resp.json()
    assert body["status"] == status and body["title"]
    return body


async def test_put_creates_then_updates_and_normalises(router: RouterUnderTest) -> None:
    resp = await router.client.put(
        "/v1/members/m-1",
        json={
            "email": " Taro@Example.JP ",
            "phone": "090-1234-5678",
            "attributes": {"plan": "gold"},
        },
    )
    assert resp.status_code == 201, resp.text
    created = resp.json()
    assert created["email"] == "Taro@example.jp"
    assert created["phone"] == "+819012345678"
    assert created["line_friend"] is False and created["attributes"] == {"plan": "gold"}

    resp = await router.client.put("/v1/members/m-1", json={"line_user_id": FRIEND})
    assert resp.status_code == 200
    updated = resp.json()
    # absent fields keep their values; a new LINE user ID implies friendship
    assert updated["email"] == "Taro@example.jp" and updated["phone"] == "+819012345678"
    assert updated["line_user_id"] == FRIEND and updated["line_friend"] is True

    resp = await router.client.put("/v1/members/m-1", json={"phone": None, "line_opt_out": True})
    got = (await router.client.get("/v1/members/m-1")).json()
    assert (
        got["phone"] is None and got["line_opt_out"] is True and got["email"] == "Taro@example.jp"
    )


async def test_invalid_fields_are_named(router: RouterUnderTest) -> None:
    resp = await router.client.put(
        "/v1/members/m-2",
        json={"email": "not-an-address", "phone": "12", "line_user_id": "Uxyz"},
    )
    body = problem(resp, 400)
    assert {e["field"] for e in body["errors"]} == {"email", "phone", "line_user_id"}
    assert (await router.client.get("/v1/members/m-2")).status_code == 404

    resp = await router.client.put("/v1/members/m-2", json={"line_friend": "yes"})
    body = problem(resp, 400)
    assert "line_friend" in body["detail"]

    resp = await router.client.put("/v1/members/m-2", json={"nickname": "x"})
    body = problem(resp, 400)
    assert "nickname" in body["detail"]


async def test_line_user_id_belongs_to_one_member(router: RouterUnderTest) -> None:
    await router.client.put("/v1/members/a", json={"line_user_id": FRIEND})
    resp = await router.client.put("/v1/members/b", json={"line_user_id": FRIEND})
    body = problem(resp, 409)
    assert body["errors"][0]["field"] == "line_user_id"


async def test_delete_erases_member_and_their_intents(router: RouterUnderTest, dsn: str) -> None:
    await router.client.put("/v1/members/gone", json={"email": "gone@example.jp"})
    resp = await router.client.post(
        "/v1/intents",
        json={"member_id": "gone", "email": {"subject": "Only for you", "text": "hello"}},
    )
    assert resp.status_code == 202
    assert (await router.client.delete("/v1/members/gone")).status_code == 204
    assert (await router.client.get("/v1/members/gone")).status_code == 404
    assert (await router.client.get(f"/v1/intents/{resp.json()['id']}")).status_code == 404
    conn = await asyncpg.connect(dsn)
    try:
        for table in ("members", "intents", "deliveries", "contents"):
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0, table
    finally:
        await conn.close()
    assert (await router.client.delete("/v1/members/gone")).status_code == 404


async def test_batch_reports_each_item(router: RouterUnderTest) -> None:
    await router.client.put("/v1/members/old", json={"email": "old@example.jp"})
    resp = await router.client.post(
        "/v1/members/batch",
        json={
            "members": [
                {"member_id": "new", "email": "new@example.jp"},
                {"member_id": "old", "line_opt_out": True},
                {"member_id": "bad", "email": "nope"},
                {"member_id": "typed", "email_opt_out": "sometimes"},
                {"member_id": "new", "email": "again@example.jp"},
                {"email": "no-id@example.jp"},
            ]
        },
    )
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert [r["status"] for r in results] == [
        "created",
        "updated",
        "rejected",
        "rejected",
        "rejected",
        "rejected",
    ]
    assert results[2]["errors"][0]["field"] == "members[2].email"
    assert results[3]["errors"][0]["field"] == "members[3].email_opt_out"
    assert "earlier" in results[4]["errors"][0]["message"]
    assert "member_id" in results[5]["errors"][0]["message"]
    old = (await router.client.get("/v1/members/old")).json()
    assert old["line_opt_out"] is True and old["email"] == "old@example.jp"


async def test_missing_or_wrong_key_gets_401_and_touches_nothing(router: RouterUnderTest) -> None:
    async with httpx.AsyncClient(base_url=router.base_url) as anonymous:
        resp = await anonymous.put("/v1/members/x", json={"email": "x@example.jp"})
        problem(resp, 401)
        assert resp.headers["www-authenticate"].startswith("Bearer")
        resp = await anonymous.put(
            "/v1/members/x",
            json={"email": "x@example.jp"},
            headers={"Authorization": "Bearer wrong"},
        )
        problem(resp, 401)
        assert (await anonymous.get("/healthz")).status_code == 200
    assert (await router.client.get("/v1/members/x")).status_code == 404


async def test_bad_json_and_oversized_bodies(router: RouterUnderTest) -> None:
    resp = await router.client.put(
        "/v1/members/x", content=b'{"email": ', headers={"content-type": "application/json"}
    )
    problem(resp, 400)
    resp = await router.client.post(
        "/v1/members/batch", content=b"[1, 2", headers={"content-type": "application/json"}
    )
    problem(resp, 400)
    big = b'{"members": [' + b" " * 10_000_001 + b"]}"
    resp = await router.client.post(
        "/v1/members/batch", content=big, headers={"content-type": "application/json"}
    )
    problem(resp, 413)
