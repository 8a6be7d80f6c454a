"""Two LINE Official Accounts served by one simulator, as LINE serves them at one base URL:
each push goes out with its account's token to that account's user ID, a member is pushed only
under an account that knows them, and a webhook verifies only with its own account's secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import msgspec

from router.config import LineAccountConfig
from tests.harness import LINE_TOKEN, SmtpSink, line_channel, router_config, running_router

SHOP_TOKEN = "shop-token"
SHOP_SECRET = "shop-secret"
DEFAULT_SECRET = "default-secret"
U_A = "U" + "a" * 32  # a friend of the default account
U_B = "U" + "b" * 32  # a friend of shop
U_AB_DEFAULT = "U" + "c" * 32  # the member under both: their ID under the default account
U_AB_SHOP = "U" + "d" * 32  # ... and under shop


def signed(body: bytes, secret: str) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return {
        "X-Line-Signature": base64.b64encode(digest).decode(),
        "Content-Type": "application/json",
    }


def follow_event(user_id: str) -> bytes:
    event = {
        "type": "follow",
        "mode": "active",
        "timestamp": 1764547200000,
        "source": {"type": "user", "userId": user_id},
        "webhookEventId": "01JD0000000000000000000001",
        "deliveryContext": {"isRedelivery": False},
        "replyToken": "0f3779fba3b349968c5d07db31eab56f",
        "follow": {"isUnblocked": False},
    }
    return json.dumps({"destination": "U" + "e" * 32, "events": [event]}).encode()


def pushed(requests: list[Any]) -> set[tuple[str, str]]:
    """(token, user ID) of each accepted push or multicast recipient."""
    found = set()
    for r in requests:
        token = r.headers.get("authorization", r.headers.get("Authorization", ""))
        to = r.body["to"]
        for user in to if isinstance(to, list) else [to]:
            found.add((token.removeprefix("Bearer "), user))
    return found


async def test_two_accounts_in_one_simulator(dsn: str, line_sim: Any, smtp: SmtpSink) -> None:
    shop = line_channel(line_sim, "shop", SHOP_TOKEN, channel_secret=SHOP_SECRET)
    line_sim.set_followers([U_A, U_AB_DEFAULT])
    shop.set_followers([U_B, U_AB_SHOP])
    config = router_config(dsn, line_sim.base_url, smtp, ROUTER_LINE_CHANNEL_SECRET=DEFAULT_SECRET)
    config.line = msgspec.structs.replace(
        config.line,
        accounts={
            "shop": LineAccountConfig(channel_access_token=SHOP_TOKEN, channel_secret=SHOP_SECRET)
        },
    )
    async with running_router(dsn, None, None, config=config) as r:
        members = {
            "m-a": {"email": "a@example.jp", "line_user_id": U_A},
            "m-b": {"email": "b@example.jp", "line": {"shop": {"user_id": U_B}}},
            "m-ab": {
                "email": "ab@example.jp",
                "line_user_id": U_AB_DEFAULT,
                "line": {"shop": {"user_id": U_AB_SHOP}},
            },
        }
        for member_id, fields in members.items():
            assert (await r.client.put(f"/v1/members/{member_id}", json=fields)).status_code == 201
        intents = {}
        for member_id in members:
            for account in ("default", "shop"):
                resp = await r.client.post(
                    "/v1/intents",
                    json={
                        "member_id": member_id,
                        "line_account": account,
                        "kind": "transactional",
                        "email": {"subject": "Your order", "text": "It has shipped."},
                    },
                )
                assert resp.status_code == 202, resp.text
                intents[member_id, account] = resp.json()["id"]
        for intent_id in intents.values():
            await r.wait_for(intent_id, ("delivered", "sent"))
        channels = {
            key: [d["channel"] for d in (await r.intent(intent_id))["deliveries"]]
            for key, intent_id in intents.items()
        }
        assert channels == {
            ("m-a", "default"): ["line"],
            ("m-a", "shop"): ["email"],  # not known under shop: email, not a push there
            ("m-b", "default"): ["email"],
            ("m-b", "shop"): ["line"],
            ("m-ab", "default"): ["line"],
            ("m-ab", "shop"): ["line"],
        }
        assert (await r.intent(intents["m-ab", "shop"]))["line_account"] == "shop"
        # Each account's pushes reached its own channel, with its own token and user IDs.
        assert pushed(line_sim.accepted_pushes()) == {(LINE_TOKEN, U_A), (LINE_TOKEN, U_AB_DEFAULT)}
        assert pushed(shop.accepted_pushes()) == {(SHOP_TOKEN, U_B), (SHOP_TOKEN, U_AB_SHOP)}
        assert sorted(m.rcpt_to[0] for m in smtp.mails) == ["a@example.jp", "b@example.jp"]

        # A webhook for shop signed with the default account's secret is refused; with its own
        # it is taken.
        body = follow_event(U_B)
        wrong = await r.client.post(
            "/webhooks/line/shop", content=body, headers=signed(body, DEFAULT_SECRET)
        )
        assert wrong.status_code == 401, wrong.text
        right = await r.client.post(
            "/webhooks/line/shop", content=body, headers=signed(body, SHOP_SECRET)
        )
        assert right.status_code == 200, right.text
        crossed = await r.client.post(
            "/webhooks/line", content=body, headers=signed(body, SHOP_SECRET)
        )
        assert crossed.status_code == 401, crossed.text
