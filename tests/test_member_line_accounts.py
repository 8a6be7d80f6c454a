"""A member's LINE identity per LINE Official Account, through PUT/GET /v1/members: the
top-level line_* fields are the account "default"'s, `line` names every account's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
import pytest

from router.config import LineAccountConfig
from tests.harness import RouterUnderTest, SmtpSink, router_config, running_router

SHOP = "shop-b"
U_DEFAULT = "U" + "a" * 32
U_SHOP = "U" + "b" * 32


@pytest.fixture
async def two_accounts(dsn: str, line_sim: Any, smtp: SmtpSink) -> AsyncIterator[RouterUnderTest]:
    config = router_config(dsn, line_sim.base_url, smtp)
    shop = LineAccountConfig(channel_access_token="shop-b-token", channel_secret="shop-b-secret")
    config.line = msgspec.structs.replace(config.line, accounts={SHOP: shop})
    async with running_router(dsn, None, None, config=config) as router:
        yield router


async def test_identities_per_account_are_kept_apart_and_shown_both_ways(
    two_accounts: RouterUnderTest, dsn: str
) -> None:
    client = two_accounts.client
    r = await client.put(
        "/v1/members/m-1",
        json={"line_user_id": U_DEFAULT, "line": {SHOP: {"user_id": U_SHOP, "opt_out": True}}},
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["line_user_id"], body["line_friend"], body["line_opt_out"]) == (
        U_DEFAULT,
        True,
        False,
    )
    assert body["line"] == {
        "default": {"user_id": U_DEFAULT, "friend": True, "opt_out": False},
        SHOP: {"user_id": U_SHOP, "friend": True, "opt_out": True},
    }
    # Changing one account's field keeps every other field of every account.
    r = await client.put("/v1/members/m-1", json={"line": {"default": {"friend": False}}})
    assert r.status_code == 200, r.text
    assert r.json()["line"] == {
        "default": {"user_id": U_DEFAULT, "friend": False, "opt_out": False},
        SHOP: {"user_id": U_SHOP, "friend": True, "opt_out": True},
    }
    # Clearing an account's ID clears its friendship, and nothing else.
    r = await client.put("/v1/members/m-1", json={"line": {SHOP: {"user_id": None}}})
    assert r.json()["line"][SHOP] == {"user_id": None, "friend": False, "opt_out": True}
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT account, user_id, friend, opt_out FROM member_line_accounts"
            " WHERE member_id = 'm-1' ORDER BY account"
        )
    finally:
        await conn.close()
    assert [tuple(r) for r in rows] == [
        ("default", U_DEFAULT, False, False),
        (SHOP, None, False, True),
    ]


async def test_an_id_is_one_members_per_account_but_may_repeat_across_accounts(
    two_accounts: RouterUnderTest,
) -> None:
    client = two_accounts.client
    assert (
        await client.put("/v1/members/m-1", json={"line_user_id": U_DEFAULT})
    ).status_code == 201
    r = await client.put("/v1/members/m-2", json={"line_user_id": U_DEFAULT})
    assert r.status_code == 409
    assert r.json()["errors"][0]["field"] == "line_user_id"
    r = await client.put("/v1/members/m-2", json={"line": {SHOP: {"user_id": U_DEFAULT}}})
    assert r.status_code == 201, r.text
    r = await client.put("/v1/members/m-3", json={"line": {SHOP: {"user_id": U_DEFAULT}}})
    assert r.status_code == 409
    assert r.json()["errors"][0]["field"] == f"line.{SHOP}.user_id"


async def test_unknown_accounts_and_doubled_fields_are_400s_naming_the_field(
    two_accounts: RouterUnderTest,
) -> None:
    client = two_accounts.client
    r = await client.put("/v1/members/m-1", json={"line": {"shop-c": {"user_id": U_SHOP}}})
    assert r.status_code == 400
    (error,) = r.json()["errors"]
    assert error["field"] == "line.shop-c"
    assert "default, shop-b" in error["message"]
    r = await client.put(
        "/v1/members/m-1",
        json={"line_user_id": U_DEFAULT, "line": {"default": {"user_id": U_SHOP}}},
    )
    assert r.status_code == 400
    assert r.json()["errors"][0]["field"] == "line_user_id"
    r = await client.put("/v1/members/m-1", json={"line": {SHOP: {"user_id": "U123"}}})
    assert r.status_code == 400
    assert r.json()["errors"][0]["field"] == f"line.{SHOP}.user_id"
    r = await client.post(
        "/v1/members/batch",
        json={"members": [{"member_id": "m-9", "line": {"nowhere": {"friend": True}}}]},
    )
    assert r.status_code in (200, 207), r.text
    (result,) = r.json()["results"]
    assert result["status"] == "rejected"
    assert result["errors"][0]["field"] == "members[0].line.nowhere"
