"""Intents and campaigns go out under the LINE account they name, end to end: the router over
HTTP, PostgreSQL, line-bot-sdk against two LINE simulators (the account "default" on one,
"shop" on the other, each with its own token), and real SMTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from linesim import LineSimulator
from router.config import LineAccountConfig
from tests.harness import LINE_TOKEN, RouterUnderTest, SmtpSink, router_config, running_router

SHOP_TOKEN = "shop-channel-token"
PUSH = "/v2/bot/message/push"
MULTICAST = "/v2/bot/message/multicast"
MAIL = {"subject": "Autumn sale", "text": "20% off this week"}
# Each person has a different LINE user ID under each provider.
A_DEFAULT = "U" + "a" * 32
B_SHOP = "U" + "b" * 32
BOTH_DEFAULT = "U" + "c" * 32
BOTH_SHOP = "U" + "d" * 32


@pytest.fixture(scope="module")
async def shop_simulator() -> AsyncIterator[LineSimulator]:
    sim = LineSimulator(access_tokens=[SHOP_TOKEN])
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
def shop_sim(shop_simulator: LineSimulator) -> LineSimulator:
    shop_simulator.reset()
    return shop_simulator


@pytest.fixture
async def two_accounts(
    dsn: str, line_sim: LineSimulator, shop_sim: LineSimulator, smtp: SmtpSink
) -> AsyncIterator[RouterUnderTest]:
    base = router_config(dsn, line_sim.base_url, smtp)
    shop = LineAccountConfig(channel_access_token=SHOP_TOKEN, api_base=shop_sim.base_url)
    line = msgspec.structs.replace(base.line, accounts={"shop": shop})
    async with running_router(dsn, None, None, msgspec.structs.replace(base, line=line)) as r:
        await _members(r)
        yield r


async def _members(r: RouterUnderTest) -> None:
    """ "a" is linked under the account "default" only, "b" under "shop" only, "ab" under both."""
    people: dict[str, dict[str, Any]] = {
        "a": {"email": "a@example.jp", "line": {"default": {"user_id": A_DEFAULT, "friend": True}}},
        "b": {"email": "b@example.jp", "line": {"shop": {"user_id": B_SHOP, "friend": True}}},
        "ab": {
            "email": "ab@example.jp",
            "line": {
                "default": {"user_id": BOTH_DEFAULT, "friend": True},
                "shop": {"user_id": BOTH_SHOP, "friend": True},
            },
        },
    }
    for member_id, fields in people.items():
        resp = await r.client.put(f"/v1/members/{member_id}", json=fields)
        assert resp.status_code in (200, 201), resp.text


async def _send(r: RouterUnderTest, member_id: str, **fields: Any) -> dict[str, Any]:
    resp = await r.client.post(
        "/v1/intents", json={"member_id": member_id, "email": MAIL, **fields}
    )
    assert resp.status_code == 202, resp.text
    body: dict[str, Any] = resp.json()
    return body


def _requests(sim: LineSimulator, path: str) -> list[tuple[Any, str]]:
    """Each accepted request's recipient(s) with the bearer token it came with."""
    return [
        (q.body["to"], q.headers["authorization"]) for q in sim.accepted_pushes() if q.path == path
    ]


async def test_each_push_goes_out_under_the_intents_account(
    two_accounts: RouterUnderTest, line_sim: LineSimulator, shop_sim: LineSimulator, smtp: SmtpSink
) -> None:
    r = two_accounts
    sent = [
        await _send(r, "a"),  # no account named: "default"
        await _send(r, "b", line_account="shop"),
        await _send(r, "ab", line_account="shop"),
        await _send(r, "ab", line_account="default"),
    ]
    assert [s["channels"] for s in sent] == [["line"]] * 4
    views = [await r.wait_for(s["id"]) for s in sent]
    assert [v["line_account"] for v in views] == ["default", "shop", "shop", "default"]
    assert sorted(_requests(line_sim, PUSH)) == sorted(
        [(A_DEFAULT, f"Bearer {LINE_TOKEN}"), (BOTH_DEFAULT, f"Bearer {LINE_TOKEN}")]
    )
    assert sorted(_requests(shop_sim, PUSH)) == sorted(
        [(B_SHOP, f"Bearer {SHOP_TOKEN}"), (BOTH_SHOP, f"Bearer {SHOP_TOKEN}")]
    )
    assert smtp.mails == []


async def test_a_member_linked_under_another_account_only_is_not_pushed(
    two_accounts: RouterUnderTest, line_sim: LineSimulator, shop_sim: LineSimulator, smtp: SmtpSink
) -> None:
    r = two_accounts
    by_email = await _send(r, "a", line_account="shop")  # "a" is linked under "default" only
    assert by_email["channels"] == ["email"]
    await r.wait_for(by_email["id"])
    assert [m.rcpt_to for m in smtp.mails] == [["a@example.jp"]]
    resp = await r.client.post(
        "/v1/intents",
        json={"member_id": "b", "email": MAIL, "route": "line_only", "line_account": "default"},
    )
    assert resp.status_code == 422, resp.text
    assert "no LINE user ID is linked" in resp.json()["detail"]
    assert line_sim.accepted_pushes() == [] and shop_sim.accepted_pushes() == []


