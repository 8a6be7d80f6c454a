"""The dashboard's members pages over plain HTTP: search by ID, email, phone and LINE user ID
(normalised as the API normalises them), and one member's facts and history after real sends."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import msgspec

from router.config import LineAccountConfig
from router.store import category_opt_outs
from router.store.members import record_friendship
from tests.harness import LINE_TOKEN, RouterUnderTest, SmtpSink, router_config, running_router
from tests.test_ui_overview import send_three
from tests.test_ui_session import anonymous, signed_in

HANAKO_LINE = "U" + "a" * 31 + "7"


def fact(html: str, name: str) -> str:
    match = re.search(rf'data-fact="{name}">(.*?)</dd>', html, re.S)
    assert match is not None, f"no fact {name}"
    return re.sub(r"\s+", " ", match.group(1)).strip()


def found_ids(html: str) -> list[str]:
    return re.findall(r'<a href="/ui/members/[^"]+">([^<]+)</a>', html)


def channel_reach(html: str) -> dict[tuple[str, str], str]:
    """The channels table: (channel, LINE account or "") -> whether it reaches them."""
    rows = re.findall(
        r'<tr data-channel="([a-z_]+)"(?: data-account="([a-z0-9_-]+)")?>.*?'
        r'data-figure="reachable">(\w+)<',
        html,
        re.S,
    )
    return {(channel, account): reachable for channel, account, reachable in rows}


def line_facts(html: str, account: str) -> dict[str, str]:
    """One account's row of the member's LINE identities."""
    row = re.search(rf'<tr data-account="{account}">(.*?)</tr>', html, re.S)
    assert row is not None, f"no LINE row for {account}"
    return {
        name: re.sub(r"<[^>]+>|\s+", " ", value).strip()
        for name, value in re.findall(r'data-fact="(\w+)">(.*?)</td>', row.group(1), re.S)
    }


@asynccontextmanager
async def two_accounts(dsn: str, line_sim: Any, smtp: SmtpSink) -> AsyncIterator[RouterUnderTest]:
    """A router with LINE accounts "default" and "shop-b" (both at the simulator)."""
    config = router_config(dsn, line_sim.base_url, smtp)
    shop_b = LineAccountConfig(channel_access_token=LINE_TOKEN, api_base=line_sim.base_url)
    line = msgspec.structs.replace(config.line, accounts={"shop-b": shop_b})
    async with running_router(dsn, None, None, msgspec.structs.replace(config, line=line)) as r:
        yield r


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
        assert channel_reach(html) == {("line", "default"): "yes", ("email", ""): "no"}
        assert "address suppressed: manual" in html
        line = line_facts(html, "default")
        assert line["line_user_id"] == HANAKO_LINE
        assert line["linked_by"].startswith("the members API")
        assert line["friend"].startswith("yes")
        assert line["line_opt_out"] == "not opted out"
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


SHOP_B_ONLY = "U" + "b" * 31 + "1"
BOTH_DEFAULT = "U" + "c" * 31 + "2"
BOTH_SHOP_B = "U" + "d" * 31 + "3"
CLOSED_SHOP = "U" + "e" * 31 + "4"


async def test_member_line_identity_per_account(dsn: str, line_sim: Any, smtp: SmtpSink) -> None:
    async with two_accounts(dsn, line_sim, smtp) as router:
        for member_id, line in (
            ("only-b", {"shop-b": {"user_id": SHOP_B_ONLY, "friend": True}}),
            (
                "both",
                {
                    "default": {"user_id": BOTH_DEFAULT, "friend": True, "opt_out": True},
                    "shop-b": {"user_id": BOTH_SHOP_B, "friend": False},
                },
            ),
        ):
            resp = await router.client.put(f"/v1/members/{member_id}", json={"line": line})
            assert resp.status_code == 201, resp.text
        linked_at = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
        async with router.runtime.pool.acquire() as conn:
            # LINE's unfollow of shop-b, and the account link redeemed under shop-b, as the
            # webhook and the account-link flow record them.
            await record_friendship(conn, "shop-b", BOTH_SHOP_B, False, linked_at)
            await conn.execute(
                "INSERT INTO line_link_nonces"
                " (nonce, member_id, link_token, expires_at, used_at, account)"
                " VALUES ('n-1', 'both', 't', $1, $1, 'shop-b')",
                linked_at,
            )
            # An identity under an account since taken out of the configuration.
            await conn.execute(
                "INSERT INTO member_line_accounts (member_id, account, user_id, friend)"
                " VALUES ('only-b', 'closed-shop', $1, true)",
                CLOSED_SHOP,
            )

        async with anonymous(router) as client:
            await signed_in(client)
            # A LINE user ID under any account finds its member, and says under which.
            for q, member_id, account in (
                (SHOP_B_ONLY, "only-b", "shop-b"),
                (BOTH_DEFAULT, "both", "default"),
                (BOTH_SHOP_B, "both", "shop-b"),
            ):
                page = await client.get("/ui/members", params={"q": q})
                assert found_ids(page.text) == [member_id], q
                matched = re.findall(r'<span data-account="([a-z-]+)" class="matched">', page.text)
                assert matched == [account], q
            page = await client.get("/ui/members", params={"q": "both"})
            shown = re.findall(r'<span data-account="([a-z-]+)"[^>]*>([^<]+)</span>', page.text)
            assert shown == [
                ("default", f"default: {BOTH_DEFAULT}"),
                ("shop-b", f"shop-b: {BOTH_SHOP_B}"),
            ]

            html = (await client.get("/ui/members/both")).text
            assert channel_reach(html) == {
                ("line", "default"): "no",
                ("line", "shop-b"): "no",
                ("email", ""): "no",
            }
            assert "opted out of LINE" in html and "unfollowed or blocked" in html
            default, shop_b = line_facts(html, "default"), line_facts(html, "shop-b")
            assert default["line_user_id"] == BOTH_DEFAULT
            assert default["line_opt_out"] == "opted out"
            assert default["linked_by"].startswith("the members API")
            assert shop_b["line_user_id"] == BOTH_SHOP_B
            assert shop_b["friend"] == (
                "no: unfollowed or blocked the account (LINE said so 2026-11-20 09:30 UTC)"
            )
            assert shop_b["line_opt_out"] == "not opted out"
            assert shop_b["linked_by"] == "LINE account link, 2026-11-20 09:30 UTC"

            html = (await client.get("/ui/members/only-b")).text
            assert channel_reach(html) == {
                ("line", "default"): "no",
                ("line", "shop-b"): "yes",
                ("line", "closed-shop"): "no",
                ("email", ""): "no",
            }
            assert "this account is not in the router&#39;s configuration" in html
            assert line_facts(html, "closed-shop")["line_user_id"] == CLOSED_SHOP
            assert line_facts(html, "default") == {
                "line_user_id": "not linked",
                "friend": "—",
                "line_opt_out": "not opted out",
                "linked_by": "—",
            }
            assert line_facts(html, "shop-b")["line_user_id"] == SHOP_B_ONLY
