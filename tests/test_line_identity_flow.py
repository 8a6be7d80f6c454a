"""LINE identity end to end: the simulator sends signed webhooks to the router over HTTP.

follow -> invitation -> link nonce -> accountLink -> next intent goes by LINE push; ID token
login links; follower sync; LINE notification messages with delivery confirmation.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx

from tests.harness import LINE_TOKEN, RouterUnderTest, SmtpSink, running_router

SECRET = "identity-test-secret"
USER = "U" + "a1" * 16
MAIL = {"subject": "Order shipped", "text": "Your order #123 has shipped."}


@asynccontextmanager
async def linked_router(
    dsn: str, line_sim: Any, smtp: SmtpSink | None, **env: str
) -> AsyncIterator[RouterUnderTest]:
    settings = {
        "ROUTER_LINE_CHANNEL_SECRET": SECRET,
        "ROUTER_LINE_ACCOUNT_LINK_BASE": line_sim.base_url,
        "ROUTER_LINE_LOGIN_CHANNEL_ID": "1234567890",
        **env,
    }
    async with running_router(dsn, line_sim.base_url, smtp, **settings) as r:
        line_sim.set_webhook(f"{r.base_url}/webhooks/line", SECRET)
        yield r


async def outcomes(dsn: str, count: int, timeout: float = 10.0) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + timeout
        while True:
            rows = await conn.fetch(
                "SELECT outcome FROM line_webhook_events WHERE processed_at IS NOT NULL"
                " ORDER BY occurred_at, received_at"
            )
            if len(rows) >= count:
                return [r["outcome"] for r in rows]
            assert time.monotonic() < deadline, rows
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


async def test_follow_invite_link_then_line_push(dsn: str, line_sim: Any, smtp: SmtpSink) -> None:
    invite = {
        "ROUTER_LINE_LINK_INVITE_TEXT": "会員アカウントと連携すると、お得な情報をLINEでお届けします。",
        "ROUTER_LINE_LINK_URL_TEMPLATE": "https://shop.example.jp/line/link?linkToken={link_token}",
    }
    async with linked_router(dsn, line_sim, smtp, **invite) as r:
        await r.client.put("/v1/members/taro", json={"email": "taro@example.jp"})
        first = await r.client.post("/v1/intents", json={"member_id": "taro", "email": MAIL})
        assert first.json()["channels"] == ["email"]

        assert await line_sim.follow(USER) == 200
        assert (await outcomes(dsn, 1))[0].endswith("link invitation sent")
        (reply,) = line_sim.accepted_replies()
        text = reply.body["messages"][0]["text"]
        assert text.startswith(invite["ROUTER_LINE_LINK_INVITE_TEXT"])
        link_token = re.search(r"linkToken=(\S+)", text).group(1)  # type: ignore[union-attr]

        # The member logs in on the company's page; the page asks the router where to go next.
        resp = await r.client.post(
            "/v1/line/link-nonce", json={"member_id": "taro", "link_token": link_token}
        )
        assert resp.status_code == 200, resp.text
        redirect = resp.json()["redirect_url"]
        assert redirect.startswith(f"{line_sim.base_url}/dialog/bot/accountLink?linkToken=")
        async with httpx.AsyncClient() as browser:
            assert (await browser.get(redirect)).status_code == 200

        assert (await outcomes(dsn, 2))[1] == "linked to member taro"
        member = (await r.client.get("/v1/members/taro")).json()
        assert member["line_user_id"] == USER and member["line_friend"] is True
        resp = await r.client.post("/v1/intents", json={"member_id": "taro", "email": MAIL})
        assert resp.json()["channels"] == ["line"]
        await r.wait_for(resp.json()["id"])
        assert line_sim.accepted_pushes()[-1].body["to"] == USER


async def test_bad_link_attempts_link_nothing_and_are_recorded(dsn: str, line_sim: Any) -> None:
    async with linked_router(dsn, line_sim, None) as r:
        await r.client.put("/v1/members/hanako", json={"email": "hanako@example.jp"})
        resp = await r.client.post(
            "/v1/line/link-nonce", json={"member_id": "hanako", "link_token": "tok"}
        )
        nonce = re.search(r"nonce=([^&]+)", resp.json()["redirect_url"]).group(1)  # type: ignore[union-attr]
        await line_sim.account_link(USER, nonce, ok=False)
        await line_sim.account_link(USER, "never-issued")
        await line_sim.account_link(USER, nonce)
        await line_sim.account_link("U" + "b2" * 16, nonce)  # the same nonce again
        results = await outcomes(dsn, 4)
        assert results == [
            "link not made: LINE reported result 'failed'",
            "link not made: unknown nonce",
            "linked to member hanako",
            "link not made: nonce already used",
        ]
        assert (await r.client.get("/v1/members/hanako")).json()["line_user_id"] == USER
        missing = await r.client.post(
            "/v1/line/link-nonce", json={"member_id": "nobody", "link_token": "tok"}
        )
        assert missing.status_code == 404


async def test_expired_nonce_is_refused(dsn: str, line_sim: Any) -> None:
    async with linked_router(dsn, line_sim, None, ROUTER_LINE_LINK_NONCE_TTL_SECONDS="1") as r:
        await r.client.put("/v1/members/late", json={"email": "late@example.jp"})
        resp = await r.client.post(
            "/v1/line/link-nonce", json={"member_id": "late", "link_token": "tok"}
        )
        assert resp.json()["nonce_expires_in"] == 1
        nonce = re.search(r"nonce=([^&]+)", resp.json()["redirect_url"]).group(1)  # type: ignore[union-attr]
        await asyncio.sleep(1.2)
        await line_sim.account_link(USER, nonce)
        assert await outcomes(dsn, 1) == ["link not made: nonce expired"]


async def test_login_link_with_id_token(dsn: str, line_sim: Any) -> None:
    async with linked_router(dsn, line_sim, None) as r:
        for member in ("a", "b"):
            await r.client.put(f"/v1/members/{member}", json={"email": f"{member}@example.jp"})
        token = line_sim.mint_id_token(USER, client_id="1234567890")
        resp = await r.client.post(
            "/v1/line/login-link", json={"member_id": "a", "id_token": token}
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["line_user_id"] == USER
        resp = await r.client.post(
            "/v1/line/login-link", json={"member_id": "b", "id_token": token}
        )
        assert resp.status_code == 409 and "another member" in resp.json()["detail"]
        foreign = line_sim.mint_id_token(USER, client_id="999")
        resp = await r.client.post(
            "/v1/line/login-link", json={"member_id": "b", "id_token": foreign}
        )
        assert resp.status_code == 422 and resp.json()["errors"][0]["field"] == "id_token"


async def test_sync_followers_corrects_friend_flags(dsn: str, line_sim: Any) -> None:
    following, gone = "U" + "c3" * 16, "U" + "d4" * 16
    async with linked_router(dsn, line_sim, None) as r:
        await r.client.put("/v1/members/f", json={"line_user_id": following, "line_friend": False})
        await r.client.put("/v1/members/g", json={"line_user_id": gone})
    line_sim.set_followers([following, *(f"U{i:032x}" for i in range(2500))])
    env = os.environ | {
        "ROUTER_DATABASE_URL": dsn,
        "ROUTER_LINE_CHANNEL_ACCESS_TOKEN": LINE_TOKEN,
        "ROUTER_LINE_API_BASE": line_sim.base_url,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router", "line", "sync-followers",
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    assert "2,501 followers" in out.decode() and "2 member(s)" in out.decode()
    assert "followers read: 2,501" in err.decode()
    async with linked_router(dsn, line_sim, None) as r:
        assert (await r.client.get("/v1/members/f")).json()["line_friend"] is True
        assert (await r.client.get("/v1/members/g")).json()["line_friend"] is False


async def test_notification_message_is_confirmed_by_delivery_event(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    async with linked_router(dsn, line_sim, smtp, ROUTER_LINE_NOTIFICATION_MESSAGES="true") as r:
        await r.client.put(
            "/v1/members/m", json={"email": "m@example.jp", "phone": "080-1234-5678"}
        )
        line_sim.register_phone("+818012345678", USER)
        intent = {"member_id": "m", "kind": "transactional", "route": "notification_first"}
        resp = await r.client.post("/v1/intents", json={**intent, "email": MAIL})
        assert resp.status_code == 202, resp.text
        assert resp.json()["channels"] == ["line_notification"]
        assert resp.json()["fallback"] == "email"
        deadline = time.monotonic() + 10
        while True:
            body = await r.intent(resp.json()["id"])
            (delivery,) = body["deliveries"]
            if delivery["confirmed_at"]:
                break
            assert time.monotonic() < deadline, body
            await asyncio.sleep(0.05)
        (pnp,) = line_sim.accepted_pnp()
        assert pnp.body["to"] == hashlib.sha256(b"+818012345678").hexdigest()
        assert pnp.headers["x-line-delivery-tag"] == delivery["id"]
        assert body["status"] == "delivered" and smtp.mails == []

        # promotional messages may not use notifications
        resp = await r.client.post(
            "/v1/intents", json={**intent, "kind": "promotional", "email": MAIL}
        )
        assert resp.status_code == 422 and "transactional" in resp.json()["detail"]


async def test_notification_intent_is_sent_not_delivered_until_line_confirms(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    line_sim.set_pnp_delivery(delay_seconds=1.5)
    async with linked_router(dsn, line_sim, smtp, ROUTER_LINE_NOTIFICATION_MESSAGES="true") as r:
        await r.client.put(
            "/v1/members/m", json={"email": "m@example.jp", "phone": "080-1234-5678"}
        )
        line_sim.register_phone("+818012345678", USER)
        intent = {"member_id": "m", "kind": "transactional", "route": "notification_first"}
        resp = await r.client.post("/v1/intents", json={**intent, "email": MAIL})
        intent_id = resp.json()["id"]
        deadline = time.monotonic() + 10
        while not line_sim.accepted_pnp():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        body = await r.wait_for(intent_id, ("sent", "delivered"))
        (delivery,) = body["deliveries"]
        # LINE took the request; its delivery event has not come yet.
        assert (body["status"], delivery["status"], delivery["confirmed_at"]) == (
            "sent",
            "sent",
            None,
        )
        body = await r.wait_for(intent_id)
        assert body["deliveries"][0]["confirmed_at"] is not None


async def test_notification_to_unknown_number_falls_back_to_email(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    async with linked_router(dsn, line_sim, smtp, ROUTER_LINE_NOTIFICATION_MESSAGES="true") as r:
        await r.client.put(
            "/v1/members/m", json={"email": "m@example.jp", "phone": "090-9999-0000"}
        )
        resp = await r.client.post(
            "/v1/intents",
            json={
                "member_id": "m",
                "kind": "transactional",
                "route": "notification_first",
                "email": MAIL,
            },
        )
        body = await r.wait_for(resp.json()["id"])
    notification = next(d for d in body["deliveries"] if d["channel"] == "line_notification")
    assert notification["status"] == "failed" and "422" in notification["last_error"]
    assert len(smtp.mails) == 1


async def test_unconfirmed_notification_falls_back_after_the_deadline(
    dsn: str, line_sim: Any, smtp: SmtpSink
) -> None:
    line_sim.set_pnp_delivery(suppress_next=1)
    env = {
        "ROUTER_LINE_NOTIFICATION_MESSAGES": "true",
        "ROUTER_LINE_NOTIFICATION_CONFIRM_SECONDS": "1",
        "ROUTER_WORKERS_LEASE_SECONDS": "4",
    }
    async with linked_router(dsn, line_sim, smtp, **env) as r:
        await r.client.put(
            "/v1/members/m", json={"email": "m@example.jp", "phone": "080-1234-5678"}
        )
        line_sim.register_phone("+818012345678", USER)
        resp = await r.client.post(
            "/v1/intents",
            json={
                "member_id": "m",
                "kind": "transactional",
                "route": "notification_first",
                "email": MAIL,
            },
        )
        intent_id = resp.json()["id"]
        deadline = time.monotonic() + 15
        while not smtp.mails:
            assert time.monotonic() < deadline, await r.intent(intent_id)
            await asyncio.sleep(0.1)
        body = await r.wait_for(intent_id)
    notification = next(d for d in body["deliveries"] if d["channel"] == "line_notification")
    assert notification["status"] == "failed" and "no delivery event" in notification["last_error"]
    assert len(line_sim.accepted_pnp()) == 1  # never repeated


async def test_link_token_from_the_api_completes_a_link(dsn: str, line_sim: Any) -> None:
    async with linked_router(dsn, line_sim, None) as r:
        await r.client.put("/v1/members/jiro", json={"email": "jiro@example.jp"})
        resp = await r.client.post("/v1/line/link-token", json={"line_user_id": USER})
        assert resp.status_code == 200, resp.text
        token = resp.json()["link_token"]
        bad = await r.client.post("/v1/line/link-token", json={"line_user_id": "Uxyz"})
        assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "line_user_id"
        resp = await r.client.post(
            "/v1/line/link-nonce", json={"member_id": "jiro", "link_token": token}
        )
        async with httpx.AsyncClient() as browser:
            assert (await browser.get(resp.json()["redirect_url"])).status_code == 200
        assert await outcomes(dsn, 1) == ["linked to member jiro"]
        assert (await r.client.get("/v1/members/jiro")).json()["line_user_id"] == USER
