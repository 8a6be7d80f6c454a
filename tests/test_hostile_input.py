"""Hostile JSON at every front door: U+0000 (which PostgreSQL cannot store) and deep nesting are
refused with 400 naming the field or the limit, never answered with 500; batch routes reject
only the bad item. Legitimate deep content (a LINE flex message of nested boxes) still passes."""

from __future__ import annotations

from typing import Any

import httpx

from router.api.body_checks import MAX_JSON_DEPTH
from tests.harness import RouterUnderTest
from tests.test_api_members import problem

JSON = {"content-type": "application/json"}
NUL = "contains U+0000"
FRIEND = "U" + "f" * 32
EMAIL = b'{"subject": "Autumn sale", "text": "20% off"}'


async def post(router: RouterUnderTest, path: str, body: bytes) -> httpx.Response:
    return await router.client.post(path, content=body, headers=JSON)


def fields(resp: httpx.Response, status: int = 400) -> dict[str, str]:
    body = problem(resp, status)
    return {e["field"]: e["message"] for e in body["errors"]}


def nested(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


async def test_nul_is_refused_naming_the_field_on_every_route(router: RouterUnderTest) -> None:
    client = router.client
    resp = await client.put(
        "/v1/members/m-1",
        content=b'{"email": "taro@example.jp", "attributes": {"plan": "gold\\u0000"}}',
        headers=JSON,
    )
    assert NUL in fields(resp)["attributes.plan"]
    resp = await client.put(
        "/v1/members/m-1", content=b'{"attributes": {"pl\\u0000an": "gold"}}', headers=JSON
    )
    assert "key " + NUL in fields(resp)["attributes"]
    assert (await client.get("/v1/members/m-1")).status_code == 404  # nothing was written

    cases = {
        b'{"member_id": "m\\u00001", "email": ' + EMAIL + b"}": "member_id",
        b'{"member_id": "m-1", "email": {"subject": "Sale\\u0000", "text": "x"}}': "email.subject",
        b'{"member_id": "m-1", "email": ' + EMAIL + b', "metadata": {"a": ["\\u0000"]}}': (
            "metadata.a[0]"
        ),
        b'{"member_id": "m-1", "email": ' + EMAIL + b', "tags": ["ok", "b\\u0000d"]}': "tags[1]",
        b'{"member_id": "m-1", "email": ' + EMAIL + b', "campaign": "c\\u0000"}': "campaign",
        b'{"member_id": "m-1", "email": ' + EMAIL + b', "idempotency_key": "k\\u0000"}': (
            "idempotency_key"
        ),
    }
    for body, field in cases.items():
        assert NUL in fields(await post(router, "/v1/intents", body))[field], body

    resp = await post(
        router,
        "/v1/campaigns",
        b'{"name": "Sale\\u0000", "audience_ids": ["0190d6a0-0000-7000-8000-000000000000"],'
        b' "email": ' + EMAIL + b"}",
    )
    assert NUL in fields(resp)["name"]
    resp = await post(
        router, "/v1/line/link-nonce", b'{"member_id": "m-1", "link_token": "t\\u0000"}'
    )
    assert NUL in fields(resp)["link_token"]
    resp = await post(
        router,
        "/v1/compat/listmonk",
        b'{"subject": "Sale", "body": "20%\\u0000 off", "content_type": "plain",'
        b' "recipients": [{"uuid": "u-1", "email": "taro@example.jp"}]}',
    )
    assert NUL in fields(resp)["body"]


async def test_nul_in_a_batch_rejects_that_item_only(router: RouterUnderTest) -> None:
    resp = await post(
        router,
        "/v1/members/batch",
        b'{"members": [{"member_id": "ok", "email": "taro@example.jp"},'
        b' {"member_id": "bad", "attributes": {"city": "To\\u0000kyo"}}]}',
    )
    assert resp.status_code == 200, resp.text
    ok, bad = resp.json()["results"]
    assert ok["status"] == "created" and bad["status"] == "rejected"
    assert bad["errors"][0]["field"] == "members[1].attributes.city"

    resp = await post(
        router,
        "/v1/intents/batch",
        b'{"intents": [{"member_id": "ok", "email": ' + EMAIL + b"},"
        b' {"member_id": "ok", "email": {"subject": "S\\u0000", "text": "x"}}]}',
    )
    assert resp.status_code == 200, resp.text
    accepted, rejected = resp.json()["results"]
    assert accepted["status"] == "accepted"
    assert rejected["status"] == "rejected" and rejected["code"] == 400
    assert rejected["errors"][0]["field"] == "intents[1].email.subject"


async def test_nul_on_sendgrid_gets_sendgrids_error_shape(router: RouterUnderTest) -> None:
    mail: dict[str, Any] = {
        "personalizations": [{"to": [{"email": "taro@example.jp"}], "subject": "Sale\u0000"}],
        "from": {"email": "news@shop.example.jp"},
        "content": [{"type": "text/plain", "value": "20% off"}],
    }
    resp = await router.client.post("/v3/mail/send", json=mail)
    assert resp.status_code == 400, resp.text
    (error,) = resp.json()["errors"]
    assert error["field"] == "personalizations.0.subject" and NUL in error["message"]


async def test_deep_nesting_is_refused_with_the_limit_on_every_front_door(
    router: RouterUnderTest,
) -> None:
    limit = f"deeper than {MAX_JSON_DEPTH} levels"
    deep = nested(990)
    bodies = {
        "/v1/intents": b'{"member_id": "m-1", "email": ' + EMAIL + b', "metadata": ' + deep + b"}",
        "/v1/compat/listmonk": b'{"body": "x", "recipients": [{"uuid": "u", '
        b'"email": "taro@example.jp", "attribs": {"a": ' + deep + b"}}]}",
        "/v1/campaigns": b'{"audience_ids": [], "tags": ' + deep + b"}",
        "/webhooks/line": b'{"destination": "U1", "events": ' + deep + b"}",
        "/v1/members/batch": b'{"members": ' + nested(100_000) + b"}",
    }
    for path, body in bodies.items():
        resp = await post(router, path, body)
        assert limit in problem(resp, 400)["detail"], path
    resp = await router.client.put(
        "/v1/members/m-1", content=b'{"attributes": {"a": ' + deep + b"}}", headers=JSON
    )
    assert limit in problem(resp, 400)["detail"]
    resp = await post(
        router,
        "/v3/mail/send",
        b'{"personalizations": [{"to": [{"email": "taro@example.jp"}],'
        b' "dynamic_template_data": ' + deep + b"}]}",
    )
    assert resp.status_code == 400 and limit in resp.json()["errors"][0]["message"]

    # In a batch only the deep item is rejected (a body too deep to split into items at all is
    # refused whole, as above); brackets inside strings do not count.
    await router.client.put("/v1/members/m-1", json={"email": "taro@example.jp"})
    resp = await post(
        router,
        "/v1/intents/batch",
        b'{"intents": [{"member_id": "m-1", "email": '
        + EMAIL
        + b', "metadata": {"s": "'
        + b"[" * 500
        + b'"}}, {"member_id": "m-1", "email": '
        + EMAIL
        + b', "metadata": '
        + nested(200)
        + b"}]}",
    )
    assert resp.status_code == 200, resp.text
    accepted, rejected = resp.json()["results"]
    assert accepted["status"] == "accepted"
    assert rejected["errors"][0]["field"] == "intents[1]" and limit in rejected["reason"]


async def test_the_depth_limit_is_exact_and_deep_flex_messages_pass(
    router: RouterUnderTest,
) -> None:
    await router.client.put("/v1/members/m-1", json={"email": "taro@example.jp"})
    await router.client.put("/v1/members/friend", json={"line_user_id": FRIEND})

    def intent(metadata_levels: int) -> bytes:
        # The body object and metadata's are two levels; the arrays in it add the rest.
        return (
            b'{"member_id": "m-1", "email": ' + EMAIL + b', "metadata": {"a": '
            b"" + nested(metadata_levels) + b"}}"
        )

    resp = await post(router, "/v1/intents", intent(MAX_JSON_DEPTH - 2))
    assert resp.status_code == 202, resp.text
    resp = await post(router, "/v1/intents", intent(MAX_JSON_DEPTH - 1))
    problem(resp, 400)

    box: dict[str, Any] = {"type": "text", "text": "20% off until Sunday"}
    for _ in range(12):
        box = {"type": "box", "layout": "vertical", "contents": [box]}
    flex = {
        "type": "flex",
        "altText": "Autumn sale",
        "contents": {
            "type": "carousel",
            "contents": [{"type": "bubble", "body": box}, {"type": "bubble", "body": box}],
        },
    }
    resp = await router.client.post(
        "/v1/intents/batch",
        json={
            "intents": [{"member_id": "friend", "route": "line_only", "line": {"messages": [flex]}}]
        },
    )
    assert resp.status_code == 200, resp.text
    (result,) = resp.json()["results"]
    assert result["status"] == "accepted", result
    await router.wait_for(result["id"])


async def test_a_quick_reply_action_type_that_is_not_text_is_a_400_not_a_500(
    router: RouterUnderTest,
) -> None:
    await router.client.put("/v1/members/qr", json={"line_user_id": FRIEND})
    for kind in ([], {}, ["message"], 7):
        body = {
            "member_id": "qr",
            "line": {
                "messages": [
                    {
                        "type": "text",
                        "text": "hi",
                        "quickReply": {"items": [{"type": "action", "action": {"type": kind}}]},
                    }
                ]
            },
        }
        resp = await router.client.post("/v1/intents", json=body)
        assert resp.status_code == 400, (kind, resp.text)
        assert any("quickReply.items[0].action" in field for field in fields(resp)), resp.text
