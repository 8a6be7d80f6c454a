"""Every member that can be created can be read, updated and erased by its id: the member ID
alphabet (router.members) is refused with 400 wherever an id comes in, and a member stored
with an id from before the alphabet is still erasable."""

from __future__ import annotations

from urllib.parse import quote

import asyncpg

from router.members import MAX_MEMBER_ID
from tests.harness import RouterUnderTest
from tests.test_api_members import problem

EMAIL = {"subject": "Autumn sale", "text": "20% off"}
ADDRESSABLE = [
    "a%b",
    "a%2Fb",
    "a?b",
    "a#b",
    "a b",
    "会員 1",
    "Batch",
    "...",
    "x" * MAX_MEMBER_ID,
    "会" * MAX_MEMBER_ID,
]
REFUSED = [
    "a/b",
    "/a",
    "a/",
    "",
    " a",
    "a ",
    "a\n",
    "a\tb",
    "\u3000a",
    ".",
    "..",
    "batch",
    "x" * (MAX_MEMBER_ID + 1),
    "会" * (MAX_MEMBER_ID + 1),
]


def path(member_id: str) -> str:
    return "/v1/members/" + quote(member_id, safe="")


async def test_every_id_that_can_be_created_can_be_read_updated_and_erased(
    router: RouterUnderTest,
) -> None:
    client = router.client
    for member_id in ADDRESSABLE:
        resp = await client.put(path(member_id), json={"email": "taro@example.jp"})
        assert resp.status_code == 201, (member_id, resp.text)
        assert resp.json()["member_id"] == member_id
        resp = await client.put(path(member_id), json={"email_opt_out": True})
        assert resp.status_code == 200, (member_id, resp.text)
        resp = await client.get(path(member_id))
        assert resp.status_code == 200 and resp.json()["member_id"] == member_id
        resp = await client.post("/v1/intents", json={"member_id": member_id, "email": EMAIL})
        assert resp.status_code == 422, resp.text  # opted out: reachable by no channel
        assert (await client.delete(path(member_id))).status_code == 204, member_id
        assert (await client.get(path(member_id))).status_code == 404, member_id

    resp = await client.post(
        "/v1/members/batch", json={"members": [{"member_id": m} for m in ADDRESSABLE]}
    )
    assert [r["status"] for r in resp.json()["results"]] == ["created"] * len(ADDRESSABLE)
    for member_id in ADDRESSABLE:
        assert (await client.delete(path(member_id))).status_code == 204, member_id


async def test_ids_outside_the_alphabet_are_refused_everywhere(router: RouterUnderTest) -> None:
    client = router.client
    resp = await client.post(
        "/v1/members/batch", json={"members": [{"member_id": m} for m in REFUSED]}
    )
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert [r["status"] for r in results] == ["rejected"] * len(REFUSED)
    assert [r["errors"][0]["field"] for r in results] == [
        f"members[{i}].member_id" for i in range(len(REFUSED))
    ]
    assert "no '/'" in results[0]["errors"][0]["message"]

    for member_id in REFUSED:
        body = problem(
            await client.post("/v1/intents", json={"member_id": member_id, "email": EMAIL}), 400
        )
        assert body["errors"][0]["field"] == "member_id", member_id
        body = problem(
            await client.post(
                "/v1/line/link-nonce", json={"member_id": member_id, "link_token": "t"}
            ),
            400,
        )
        assert body["errors"][0]["field"] == "member_id", member_id
        if "/" not in member_id and member_id not in ("", ".", "..", "batch"):
            body = problem(await client.put(path(member_id), json={}), 400)
            assert body["errors"][0]["field"] == "member_id", member_id

    for method in ("GET", "PUT", "DELETE"):
        body = problem(await client.request(method, "/v1/members/a%00b", json={}), 400)
        assert body["errors"][0]["field"] == "member_id"
        # A '/' makes another path: no route, and the answer says how to erase such a member.
        body = problem(await client.request(method, "/v1/members/a%2Fb"), 404)
        assert "DELETE /v1/members?member_id=" in body["detail"]


async def test_a_member_stored_with_an_id_from_before_the_alphabet_is_still_erasable(
    router: RouterUnderTest, dsn: str
) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for member_id in ("a/b", "batch", "/"):
            await conn.execute(
                "INSERT INTO members (member_id, email) VALUES ($1, 'x@example.jp')", member_id
            )
    finally:
        await conn.close()
    for member_id in ("a/b", "batch", "/"):
        resp = await router.client.delete("/v1/members", params={"member_id": member_id})
        assert resp.status_code == 204, resp.text
        resp = await router.client.delete("/v1/members", params={"member_id": member_id})
        problem(resp, 404)
    body = problem(await router.client.delete("/v1/members", params={"member_id": "a\x00"}), 400)
    assert body["errors"][0]["field"] == "member_id"