async def test_a_batch_multicasts_once_per_account(
    two_accounts: RouterUnderTest, line_sim: LineSimulator, shop_sim: LineSimulator
) -> None:
    r = two_accounts
    items = [
        {"member_id": m, "email": MAIL, "line_account": account}
        for m, account in (("b", "shop"), ("a", "default"), ("ab", "shop"), ("ab", "default"))
    ]
    resp = await r.client.post("/v1/intents/batch", json={"intents": items})
    assert resp.status_code == 200, resp.text
    for result in resp.json()["results"]:
        await r.wait_for(result["id"])
    # One group per account, never mixing them; nothing pushed one by one.
    assert [(sorted(to), auth) for to, auth in _requests(line_sim, MULTICAST)] == [
        (sorted([A_DEFAULT, BOTH_DEFAULT]), f"Bearer {LINE_TOKEN}")
    ]
    assert [(sorted(to), auth) for to, auth in _requests(shop_sim, MULTICAST)] == [
        (sorted([B_SHOP, BOTH_SHOP]), f"Bearer {SHOP_TOKEN}")
    ]
    assert _requests(line_sim, PUSH) == [] and _requests(shop_sim, PUSH) == []


async def test_an_unknown_account_is_refused_naming_the_field(
    two_accounts: RouterUnderTest,
) -> None:
    r = two_accounts
    resp = await r.client.post(
        "/v1/intents", json={"member_id": "a", "email": MAIL, "line_account": "cafe"}
    )
    assert resp.status_code == 400, resp.text
    [error] = resp.json()["errors"]
    assert error["field"] == "line_account"
    assert "'cafe'" in error["message"] and "default, shop" in error["message"]

    items: list[dict[str, Any]] = [{"member_id": m, "email": MAIL} for m in ("a", "b", "ab", "b")]
    items[3]["line_account"] = "cafe"
    resp = await r.client.post("/v1/intents/batch", json={"intents": items})
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert [x["status"] for x in results] == ["accepted"] * 3 + ["rejected"]
    assert [e["field"] for e in results[3]["errors"]] == ["intents[3].line_account"]

    resp = await r.client.post(
        "/v1/campaigns",
        json={
            "audience_ids": ["0190a5e4-0000-7000-8000-000000000001"],
            "email": MAIL,
            "line_account": "cafe",
        },
    )
    assert resp.status_code == 400, resp.text
    [error] = resp.json()["errors"]
    assert error["field"] == "line_account" and "default, shop" in error["message"]


async def test_a_campaign_multicasts_under_its_account_only(
    two_accounts: RouterUnderTest, line_sim: LineSimulator, shop_sim: LineSimulator, smtp: SmtpSink
) -> None:
    r = two_accounts
    resp = await r.client.post(
        "/v1/audiences",
        data={"name": "everyone", "type": "email"},
        files={"file": ("list.csv", b"a@example.jp\nb@example.jp\nab@example.jp", "text/csv")},
    )
    assert resp.status_code == 201, resp.text
    resp = await r.client.post(
        "/v1/campaigns",
        json={"audience_ids": [resp.json()["id"]], "email": MAIL, "line_account": "shop"},
    )
    assert resp.status_code == 202, resp.text
    campaign_id = resp.json()["id"]
    deadline = time.monotonic() + 15
    while True:
        view = (await r.client.get(f"/v1/campaigns/{campaign_id}")).json()
        counts = {(d["channel"], d["status"]): d["deliveries"] for d in view["deliveries"]}
        if counts == {("line", "sent"): 2, ("email", "sent"): 1}:
            break
        assert time.monotonic() < deadline, view
        await asyncio.sleep(0.05)
    assert view["line_account"] == "shop"
    assert [(sorted(to), auth) for to, auth in _requests(shop_sim, MULTICAST)] == [
        (sorted([B_SHOP, BOTH_SHOP]), f"Bearer {SHOP_TOKEN}")
    ]
    assert line_sim.accepted_pushes() == []
    assert [m.rcpt_to for m in smtp.mails] == [["a@example.jp"]]


async def test_an_account_removed_before_sending_fails_to_the_fallback(
    dsn: str, line_sim: LineSimulator, shop_sim: LineSimulator, smtp: SmtpSink
) -> None:
    base = router_config(dsn, line_sim.base_url, smtp)
    shop = LineAccountConfig(channel_access_token=SHOP_TOKEN, api_base=shop_sim.base_url)
    with_shop = msgspec.structs.replace(
        base,
        line=msgspec.structs.replace(base.line, accounts={"shop": shop}),
        workers=msgspec.structs.replace(base.workers, enabled=False),  # accepts, sends nothing
    )
    async with running_router(dsn, None, None, with_shop) as r:
        await _members(r)
        accepted = await _send(r, "b", line_account="shop")
    assert accepted["channels"] == ["line"] and accepted["fallback"] == "email"
    async with running_router(dsn, None, None, base) as r:  # "shop" is gone from the config
        view = await r.wait_for(accepted["id"], ("delivered", "sent", "failed"))
    line, email = sorted(view["deliveries"], key=lambda d: d["channel"] != "line")
    assert line["status"] == "failed"
    assert "LINE account 'shop' is not configured" in line["last_error"]
    assert email["channel"] == "email" and email["status"] == "sent"
    assert [m.rcpt_to for m in smtp.mails] == [["b@example.jp"]]
    assert line_sim.accepted_pushes() == [] and shop_sim.accepted_pushes() == []
