"""The dashboard's members pages over plain HTTP: search by ID, email, phone and LINE user ID
(normalised as the API normalises them), and one member's facts and history after real sends."""

from __future__ import annotations

import re
from typing import Any

from router.store import category_opt_outs
from tests.harness import RouterUnderTest, SmtpSink
from tests.test_ui_overview import send_three
from tests.test_ui_session import anonymous, signed_in

HANAKO_LINE = "U" + "a" * 31 + "7"


def fact(html: str, name: str) -> str:
    match = re.search(rf'data-fact="{name}">(.*?)</dd>', html, re.S)
    assert match is not None, f"no fact {name}"
    return re.sub(r"\s+", " ", match.group(1)).strip()


def found_ids(html: str) -> list[str]:
    return re.findall(r'<a href="/ui/members/[^"]+">([^<]+)</a>', html)


async def test_member_search_and_page(
    router: RouterUnderTest, line_sim: Any, smtp: SmtpSink
) -> None:
    await send_three(router, line_sim)
    resp = await router.client.put(
        "/v1/members/hanako",
        json={
            "email": "Hanako@Example.JP",
            "phone": "090-1234-5678",
            "line_user_id": HANAKO_LINE,
            "email_consent": {
                "granted_at": "2026-04-01T10:00:00+09:00",
                "source": "signup form",
                "evidence": "form rev 12",
            },
        },
    )
    assert resp.status_code == 201, resp.text
    resp = await router.client.post(
        "/v1/suppressions",
        json={"suppressions": [{"address": "Hanako@example.jp", "detail": "asked by phone"}]},
    )
    assert resp.status_code in (200, 201), resp.text
    async with router.runtime.pool.acquire() as conn:
        await category_opt_outs.add(conn, "hanako", "weekly-news")
    resp = await router.client.post(
        "/v1/events", json={"member_id": "hanako", "name": "order.placed", "properties": {"n": 1}}
    )
    assert resp.status_code == 202, resp.text
    intents = []
    for _ in range(21):  # one more than a page of history
        resp = await router.client.post(
            "/v1/intents",
            json={
                "member_id": "hanako",
                "route": "line_only",
                "email": {"subject": "s", "text": "t"},
            },
        )
        assert resp.status_code == 202, resp.text
        intents.append(resp.json()["id"])

    async with anonymous(router) as client:
        await signed_in(client)
        for q in ("hanako", "  hanako@EXAMPLE.jp ", "+81 90 1234 5678", "09012345678", HANAKO_LINE):
            page = await client.get("/ui/members", params={"q": q})
            assert page.status_code == 200
            assert found_ids(page.text) == ["hanako"], q
        none = await client.get("/ui/members", params={"q": "nobody@example.jp"})
        assert found_ids(none.text) == [] and 'id="members-none"' in none.text
        odd = await client.get("/ui/members", params={"q": "12"})
        assert "not searched as a phone number" in odd.text
        plain = await client.get("/ui/members", params={"q": "member-12"})
        assert "not searched as" not in plain.text and found_ids(plain.text) == []

        page = await client.get("/ui/members/hanako")
        assert page.status_code == 200
        html = page.text
        channels = dict(
            re.findall(
                r'<tr data-channel="([a-z_]+)">.*?data-figure="reachable">(\w+)<', html, re.S
            )
        )
        assert channels == {"line": "yes", "email": "no"}
        assert "address suppressed: manual" in html
        assert fact(html, "line_user_id") == HANAKO_LINE
        assert fact(html, "linked_by").startswith("the members API")
        assert fact(html, "friend").startswith("yes")
        assert fact(html, "categories").startswith("weekly-news (since ")
        assert fact(html, "consent").startswith("given 2026-04-01T10:00:00+09:00 via signup form")
        assert fact(html, "suppression").startswith("manual: asked by phone")
        assert "order.placed" in html and "&#34;n&#34;: 1" in html
        shown = re.findall(r'<tr data-intent="([0-9a-f-]+)">', html)
        assert shown == intents[::-1][:20]
        assert f'href="/ui/intents/{intents[-1]}"' in html
        older = re.search(r'<a rel="next" href="([^"]+)">', html)
        assert older is not None
        rest = await client.get(older.group(1).replace("&amp;", "&"))
        assert re.findall(r'<tr data-intent="([0-9a-f-]+)">', rest.text) == [intents[0]]
        assert 'rel="next"' not in rest.text

        fell_back = await client.get("/ui/members/fell-back")
        outcomes = re.findall(r'data-channel="(\w+)"[^>]*>([^<]+)</span>', fell_back.text)
        assert outcomes == [("line", "line: failed"), ("email", "email (fallback): sent")]
        missing = await client.get("/ui/members/nobody")
        assert missing.status_code == 404 and "No member with this ID." in missing.text
        bad = await client.get("/ui/members/hanako", params={"before": "yesterday"})
        assert bad.status_code == 400 and "before: an intent id" in bad.text
